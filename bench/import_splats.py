# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: Gaussian splats from a 3DGS .ply into Blender in bulk, and back out.

    .venv/bin/python bench/import_splats.py [--gaussians 1000000] [--degree 3] [--loop-gaussians 10000]
                                            [--repeats 3] [--out bench/results/import_splats.json]

Writes a .ply of random Gaussians (SH degree 3: 62 float32 properties each, 248 MB for a
million) to a temporary folder, then times, median of the repeats:

- read: the file to arrays (``addon.splat_io.read_splats``);
- build: the arrays to one splat object (``addon.splats.splat_object``: a Point Cloud with 50
  attributes and the Geometry Nodes modifier);
- import: the two together (``addon.splats.import_splats``, what ``recon.import_splats``
  runs), target 3 s or less for 1,000,000 Gaussians;
- first evaluation: the depsgraph update that instances one ellipsoid per Gaussian (what
  happens at the first redraw, after the import returns);
- export: the object back to a .ply (``addon.splats.export_splats``).

A per-Gaussian Python loop writes the same attributes for a smaller count, extrapolated to
the full size (labelled as such). The machine's load average is recorded: other processes
share these cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="recon-bench-"))
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402 - after BLENDER_USER_RESOURCES

from addon import splat_io, splats  # noqa: E402

TARGET_SECONDS = 3.0


def random_splats(n: int, degree: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "means": rng.normal(size=(n, 3)).astype(np.float32),
        "f_dc": rng.normal(size=(n, 3)).astype(np.float32),
        "f_rest": rng.normal(scale=0.1, size=(n, splat_io.REST_COUNTS[degree])).astype(np.float32),
        "opacities": rng.normal(size=n).astype(np.float32),
        "scales": rng.normal(-4.0, 0.5, size=(n, 3)).astype(np.float32),
        "quats": rng.normal(size=(n, 4)).astype(np.float32),
    }


def clear() -> None:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for cloud in list(bpy.data.pointclouds):
        bpy.data.pointclouds.remove(cloud)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def one_round(path: Path, export_path: Path) -> dict[str, float]:
    collection = bpy.context.scene.collection
    clear()
    read_s, arrays = timed(splat_io.read_splats, path)
    build_s, _ = timed(splats.splat_object, "bench", arrays, collection)
    del arrays
    clear()
    import_s, obj = timed(splats.import_splats, path, collection)
    started = time.perf_counter()
    bpy.context.evaluated_depsgraph_get().update()
    evaluate_s = time.perf_counter() - started
    export_s, _ = timed(splats.export_splats, obj, export_path)
    return {"read": read_s, "build": build_s, "import": import_s, "first_evaluation": evaluate_s, "export": export_s}


def loop(n: int, degree: int) -> float:
    """The same attributes written one Gaussian at a time (what a naive importer does)."""
    arrays = random_splats(n, degree)
    clear()
    started = time.perf_counter()
    mesh = bpy.data.meshes.new("loop")
    mesh.vertices.add(n)
    k = arrays["f_rest"].shape[1]
    for name, kind in (("rotation", "QUATERNION"), ("log_scale", "FLOAT_VECTOR"), ("logit_opacity", "FLOAT"),
                       ("f_dc", "FLOAT_COLOR"), *((f"f_rest_{j}", "FLOAT") for j in range(k))):
        mesh.attributes.new(name, kind, "POINT")
    attributes = mesh.attributes  # looked up only now: adding an attribute invalidates references
    rest = [attributes[f"f_rest_{j}"].data for j in range(k)]
    rotation, scale, opacity, dc = (attributes[name].data for name in ("rotation", "log_scale", "logit_opacity", "f_dc"))
    for i in range(n):
        mesh.vertices[i].co = arrays["means"][i]
        rotation[i].value = arrays["quats"][i]
        scale[i].vector = arrays["scales"][i]
        opacity[i].value = arrays["opacities"][i]
        dc[i].color = (*arrays["f_dc"][i], 1.0)
        for j in range(k):
            rest[j][i].value = arrays["f_rest"][i, j]
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--degree", type=int, default=3, choices=(0, 1, 2, 3))
    parser.add_argument("--loop-gaussians", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "import_splats.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="recon-splats-") as folder:
        path, export_path = Path(folder, "splats.ply"), Path(folder, "exported.ply")
        splat_io.write_splats(path, random_splats(args.gaussians, args.degree))
        size_mb = path.stat().st_size / 1e6
        splat_io.write_splats(Path(folder, "warm.ply"), random_splats(1000, args.degree))
        one_round(Path(folder, "warm.ply"), export_path)  # warm-up
        rounds = [one_round(path, export_path) for _ in range(args.repeats)]
        clear()
    loop_s = loop(args.loop_gaussians, args.degree)
    clear()
    load_after = os.getloadavg()
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    loop_full = loop_s / args.loop_gaussians * args.gaussians
    passed = median["import"] <= TARGET_SECONDS
    n = f"{args.gaussians:,}"
    rows = [
        ("read (.ply -> arrays)", n, f"{median['read']:.2f} s", "", ""),
        ("build (arrays -> object)", n, f"{median['build']:.2f} s", "", ""),
        ("import (.ply -> object)", n, f"{median['import']:.2f} s", f"<= {TARGET_SECONDS:g} s", "pass" if passed else "FAIL"),
        ("first evaluation (instances)", n, f"{median['first_evaluation']:.2f} s", "", ""),
        ("export (object -> .ply)", n, f"{median['export']:.2f} s", "", ""),
        ("per-Gaussian loop, build", f"{args.loop_gaussians:,}", f"{loop_s:.2f} s", "", ""),
        ("per-Gaussian loop, extrapolated", n, f"{loop_full:.0f} s", "", ""),
        ("speed-up (loop / build)", "", f"{loop_full / median['build']:.0f}x", "", ""),
    ]
    header = ("what", "Gaussians", "time", "target", "result")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(5)]
    print(f"SH degree {args.degree}, {size_mb:.0f} MB file, median of {args.repeats}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "blender": bpy.app.version_string,
                    "load_average_before": load_before, "load_average_after": load_after},
        "gaussians": args.gaussians, "sh_degree": args.degree, "file_mb": size_mb, "rounds": rounds,
        "median_seconds": median, "loop_gaussians": args.loop_gaussians, "loop_seconds": loop_s,
        "loop_extrapolated_seconds": loop_full, "target_seconds": TARGET_SECONDS, "pass": passed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
