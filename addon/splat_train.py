# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``splat`` job from Blender: train Gaussian splats on the cameras of a reconstruction.

The job's input scene is written from the Blender cameras as they stand (a Recon job
folder: ``cameras.npz`` with the exact intrinsics of :func:`.converters.camera_arrays_from_objects`
and the photos' paths, ``points.npz`` with the world-space points of the collection's point
clouds). Training therefore happens in the Blender world frame: whatever alignment
``recon.run_sfm`` applied (upright, scaled, see :func:`.reconstruction.import_files`) is
already in the cameras and points, so the splats come back lined up with them, at the
identity transform, into the same collection.

While the job runs, its ``preview.png`` is loaded into the image "Recon Splat Preview"
every few seconds (shown in the Gaussian Splats panel). A cancelled job keeps its last
``splats.ply``: :func:`import_job_splats` brings it in.
"""

from __future__ import annotations

import time
from pathlib import Path

import bpy
import numpy as np

from . import converters, photo_inputs, previews, splats
from .jobs import Job, manager

PREVIEW_IMAGE = "Recon Splat Preview"
PREVIEW_SECONDS = 3.0  # how often the Blender image is reloaded from the job's preview.png

# COLMAP model -> how many of its parameters are focal lengths and principal point (the rest: distortion)
INTRINSIC_COUNT = {
    "SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 3, "RADIAL": 3, "OPENCV": 4, "OPENCV_FISHEYE": 4,
    "FULL_OPENCV": 4, "SIMPLE_RADIAL_FISHEYE": 3, "RADIAL_FISHEYE": 3, "THIN_PRISM_FISHEYE": 4, "FOV": 4,
}

# job id -> name of the collection its splats go into (job state lives in Python, not the .blend)
_TARGETS: dict[str, str] = {}
_IMPORTED: set[str] = set()  # jobs whose splats are in the scene already


def settings_properties() -> dict:
    P = bpy.props
    return {
        "preset": P.EnumProperty(
            name="Preset",
            items=[("fast", "Fast", "A quick look: 2000 iterations at half resolution, SH degree 1, up to 100k Gaussians"),
                   ("default", "Default", "7000 iterations at full resolution, SH degree 3, up to 300k Gaussians"),
                   ("quality", "Quality", "30000 iterations, up to 1M Gaussians (slow without a GPU)")],
            default="fast",
        ),
        "max_minutes": P.FloatProperty(
            name="Max Minutes", default=10.0, min=0.0, soft_max=120.0,
            description="Finish within this many minutes of training, whatever the iterations (0: no limit)",
        ),
        "iterations": P.IntProperty(name="Iterations", default=0, min=0, soft_max=30000,
                                    description="Training steps (0: the preset's)"),
        "resolution_scale": P.FloatProperty(
            name="Resolution Scale", default=0.0, min=0.0, max=1.0,
            description="Train on the photos scaled by this (0: the preset's: fast 0.5, else 1)",
        ),
        "sh_degree": P.IntProperty(
            name="SH Degree", default=-1, min=-1, max=3,
            description="Spherical-harmonics degree for view-dependent colour, 0-3 (-1: the preset's)",
        ),
        "max_gaussians": P.IntProperty(name="Max Gaussians", default=0, min=0, soft_max=3_000_000,
                                       description="Stop adding Gaussians at this many (0: the preset's)"),
        "background": P.EnumProperty(
            name="Background",
            items=[("auto", "Automatic", "White behind photos with transparency, else black"),
                   ("white", "White", ""), ("black", "Black", ""),
                   ("random", "Random", "A new colour each step (photos with transparency)")],
            default="auto",
        ),
        "hold_out_every": P.IntProperty(
            name="Hold Out Every", default=10, min=0, soft_max=50,
            description="Every n-th photo is kept out of training to measure quality (held-out PSNR; 0: none)",
        ),
    }


SETTING_NAMES = tuple(settings_properties())


# -- what to train on ----------------------------------------------------------------------------
def _photo_image(camera_object) -> bpy.types.Image | None:
    for background in camera_object.data.background_images:
        if background.image is not None:
            return background.image
    return None


def _collection_of(obj) -> bpy.types.Collection | None:
    recon = [c for c in obj.users_collection if "recon_alignment" in c or c.name.startswith("Recon ")]
    return (recon or list(obj.users_collection) or [None])[0]


def _cameras_in(collection) -> list:
    """The collection's cameras that show a photo (an animated camera made for video has none)."""
    return sorted((o for o in collection.all_objects if o.type == "CAMERA"
                   and (_photo_image(o) is not None or "recon_photo" in o)), key=lambda o: o.name)


