# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``sfm`` job from Blender: submit a photo folder, and turn ``cameras.npz`` and
``points.npz`` into a collection of calibrated cameras and a coloured point cloud
(:mod:`.reconstruction`)."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import reconstruction
from .jobs import Job, manager

CAMERA_MODEL_ITEMS = [
    ("simple_radial", "Simple Radial", "One focal length and one radial distortion term (most photos)"),
    ("simple_pinhole", "Simple Pinhole", "One focal length, no distortion (scans, undistorted images)"),
    ("pinhole", "Pinhole", "Separate focal lengths in x and y, no distortion"),
    ("opencv", "OpenCV", "Two focal lengths, radial and tangential distortion"),
    ("fisheye", "Fisheye", "OpenCV's fisheye model"),
]


def settings_properties() -> dict:
    P = bpy.props
    return {
        "camera_model": P.EnumProperty(name="Camera Model", items=CAMERA_MODEL_ITEMS, default="simple_radial"),
        "shared_camera": P.BoolProperty(name="Shared Camera", description="All photos from one camera and lens", default=True),
        "matcher": P.EnumProperty(
            name="Matching",
            items=[("exhaustive", "Exhaustive", "Every pair of photos (up to a few hundred photos)"),
                   ("sequential", "Sequential", "Neighbours in file order (video frames)")],
            default="exhaustive",
        ),
        "max_image_size": P.IntProperty(name="Max Image Size", description="Photos are scaled down to this for feature extraction; cameras stay at full resolution", default=1600, min=64),
        "refine_principal_point": P.BoolProperty(name="Refine Principal Point", default=True),
    }


SETTING_NAMES = tuple(settings_properties())


def prepare(directory: str, config: dict) -> Job:
    """The job for a photo folder; raises ValueError with an artist-facing message."""
    folder = Path(bpy.path.abspath(directory))
    if not directory or not folder.is_dir():
        raise ValueError(f"The photo folder '{folder}' does not exist. Choose a folder of photos.")
    job = manager().new_job("sfm", config)
    job.inputs["images"] = str(folder)
    return job


def import_result(job: Job, scene: bpy.types.Scene, align: bool = True, known_distance: float = 0.0,
                  animated_camera: bool = False) -> bpy.types.Collection:
    """A new collection in the scene with one camera per registered photo and the sparse
    points (colour, reprojection error and track length as attributes); see
    :func:`.reconstruction.import_files` for the options."""
    folder = Path(job.inputs["images"])
    collection = reconstruction.import_files(
        job.artifact("cameras"), job.artifact("points_arrays"), scene, f"Recon {folder.name}",
        align=align, known_distance=known_distance, animated_camera=animated_camera,
    )
    collection["recon_job"] = job.id
    return collection
