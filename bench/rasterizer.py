# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the splat rasterizer (``backend.splat.rasterize``): 20,000 Gaussians to a
256 x 256 image, forward + backward, against the dense per-pixel reference.

Run from the repository root::

    .venv/bin/python bench/rasterizer.py [--out bench/results/rasterizer.json] [--repetitions 15]

Measurements (one run):

1. The scene: 20,000 Gaussians uniform in a 2-unit cube 4 units in front of a 256 x 256
   camera (50 degree field of view), anisotropic scales log-normal around 0.03, opacities
   0.1-0.9, random colours (and a second scene with SH degree 3 coefficients). Its numbers
   (visible Gaussians, mean radius, tile intersections, pixel-Gaussian pairs inside the
   ellipses, mean alpha) say how much work it is.
2. Forward + backward time, median of ``--repetitions`` after warm-up: the numba kernels on
   every core and on one; the eager-PyTorch tile path on one and on two torch threads;
   the dense reference (every Gaussian at every pixel, autograd) on sampled chunks of
   pixels, scaled to the whole image (its cost per pixel does not depend on the pixel).
3. Peak memory of one forward + backward, each in a fresh subprocess (the rise of the
   peak RSS over the RSS before it), median of 3.
4. Agreement with the dense reference on the sampled pixels: image, alpha, and every
   gradient for an upstream gradient that is non-zero on those pixels only.

Other processes share this machine: each timing records the CPU time they took while it
ran (``other_cpu_cores``: 0 clean, 1 = a whole core busy elsewhere) and the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402 - bench/_common.py
import numpy as np  # noqa: E402
import torch  # noqa: E402

from backend.splat import _kernels  # noqa: E402
from backend.splat.rasterize import rasterize  # noqa: E402
from backend.splat.reference import rasterize_dense  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "rasterizer.json"
N, WIDTH, HEIGHT = 20_000, 256, 256
TARGETS = {"numba_ms_max": 100.0, "speedup_vs_dense_min": 500.0}
LEAVES = ("means", "quats", "scales", "opacities", "colors")
DENSE_CHUNK = 1024
DENSE_SAMPLES = 6  # pixel chunks of the dense reference timed (of 64)


def scene(sh_degree: int | None = None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {
        "means": torch.rand(N, 3, generator=g) * 2 - 1,
        "quats": torch.randn(N, 4, generator=g),
        "scales": torch.exp(torch.randn(N, 3, generator=g) * 0.4 + math.log(0.03)),
        "opacities": torch.rand(N, generator=g) * 0.8 + 0.1,
        "colors": (torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g) * 0.3 if sh_degree is not None
                   else torch.rand(N, 3, generator=g)),
    }
    viewmat = torch.eye(4)
    viewmat[2, 3] = 4.0
    f = 0.5 * WIDTH / math.tan(math.radians(25))
    out.update(viewmats=viewmat[None], Ks=torch.tensor([[f, 0, WIDTH / 2], [0, f, HEIGHT / 2], [0, 0, 1.0]])[None],
               width=WIDTH, height=HEIGHT)
    if sh_degree is not None:
        out["sh_degree"] = sh_degree
    return out


def leaves(data: dict) -> dict:
    return {k: (v.clone().requires_grad_(True) if k in LEAVES else v) for k, v in data.items()}


class Contention(_common.Contention):
    """bench/_common.py's measure of other processes' CPU time, plus the load average."""

    def __enter__(self) -> Contention:
        self.load0 = os.getloadavg()[0]
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.result = {k: round(v, 3) for k, v in self.result.items()}
        self.result["load_average"] = [round(self.load0, 2), round(os.getloadavg()[0], 2)]


def configure(variant: str) -> None:
    """Threads for a variant: ``numba``/``numba-1t``, ``torch-1t``/``torch-2t``, ``dense``."""
    _kernels.set_threads(1 if variant == "numba-1t" else (os.cpu_count() or 1))
    torch.set_num_threads(2 if variant in ("torch-2t", "dense") else 1)


