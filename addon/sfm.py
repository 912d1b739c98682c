# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``sfm`` job from Blender: submit a photo folder, and turn ``cameras.npz`` and
``points.npz`` into a collection of calibrated cameras and a coloured point cloud."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from . import converters
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


def import_result(job: Job, scene: bpy.types.Scene) -> bpy.types.Collection:
    """A new collection in the scene with one camera per registered photo and the sparse
    points (colour, reprojection error and track length as attributes)."""
    with np.load(job.artifact("cameras")) as data:
        cameras = {key: data[key] for key in data.files}
    with np.load(job.artifact("points_arrays")) as data:
        points = {key: data[key] for key in data.files}
    folder = Path(job.inputs["images"])
    with converters.rollback_on_error() as created:
        collection = bpy.data.collections.new(f"Recon {folder.name}")
        created.append(collection)
        scene.collection.children.link(collection)
        created += converters.camera_objects(cameras, collection, scene, str(folder))
        extent = np.ptp(points["xyz"], axis=0).max() if len(points["xyz"]) else 1.0
        created.append(converters.point_cloud_object(
            "sparse points", points["xyz"], collection, points["rgb"],
            {"error": points["error"], "track_length": points["track_length"]}, radius=float(extent) * 0.002,
        ))
        collection["recon_job"] = job.id
    return collection

