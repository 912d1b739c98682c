# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the body fit (job ``body``) with the default model, Anny.

Run from the repository root::

    .venv/bin/python bench/body.py [--out bench/results/body.json] [--cases 10]

Measurements:

1. ``synthetic``: random plausible poses (the fit's prior, 0.7 of its spread, inside the
   joint limits) and shapes (adults: gender 0..1, age 0.6..1, muscle and weight 0.2..0.8,
   height 0.25..0.75, proportions 0.3..0.7) of Anny, turned to a random heading, seen by 1
   and by 2 and 4 known cameras (3.5 m away, 90 degrees apart, 800 px focal length, 640 x 480)
   with 2 px Gaussian noise on the keypoints, and the face's keypoints left out where an
   annotator would not see them (head turned away). Median 2D error of the fitted keypoints
   against the noiseless truth (target <= 3 px); mean error of the 17 keypoints in 3D after
   a Procrustes (similarity) alignment, in mm (targets: 60 one view, 30 four views), and
   the same for the 16 fitted joints (bone heads); seconds per fit, and per extra view
   (from 2 to 4 views: several views are fitted from triangulated keypoints, without the
   second facing a single photo may try; and per optimisation step, 1 to 16 views).
2. ``real photo``: ``../shared/data/people/000000000785.jpg`` with its COCO ground truth:
   fitted from the ground-truth keypoints, median 2D error of the fitted keypoints (target
   <= 8 px); MediaPipe's own median error against the ground truth (<= 10 px expected),
   and the fit from MediaPipe's keypoints against the ground truth. Skipped without the data.

The fit runs on one thread (``fit_body`` sets it); other processes on the machine are
measured as in ``bench/deform.py`` (cores busy elsewhere while a section ran).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RECON_CACHE_DIR", str(ROOT / ".venv" / "recon-cache"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import Contention, table, verdict, write_report  # noqa: E402 - bench/_common.py

from backend.body.anny_model import load_anny  # noqa: E402
from backend.body.fit import FitSettings, Rig, View, fit_body  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "people"
DEFAULT_OUT = ROOT / "bench" / "results" / "body.json"
TARGETS = {
    "synthetic_median_2d_px_max": 3.0,
    "synthetic_pa_mm_one_view_max": 60.0,
    "synthetic_pa_mm_four_views_max": 30.0,
    "real_fit_median_2d_px_max": 8.0,
    "real_detector_median_2d_px_max": 10.0,
    "seconds_per_photo_max": 10.0,
}
K_SYNTHETIC = np.array([[800.0, 0.0, 320.0], [0.0, 800.0, 240.0], [0.0, 0.0, 1.0]])


def camera_at(angle: float, distance: float = 3.5) -> np.ndarray:
    """World-to-camera [4, 4] (OpenCV) of a camera on a circle around the origin, looking at it."""
    centre = np.array([distance * math.sin(angle), -distance * math.cos(angle), 0.1])
    forward = -centre / np.linalg.norm(centre)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(forward, x), forward])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return w2c


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    return cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]


def procrustes_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance [same units] after the similarity that best maps ``estimate`` onto ``truth``."""
    mu_e, mu_t = estimate.mean(0), truth.mean(0)
    xe, xt = estimate - mu_e, truth - mu_t
    U, S, Vt = np.linalg.svd(xt.T @ xe / len(xe))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt)) or 1.0
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xe ** 2).sum(1).mean()
    return float(np.linalg.norm(s * xe @ R.T + mu_t - truth, axis=1).mean())


def synthetic_case(model, rig: Rig, rng: np.random.Generator):
    """(world keypoints [17, 3], world joints [F, 3], heading) of a random plausible body."""
    coefs = rig.mean + torch.as_tensor(rng.normal(size=tuple(rig.mean.shape)), dtype=torch.float32) * rig.sigma * 0.7
    coefs = torch.maximum(torch.minimum(coefs, rig.hi), rig.lo)
    lo, hi = np.array([0.0, 0.6, 0.2, 0.2, 0.25, 0.3]), np.array([1.0, 1.0, 0.8, 0.8, 0.75, 0.7])
    shape = torch.as_tensor(rng.uniform(lo, hi)[None], dtype=torch.float32)
    with torch.no_grad():
        out = model(shape, rig.full_rotvecs(coefs)[None])
    heading = rng.uniform(-math.pi, math.pi)
    c, s = math.cos(heading), math.sin(heading)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    keypoints = out.keypoints[0].numpy().astype(np.float64) @ R.T
    joints = out.joints[0, rig.bones].numpy().astype(np.float64) @ R.T
    return keypoints, joints


def face_confidence(keypoints: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Confidences [17] as an annotator gives them: nose and eyes only when the face turns
    towards the camera, an ear only when it is not behind the head; the body's keypoints
    always (COCO labels hidden joints too)."""
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    head = (keypoints[3] + keypoints[4]) / 2
    to_camera = (centre - head) / np.linalg.norm(centre - head)
    confidence = np.ones(17)
    if (keypoints[0] - head) @ to_camera <= 0:
        confidence[:3] = 0.0
    for ear in (3, 4):
        if (keypoints[ear] - head) @ to_camera < -0.02:
            confidence[ear] = 0.0
    return confidence


