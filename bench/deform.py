# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the mesh fit (job ``deform``) and of its chamfer distance.

Run from the repository root::

    .venv/bin/python bench/deform.py [--out bench/results/deform.json] [--iterations N]

Measurements (one run):

1. ``pedestrian``: the job's defaults (level-4 ico-sphere, ``FitSettings()``) on the book's
   ``pedestrian.ply``; fit seconds, surface chamfer (10,000 samples, mean of 5 seeds) and mean
   dihedral angle, against the book's own result ``deform1.ply``. Skipped without the data.
2. ``tutorial load``: PyTorch3D's "deform a source mesh" tutorial sizes: level-4 ico-sphere,
   5,000 surface samples per iteration against a 5,000-point cloud (``cow.ply``'s surface, or
   a procedural blob), 2,000 iterations. Plus a per-part breakdown of a short instrumented loop.
3. ``chamfer 5k x 5k``: ``losses.chamfer_distance`` against the dense ``torch.cdist`` version,
   forward + backward: median time, and peak memory, each variant in its own subprocess; two
   inputs: the fit's start (cloud vs unit sphere) and a converged state (cloud vs its surface).

Threads: ``backend.deform.fit`` does not set torch's thread count, so neither does this
script (torch's default is what the product runs with). numba compiles (or loads from its
cache) the nearest-neighbour grid on first use; a tiny fit warms it up first, timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import Contention, table, verdict, write_report  # noqa: E402 - bench/_common.py

