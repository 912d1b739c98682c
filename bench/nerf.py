# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the radiance field (job ``nerf``): held-out PSNR against training minutes
on lego, for the hash-grid field and the original NeRF, and the step time.

Run from the repository root::

    .venv/bin/python bench/nerf.py [--minutes 10] [--baseline-minutes 10] [--threads 0]
                                   [--out bench/results/nerf.json]

Measurements (one run, one process):

1. ``step``: one training step of 4096 rays x 64 samples (every sample evaluated: the
   occupancy grid all occupied and no pruning behind opaque samples), forward, backward and
   optimiser, through the trainer's own step (``backend.nerf.fused`` on a CPU); median of a
   few after warm-up, wall and CPU seconds, and the wall time of each phase (mean over the
   repetitions). The same batch through the original NeRF's coarse network, once. (After
   the lego training below, the same 4096 x 64 step is also timed on the trained field as
   training runs it, the occupancy grid and early termination leaving most samples out.)
2. ``lego``: ../shared/data/lego at 200 x 200 (``--resolution-scale 0.25``), RGBA
   composited on white, frames 0-99 of ``transforms_train.json`` with 10 of them held out
   (every ~9th, as the job's ``holdout_views`` picks them), near 2, far 6, the standard
   box ``[-1.5, 1.5]^3``. Each field trains for ``--minutes`` of *training* time (its
   evaluations are not counted) with the job's defaults. At fixed times the held-out PSNR
   (the mean over the 10 views of each one's PSNR) is measured for both over the same
   ``--eval-pixels`` random pixels of each held-out view (the original NeRF costs minutes
   per whole image on 2 cores), and for the hash grid also on the whole images (the figure
   its target is checked on). "Reaches the baseline": when the hash grid's pixel-subset
   PSNR first reaches the baseline's final one, interpolated between evaluations (an upper
   bound when it is already there at the first one).

Threads: ``--threads 0`` (default) lets the trainer pick as the product does (the cores the
load average leaves idle, re-checked every minute); the counts used are reported.
Contention: CPU time used by other processes while each section ran (from /proc/stat), and
the load average; timings taken with other processes busy are slower than on a quiet machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402 - bench/_common.py
import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.nerf import fused  # noqa: E402
from backend.nerf.cpu import choose_threads, keep_freed_memory  # noqa: E402
from backend.nerf.field import Field, FieldConfig, NGPField, PENeRF, SceneFrame  # noqa: E402
from backend.nerf.rays import load_views  # noqa: E402
from backend.nerf.render import OccupancyGrid, render_rays_ngp, render_rays_pe  # noqa: E402
from backend.nerf.train import Trainer, TrainSettings, holdout_indices, scene_setup  # noqa: E402
from backend.sfm.scene import load_scene  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "lego" / "transforms_train.json"
DEFAULT_OUT = ROOT / "bench" / "results" / "nerf.json"
TARGETS = {"hashgrid_psnr_min_db": 28.0, "speedup_to_baseline_psnr_min": 10.0, "step_ms_max": 300.0}
CHECKPOINTS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)  # minutes of training, scaled to --minutes


class Contention(_common.Contention):
    """bench/_common.py's measure of other processes' CPU time, plus the load average at
    the start and the end of the section."""

    def __enter__(self) -> Contention:
        self.load0 = os.getloadavg()[0]
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.result["load_average_start"] = self.load0
        self.result["load_average_end"] = os.getloadavg()[0]


table, verdict = _common.table, _common.verdict


# ---------------------------------------------------------------------------------------
# Step time
# ---------------------------------------------------------------------------------------


def _batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=g)
    origins = origins / origins.norm(dim=-1, keepdim=True) * 4.0
    dirs = -origins / 4.0 + 0.25 * torch.randn(n, 3, generator=g)
    return origins, dirs / dirs.norm(dim=-1, keepdim=True), torch.rand(n, 3, generator=g)


