# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``sfm`` job from Blender: submit a photo folder, and turn ``cameras.npz`` and
``points.npz`` into a collection of calibrated cameras and a coloured point cloud
(:mod:`.reconstruction`)."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import photo_inputs, reconstruction
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
            items=[("auto", "Automatic", "Every pair of photos up to 100 photos, similar photos above"),
                   ("exhaustive", "Exhaustive", "Every pair of photos (up to a few hundred photos)"),
                   ("sequential", "Sequential", "Neighbours in file order (video frames)"),
                   ("retrieval", "Similar Photos", "Each photo with the 20 that look most like it and its 10 "
                    "neighbours in file order (large sets)")],
            default="auto",
        ),
        "max_image_size": P.IntProperty(name="Max Image Size", description="Photos are scaled down to this for feature extraction; cameras stay at full resolution", default=1600, min=64),
        "refine_principal_point": P.BoolProperty(name="Refine Principal Point", default=True),
        "focal_length_px": P.FloatProperty(
            name="Focal Length (px)", default=0.0, min=0.0, soft_max=20000.0,
            description="Focal length in pixels of the full-size photos to start from; the solve refines it. "
                        "0: from the photos' EXIF where present",
        ),
    }


SETTING_NAMES = tuple(settings_properties())


def prepare(directory: str, config: dict) -> Job:
    """The job for a photo folder; raises ValueError with an artist-facing message."""
    folder = Path(bpy.path.abspath(directory))
    if not directory or not folder.is_dir():
        raise ValueError(f"The photo folder '{folder}' does not exist. Choose a folder of photos.")
    job = manager().new_job("sfm", config)
    job.inputs["images"] = str(folder)
    job.title = folder.name
    return job


def prepare_from_source(context, source: str, directory: str, image_names: list[str], clip_name: str, frame_step: int,
                        config: dict) -> Job:
    """The job for photos from a folder (``FOLDER``), image datablocks (``IMAGES``: those named,
    else the selected ones) or a movie clip's every ``frame_step``-th frame (``CLIP``); the
    images and frames are written into the job's ``inputs/photos``. Raises ValueError with an
    artist-facing message."""
    if source == "FOLDER":
        return prepare(directory, config)
    if source == "IMAGES":
        images = photo_inputs.images_from_context(context, image_names)
        photo_inputs.image_file_names(images)  # refuses non-photos before a job folder exists
        job = manager().new_job("sfm", config)
        folder = photo_inputs.photos_from_images(images, job.dir / "inputs" / "photos")
        job.title = "images"
        job.backgrounds = {file: image for image, file in photo_inputs.image_file_names(images).items()}
    elif source == "CLIP":
        clip = photo_inputs.clip_from_context(context, clip_name)
        job = manager().new_job("sfm", config)
        folder = photo_inputs.photos_from_clip(clip, job.dir / "inputs" / "photos", frame_step)
        job.title = clip.name
    else:
        raise ValueError(f"Unknown photo source '{source}'")
    job.inputs["images"] = str(folder)
    return job


def import_result(job: Job, scene: bpy.types.Scene, align: bool = True, known_distance: float = 0.0,
                  animated_camera: bool = False) -> bpy.types.Collection:
    """A new collection in the scene with one camera per registered photo and the sparse
    points (colour, reprojection error and track length as attributes); see
    :func:`.reconstruction.import_files` for the options."""
    title = job.title or Path(job.inputs["images"]).name
    collection = reconstruction.import_files(
        job.artifact("cameras"), job.artifact("points_arrays"), scene, f"Recon {title}",
        align=align, known_distance=known_distance, animated_camera=animated_camera,
        backgrounds={file: bpy.data.images[image] for file, image in job.backgrounds.items() if image in bpy.data.images},
    )
    collection["recon_job"] = job.id
    return collection
