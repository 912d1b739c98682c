# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of splat training (``backend.splat.train``, what the ``splat`` job runs):
held-out PSNR against training minutes on this machine's CPU.

Run from the repository root::

    .venv/bin/python bench/splat.py [--minutes 10] [--scenes lego,templering] [--out bench/results/splat.json]

Scenes (each skipped when ``../shared/data`` lacks it):

- ``lego``: NeRF-synthetic lego, ``transforms_train.json``, composited on white, scaled to
  200 x 200; every 10th view held out (90 to train, 10 to measure), 50,000 random starting
  points carved by the photos' silhouettes (the set has no points). Target: 28 dB or more
  within 10 minutes.
- ``templering``: Middlebury templeRing, 47 photos at 320 x 240 (half size) on black,
  cameras and starting points from our own ``sfm`` job (run once and kept under
  ``bench/results/work/``); every 8th view held out (41 / 6).

Training is time-budgeted: ``max_seconds`` = the minutes given, so the schedules (position
learning rate, densification until half-way, SH degree) span the budget. At every whole
minute of training time the held-out views are rendered and scored (mean PSNR and SSIM);
that time is not counted as training. The machine is shared: each scene records the load
average and the CPU time other processes took while it trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402 - bench/_common.py
import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.sfm.scene import load_scene  # noqa: E402
from backend.splat import _kernels  # noqa: E402
from backend.splat.train import (  # noqa: E402
    Trainer,
    TrainSettings,
    initial_splats,
    load_views,
    random_points,
    torch_threads,
)

DATA = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results" / "splat.json"
WORK = ROOT / "bench" / "results" / "work"
TARGETS = {"lego_psnr_min": 28.0, "lego_minutes_max": 10.0}


class Contention(_common.Contention):
    """bench/_common.py's measure of other processes' CPU time, plus the load average
    sampled at each :meth:`sample`."""

    def __enter__(self) -> Contention:
        self.loads = [os.getloadavg()[0]]
        return super().__enter__()

    def sample(self) -> None:
        self.loads.append(os.getloadavg()[0])

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.result = {k: round(v, 2) for k, v in self.result.items()}
        self.result["load_average_min_mean_max"] = [round(min(self.loads), 2), round(float(np.mean(self.loads)), 2),
                                                    round(max(self.loads), 2)]


def train_curve(name: str, views, xyz, rgb, settings: TrainSettings, minutes: float) -> dict:
    """Train for ``minutes`` of training time, scoring the held-out views every minute."""
    trainer = Trainer(views, settings, initial_splats(xyz, rgb, settings.sh_degree, settings.init_opacity))
    curve = []
    marks = [m for m in range(1, int(minutes) + 1)]
    if not marks or marks[-1] < minutes:
        marks.append(minutes)
    with torch_threads(1), Contention() as contention:
        before = trainer.evaluate()
        curve.append({"minutes": 0.0, "iteration": 0, "gaussians": len(trainer), "psnr": round(before["psnr"], 3),
                      "ssim": round(before["ssim"], 4)})
        for mark in marks:
            while not trainer.done() and trainer.seconds < 60.0 * mark:
                trainer.train_step()
            metrics = trainer.evaluate()
            contention.sample()
            point = {"minutes": round(trainer.seconds / 60.0, 2), "iteration": trainer.step, "gaussians": len(trainer),
                     "psnr": round(metrics["psnr"], 3), "ssim": round(metrics["ssim"], 4),
                     "load_average": round(os.getloadavg()[0], 2)}
            curve.append(point)
            print(f"  {name}: {point}", flush=True)
    return {"curve": curve, "final": curve[-1], "contention": contention.result,
            "train_views": len(views.train), "held_out_views": len(views.held_out),
            "resolution": [views.widths[0], views.heights[0]], "start_gaussians": int(len(xyz)),
            "rasterizer": trainer.backend, "kernel_threads": _kernels.get_threads()}