def bench_step(rays: int, samples: int, repetitions: int) -> dict:
    """Hash-grid training step with every sample evaluated (see the module's docstring)."""
    torch.manual_seed(0)
    config = FieldConfig()
    model = NGPField(config, generator=torch.Generator().manual_seed(0))
    frame = SceneFrame("box", (0.0, 0.0, 0.0), (1.5, 1.5, 1.5))
    fld = Field(config, model, frame, 2.0, 6.0, (1.0, 1.0, 1.0), OccupancyGrid(128))  # all cells occupied
    settings = TrainSettings()
    trainer_like = _StepOnly(fld, settings)
    origins, dirs, target = _batch(rays, 1)
    times, cpu, counts = [], [], []
    for i in range(repetitions + 2):
        t0, c0 = time.perf_counter(), time.process_time()
        n = trainer_like.step(origins, dirs, target, samples)
        t1, c1 = time.perf_counter(), time.process_time()
        if i >= 2:
            times.append(t1 - t0)
            cpu.append(c1 - c0)
            counts.append(n)
    timings: dict[str, float] = {}
    for _ in range(repetitions):
        trainer_like.step(origins, dirs, target, samples, timings)
    breakdown = {k: round(1000 * v / repetitions, 1) for k, v in timings.items()}
    return {"rays": rays, "samples_per_ray": samples, "evaluated_samples": int(statistics.median(counts)),
            "breakdown_ms": breakdown,
            "median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
            "median_cpu_ms": 1000 * statistics.median(cpu), "repetitions": repetitions,
            "threads": torch.get_num_threads(),
            "compute_path": f"fused CPU step: {fused.path_name()}, in worker threads, backward written out"
            if fused.available(fld) else "PyTorch autograd"}


class _StepOnly:
    """The trainer's optimisers around a fixed batch."""

    def __init__(self, fld: Field, settings: TrainSettings) -> None:
        from backend.nerf.hashgrid import sparse_adam_step

        self.fld, self.sparse_adam_step = fld, sparse_adam_step
        model = fld.model
        self.mlp = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("encoding.")],
                                    lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
        table = model.encoding.table
        self.moments = [torch.zeros_like(table), torch.zeros_like(table)]
        self.steps = 0

    def step(self, origins, dirs, target, samples, timings: dict | None = None) -> int:
        """The trainer's step (``Trainer.step``'s path) on a fixed batch, every sample evaluated."""
        jitter = torch.rand(origins.shape[0], samples)
        background = torch.ones(origins.shape[0], 3)
        self.mlp.zero_grad(set_to_none=True)
        self.steps += 1
        table = self.fld.model.encoding.table
        if fused.available(self.fld):
            out = fused.loss_and_grads(self.fld, origins, dirs, background, target, samples, jitter,
                                       min_transmittance=0.0, threads=torch.get_num_threads(), timings=timings)
        else:
            out = render_rays_ngp(self.fld, origins, dirs, background, samples, jitter, min_transmittance=0.0)
            ((out["rgb"] - target) ** 2).mean().backward()
        started = time.perf_counter()
        self.mlp.step()
        self.sparse_adam_step(table, table.grad, *self.moments, self.steps, 1e-2)
        if timings is not None:
            timings["Adam (hash table: numba; MLPs)"] = (timings.get("Adam (hash table: numba; MLPs)", 0.0)
                                                         + time.perf_counter() - started)
        return int(out["samples"])


def bench_baseline_step(rays: int, samples: int) -> dict:
    """The original NeRF's coarse network on the same batch, forward and backward, once."""
    torch.manual_seed(0)
    config = FieldConfig(kind="mlp")
    model = PENeRF(config)
    fld = Field(config, model, SceneFrame("box", (0.0, 0.0, 0.0), (1.5, 1.5, 1.5)), 2.0, 6.0, (1.0, 1.0, 1.0))
    origins, dirs, target = _batch(rays, 2)
    t0, c0 = time.perf_counter(), time.process_time()
    out = render_rays_pe(fld, origins, dirs, torch.ones(3), samples, 0, torch.Generator().manual_seed(0))
    ((out["rgb_coarse"] - target) ** 2).mean().backward()
    return {"rays": rays, "samples_per_ray": samples, "ms": 1000 * (time.perf_counter() - t0),
            "cpu_ms": 1000 * (time.process_time() - c0), "threads": torch.get_num_threads(),
            "note": "coarse network only (fine samples 0), one step"}


