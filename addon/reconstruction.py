# SPDX-License-Identifier: GPL-3.0-or-later
"""A reconstruction into Blender: the ``cameras.npz`` and ``points.npz`` that the ``sfm``
and ``import`` jobs write become a collection of calibrated cameras (photos as their
backgrounds), a coloured point cloud and, for video, one animated camera. Optionally
aligned: upright, on the ground, to a known scale. And back out: selected cameras to a
COLMAP text model and a ``transforms.json``."""

from __future__ import annotations

import re
from pathlib import Path

import bpy
import numpy as np

from . import camera_export, camera_math, converters


def import_properties(align_default: bool) -> dict:
    P = bpy.props
    return {
        "align": P.BoolProperty(
            name="Align", default=align_default,
            description="Turn the result upright (the cameras' average up becomes +Z), put the lowest points on "
                        "the ground (z = 0) and centre them",
        ),
        "known_distance": P.FloatProperty(
            name="Camera Distance", default=0.0, min=0.0, subtype="DISTANCE",
            description="Scale the result so that the first two cameras are this far apart (0 keeps the "
                        "reconstruction's own scale)",
        ),
        "animated_camera": P.BoolProperty(
            name="Animated Camera", default=False,
            description="Also create one camera keyed through every solved view (for video frames), at the frame "
                        "numbers in the photo names when they have them",
        ),
    }


IMPORT_NAMES = tuple(import_properties(False))


def frame_numbers(names) -> np.ndarray:
    """The frame of each photo for an animated camera: the number in its name (``frame_000123.jpg``)
    when every name has a different one, else 1, 2, 3... in name order."""
    numbers = [re.findall(r"\d+", Path(str(n)).stem) for n in names]
    if all(numbers):
        last = [int(found[-1]) for found in numbers]
        if len(set(last)) == len(last):
            return np.array(last)
    order = np.argsort(np.asarray(names, dtype=str), kind="stable")
    frames = np.empty(len(order), dtype=np.int64)
    frames[order] = np.arange(1, len(order) + 1)
    return frames


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def import_files(
    cameras_path: Path,
    points_path: Path | None,
    scene: bpy.types.Scene,
    name: str,
    align: bool = False,
    known_distance: float = 0.0,
    animated_camera: bool = False,
    backgrounds: dict | None = None,
) -> bpy.types.Collection:
    """A new collection ``name`` in ``scene`` with the cameras and points (``backgrounds``:
    photo name -> an image datablock to show behind that camera instead of loading the
    file); nothing is left behind if this raises."""
    cameras = load_arrays(cameras_path)
    points = load_arrays(points_path) if points_path is not None and Path(points_path).is_file() else None
    xyz = points["xyz"] if points is not None else np.zeros((0, 3))
    similarity = np.eye(4)
    if align or known_distance > 0.0:
        c2w = camera_math.blender_c2w_from_w2c_opencv(cameras["w2c"])
        similarity = camera_math.alignment(c2w, xyz, known_distance) if align else _scale_only(c2w, known_distance)
        cameras["w2c"] = camera_math.w2c_opencv_from_blender_c2w(camera_math.apply_similarity_to_cameras(similarity, c2w))
        xyz = xyz @ similarity[:3, :3].T + similarity[:3, 3]
    with converters.rollback_on_error() as created:
        collection = bpy.data.collections.new(name)
        created.append(collection)
        scene.collection.children.link(collection)
        created += converters.camera_objects(cameras, collection, scene, backgrounds=backgrounds)
        if animated_camera and len(cameras["names"]):
            frames = frame_numbers(cameras["names"])
            order = np.argsort(frames, kind="stable")
            ordered = {key: value[order] for key, value in cameras.items() if len(np.shape(value)) and len(value) == len(frames)}
            created.append(converters.animated_camera_object(f"{name} camera", ordered, frames[order], collection))
        if len(xyz):
            extent = float(np.ptp(xyz, axis=0).max())
            attributes = {key: points[key] for key in ("error", "track_length") if key in points}
            created.append(converters.point_cloud_object(
                "sparse points", xyz, collection, points.get("rgb"), attributes, radius=max(extent, 1e-6) * 0.002,
            ))
        collection["recon_alignment"] = similarity.ravel().tolist()
    return collection