def gather(context, collection=None, cameras=None, source: str = "AUTO"):
    """``(collection, cameras, point objects)`` to train on: ``cameras`` when given, else the
    selected cameras (``SELECTED``, or ``AUTO`` with two or more selected), else those of
    ``collection`` or the active one (the collection clicked in the Outliner, or the active
    object's). The points are the collection's point clouds (splat objects excluded). Raises
    ValueError with an artist-facing message."""
    if cameras is None and source in ("AUTO", "SELECTED"):
        selected = sorted((o for o in context.selected_objects if o.type == "CAMERA"), key=lambda o: o.name)
        if source == "SELECTED" or len(selected) >= 2:
            if not selected:
                raise ValueError("No cameras are selected: select the cameras to train on (they need their photos "
                                 "as background images), or choose a reconstruction collection")
            cameras = selected
    if cameras is not None:
        cameras = [o for o in cameras if o.type == "CAMERA"]
        if not cameras:
            raise ValueError("No cameras to train on: give camera objects with their photos as background images")
        collection = collection or _collection_of(cameras[0])
    else:
        if collection is None:
            active = context.collection
            if active is not None and active is not context.scene.collection and _cameras_in(active):
                collection = active
            elif context.active_object is not None:
                collection = _collection_of(context.active_object)
        if collection is None or collection is context.scene.collection or not _cameras_in(collection):
            name = f"'{collection.name}' " if collection is not None and collection is not context.scene.collection else ""
            raise ValueError(f"The collection {name}holds no cameras with photos: click a 'Recon ...' collection made by "
                             "Solve Cameras or Import Reconstruction in the Outliner, or select the cameras to train on")
        cameras = _cameras_in(collection)
    points = [o for o in (collection.all_objects if collection is not None else ())
              if o.type == "POINTCLOUD" and not splats.is_splat_object(o) and len(o.data.points)]
    return collection, cameras, points


def _photo_paths(cameras: list, folder: Path) -> list[str]:
    """The photo file of each camera (packed photos written into ``folder``); ValueError names
    the cameras without a usable photo."""
    images, missing = [], []
    for obj in cameras:  # per camera
        image = _photo_image(obj)
        if image is None:
            missing.append(f"'{obj.name}' (no background image)")
        elif image.packed_file is None and (image.source != "FILE" or not Path(bpy.path.abspath(image.filepath)).is_file()):
            where = bpy.path.abspath(image.filepath) if image.filepath else "made in Blender, never saved"
            missing.append(f"'{obj.name}' (photo '{image.name}': {where} is not a file)")
        images.append(image)
    if missing:
        listed = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ValueError(f"{len(missing)} of {len(cameras)} camera(s) have no photo to train on: {listed}. Splats are "
                         "trained from each camera's photo, shown as its background image: add it, or leave the "
                         "camera out of the selection")
    packed = [image for image in images if image.packed_file is not None]
    names = photo_inputs.image_file_names(packed) if packed else {}
    if packed:
        photo_inputs.photos_from_images(packed, folder)
    return [str(folder / names[image.name]) if image.packed_file is not None else bpy.path.abspath(image.filepath)
            for image in images]


def _check_sizes(cameras: list, arrays: dict) -> None:
    """Photos already loaded in Blender whose shape is not their camera's (another resolution
    of the same frame is fine); the backend checks the others."""
    wrong = []
    for row, obj in enumerate(cameras):  # per camera
        image = _photo_image(obj)
        if image is None or not image.has_data:
            continue
        w, h = (int(v) for v in image.size)
        cw, ch = int(arrays["width"][row]), int(arrays["height"][row])
        if w and h and abs(w * ch - h * cw) > max(w, cw):
            wrong.append(f"'{obj.name}' is {cw}x{ch}, its photo '{image.name}' {w}x{h}")
    if wrong:
        listed = ", ".join(wrong[:4]) + (f" and {len(wrong) - 4} more" if len(wrong) > 4 else "")
        raise ValueError(f"Photos of another shape than their cameras: {listed}. Give each camera the photo it was "
                         "solved from, or set the camera's resolution (its recon_width/recon_height) to the photo's")


def _distortion(model: np.ndarray, params: np.ndarray) -> np.ndarray:
    out = np.full(params.shape, np.nan)
    for row, name in enumerate(model):  # per camera
        values = params[row][~np.isnan(params[row])]
        extra = values[INTRINSIC_COUNT.get(str(name), len(values)):]
        out[row, : len(extra)] = extra
    return out


