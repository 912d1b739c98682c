# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: writing a point cloud into Blender in bulk against a per-point Python loop.

    .venv/bin/python bench/import_points.py [--points 1000000] [--loop-points 100000] [--out bench/results/import_points.json]

The bulk path is ``addon.converters.point_cloud_object`` (positions, sRGB colours and a
per-point error attribute with ``foreach_set``, then a Point Cloud object). The loop sets
the same data one point at a time on a smaller cloud, and its rate is extrapolated to the
full size (labelled as such). Target: 1,000,000 points in 1 s or less.
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

from addon.converters import point_cloud_object  # noqa: E402


def cloud(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8),
            rng.random(n).astype(np.float32))


def clear() -> None:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)
    for cloud_data in list(bpy.data.pointclouds):
        bpy.data.pointclouds.remove(cloud_data)


def bulk(n: int) -> float:
    xyz, rgb, err = cloud(n)
    clear()
    started = time.perf_counter()
    point_cloud_object("bulk", xyz, bpy.context.scene.collection, rgb, {"error": err})
    return time.perf_counter() - started


def loop(n: int) -> float:
    """The same data written one point at a time (what a naive importer does)."""
    xyz, rgb, err = cloud(n)
    clear()
    started = time.perf_counter()
    mesh = bpy.data.meshes.new("loop")
    mesh.vertices.add(n)
    mesh.attributes.new("Col", "FLOAT_COLOR", "POINT")
    mesh.attributes.new("error", "FLOAT", "POINT")
    # Look both up only now: adding an attribute invalidates references to the others.
    color, error = mesh.attributes["Col"], mesh.attributes["error"]
    for i in range(n):
        mesh.vertices[i].co = xyz[i]
        color.data[i].color_srgb = (*(rgb[i] / 255.0), 1.0)
        error.data[i].value = err[i]
    obj = bpy.data.objects.new("loop", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--loop-points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "import_points.json")
    args = parser.parse_args()
    bulk(1000)  # warm-up
    bulk_times = [bulk(args.points) for _ in range(args.repeats)]
    loop_seconds = loop(args.loop_points)
    bulk_s = statistics.median(bulk_times)
    loop_rate = loop_seconds / args.loop_points
    loop_full = loop_rate * args.points
    rows = [
        ("bulk (foreach_set)", f"{args.points:,}", f"{bulk_s:.3f} s", "<= 1 s", "pass" if bulk_s <= 1.0 else "FAIL"),
        ("per-point loop", f"{args.loop_points:,}", f"{loop_seconds:.2f} s", "", ""),
        ("per-point loop, extrapolated", f"{args.points:,}", f"{loop_full:.1f} s", "", ""),
        ("speed-up (loop / bulk)", "", f"{loop_full / bulk_s:.0f}x", "", ""),
    ]
    widths = [max(len(r[i]) for r in rows + [("what", "points", "time", "target", "result")]) for i in range(5)]
    for row in [("what", "points", "time", "target", "result"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "blender": bpy.app.version_string},
        "points": args.points, "bulk_seconds": bulk_times, "bulk_median_seconds": bulk_s,
        "loop_points": args.loop_points, "loop_seconds": loop_seconds, "loop_extrapolated_seconds": loop_full,
        "target_seconds": 1.0, "pass": bulk_s <= 1.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