def fitted_joints(model, rig: Rig, result) -> np.ndarray:
    shape = torch.as_tensor(result.shape, dtype=torch.float32)[None]
    rotvecs = torch.as_tensor(result.rotvecs, dtype=torch.float32)[None]
    with torch.no_grad():
        joints = model(shape, rotvecs).joints[0, rig.bones].numpy().astype(np.float64)
    M = result.placement
    return joints @ M[:3, :3].T + M[:3, 3]


def bench_synthetic(model, cases: int, seed: int, settings: FitSettings) -> dict:
    rig = Rig(model)
    rng = np.random.default_rng(seed)
    out = {}
    bodies = [synthetic_case(model, rig, rng) for _ in range(cases)]
    noise = [rng.normal(size=(4, 17, 2)) * 2.0 for _ in range(cases)]
    offsets = [rng.uniform(0, 2 * math.pi) for _ in range(cases)]
    for views_n in (1, 2, 4):
        errors_2d, pa_keypoints, pa_joints, seconds = [], [], [], []
        for (keypoints, joints), noisy, offset in zip(bodies, noise, offsets, strict=True):
            cameras = [camera_at(offset + i * math.pi / 2) for i in range(views_n)]
            views = []
            for i, w2c in enumerate(cameras):
                uv = project(keypoints, K_SYNTHETIC, w2c) + noisy[i]
                observed = np.concatenate([uv, face_confidence(keypoints, w2c)[:, None]], 1)
                views.append(View(f"view{i}", K_SYNTHETIC, w2c if views_n > 1 else np.eye(4), 640, 480, observed))
            t0 = time.perf_counter()
            result = fit_body(model, views, settings, cameras_known=views_n > 1)
            seconds.append(time.perf_counter() - t0)
            for i, w2c in enumerate(cameras):
                clean = project(keypoints, K_SYNTHETIC, w2c)
                errors_2d.extend(np.linalg.norm(result.keypoints_2d[i] - clean, axis=1).tolist())
            pa_keypoints.append(1000 * procrustes_error(result.keypoints_3d, keypoints))
            pa_joints.append(1000 * procrustes_error(fitted_joints(model, rig, result), joints))
        out[views_n] = {
            "median_2d_px": float(np.median(errors_2d)),
            "pa_keypoints_mm_mean": float(np.mean(pa_keypoints)),
            "pa_keypoints_mm_median": float(np.median(pa_keypoints)),
            "pa_keypoints_mm_max": float(np.max(pa_keypoints)),
            "pa_joints_mm_mean": float(np.mean(pa_joints)),
            "seconds_mean": float(np.mean(seconds)),
            "seconds_median": float(np.median(seconds)),
            "seconds_max": float(np.max(seconds)),
            "cases": cases,
        }
    return out