def run_variant(variant: str, data: dict) -> tuple:
    backend = "torch" if variant.startswith("torch") else "numba"
    x = leaves(data)
    t0 = time.perf_counter()
    rgb, alpha, meta = rasterize(**x, backend=backend)
    t1 = time.perf_counter()
    (rgb.sum() + alpha.sum()).backward()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, meta


def time_variant(variant: str, data: dict, repetitions: int) -> dict:
    configure(variant)
    for _ in range(3):
        run_variant(variant, data)
    runs = []
    with Contention() as contention:
        for _ in range(repetitions):
            forward, backward, meta = run_variant(variant, data)
            runs.append((forward, backward))
    totals = [1000 * (f + b) for f, b in runs]
    return {
        "median_ms": round(statistics.median(totals), 2),
        "min_ms": round(min(totals), 2),
        "forward_median_ms": round(1000 * statistics.median(f for f, _ in runs), 2),
        "backward_median_ms": round(1000 * statistics.median(b for _, b in runs), 2),
        "repetitions": repetitions,
        "kernel_threads": _kernels.get_threads() if variant.startswith("numba") else None,
        "torch_threads": torch.get_num_threads(),
        "contention": contention.result,
        "n_isects": meta["n_isects"],
    }


def dense_chunks() -> list[torch.Tensor]:
    n_chunks = WIDTH * HEIGHT // DENSE_CHUNK
    picks = np.linspace(0, n_chunks - 1, DENSE_SAMPLES).round().astype(int)
    return [torch.arange(c * DENSE_CHUNK, (c + 1) * DENSE_CHUNK) for c in picks]


def time_dense(data: dict) -> dict:
    """Forward + backward of the dense reference on sampled pixel chunks, scaled to all pixels."""
    configure("dense")
    x = leaves(data)
    per_chunk = []
    with Contention() as contention:
        for pixels in dense_chunks():
            t = time.perf_counter()
            rgb, alpha, _ = rasterize_dense(**x, pixels=pixels)
            torch.autograd.grad(rgb.sum() + alpha.sum(), [x[k] for k in LEAVES])
            per_chunk.append(time.perf_counter() - t)
    per_pixel = sum(per_chunk) / (len(per_chunk) * DENSE_CHUNK)
    return {
        "median_ms": round(1000 * per_pixel * WIDTH * HEIGHT, 1),
        "method": f"{len(per_chunk)} chunks of {DENSE_CHUNK} pixels timed (of {WIDTH * HEIGHT // DENSE_CHUNK}), "
                  "scaled to the whole image",
        "chunk_seconds": [round(s, 2) for s in per_chunk],
        "torch_threads": torch.get_num_threads(),
        "contention": contention.result,
    }


def agreement(data: dict, backend: str) -> dict:
    """Ours against the dense reference on the sampled pixels: image, alpha, gradients."""
    configure("numba" if backend == "numba" else "torch-1t")
    pixels = torch.cat(dense_chunks())
    g = torch.Generator().manual_seed(1)
    v_rgb = torch.zeros(1, HEIGHT * WIDTH, 3)
    v_alpha = torch.zeros(1, HEIGHT * WIDTH, 1)
    v_rgb[:, pixels] = torch.randn(1, len(pixels), 3, generator=g)
    v_alpha[:, pixels] = torch.randn(1, len(pixels), 1, generator=g)
    x = leaves(data)
    rgb, alpha, _ = rasterize(**x, backend=backend)
    ((rgb * v_rgb.view(1, HEIGHT, WIDTH, 3)).sum() + (alpha * v_alpha.view(1, HEIGHT, WIDTH, 1)).sum()).backward()
    ours = {k: x[k].grad for k in LEAVES}
    configure("dense")
    y = leaves(data)
    ref_rgb, ref_alpha = [], []
    grads = {k: torch.zeros_like(y[k]) for k in LEAVES}
    for chunk in dense_chunks():
        r, a, _ = rasterize_dense(**y, pixels=chunk)
        part = torch.autograd.grad((r * v_rgb[:, chunk]).sum() + (a * v_alpha[:, chunk]).sum(), [y[k] for k in LEAVES])
        for k, p in zip(LEAVES, part, strict=True):
            grads[k] += p
        ref_rgb.append(r.detach())
        ref_alpha.append(a.detach())
    ref_rgb, ref_alpha = torch.cat(ref_rgb, 1), torch.cat(ref_alpha, 1)
    return {
        "pixels_compared": int(len(pixels)),
        "image_max_abs": float((rgb.detach().reshape(1, -1, 3)[:, pixels] - ref_rgb).abs().max()),
        "alpha_max_abs": float((alpha.detach().reshape(1, -1, 1)[:, pixels] - ref_alpha).abs().max()),
        "gradient_relative_error": {k: float((ours[k] - grads[k]).norm() / grads[k].norm().clamp_min(1e-12))
                                    for k in LEAVES},
    }