from backend.deform.fit import (  # noqa: E402
    FitSettings,
    fit_mesh_to_points,
    icosphere,
    mean_dihedral_degrees,
    mean_surface_chamfer,
    normalization,
)
from backend.geometry import losses  # noqa: E402
from backend.geometry.io import read_mesh, read_points  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pedestrian"
DEFAULT_OUT = ROOT / "bench" / "results" / "deform.json"
TUTORIAL_ITERATIONS = 2000
TARGETS = {
    "tutorial_seconds_max": 20.0,
    "chamfer_speedup_min": 20.0,
    "chamfer_memory_ratio_min": 20.0,
}
CHAMFER_SEEDS = (0, 1, 2, 3, 4)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def procedural_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A smooth genus-0 blob: a level-5 ico-sphere with radially displaced vertices."""
    v, f = icosphere(5)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    r = 1.0 + 0.25 * np.sin(3.0 * x) * np.cos(2.0 * y) + 0.15 * np.sin(4.0 * z + 1.0) + 0.3 * np.clip(x, 0, None) ** 2
    return (v * r[:, None] * np.array([1.4, 1.0, 0.8])).astype(np.float32), f


def tutorial_mesh() -> tuple[np.ndarray, np.ndarray, str]:
    cow = DATA / "cow.ply"
    if cow.is_file():
        vertices, faces = read_mesh(cow)
        return vertices, faces, "cow.ply (../shared/data/pedestrian)"
    vertices, faces = procedural_mesh()
    return vertices, faces, "procedural blob (ico-sphere level 5, radially displaced)"


def surface_samples(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int) -> np.ndarray:
    with torch.no_grad():
        points = losses.sample_points_from_mesh(
            torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.long), n,
            torch.Generator().manual_seed(seed),
        )
    return points.numpy().astype(np.float32)


def chamfer_dense(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, y).square()
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()


VARIANTS = {"ours": losses.chamfer_distance, "dense": chamfer_dense}


def chamfer_inputs(mesh_vertices: np.ndarray, mesh_faces: np.ndarray, target: np.ndarray) -> dict[str, tuple]:
    """Two 5k x 5k cases, both in the fit's normalised frame: ``start``, the cloud against
    samples of the unit sphere (the fit's first steps: many queries far from every point);
    ``converged``, the cloud against fresh samples of the same surface (most of the fit)."""
    center, scale = normalization(target)
    x = ((target - center) / scale).astype(np.float32)
    sv, sf = icosphere(4)
    return {
        "start": (x, surface_samples(sv, sf, len(x), 1), "cloud vs unit-sphere samples"),
        "converged": (x, surface_samples((mesh_vertices - center) / scale, mesh_faces, len(x), 1),
                      "cloud vs same-surface samples"),
    }


def fwd_bwd(fn, x: torch.Tensor, y: torch.Tensor) -> float:
    x.grad = y.grad = None
    loss = fn(x, y)
    loss.backward()
    return float(loss.detach())


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in kB (Linux), else empty."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def reset_hwm() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def memory_child(variant: str, inputs: str) -> None:
    """Hidden mode: peak memory of one forward + backward of ``variant``; prints JSON."""
    fn = VARIANTS[variant]
    data = np.load(inputs)
    x = torch.tensor(data["x"], requires_grad=True)
    y = torch.tensor(data["y"], requires_grad=True)
    # Warm-up on tiny inputs: loads the code paths (numba grid, autograd, thread pools) so
    # that their one-off memory is in the baseline, without pre-growing the heap at full size.
    xs = torch.tensor(data["x"][:64], requires_grad=True)
    ys = torch.tensor(data["y"][:64], requires_grad=True)
    for _ in range(3):
        fwd_bwd(fn, xs, ys)
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_reset = reset_hwm()
    before = proc_status()
    loss = fwd_bwd(fn, x, y)
    after = proc_status()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "variant": variant,
        "loss": loss,
        "ru_maxrss_before_kb": maxrss_before,
        "ru_maxrss_after_kb": maxrss_after,
        "ru_maxrss_increase_mb": (maxrss_after - maxrss_before) / 1024.0,
    }
    if hwm_reset and "VmRSS" in before and "VmHWM" in after:
        result.update(
            rss_before_kb=before["VmRSS"],
            hwm_after_kb=after["VmHWM"],
            peak_increase_mb=(after["VmHWM"] - before["VmRSS"]) / 1024.0,
            method="/proc/self/clear_refs reset, then VmHWM - VmRSS (peak RSS increase)",
        )
    else:
        result.update(
            peak_increase_mb=result["ru_maxrss_increase_mb"],
            method="getrusage ru_maxrss after - before (peak RSS increase)",
        )
    print("MEMORY_RESULT " + json.dumps(result))


def run_memory_child(variant: str, inputs: str, repeats: int = 3) -> dict:
    """Fresh subprocess per measurement; the median of ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_memory-child", variant, inputs],
            capture_output=True, text=True, cwd=str(ROOT), check=False,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"memory child {variant} failed:\n{proc.stdout}\n{proc.stderr}")
        runs.append(json.loads(line[len("MEMORY_RESULT "):]))
    peaks = [r["peak_increase_mb"] for r in runs]
    return {"peak_increase_mb": statistics.median(peaks), "runs_mb": peaks, "method": runs[0]["method"], "runs": runs}


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def warm_up() -> dict:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 3)).astype(np.float32)
    sv, sf = icosphere(1)
    started = time.perf_counter()
    fit_mesh_to_points(points, sv, sf, FitSettings(iterations=3, samples=200), template_in_unit_frame=True)
    return {"seconds": time.perf_counter() - started, "what": "3-iteration fit, ico-sphere level 1, 200 points (numba JIT or cache load)"}