# ---------------------------------------------------------------------------------------
# Lego
# ---------------------------------------------------------------------------------------


def train_curve(name: str, views, settings: TrainSettings, frame, near, far, train, holdout, minutes: float,
                eval_pixels: int, full_images: bool) -> dict:
    trainer = Trainer(views, settings, frame, near, far, train, holdout)
    marks = sorted({round(m * minutes / 10.0, 4) for m in CHECKPOINTS if m * minutes / 10.0 <= minutes})
    curve, steps_log = [], []
    started = time.perf_counter()
    eval_seconds = 0.0

    def evaluate() -> None:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        value = trainer.pixels_psnr(holdout, eval_pixels)
        point = {"minutes": trainer.train_seconds / 60.0, "steps": trainer.step_count, "psnr": value,
                 "threads": trainer.threads, "load_average": os.getloadavg()[0]}
        if full_images:
            per_view = [trainer.view_psnr(v)[0] for v in holdout]
            point["full_image_psnr"] = float(np.mean(per_view))
            point["full_image_psnr_per_view"] = per_view
        eval_seconds += time.perf_counter() - t0
        curve.append(point)
        full = f", full images {point['full_image_psnr']:6.2f} dB" if full_images else ""
        print(f"  {name}: {point['minutes']:6.2f} min  step {trainer.step_count:6d}  PSNR {value:6.2f} dB{full}  "
              f"(threads {trainer.threads}, load {point['load_average']:.1f})", flush=True)

    def on_step(t: Trainer, metrics: dict) -> None:
        steps_log.append((metrics["samples"], metrics["loss"]))

    for mark in marks:
        trainer.run(max_seconds=mark * 60.0, on_step=on_step)
        if not curve or curve[-1]["steps"] < trainer.step_count:  # a slow step can pass several marks
            evaluate()
    result = {"settings": {k: v for k, v in vars(settings).items() if k != "hashgrid"},
              "curve": curve, "steps": trainer.step_count, "train_seconds": trainer.train_seconds,
              "eval_seconds": eval_seconds, "wall_seconds": time.perf_counter() - started,
              "mean_samples_per_step": float(np.mean([s for s, _ in steps_log])) if steps_log else 0.0,
              "seconds_per_step": trainer.train_seconds / max(1, trainer.step_count)}
    if trainer.field.occupancy is not None:
        result["occupied_fraction"] = trainer.field.occupancy.occupied_fraction
        result["trained_step"] = trained_step(trainer)
    return result


def trained_step(trainer: Trainer, rays: int = 4096, samples: int = 64, repetitions: int = 5) -> dict:
    """Steps of ``rays`` x ``samples`` on the trained field as training runs them (the
    occupancy grid skipping empty space, samples behind opaque ones left out): wall
    milliseconds (median, after one untimed step) and the samples that reached the colour MLP."""
    settings = trainer.settings
    kept = settings.rays, settings.samples
    settings.rays, settings.samples = rays, samples
    times, coloured = [], []
    try:
        for i in range(repetitions + 1):
            t0 = time.perf_counter()
            metrics = trainer.step()
            if i:
                times.append(time.perf_counter() - t0)
                coloured.append(metrics["samples"])
    finally:
        settings.rays, settings.samples = kept
    return {"rays": rays, "samples_per_ray": samples, "median_ms": 1000 * statistics.median(times),
            "coloured_samples": float(statistics.median(coloured)), "threads": trainer.threads}


