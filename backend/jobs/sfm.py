# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``sfm``: photos to calibrated cameras and a sparse point cloud (pycolmap).

Writes ``model/`` (COLMAP binary), ``cameras.npz``, ``points.ply`` and ``points.npz``
(the same points as arrays ``xyz``, ``rgb``, ``track_length``, ``error``, which Blender
reads; see ``backend/sfm/pipeline.py`` for the layouts), and reports registered and unregistered
photos, the mean reprojection error and per-stage seconds in the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import option
from ..errors import InputError
from .runner import JobContext

KIND = "sfm"


@dataclass(frozen=True)
class Config:
    """Settings of Structure-from-Motion."""

    camera_model: str = option("simple_radial", "Lens model", ("simple_pinhole", "pinhole", "simple_radial", "opencv", "fisheye"))
    shared_camera: bool = option(True, "All photos from one camera and lens (one shared calibration)")
    matcher: str = option("exhaustive", "Which photo pairs to match: all, or neighbours in sequence (video)",
                          ("exhaustive", "sequential"))
    max_image_size: int = option(1600, "Photos are scaled down to this size for feature extraction (pixels)", minimum=64)
    max_features: int = option(8192, "Features per photo at most", minimum=64)
    refine_principal_point: bool = option(True, "Refine the principal point in the final bundle adjustment")
    refine_distortion: bool = option(True, "Refine the lens distortion in the final bundle adjustment")


@dataclass(frozen=True)
class Inputs:
    images: str = ""  # a folder of photos


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..geometry.io import write_npz, write_points_ply
    from ..sfm.pipeline import SfmSettings, cameras_arrays, points_arrays, reconstruct

    if not inputs.images:
        raise InputError("No photos were given.", "Pass --images FOLDER.")
    settings = SfmSettings(**{name: getattr(config, name) for name in SfmSettings.__dataclass_fields__})
    result = reconstruct(
        Path(inputs.images), ctx.dir / "work", settings,
        progress=lambda stage, done, total, message: ctx.progress(stage, done, total, message),
        is_cancelled=lambda: ctx.cancelled, check_cancelled=ctx.check_cancelled,
    )
    for name in result.skipped:
        ctx.log("warning", f"skipped {name}: not a photo")
    rec = result.reconstruction
    model_dir = ctx.dir / "model"
    model_dir.mkdir(exist_ok=True)
    rec.write_binary(str(model_dir))
    ctx.artifact("model", model_dir, "colmap")
    cameras = cameras_arrays(rec)
    write_npz(ctx.dir / "cameras.npz", **cameras)
    ctx.artifact("cameras", ctx.dir / "cameras.npz", "npz")
    points = points_arrays(rec)
    write_points_ply(
        ctx.dir / "points.ply",
        x=points["xyz"][:, 0].astype(np.float32), y=points["xyz"][:, 1].astype(np.float32),
        z=points["xyz"][:, 2].astype(np.float32),
        red=points["rgb"][:, 0], green=points["rgb"][:, 1], blue=points["rgb"][:, 2],
        track_length=points["track_length"], error=points["error"].astype(np.float32),
    )
    ctx.artifact("points", ctx.dir / "points.ply", "ply")
    write_npz(ctx.dir / "points.npz", **points)
    ctx.artifact("points_arrays", ctx.dir / "points.npz", "npz")
    if result.unregistered:
        ctx.log("warning", f"{len(result.unregistered)} photo(s) not registered: {', '.join(result.unregistered)}")
    return {
        "photos": len(result.images),
        "registered": len(result.registered),
        "unregistered": result.unregistered,
        "skipped_files": result.skipped,
        "points": int(len(points["xyz"])),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "focal_px": [float(v) for v in np.unique(np.round(cameras["K"][:, 0, 0], 3))],
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
    }