def bench_step_cost(model, settings: FitSettings, repetitions: int = 100) -> dict:
    """Milliseconds of one loss-and-gradient evaluation of the body stage with 1, 4 and 16
    views: what each extra view adds to every optimisation step."""
    from backend.body.fit import _Problem

    rig = Rig(model)
    keypoints, _ = synthetic_case(model, rig, np.random.default_rng(1))
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fit_body runs
    try:
        for n in (1, 4, 16):
            views = []
            for i in range(n):
                w2c = camera_at(2 * math.pi * i / n)
                uv = project(keypoints, K_SYNTHETIC, w2c)
                views.append(View(f"v{i}", K_SYNTHETIC, w2c, 640, 480, np.concatenate([uv, np.ones((17, 1))], 1)))
            problem = _Problem(rig, views, settings, free_scale=True)

            def step(problem=problem):
                pose, limits, shape = problem.prior_terms()
                world = problem.world_keypoints()
                loss = problem.data_term(world) + pose + limits + shape + problem.face_term(world)
                loss.backward()

            for _ in range(5):
                step()
            t0 = time.perf_counter()
            for _ in range(repetitions):
                step()
            out[n] = 1000 * (time.perf_counter() - t0) / repetitions
    finally:
        torch.set_num_threads(threads)
    out["per_extra_view_ms"] = (out[16] - out[1]) / 15
    return out