def scene_numbers(data: dict) -> dict:
    configure("numba")
    with torch.no_grad():
        rgb, alpha, meta = rasterize(**data, backend="numba")
    radii = meta["radii"][0]
    visible = (radii > 0).all(-1)
    conics = meta["conics"][0][visible]
    det_inv = conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2
    extent2 = 2 * torch.log(255 * data["opacities"][visible])
    pairs = float((math.pi * extent2 / det_inv.sqrt()).sum())
    return {
        "gaussians": N, "visible": int(visible.sum()), "image": [WIDTH, HEIGHT],
        "mean_radius_px": round(float(radii[visible].float().mean()), 2),
        "tile_intersections": meta["n_isects"],
        "pixel_gaussian_pairs_in_ellipses": int(pairs),
        "mean_alpha": round(float(alpha.mean()), 3),
    }


# -- memory ---------------------------------------------------------------------------------------
def proc_status() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def memory_child(variant: str) -> None:
    """Hidden mode: the peak RSS rise of one forward + backward of ``variant``; prints JSON."""
    data = scene()
    configure(variant)
    if variant == "dense":
        x = leaves(data)
        small = dense_chunks()[0][:64]
        rasterize_dense(**x, pixels=small)
    else:
        run_variant(variant, scene())  # warm: kernels, thread pools
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("MEMORY_RESULT " + json.dumps({"peak_increase_mb": None, "method": "unavailable"}))
        return
    before = proc_status()
    if variant == "dense":
        x = leaves(data)
        rgb, alpha, _ = rasterize_dense(**x, pixels=dense_chunks()[0])
        torch.autograd.grad(rgb.sum() + alpha.sum(), [x[k] for k in LEAVES])
    else:
        run_variant(variant, data)
    after = proc_status()
    print("MEMORY_RESULT " + json.dumps({"peak_increase_mb": (after["VmHWM"] - before["VmRSS"]) / 1024.0,
                                         "method": "clear_refs, then VmHWM - VmRSS"}))


def run_memory_child(variant: str, repeats: int = 3) -> dict:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_memory-child", variant],
                              capture_output=True, text=True, cwd=str(ROOT), check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"memory child {variant} failed:\n{proc.stdout}\n{proc.stderr}")
        runs.append(json.loads(line[len("MEMORY_RESULT "):]))
    peaks = [r["peak_increase_mb"] for r in runs if r["peak_increase_mb"] is not None]
    return {"peak_increase_mb": round(statistics.median(peaks), 1) if peaks else None,
            "runs_mb": [round(p, 1) for p in peaks], "method": runs[0]["method"]}