def bench_pedestrian(iterations: int) -> dict | None:
    cloud, reference = DATA / "pedestrian.ply", DATA / "deform1.ply"
    if not cloud.is_file():
        print(f"note: {cloud} is absent: the pedestrian section is skipped")
        return None
    points = read_points(cloud)
    sv, sf = icosphere(4)
    settings = FitSettings(iterations=iterations)
    started = time.perf_counter()
    result = fit_mesh_to_points(points, sv, sf, settings, template_in_unit_frame=True)
    wall = time.perf_counter() - started
    ours = {
        "fit_seconds": result.seconds,
        "wall_seconds": wall,
        "compute_path": getattr(result, "compute_path", "unknown"),
        "surface_chamfer": mean_surface_chamfer(result.vertices, result.faces, points, CHAMFER_SEEDS),
        "mean_dihedral_deg": mean_dihedral_degrees(result.vertices, result.faces),
        "final_losses": result.final_losses,
    }
    out = {
        "cloud": str(cloud),
        "points": int(len(points)),
        "vertices": int(len(sv)),
        "faces": int(len(sf)),
        "settings": settings.__dict__,
        "chamfer_note": f"surface_chamfer, 10,000 samples, mean over seeds {list(CHAMFER_SEEDS)}, cloud units squared",
        "ours": ours,
    }
    if reference.is_file():
        rv, rf = read_mesh(reference)
        ref = {
            "mesh": str(reference),
            "surface_chamfer": mean_surface_chamfer(rv, rf, points, CHAMFER_SEEDS),
            "mean_dihedral_deg": mean_dihedral_degrees(rv, rf),
        }
        out["book_reference"] = ref
        out["at_least_as_close"] = bool(ours["surface_chamfer"] <= ref["surface_chamfer"])
        out["at_least_as_smooth"] = bool(ours["mean_dihedral_deg"] <= ref["mean_dihedral_deg"])
    else:
        print(f"note: {reference} is absent: no comparison with the book's result")
    return out


def bench_tutorial(target: np.ndarray, source: str, iterations: int) -> dict:
    sv, sf = icosphere(4)
    settings = FitSettings(iterations=iterations, samples=5000)
    started = time.perf_counter()
    result = fit_mesh_to_points(target, sv, sf, settings, template_in_unit_frame=True)
    wall = time.perf_counter() - started
    ms = 1000.0 * result.seconds / iterations
    projected = ms * TUTORIAL_ITERATIONS / 1000.0
    return {
        "cloud": source,
        "cloud_points": int(len(target)),
        "samples_per_iteration": settings.samples,
        "vertices": int(len(sv)),
        "faces": int(len(sf)),
        "iterations": iterations,
        "seconds": result.seconds,
        "wall_seconds": wall,
        "compute_path": getattr(result, "compute_path", "unknown"),
        "ms_per_iteration": ms,
        "projected_seconds_2000": projected,
        "final_losses": result.final_losses,
        "surface_chamfer": mean_surface_chamfer(result.vertices, result.faces, target, CHAMFER_SEEDS),
    }