def bench_lego(minutes: float, seed: int) -> dict | None:
    path = DATA / "lego" / "transforms_train.json"
    if not path.is_file():
        print(f"note: {path} is absent: lego skipped")
        return None
    started = time.perf_counter()
    views = load_views(load_scene(path), resolution_scale=0.25, hold_out_every=10)
    settings = TrainSettings(iterations=1_000_000, max_seconds=60.0 * minutes, background="white", sh_degree=3,
                             random_points=50_000, seed=seed)
    xyz, rgb = random_points(views, settings.random_points, np.random.default_rng(seed))
    prepare = time.perf_counter() - started
    result = train_curve("lego", views, xyz, rgb, settings, minutes)
    result.update(prepare_seconds=round(prepare, 1), start="50,000 random points inside the silhouettes",
                  background="white")
    within = [p for p in result["curve"] if p["minutes"] <= TARGETS["lego_minutes_max"] + 1e-6]
    result["best_psnr_within_10_minutes"] = max(p["psnr"] for p in within)
    result["meets_target"] = bool(result["best_psnr_within_10_minutes"] >= TARGETS["lego_psnr_min"])
    return result


def templering_cameras() -> Path:
    """Our own sfm job on templeRing, run once and kept."""
    from backend.jobs.runner import run_job

    job = WORK / "templering_sfm"
    if (job / "cameras.npz").is_file():
        return job
    print("  templering: solving cameras with the sfm job (once)", flush=True)
    outcome, fields = run_job("sfm", {}, {"images": str(DATA / "templering")}, "bench-sfm", job,
                              lambda *_: None, threading.Event())
    if outcome != "result":
        raise RuntimeError(f"sfm on templeRing failed: {fields}")
    return job


def bench_templering(minutes: float, seed: int) -> dict | None:
    if not (DATA / "templering").is_dir():
        print(f"note: {DATA / 'templering'} is absent: templeRing skipped")
        return None
    started = time.perf_counter()
    scene = load_scene(templering_cameras())
    views = load_views(scene, resolution_scale=0.5, hold_out_every=8)
    settings = TrainSettings(iterations=1_000_000, max_seconds=60.0 * minutes, background="black", sh_degree=3,
                             seed=seed)
    xyz = np.asarray(scene.points["xyz"], np.float64)
    rgb = np.asarray(scene.points["rgb"], np.float64) / 255.0
    prepare = time.perf_counter() - started
    result = train_curve("templering", views, xyz, rgb, settings, minutes)
    result.update(prepare_seconds=round(prepare, 1), start=f"{len(xyz):,} points of our sfm job",
                  cameras="our sfm job (pycolmap, simple_radial, undistorted for training)", background="black")
    return result


def table(results: dict) -> str:
    header = ("scene", "minutes", "iterations", "Gaussians", "held-out PSNR", "SSIM", "load")
    rows = []
    for name, result in results.items():
        if result:
            for p in result["curve"]:
                rows.append((name, f"{p['minutes']:.2f}", p["iteration"], f"{p['gaussians']:,}", f"{p['psnr']:.2f}",
                             f"{p['ssim']:.3f}", p.get("load_average", "")))
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per scene")
    parser.add_argument("--scenes", default="lego,templering", help="comma-separated: lego, templering")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "kernel_threads": _kernels.get_threads(),
                    "load_average_at_start": list(os.getloadavg())},
        "targets": TARGETS, "minutes": args.minutes,
    }
    runners = {"lego": bench_lego, "templering": bench_templering}
    results = {}
    for name in args.scenes.split(","):
        print(f"{name}:", flush=True)
        results[name] = runners[name](args.minutes, args.seed)
    report["scenes"] = results
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    print()
    print(f"held-out PSNR against training minutes ({os.cpu_count()} cores)")
    print(table(results))
    lego = results.get("lego")
    if lego:
        print(f"lego: best {lego['best_psnr_within_10_minutes']:.2f} dB within 10 minutes "
              f"(target {TARGETS['lego_psnr_min']} dB): {'pass' if lego['meets_target'] else 'FAIL'}")
    for name, result in results.items():
        if result:
            c = result["contention"]
            print(f"{name}: load average {c['load_average_min_mean_max']} (min, mean, max), "
                  f"other processes {c.get('other_cpu_cores', '?')} cores")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
