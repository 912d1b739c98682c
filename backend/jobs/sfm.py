# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``sfm``: photos to calibrated cameras and a sparse point cloud (pycolmap).

Writes ``model/`` (COLMAP binary), ``cameras.npz`` (with ``paths``, each photo's file),
``points.ply`` and ``points.npz`` (the same points as arrays ``xyz``, ``rgb``,
``track_length``, ``error``, which Blender reads) and ``observations.npz`` (every 2D
keypoint of every point, raw and undistorted; see ``backend/sfm/scene.py``), and reports
registered and unregistered photos, the mean reprojection error and per-stage seconds in
the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import option, path_input
from ..errors import InputError
from .runner import JobContext

KIND = "sfm"


@dataclass(frozen=True)
class Config:
    """Settings of Structure-from-Motion."""

    camera_model: str = option("simple_radial", "Lens model", ("simple_pinhole", "pinhole", "simple_radial", "opencv", "fisheye"))
    shared_camera: bool = option(True, "All photos from one camera and lens (one shared calibration)")
    matcher: str = option("auto", "Which photo pairs to match: auto (all pairs up to 100 photos, retrieval above), "
                          "exhaustive (all pairs), sequential (neighbours in name order: video frames), retrieval "
                          "(each photo with its 20 most similar and its 10 neighbours in name order)",
                          ("auto", "exhaustive", "sequential", "retrieval"))
    max_image_size: int = option(1600, "Photos are scaled down to this size for feature extraction (pixels)", minimum=64)
    max_features: int = option(8192, "Features per photo at most", minimum=64)
    refine_principal_point: bool = option(True, "Refine the principal point in the final bundle adjustment")
    refine_distortion: bool = option(True, "Refine the lens distortion in the final bundle adjustment")
    focal_length_px: float = option(0.0, "Focal length in pixels of the full-size photos to start from (bundle adjustment "
                                    "refines it); 0: from the photos' EXIF where present", minimum=0.0)


@dataclass(frozen=True)
class Inputs:
    images: str = path_input("a folder of photos")


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..sfm.pipeline import SfmSettings, reconstruct
    from ..sfm.scene import scene_from_reconstruction, write_scene

    if not inputs.images:
        raise InputError("No photos were given.", "Pass --images FOLDER.")
    settings = SfmSettings(**{name: getattr(config, name) for name in SfmSettings.__dataclass_fields__})
    result = reconstruct(
        Path(inputs.images), ctx.dir / "work", settings,
        progress=lambda stage, done, total, message: ctx.progress(stage, done, total, message),
        is_cancelled=lambda: ctx.cancelled, check_cancelled=ctx.check_cancelled,
    )
    for name in result.skipped:
        ctx.log("warning", f"skipped {name}: {result.skip_reasons.get(name, 'not a photo')}")
    rec = result.reconstruction
    model_dir = ctx.dir / "model"
    model_dir.mkdir(exist_ok=True)
    rec.write_binary(str(model_dir))
    ctx.artifact("model", model_dir, "colmap")
    scene = scene_from_reconstruction(rec, model_dir, "recon", image_dir=Path(result.image_dir).resolve())
    for name, path, fmt in write_scene(ctx.dir, scene):
        ctx.artifact(name, path, fmt)
    if result.unregistered:
        ctx.log("warning", f"{len(result.unregistered)} photo(s) not registered: {', '.join(result.unregistered)}")
    return {
        "photos": len(result.images),
        "registered": len(result.registered),
        "unregistered": result.unregistered,
        "skipped_files": result.skipped,
        "skip_reasons": result.skip_reasons,
        "matcher": result.matcher,
        "pairs": result.pairs,
        "focal_prior_px": result.focal_prior_px,
        "focal_prior_source": result.focal_prior_source,
        "points": int(len(scene.points["xyz"])),
        "observations": int(len(scene.observations["xy"])),
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "focal_px": [float(v) for v in np.unique(np.round(scene.cameras["K"][:, 0, 0], 3))],
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
    }