class PartTimer:
    """Wraps functions the fit calls (module attributes and class methods, looked up at call
    time) with timers of their self time: a wrapped call nested in another counts for the
    inner part only. Whatever the product's compute path, the fit itself is what runs."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[float] = []  # child time accumulated by each open call
        self._patched: list[tuple[object, str, object]] = []
        self.on_step = None  # called after each optimizer step

    def wrap(self, owner: object, attr: str, part: str) -> bool:
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if original is None:
            return False
        clock, timer = time.perf_counter, self

        def wrapper(*args, **kwargs):
            timer._stack.append(0.0)
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = clock() - start
                child = timer._stack.pop()
                timer.parts[part] = timer.parts.get(part, 0.0) + elapsed - child
                timer.calls[part] = timer.calls.get(part, 0) + 1
                if timer._stack:
                    timer._stack[-1] += elapsed
                if part == "optimizer_step" and timer.on_step is not None:
                    timer.on_step()

        setattr(owner, attr, wrapper)
        self._patched.append((owner, attr, original))
        return True

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patched):
            setattr(owner, attr, original)
        self._patched.clear()


def tutorial_breakdown(target: np.ndarray, iterations: int) -> dict:
    """The tutorial fit run again (``fit_mesh_to_points``, same settings and seed) with timers
    around the functions it calls: the fused numba path on the CPU, or the PyTorch path."""
    from backend.geometry import fused as fused_module  # noqa: PLC0415 - optional module
    from backend.geometry import nearest as nearest_module  # noqa: PLC0415

    timer = PartTimer()
    nn_parts = ("nn_grid_build", "nn_query")
    wraps = [
        (fused_module, "_sample", "sampling"),
        (fused_module, "_chamfer_value_grad", "chamfer_value_grad"),
        (fused_module, "_scatter_bary", "chamfer_value_grad"),
        (getattr(fused_module, "SampledChamfer", None), "__call__", "chamfer_other"),
        (fused_module, "regularizers", "regularisers"),
        (losses, "sample_points_from_mesh", "sampling"),
        (losses, "chamfer_distance", "chamfer_other"),
        (losses, "nearest_neighbors", "chamfer_other"),
        (losses, "edge_loss", "regularisers"),
        (losses, "normal_consistency", "regularisers"),
        (losses, "laplacian_smoothing", "regularisers"),
        (nearest_module.PointGrid, "__init__", "nn_grid_build"),
        (nearest_module.PointGrid, "query", "nn_query"),
        (torch.Tensor, "backward", "backward"),
        (torch.optim.SGD, "step", "optimizer_step"),
    ]
    buckets = max(1, min(10, iterations))  # nearest-neighbour time per tenth of the fit
    nn_by_phase = [0.0] * buckets
    state = {"steps": 0, "nn_prev": 0.0}

    def on_step() -> None:
        nn_now = sum(timer.parts.get(p, 0.0) for p in nn_parts)
        nn_by_phase[min(state["steps"] * buckets // iterations, buckets - 1)] += nn_now - state["nn_prev"]
        state["nn_prev"] = nn_now
        state["steps"] += 1

    timer.on_step = on_step
    sv, sf = icosphere(4)
    wrapped = []
    try:
        for owner, attr, part in wraps:
            if owner is not None and timer.wrap(owner, attr, part):
                wrapped.append(f"{getattr(owner, '__name__', owner)}.{attr}")
        result = fit_mesh_to_points(target, sv, sf, FitSettings(iterations=iterations, samples=5000),
                                    template_in_unit_frame=True)
    finally:
        timer.restore()
    total = result.seconds
    parts = dict(timer.parts)
    parts["other"] = total - sum(parts.values())
    order = ("sampling", "nn_grid_build", "nn_query", "chamfer_value_grad", "chamfer_other", "regularisers",
             "backward", "optimizer_step", "other")
    parts = {k: parts[k] for k in order if k in parts}
    return {
        "iterations": iterations,
        "compute_path": getattr(result, "compute_path", "unknown"),
        "seconds": total,
        "ms_per_iteration": 1000.0 * total / iterations,
        "parts_ms_per_iteration": {k: 1000.0 * v / iterations for k, v in parts.items()},
        "parts_share": {k: v / total for k, v in parts.items()},
        "calls": timer.calls,
        "wrapped": wrapped,
        "nn_search_ms_per_iteration_by_tenth": [1000.0 * v * buckets / iterations for v in nn_by_phase],
        "note": "the tutorial fit re-run with timers (self time) around the functions it calls; "
                "'other': the rest (loop, autograd glue, unwrapped calls)",
    }


def bench_chamfer(x_np: np.ndarray, y_np: np.ndarray, inputs: str, repetitions: int) -> dict:
    out = {"points": [int(len(x_np)), int(len(y_np))], "repetitions": repetitions, "inputs": inputs,
           "memory_note": "peak RSS increase of one forward + backward, fresh subprocess each, median of 3"}
    x = torch.tensor(x_np, requires_grad=True)
    y = torch.tensor(y_np, requires_grad=True)
    grads = {}
    for name, fn in VARIANTS.items():
        for _ in range(3):
            fwd_bwd(fn, x, y)
        times = []
        for _ in range(repetitions):
            t = time.perf_counter()
            value = fwd_bwd(fn, x, y)
            times.append(time.perf_counter() - t)
        grads[name] = (x.grad.clone(), y.grad.clone())
        out[name] = {"median_ms": 1000.0 * statistics.median(times), "min_ms": 1000.0 * min(times), "loss": value}
    out["max_abs_grad_difference"] = max(float((a - b).abs().max()) for a, b in zip(grads["ours"], grads["dense"], strict=True))
    out["loss_difference"] = abs(out["ours"]["loss"] - out["dense"]["loss"])
    out["speedup"] = out["dense"]["median_ms"] / out["ours"]["median_ms"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.npz")
        np.savez(path, x=x_np, y=y_np)
        for name in VARIANTS:
            out[name]["memory"] = run_memory_child(name, path)
    ours_mb = out["ours"]["memory"]["peak_increase_mb"]
    dense_mb = out["dense"]["memory"]["peak_increase_mb"]
    # The RSS is counted in 4 kB pages: floor ours at one page so the ratio stays finite.
    out["memory_ratio"] = dense_mb / max(ours_mb, 4.0 / 1024.0)
    out["meets_speed_target"] = bool(out["speedup"] >= TARGETS["chamfer_speedup_min"])
    out["meets_memory_target"] = bool(out["memory_ratio"] >= TARGETS["chamfer_memory_ratio_min"])
    return out


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--iterations", type=int, default=TUTORIAL_ITERATIONS, help="fit iterations (2000: the real loads)")
    parser.add_argument("--repetitions", type=int, default=20, help="chamfer timing repetitions")
    parser.add_argument("--breakdown-iterations", type=int, default=None,
                        help="iterations of the per-part profile (default: as --iterations; 0: none)")
    parser.add_argument("--_memory-child", nargs=2, metavar=("VARIANT", "INPUTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        memory_child(*args._memory_child)
        return 0

    report: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_threads_note": "torch default; backend.deform.fit does not set the thread count",
            "numpy": np.__version__,
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "targets": TARGETS,
    }
    try:
        import numba

        report["machine"]["numba"] = numba.__version__
        report["machine"]["numba_threads"] = numba.get_num_threads()
    except ImportError:
        report["machine"]["numba"] = None
    started = time.perf_counter()
    rows: list[tuple[str, ...]] = []
    contention: dict[str, dict] = {}
    report["contention"] = contention

    print("warming up (numba) ...", flush=True)
    with Contention() as c:
        report["warm_up"] = warm_up()
    contention["warm-up"] = c.result
    rows.append(("warm-up", "tiny fit (numba JIT/cache)", f"{report['warm_up']['seconds']:.2f} s", "", ""))

    print("pedestrian ...", flush=True)
    with Contention() as c:
        ped = bench_pedestrian(args.iterations)
    contention["pedestrian"] = c.result
    report["pedestrian"] = ped
    if ped is None:
        rows.append(("pedestrian", "skipped (data absent)", "", "", ""))
    else:
        o = ped["ours"]
        rows.append(("pedestrian", f"fit, {args.iterations} iterations ({o['compute_path']})", f"{o['fit_seconds']:.2f} s",
                     "", ""))
        ref = ped.get("book_reference")
        ref_c = f"<= book {ref['surface_chamfer']:.5f}" if ref else ""
        ref_d = f"<= book {ref['mean_dihedral_deg']:.2f} deg" if ref else ""
        rows.append(("pedestrian", "surface chamfer (ours)", f"{o['surface_chamfer']:.5f}", ref_c,
                     verdict(ped["at_least_as_close"]) if ref else ""))
        rows.append(("pedestrian", "mean dihedral (ours)", f"{o['mean_dihedral_deg']:.2f} deg", ref_d,
                     verdict(ped["at_least_as_smooth"]) if ref else ""))
        if ref:
            rows.append(("pedestrian", "surface chamfer (book)", f"{ref['surface_chamfer']:.5f}", "", ""))
            rows.append(("pedestrian", "mean dihedral (book)", f"{ref['mean_dihedral_deg']:.2f} deg", "", ""))

    print("tutorial load ...", flush=True)
    mesh_vertices, mesh_faces, source = tutorial_mesh()
    target = surface_samples(mesh_vertices, mesh_faces, 5000, 0)
    with Contention() as c:
        tut = bench_tutorial(target, source, args.iterations)
    contention["tutorial load"] = c.result
    report["tutorial"] = tut
    full = args.iterations == TUTORIAL_ITERATIONS
    t_max = TARGETS["tutorial_seconds_max"]
    tut_value = tut["seconds"] if full else tut["projected_seconds_2000"]
    tut["meets_target"] = bool(tut_value <= t_max)
    tut["over_target_seconds"] = max(0.0, tut_value - t_max)
    label = "fit, 2000 iterations" if full else f"fit, {args.iterations} it. -> 2000 projected"
    label += f" ({tut['compute_path']})"
    rows.append(("tutorial load", label, f"{tut_value:.2f} s", f"<= {t_max:g} s", verdict(tut["meets_target"])))
    rows.append(("tutorial load", "per iteration", f"{tut['ms_per_iteration']:.2f} ms", "", ""))
    rows.append(("tutorial load", "surface chamfer", f"{tut['surface_chamfer']:.6f}", "", ""))

    breakdown_iterations = args.iterations if args.breakdown_iterations is None else args.breakdown_iterations
    if breakdown_iterations > 0:
        print("tutorial breakdown ...", flush=True)
        with Contention() as c:
            bd = tutorial_breakdown(target, breakdown_iterations)
        contention["breakdown"] = c.result
        report["tutorial_breakdown"] = bd
        for part, ms in bd["parts_ms_per_iteration"].items():
            rows.append(("breakdown", f"{part} /iteration ({breakdown_iterations} it.)", f"{ms:.2f} ms", "",
                         f"{100 * bd['parts_share'][part]:.0f}%"))
        phases = bd["nn_search_ms_per_iteration_by_tenth"]
        rows.append(("breakdown", "nn search ms/it., first vs last tenth", f"{phases[0]:.1f} / {phases[-1]:.1f}", "", ""))

    report["chamfer"] = {}
    for case, (x_np, y_np, inputs) in chamfer_inputs(mesh_vertices, mesh_faces, target).items():
        print(f"chamfer 5k x 5k, {case} ...", flush=True)
        section = f"chamfer {case}"
        with Contention() as c:
            ch = bench_chamfer(x_np, y_np, inputs, args.repetitions)
        contention[section] = c.result
        report["chamfer"][case] = ch
        rows.append((section, f"inputs: {inputs}", "", "", ""))
        for name in VARIANTS:
            rows.append((section, f"{name}: fwd+bwd median", f"{ch[name]['median_ms']:.2f} ms", "", ""))
        for name in VARIANTS:
            rows.append((section, f"{name}: peak memory", f"{ch[name]['memory']['peak_increase_mb']:.2f} MB", "", ""))
        rows.append((section, "speed-up (dense / ours)", f"{ch['speedup']:.1f}x",
                     f">= {TARGETS['chamfer_speedup_min']:g}x", verdict(ch["meets_speed_target"])))
        rows.append((section, "memory ratio (dense / ours)", f"{ch['memory_ratio']:.1f}x",
                     f">= {TARGETS['chamfer_memory_ratio_min']:g}x", verdict(ch["meets_memory_target"])))
        rows.append((section, "max |grad ours - dense|", f"{ch['max_abs_grad_difference']:.2e}", "", ""))

    for section, c in contention.items():
        if "other_cpu_cores" in c:
            busy = c["other_cpu_cores"]
            rows.append(("contention", f"other processes during {section}", f"{busy:.2f} cores", "< 0.1 cores",
                         "clean" if busy < 0.1 else "NOISY"))
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["total_seconds"] = time.perf_counter() - started
    report["all_targets_met"] = bool(tut["meets_target"] and all(
        ch["meets_speed_target"] and ch["meets_memory_target"] for ch in report["chamfer"].values()))
    report["table"] = table(rows)
    m = report["machine"]
    print()
    print(f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
          f"load average at start {m['load_average_at_start'][0]:.2f}" if m["load_average_at_start"] else "")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