def bench_real(model, settings: FitSettings) -> dict | None:
    photo, truth_file = DATA / "000000000785.jpg", DATA / "000000000785_keypoints.json"
    if not (photo.is_file() and truth_file.is_file()):
        return None
    from PIL import Image

    from backend.body.keypoints import MediaPipeDetector, read_keypoint_file
    from backend.jobs.body import _default_K

    truth = list(read_keypoint_file(truth_file).values())[0][0].keypoints
    image = np.asarray(Image.open(photo).convert("RGB"))
    height, width = image.shape[:2]
    K = _default_K(width, height, 35.0)
    out: dict = {}
    t0 = time.perf_counter()
    result = fit_body(model, [View(photo.name, K, np.eye(4), width, height, truth)], settings)
    out["fit_from_truth_seconds"] = time.perf_counter() - t0
    out["fit_from_truth_median_px"] = float(np.median(np.linalg.norm(result.keypoints_2d[0] - truth[:, :2], axis=1)))
    out["fit_from_truth_facing"] = result.facing
    t0 = time.perf_counter()
    with MediaPipeDetector() as detector:
        out["detector_start_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        people = detector.detect(image)
        out["detector_seconds"] = time.perf_counter() - t0
    if not people:
        out["detector_found_person"] = False
        return out
    detected = people[0].keypoints
    out["detector_found_person"] = True
    out["detector_people"] = len(people)
    out["detector_median_px"] = float(np.median(np.linalg.norm(detected[:, :2] - truth[:, :2], axis=1)))
    t0 = time.perf_counter()
    result = fit_body(model, [View(photo.name, K, np.eye(4), width, height, detected)], settings)
    out["fit_from_detector_seconds"] = time.perf_counter() - t0
    out["fit_from_detector_median_px_vs_truth"] = float(
        np.median(np.linalg.norm(result.keypoints_2d[0] - truth[:, :2], axis=1)))
    out["fit_from_detector_median_px_vs_detections"] = float(result.errors_px[0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--cases", type=int, default=10, help="synthetic bodies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = FitSettings()  # the job's defaults
    report: dict = {"machine": {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "load_average_at_start": list(os.getloadavg()),
    }, "targets": TARGETS, "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__}}
    rows: list[tuple[str, ...]] = []
    contention: dict[str, float | None] = {}
    started = time.perf_counter()

    print("loading Anny ...", flush=True)
    t0 = time.perf_counter()
    model = load_anny()
    report["model_load_seconds"] = time.perf_counter() - t0
    rows.append(("model", "Anny load (model data cached)", f"{report['model_load_seconds']:.2f} s", "", ""))

    print(f"synthetic, {args.cases} bodies ...", flush=True)
    with Contention() as c:
        synthetic = bench_synthetic(model, args.cases, args.seed, settings)
    contention["synthetic"] = c.cores
    report["synthetic"] = synthetic
    one, two, four = synthetic[1], synthetic[2], synthetic[4]
    for n, s in ((1, one), (2, two), (4, four)):
        label = "1 view" if n == 1 else f"{n} views"
        rows.append((f"synthetic {label}", "median 2D keypoint error", f"{s['median_2d_px']:.2f} px",
                     f"<= {TARGETS['synthetic_median_2d_px_max']:g} px",
                     verdict(s["median_2d_px"] <= TARGETS["synthetic_median_2d_px_max"])))
        target = {1: TARGETS["synthetic_pa_mm_one_view_max"], 4: TARGETS["synthetic_pa_mm_four_views_max"]}.get(n)
        rows.append((f"synthetic {label}", "keypoints 3D after Procrustes, mean", f"{s['pa_keypoints_mm_mean']:.1f} mm",
                     f"<= {target:g} mm" if target else "", verdict(s["pa_keypoints_mm_mean"] <= target) if target else ""))
        rows.append((f"synthetic {label}", "keypoints 3D after Procrustes, worst body",
                     f"{s['pa_keypoints_mm_max']:.1f} mm", "", ""))
        rows.append((f"synthetic {label}", "fitted joints after Procrustes, mean", f"{s['pa_joints_mm_mean']:.1f} mm",
                     "", ""))
        rows.append((f"synthetic {label}", "seconds per fit (mean / max)",
                     f"{s['seconds_mean']:.2f} / {s['seconds_max']:.2f} s", "", ""))
    per_photo = one["seconds_mean"]
    per_extra = (four["seconds_mean"] - two["seconds_mean"]) / 2
    report["seconds_per_photo"] = per_photo
    report["seconds_per_extra_view"] = per_extra
    rows.append(("speed", "seconds per photo (1 view, both facings when unsure)", f"{per_photo:.2f} s",
                 f"<= {TARGETS['seconds_per_photo_max']:g} s", verdict(per_photo <= TARGETS["seconds_per_photo_max"])))
    rows.append(("speed", "seconds per extra view, whole fits ((4 views - 2) / 2)", f"{per_extra:.2f} s", "", ""))
    print("step cost ...", flush=True)
    with Contention() as c:
        steps = bench_step_cost(model, settings)
    contention["step cost"] = c.cores
    report["step_cost_ms"] = steps
    rows.append(("speed", "one step: 1 / 4 / 16 views", f"{steps[1]:.2f} / {steps[4]:.2f} / {steps[16]:.2f} ms", "", ""))
    rows.append(("speed", "one step: per extra view", f"{steps['per_extra_view_ms']:.3f} ms", "", ""))

    print("real photo ...", flush=True)
    with Contention() as c:
        real = bench_real(model, settings)
    contention["real photo"] = c.cores
    report["real_photo"] = real
    if real is None:
        rows.append(("real photo", "skipped (../shared/data/people absent)", "", "", ""))
    else:
        rows.append(("real photo", "fit from ground truth: median 2D error", f"{real['fit_from_truth_median_px']:.2f} px",
                     f"<= {TARGETS['real_fit_median_2d_px_max']:g} px",
                     verdict(real["fit_from_truth_median_px"] <= TARGETS["real_fit_median_2d_px_max"])))
        rows.append(("real photo", "fit from ground truth: seconds", f"{real['fit_from_truth_seconds']:.2f} s", "", ""))
        if real.get("detector_found_person"):
            rows.append(("real photo", "MediaPipe vs ground truth: median error", f"{real['detector_median_px']:.2f} px",
                         f"<= {TARGETS['real_detector_median_2d_px_max']:g} px",
                         verdict(real["detector_median_px"] <= TARGETS["real_detector_median_2d_px_max"])))
            rows.append(("real photo", "MediaPipe: seconds (start / detect)",
                         f"{real['detector_start_seconds']:.2f} / {real['detector_seconds']:.2f} s", "", ""))
            rows.append(("real photo", "fit from MediaPipe vs ground truth",
                         f"{real['fit_from_detector_median_px_vs_truth']:.2f} px", "", ""))
        else:
            rows.append(("real photo", "MediaPipe found no person", "", "", "FAIL"))
    for section, cores in contention.items():
        if cores is not None:
            rows.append(("contention", f"other processes during {section}", f"{cores:.2f} cores", "< 0.1 cores",
                         "clean" if cores < 0.1 else "NOISY"))
    report["contention_cores"] = contention
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    report["total_seconds"] = time.perf_counter() - started
    report["table"] = table(rows)
    m = report["machine"]
    print()
    print(f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, load average at start "
          f"{m['load_average_at_start'][0]:.2f}")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