def world_points(objects: list) -> dict[str, np.ndarray]:
    """The points of ``objects`` in world space, with their sRGB colours (the ``points.npz`` layout)."""
    xyz, rgb = [np.zeros((0, 3))], [np.zeros((0, 3), np.uint8)]
    for obj in objects:  # per object
        local = converters.object_points_local(obj)
        xyz.append(converters.transform_points(obj.matrix_world, local).astype(np.float64))
        rgb.append(converters.object_colors_srgb(obj, len(local)))
    xyz, rgb = np.concatenate(xyz), np.concatenate(rgb)
    return {"xyz": xyz, "rgb": rgb, "track_length": np.zeros(len(xyz), np.int32), "error": np.zeros(len(xyz))}


def write_scene(folder: Path, scene: bpy.types.Scene, cameras: list, points: list) -> dict[str, np.ndarray]:
    """Write ``cameras.npz`` and ``points.npz`` (world space, Blender's frame) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = converters.camera_arrays_from_objects(cameras, scene)
    _check_sizes(cameras, arrays)
    arrays["paths"] = np.array(_photo_paths(cameras, folder / "photos"))
    arrays["distortion"] = _distortion(arrays["model"], arrays["params"])
    np.savez(folder / "cameras.npz", **arrays)
    np.savez(folder / "points.npz", **world_points(points))
    return arrays


def prepare(context, config: dict, collection=None, cameras=None, source: str = "AUTO") -> Job:
    """The ``splat`` job for the cameras and points :func:`gather` finds, its input scene
    written; raises ValueError with an artist-facing message (nothing is submitted then)."""
    unknown = sorted(set(config) - set(SETTING_NAMES))
    if unknown:
        raise ValueError(f"Unknown splat setting(s) {unknown}; valid: {list(SETTING_NAMES)}")
    collection, cameras, points = gather(context, collection, cameras, source)
    job = manager().new_job("splat", config)
    try:
        write_scene(job.dir / "inputs" / "scene", context.scene, cameras, points)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    job.inputs["scene"] = str(job.dir / "inputs" / "scene")
    job.title = collection.name if collection is not None else "splats"
    if collection is not None:
        _TARGETS[job.id] = collection.name
    return job


# -- while it runs ---------------------------------------------------------------------------------
def refresh_preview(job: Job) -> bpy.types.Image | None:
    """Load the job's ``preview.png`` into the image "Recon Splat Preview" when it changed."""
    return previews.show_preview(PREVIEW_IMAGE, job.dir / "preview.png")


def preview_refresher(interval: float = PREVIEW_SECONDS):
    """An ``on_progress`` callback for :meth:`.jobs.Job.wait` that refreshes the preview every ``interval`` s."""
    last = [0.0]

    def on_progress(job: Job) -> None:
        now = time.monotonic()
        if now - last[0] >= interval or not job.active:
            last[0] = now
            refresh_preview(job)

    return on_progress


# -- the result ------------------------------------------------------------------------------------
def splats_path(job: Job) -> Path | None:
    """The job's ``splats.ply`` (the final one, or the last state of a cancelled job), if written."""
    path = job.dir / "splats.ply"
    return path if path.is_file() else None


def target_collection(job: Job, scene: bpy.types.Scene) -> bpy.types.Collection:
    name = _TARGETS.get(job.id)
    collection = bpy.data.collections.get(name) if name else None
    return collection if collection is not None else scene.collection


def import_job_splats(job: Job, scene: bpy.types.Scene) -> bpy.types.Object:
    """The job's splats as a splat object in the collection it trained on (world frame: the
    identity transform lines them up with the cameras). Raises ValueError when there are none."""
    path = splats_path(job)
    if path is None:
        raise ValueError(f"The splat job {job.id} wrote no splats.ply (folder: {job.dir})")
    collection = target_collection(job, scene)
    label = collection.name.removeprefix("Recon ") if collection is not scene.collection else job.title
    obj = splats.import_splats(path, collection, name=f"{label} splats")
    obj["recon_job"] = job.id
    background = (job.summary or {}).get("settings", {}).get("background") or job.config.get("background")
    if background in ("white", "black"):  # what the splats were trained in front of (auto resolved)
        obj["recon_background"] = background
    _IMPORTED.add(job.id)
    return obj


def last_state_job() -> Job | None:
    """The latest splat job that was cancelled or failed with a ``splats.ply`` not yet imported."""
    job = manager().latest("splat")
    if job is None or job.active or job.status == "succeeded" or job.id in _IMPORTED or splats_path(job) is None:
        return None
    return job


def find_job(job_id: str) -> Job | None:
    return manager().jobs.get(job_id) if job_id else last_state_job()


def iteration_of(job: Job) -> int | None:
    """The last training iteration the job reported."""
    value = (job.summary or {}).get("iterations", job.metrics.get("iteration"))
    return int(value) if value is not None else None