def first_reaching(curve: list[dict], psnr: float) -> dict | None:
    """The first evaluation at or above ``psnr``, and a linear interpolation of when it got there."""
    previous = None
    for point in curve:
        if point["psnr"] >= psnr:
            estimate = point["minutes"]
            if previous is not None and point["psnr"] > previous["psnr"]:
                f = (psnr - previous["psnr"]) / (point["psnr"] - previous["psnr"])
                estimate = previous["minutes"] + f * (point["minutes"] - previous["minutes"])
            return {"minutes": point["minutes"], "interpolated_minutes": estimate}
        previous = point
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes of the hash-grid field")
    parser.add_argument("--baseline-minutes", type=float, default=None,
                        help="training minutes of the original NeRF (default: as --minutes; 0: skip it)")
    parser.add_argument("--eval-pixels", type=int, default=512, help="random pixels per held-out view for the curve")
    parser.add_argument("--resolution-scale", type=float, default=0.25, help="lego's 800 px times this")
    parser.add_argument("--holdout", type=int, default=10, help="held-out views of the 100")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: as the product picks them)")
    parser.add_argument("--step-repetitions", type=int, default=5, help="timed steps of 4096 x 64")
    parser.add_argument("--skip-step", action="store_true", help="leave out the step-time measurement")
    parser.add_argument("--skip-baseline-step", action="store_true",
                        help="leave out the original NeRF's step (about a minute on 2 cores)")
    parser.add_argument("--skip-lego", action="store_true", help="leave out the lego training curves")
    args = parser.parse_args()
    baseline_minutes = args.minutes if args.baseline_minutes is None else args.baseline_minutes

    report: dict = {"machine": {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "numpy": np.__version__, "load_average_at_start": list(os.getloadavg()),
    }, "targets": TARGETS, "arguments": {k: str(v) for k, v in vars(args).items()}}
    try:
        import numba

        report["machine"]["numba"] = numba.__version__
    except ImportError:
        report["machine"]["numba"] = None
    started = time.perf_counter()
    rows: list[tuple[str, ...]] = []
    contention: dict[str, dict] = {}
    report["contention"] = contention

    with keep_freed_memory():
        if not args.skip_step:
            threads = choose_threads(args.threads)
            print(f"step time, 4096 rays x 64 samples ({threads} threads) ...", flush=True)
            with Contention() as c:
                step = bench_step(4096, 64, args.step_repetitions)
                baseline_step = None if args.skip_baseline_step else bench_baseline_step(4096, 64)
            contention["step"] = c.result
            report["step"] = step
            report["baseline_step"] = baseline_step
            step["meets_target"] = bool(step["median_ms"] <= TARGETS["step_ms_max"])
            rows.append(("step", f"hash grid, 4096 x 64, all evaluated ({step['threads']} threads)",
                         f"{step['median_ms']:.0f} ms", f"<= {TARGETS['step_ms_max']:g} ms",
                         verdict(step["meets_target"])))
            rows.append(("step", "  its CPU time (all threads)", f"{step['median_cpu_ms']:.0f} ms", "", ""))
            for part, ms in step["breakdown_ms"].items():
                rows.append(("step", f"  {part}", f"{ms:.0f} ms", "", ""))
            if baseline_step is not None:
                rows.append(("step", "original NeRF coarse net, 4096 x 64", f"{baseline_step['ms']:.0f} ms", "", ""))

        if args.skip_lego:
            pass
        elif not DATA.is_file():
            print(f"skipping lego: {DATA} is absent", flush=True)
        else:
            print("loading lego ...", flush=True)
            scene = load_scene(DATA)
            views = load_views(scene, args.resolution_scale)
            frame, near, far, how = scene_setup(scene, views, "object", 1.5, 2.0, 6.0)
            holdout = holdout_indices(len(views.cameras), args.holdout)
            train = [i for i in range(len(views.cameras)) if i not in holdout]
            report["lego"] = {"views": len(views.cameras), "train_views": len(train),
                              "holdout": [views.cameras.names[i] for i in holdout],
                              "resolution": [views.cameras.widths[0], views.cameras.heights[0]],
                              "near": near, "far": far, "frame": frame.to_dict(), "eval_pixels_per_view":
                              args.eval_pixels}
            runs = [("hashgrid", args.minutes, TrainSettings(kind="hashgrid", threads=args.threads))]
            if baseline_minutes > 0:
                runs.append(("mlp", baseline_minutes, TrainSettings(kind="mlp", threads=args.threads)))
            for name, minutes, settings in runs:
                settings.iterations = 10**9
                settings.max_seconds = minutes * 60.0
                print(f"training {name} for {minutes:g} min ...", flush=True)
                with Contention() as c:
                    report["lego"][name] = train_curve(name, views, settings, frame, near, far, train, holdout,
                                                       minutes, args.eval_pixels, full_images=name == "hashgrid")
                contention[f"lego {name}"] = c.result
            grid = report["lego"]["hashgrid"]
            final = grid["curve"][-1]
            grid_psnr = final["full_image_psnr"]
            grid["meets_target"] = bool(grid_psnr >= TARGETS["hashgrid_psnr_min_db"])
            for point in grid["curve"]:
                rows.append(("lego hashgrid", f"{point['minutes']:.2f} min, step {point['steps']}",
                             f"{point['psnr']:.2f} dB ({point['full_image_psnr']:.2f} whole)", "", ""))
            rows.append(("lego hashgrid", f"whole images, {len(holdout)} held-out views, {final['minutes']:.1f} min",
                         f"{grid_psnr:.2f} dB", f">= {TARGETS['hashgrid_psnr_min_db']:g} dB",
                         verdict(grid["meets_target"])))
            rows.append(("lego hashgrid", "mean ms per step (with occupancy, pruning)",
                         f"{1000 * grid['seconds_per_step']:.0f} ms", "", ""))
            rows.append(("lego hashgrid", "mean samples per step through the MLPs",
                         f"{grid['mean_samples_per_step']:.0f}", "", ""))
            if "trained_step" in grid:
                ts = grid["trained_step"]
                rows.append(("lego hashgrid", f"step of 4096 x 64 on the trained field ({ts['threads']} threads)",
                             f"{ts['median_ms']:.0f} ms", "", ""))
                rows.append(("lego hashgrid", "  its samples through the colour MLP (of 262,144)",
                             f"{ts['coloured_samples']:.0f}", "", ""))
            if "mlp" in report["lego"]:
                base = report["lego"]["mlp"]
                for point in base["curve"]:
                    rows.append(("lego original NeRF", f"{point['minutes']:.2f} min, step {point['steps']}",
                                 f"{point['psnr']:.2f} dB", "", ""))
                base_final = base["curve"][-1]
                reach = first_reaching(grid["curve"], base_final["psnr"])
                ratio = base_final["minutes"] / reach["interpolated_minutes"] if reach and \
                    reach["interpolated_minutes"] > 0 else (math.inf if reach else 0.0)
                report["lego"]["reaches_baseline"] = reach
                report["lego"]["speedup_to_baseline_psnr"] = ratio
                report["lego"]["meets_speedup_target"] = bool(ratio >= TARGETS["speedup_to_baseline_psnr_min"])
                value = (f"{reach['interpolated_minutes']:.2f} min ({ratio:.1f}x sooner)" if reach
                         else "not reached")
                rows.append(("lego", f"hash grid reaches the baseline's {base_final['minutes']:.0f}-min "
                             f"{base_final['psnr']:.2f} dB", value,
                             f">= {TARGETS['speedup_to_baseline_psnr_min']:g}x sooner",
                             verdict(report["lego"]["meets_speedup_target"])))

    for section, c in contention.items():
        if "other_cpu_cores" in c:
            busy = c["other_cpu_cores"]
            rows.append(("contention", f"other processes during {section} (load {c['load_average_start']:.1f}"
                         f" -> {c['load_average_end']:.1f})", f"{busy:.2f} cores", "< 0.1 cores",
                         "clean" if busy < 0.1 else "NOISY"))
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    report["total_seconds"] = time.perf_counter() - started
    report["table"] = table(rows)
    m = report["machine"]
    print()
    print(f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, load average at start "
          f"{m['load_average_at_start'][0]:.2f}, at end {m['load_average_at_end'][0]:.2f}")
    _common.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
