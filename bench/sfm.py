# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of Structure-from-Motion (job ``sfm``) on real photos, against the issue's targets.

Run from the repository root::

    .venv/bin/python bench/sfm.py [--out bench/results/sfm.json] [--repeat N] [--only templering]
                                  [--job-args "--matcher retrieval"]

Each dataset runs the real job as a user would, ``python -m backend sfm --images DIR --out
TMP`` in a subprocess, with the job's default settings (or ``--job-args``). Measured: the
whole job's wall time (the target is on it; median of ``--repeat`` runs), its per-stage
seconds (the manifest's ``summary.seconds``), registered photos, mean reprojection error,
the focal length against the reference, and for templeRing the pose errors after a
similarity alignment (Umeyama, on camera centres) to the ground truth: median rotation error
in degrees and median camera-centre error relative to the scene size (the largest distance of
a true camera centre from their centroid: the ring's radius).

1. ``templering``: Middlebury templeRing, 47 photos of 640 x 480, ground truth per photo in
   ``templeR_par.txt`` (fx 1520.4, fy 1525.9: the focal is compared with fx).
2. ``sceaux``: openMVG's Sceaux castle, 11 photos of 2832 x 2128, reference K in ``K.txt``.

A dataset missing from ``../shared/data`` is skipped. pycolmap uses every core; the
``contention`` rows say how much CPU other processes took while each job ran (timings on a
busy machine are not the product's speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import Contention, table, verdict, write_report  # noqa: E402 - bench/_common.py

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results" / "sfm.json"

DATASETS = {
    "templering": {
        "images": DATA / "templering",
        "photos": 47,
        "focal_px": 1520.4,  # fx of templeR_par.txt
        "truth": DATA / "templering" / "templeR_par.txt",
    },
    "sceaux": {
        "images": DATA / "sceaux_castle" / "images",
        "photos": 11,
        "focal_px": 2905.88,  # K.txt
        "truth": None,
    },
}
TARGETS = {
    "seconds_max": 30.0,  # the whole job, 2 CPU cores
    "focal_error_percent_max": 1.0,
    "rotation_error_deg_max": 0.3,  # templeRing, median after similarity alignment
}
STAGES = ("extract", "match", "map", "refine")


# ---------------------------------------------------------------------------------------
# Ground truth and pose errors
# ---------------------------------------------------------------------------------------


def load_templering_truth(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``name -> (K [3, 3], R [3, 3], t [3])`` with the projection ``K [R | t]`` (world to camera)."""
    truth = {}
    for line in path.read_text().splitlines()[1:]:
        words = line.split()
        if len(words) == 22:
            values = np.array(words[1:], float)
            truth[words[0]] = (values[:9].reshape(3, 3), values[9:18].reshape(3, 3), values[18:])
    return truth


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: ``(s, R, t)`` minimising ``|dst - (s R src + t)|`` over points ``[n, 3]``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xs**2).sum(1).mean()
    return s, R, mu_d - s * R @ mu_s


def pose_errors(names: list[str], w2c: np.ndarray, truth: dict) -> dict[str, float]:
    """Median and largest rotation error (degrees) and median camera-centre error relative to
    the scene size, after aligning the estimated centres to the true ones (similarity)."""
    R_est, t_est = w2c[:, :3, :3], w2c[:, :3, 3]
    R_gt = np.stack([truth[n][1] for n in names])
    t_gt = np.stack([truth[n][2] for n in names])
    centres_est = -np.einsum("nji,nj->ni", R_est, t_est)
    centres_gt = -np.einsum("nji,nj->ni", R_gt, t_gt)
    s, R_align, t_align = similarity(centres_est, centres_gt)
    R_aligned = R_est @ R_align.T
    angles = np.degrees(np.arccos(np.clip((np.einsum("nij,nij->n", R_gt, R_aligned) - 1) / 2, -1, 1)))
    aligned = s * centres_est @ R_align.T + t_align
    scene_size = np.linalg.norm(centres_gt - centres_gt.mean(0), axis=1).max()
    centre_errors = np.linalg.norm(aligned - centres_gt, axis=1) / scene_size
    return {
        "rotation_error_deg_median": float(np.median(angles)),
        "rotation_error_deg_max": float(angles.max()),
        "centre_error_relative_median": float(np.median(centre_errors)),
        "scene_size": float(scene_size),
    }


# ---------------------------------------------------------------------------------------
# Running the job
# ---------------------------------------------------------------------------------------


def run_job(images: Path, out: Path, job_args: list[str]) -> tuple[float, dict, subprocess.CompletedProcess]:
    """Run ``python -m backend sfm`` as a subprocess; (wall seconds, contention, process)."""
    command = [sys.executable, "-m", "backend", "sfm", "--images", str(images), "--out", str(out), *job_args]
    with Contention() as c:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    return c.result["wall_seconds"], c.result, proc


def exif_focal_px(images: Path) -> float | None:
    """The focal length COLMAP reads from the first photo's EXIF (its start value), if any."""
    try:
        import pycolmap
    except ImportError:
        return None
    first = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))[0]
    camera = pycolmap.infer_camera_from_image(first)
    return float(camera.mean_focal_length()) if camera.has_prior_focal_length else None


def focal_check(model: Path, focal_ref: float) -> dict | None:
    """The data's own verdict on a reference focal length: the final bundle adjustment run
    again (the job's Cauchy loss at 0.5 px, principal point held, distortion
    refined) with the focal free and with it held at ``focal_ref``; the mean reprojection
    error of each. A reference the photos agree with costs (almost) nothing when held."""
    try:
        import pycolmap
    except ImportError:
        return None
    errors = {}
    for label, held in (("free", None), ("held_at_reference", focal_ref)):
        rec = pycolmap.Reconstruction(str(model))
        for camera in rec.cameras.values():
            if held is not None:
                params = np.array(camera.params)
                for index in camera.focal_length_idxs():
                    params[index] = held
                camera.params = params
        options = pycolmap.BundleAdjustmentOptions()
        options.refine_focal_length = held is None
        options.refine_principal_point = False
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        options.ceres.loss_function_scale = 0.5
        options.print_summary = False
        pycolmap.bundle_adjustment(rec, options)
        errors[label] = float(rec.compute_mean_reprojection_error())
    return {"mean_reprojection_error_px_focal_free": errors["free"],
            "mean_reprojection_error_px_focal_at_reference": errors["held_at_reference"]}


def bench_dataset(name: str, spec: dict, repeat: int, job_args: list[str]) -> dict | None:
    images = spec["images"]
    if not images.is_dir():
        print(f"note: {images} is absent: {name} is skipped")
        return None
    runs = []
    with tempfile.TemporaryDirectory(prefix=f"recon-bench-sfm-{name}-") as tmp:
        for index in range(repeat):
            out = Path(tmp) / f"run{index}"
            print(f"{name}: run {index + 1} of {repeat} ...", flush=True)
            wall, contention, proc = run_job(images, out, job_args)
            if proc.returncode != 0:
                return {"failed": True, "returncode": proc.returncode, "stderr_tail": proc.stderr[-3000:]}
            summary = json.loads((out / "manifest.json").read_text())["summary"]
            run = {"wall_seconds": wall, "contention": contention, "summary": summary}
            with np.load(out / "cameras.npz") as cameras:
                run["focal_px"] = float(np.median(cameras["K"][:, 0, 0]))
                if spec["truth"] is not None:
                    names = [str(n) for n in cameras["names"]]
                    run["poses"] = pose_errors(names, cameras["w2c"], load_templering_truth(spec["truth"]))
            runs.append(run)
        check = focal_check(out / "model", spec["focal_px"])
    last = runs[-1]
    summary = last["summary"]
    result = {
        "images": str(images),
        "job_args": job_args,
        "runs": runs,
        "wall_seconds_median": statistics.median(r["wall_seconds"] for r in runs),
        "wall_seconds_all": [r["wall_seconds"] for r in runs],
        "cpu_seconds_median": statistics.median(r["contention"]["own_cpu_seconds"] for r in runs),
        "stage_seconds": {stage: statistics.median(r["summary"]["seconds"].get(stage, float("nan")) for r in runs)
                          for stage in STAGES},
        "photos": summary["photos"],
        "registered": summary["registered"],
        "mean_reprojection_error_px": summary["mean_reprojection_error_px"],
        "focal_px": last["focal_px"],
        "focal_reference_px": spec["focal_px"],
        "focal_error_percent": 100.0 * (last["focal_px"] / spec["focal_px"] - 1.0),
        "exif_focal_px": exif_focal_px(images),
        "other_cpu_cores_max": max(r["contention"].get("other_cpu_cores", 0.0) for r in runs),
    }
    if "poses" in last:
        result["poses"] = last["poses"]
    if check is not None:
        result["focal_check"] = check
    result["meets"] = {
        "registered": result["registered"] == spec["photos"],
        "seconds": result["wall_seconds_median"] <= TARGETS["seconds_max"],
        "focal": abs(result["focal_error_percent"]) <= TARGETS["focal_error_percent_max"],
    }
    if "poses" in result:
        result["meets"]["rotation"] = result["poses"]["rotation_error_deg_median"] <= TARGETS["rotation_error_deg_max"]
    result["meets_all"] = all(result["meets"].values())
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def dataset_rows(name: str, spec: dict, result: dict | None, repeat: int) -> list[tuple[str, ...]]:
    if result is None:
        return [(name, "skipped (data absent)", "", "", "")]
    if result.get("failed"):
        return [(name, f"job failed (exit {result['returncode']})", "", "", "FAIL")]
    meets = result["meets"]
    walls = ", ".join(f"{w:.1f}" for w in result["wall_seconds_all"])
    timing = "whole job, wall" + (f" (median of {repeat}: {walls})" if repeat > 1 else "")
    rows = [
        (name, timing, f"{result['wall_seconds_median']:.1f} s", f"<= {TARGETS['seconds_max']:g} s", verdict(meets["seconds"])),
        *((name, f"  {stage}", f"{result['stage_seconds'][stage]:.1f} s", "", "") for stage in STAGES),
        (name, "whole job, CPU time (all cores)", f"{result['cpu_seconds_median']:.1f} s", "", ""),
        (name, "registered", f"{result['registered']} / {result['photos']}", f"{spec['photos']}", verdict(meets["registered"])),
    ]
    if "poses" in result:
        poses = result["poses"]
        rows += [
            (name, "rotation error, median (aligned)", f"{poses['rotation_error_deg_median']:.3f} deg",
             f"<= {TARGETS['rotation_error_deg_max']:g} deg", verdict(meets["rotation"])),
            (name, "rotation error, largest", f"{poses['rotation_error_deg_max']:.3f} deg", "", ""),
            (name, "centre error, median / scene size", f"{100 * poses['centre_error_relative_median']:.2f} %", "", ""),
        ]
    rows += [
        (name, f"focal length (reference {spec['focal_px']:g})", f"{result['focal_px']:.1f} px", "", ""),
        (name, "focal error", f"{result['focal_error_percent']:+.2f} %",
         f"<= {TARGETS['focal_error_percent_max']:g} %", verdict(meets["focal"])),
        *([(name, "focal length from EXIF (start value)", f"{result['exif_focal_px']:.1f} px", "", "")]
          if result["exif_focal_px"] else []),
        (name, "mean reprojection error", f"{result['mean_reprojection_error_px']:.3f} px", "", ""),
        *([(name, "  re-adjusted, focal free", f"{result['focal_check']['mean_reprojection_error_px_focal_free']:.3f} px", "", ""),
           (name, "  re-adjusted, focal held at reference",
            f"{result['focal_check']['mean_reprojection_error_px_focal_at_reference']:.3f} px", "", "")]
          if "focal_check" in result else []),
        (name, "other processes' CPU during the job", f"{result['other_cpu_cores_max']:.2f} cores", "< 0.1 cores",
         "clean" if result["other_cpu_cores_max"] < 0.1 else "NOISY"),
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--repeat", type=int, default=1, help="runs per dataset (the wall time is their median)")
    parser.add_argument("--only", choices=tuple(DATASETS), action="append", help="run only this dataset (repeatable)")
    parser.add_argument("--job-args", default="", help='extra job options, e.g. "--matcher retrieval"')
    args = parser.parse_args()
    job_args = shlex.split(args.job_args)

    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "targets": TARGETS,
        "job_args": job_args,
    }
    try:
        import pycolmap

        report["machine"]["pycolmap"] = pycolmap.__version__
    except ImportError:
        report["machine"]["pycolmap"] = None
    rows: list[tuple[str, ...]] = []
    report["datasets"] = {}
    for name, spec in DATASETS.items():
        if args.only and name not in args.only:
            continue
        result = bench_dataset(name, spec, max(1, args.repeat), job_args)
        report["datasets"][name] = result
        rows += dataset_rows(name, spec, result, max(1, args.repeat))
    ran = [r for r in report["datasets"].values() if r is not None]
    report["all_targets_met"] = bool(ran) and all(r.get("meets_all", False) for r in ran)
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["table"] = table(rows)
    m = report["machine"]
    print()
    load = f", load average at start {m['load_average_at_start'][0]:.2f}" if m["load_average_at_start"] else ""
    extra = f", job options: {' '.join(job_args)}" if job_args else ", job defaults"
    print(f"{m['platform']}, {m['cpu_count']} CPUs, pycolmap {m['pycolmap']}{load}{extra}")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