def _scale_only(c2w: np.ndarray, known_distance: float) -> np.ndarray:
    S = np.eye(4)
    if len(c2w) >= 2:
        baseline = np.linalg.norm(c2w[0, :3, 3] - c2w[1, :3, 3])
        if baseline > 0.0:
            S[:3, :3] *= known_distance / baseline
    return S


# -- export ---------------------------------------------------------------------------------
def export_cameras(
    objects: list[bpy.types.Object],
    scene: bpy.types.Scene,
    folder: str,
    formats: set[str],
    point_objects: list[bpy.types.Object] = (),
) -> list[Path]:
    """Write the camera objects (and the points of ``point_objects``, in world space) into
    ``folder``: ``colmap/`` (cameras.txt, images.txt, points3D.txt) for ``"COLMAP"``,
    ``transforms.json`` (and ``points.ply`` when there are points) for ``"TRANSFORMS"``."""
    cameras = converters.camera_arrays_from_objects(objects, scene)
    points = _world_points(point_objects)
    folder = Path(bpy.path.abspath(folder))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "COLMAP" in formats:
        written.append(camera_export.write_colmap_text(folder / "colmap", cameras, points))
    if "TRANSFORMS" in formats:
        ply = None
        if points is not None:
            written.append(camera_export.write_points_ply(folder / "points.ply", points["xyz"], points["rgb"]))
            ply = "points.ply"
        written.append(camera_export.write_transforms_json(folder / "transforms.json", cameras, ply))
    return written


def _world_points(objects) -> dict[str, np.ndarray] | None:
    xyz, rgb = [], []
    for obj in objects:  # per object
        local = converters.object_points_local(obj)
        xyz.append(converters.transform_points(obj.matrix_world, local).astype(np.float64))
        rgb.append(converters.object_colors_srgb(obj, len(local)))
    if not xyz:
        return None
    return {"xyz": np.concatenate(xyz), "rgb": np.concatenate(rgb)}


# -- import of existing reconstructions ------------------------------------------------------
COLMAP_FILES = {"cameras.bin", "images.bin", "points3D.bin", "cameras.txt", "images.txt", "points3D.txt", "frames.bin", "rigs.bin"}


def prepare_import(source: str, images: str = ""):
    """The ``import`` job for a COLMAP model (its folder or any of its files) or a
    ``transforms.json``; raises ValueError with an artist-facing message."""
    from .jobs import manager

    path = Path(bpy.path.abspath(source)) if source else None
    if path is None or not path.exists():
        raise ValueError(f"'{source}' does not exist. Choose a COLMAP model folder (or one of its files) or a transforms.json.")
    if path.is_file() and path.name in COLMAP_FILES:
        path = path.parent
    if path.is_file() and path.suffix.lower() != ".json":
        raise ValueError(f"'{path.name}' is neither a transforms.json nor a COLMAP model file (cameras, images, points3D).")
    job = manager().new_job("import", {})
    job.inputs["source"] = str(path)
    if images:
        folder = Path(bpy.path.abspath(images))
        if not folder.is_dir():
            raise ValueError(f"The photo folder '{folder}' does not exist. Choose it again or leave it empty.")
        job.inputs["images"] = str(folder)
    return job


def import_job_result(job, scene: bpy.types.Scene, **options) -> bpy.types.Collection:
    source = Path(job.inputs["source"])
    folders = source.parent.parts if source.suffix.lower() == ".json" else source.parts
    # COLMAP's project/sparse/0 and nerfstudio's project/colmap/sparse/0 are named after the project
    label = next((part for part in reversed(folders) if not part.isdigit() and part not in ("sparse", "model", "colmap")), "reconstruction")
    collection = import_files(job.artifact("cameras"), job.artifact("points_arrays"), scene, f"Recon {label}", **options)
    collection["recon_job"] = job.id
    return collection