# -- report -------------------------------------------------------------------------------------------
def table(rows: list[tuple]) -> str:
    header = ("variant", "fwd+bwd ms (median)", "min ms", "fwd ms", "bwd ms", "peak MB", "other cores busy", "note")
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--repetitions", type=int, default=15, help="timed runs per variant")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--_memory-child", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        memory_child(args._memory_child)
        return 0
    if not _kernels.AVAILABLE:
        print("numba is not installed: only the eager-PyTorch path can run")
    report: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_at_start": list(os.getloadavg())},
        "targets": TARGETS,
    }
    data = scene()
    report["scene"] = scene_numbers(data)
    print("scene:", json.dumps(report["scene"]))
    variants = ["numba", "numba-1t", "torch-1t", "torch-2t"] if _kernels.AVAILABLE else ["torch-1t", "torch-2t"]
    timings = {}
    for variant in variants:
        timings[variant] = time_variant(variant, data, args.repetitions if variant.startswith("numba") else 5)
        print(f"{variant}: {timings[variant]['median_ms']} ms", flush=True)
    sh_data = scene(sh_degree=3)
    timings["numba-sh3"] = time_variant("numba", sh_data, args.repetitions) if _kernels.AVAILABLE else None
    timings["dense"] = time_dense(data)
    print(f"dense: {timings['dense']['median_ms']} ms (scaled)", flush=True)
    report["timings"] = timings
    fast = timings["numba" if _kernels.AVAILABLE else "torch-1t"]
    report["speedup_vs_dense"] = {k: round(timings["dense"]["median_ms"] / v["median_ms"], 1)
                                  for k, v in timings.items() if v and k != "dense"}
    report["agreement"] = {b: agreement(data, b) for b in (["numba", "torch"] if _kernels.AVAILABLE else ["torch"])}
    if not args.no_memory:
        report["memory"] = {v: run_memory_child(v) for v in [*variants[:1], "torch-1t", "dense"]}
    report["meets_speed_target"] = bool(fast["median_ms"] <= TARGETS["numba_ms_max"])
    report["meets_speedup_target"] = bool(timings["dense"]["median_ms"] / fast["median_ms"] >= TARGETS["speedup_vs_dense_min"])
    report["machine"]["load_average_at_end"] = list(os.getloadavg())

    memory = report.get("memory", {})
    notes = {"numba": "numba kernels, all cores", "numba-1t": "numba kernels, 1 thread",
             "torch-1t": "eager PyTorch tiles, 1 torch thread", "torch-2t": "eager PyTorch tiles, 2 torch threads",
             "numba-sh3": "numba, SH degree 3 colours", "dense": "dense reference (scaled from sampled pixels)"}
    rows = []
    for name, t in timings.items():
        if not t:
            continue
        peak = memory.get(name, {}).get("peak_increase_mb", "")
        rows.append((name, t["median_ms"], t.get("min_ms", ""), t.get("forward_median_ms", ""),
                     t.get("backward_median_ms", ""), peak, t["contention"].get("other_cpu_cores", "?"), notes[name]))
    print()
    print(f"20,000 Gaussians -> {WIDTH}x{HEIGHT}, forward + backward ({report['scene']['pixel_gaussian_pairs_in_ellipses']:,} "
          f"pixel-Gaussian pairs, {report['scene']['tile_intersections']:,} tile intersections)")
    print(table(rows))
    print()
    print(f"speed-up over the dense reference: {report['speedup_vs_dense']}")
    for b, a in report["agreement"].items():
        worst = max(a["gradient_relative_error"].values())
        print(f"{b} vs dense on {a['pixels_compared']} pixels: image {a['image_max_abs']:.2e}, "
              f"alpha {a['alpha_max_abs']:.2e}, worst gradient relative error {worst:.2e}")
    print(f"targets: <= {TARGETS['numba_ms_max']:.0f} ms: {'pass' if report['meets_speed_target'] else 'FAIL'}; "
          f">= {TARGETS['speedup_vs_dense_min']:.0f}x dense: {'pass' if report['meets_speedup_target'] else 'FAIL'}")
    print(f"load average: start {report['machine']['load_average_at_start'][0]:.2f}, "
          f"end {report['machine']['load_average_at_end'][0]:.2f} ({os.cpu_count()} cores)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
