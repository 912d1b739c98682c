# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender cameras, photos and points out to the backend, in the backend's frame.

A reconstruction collection may have been aligned on import (upright, on the ground, to a
known scale): its ``recon_alignment`` custom property holds the similarity ``S`` (4x4,
row-major, ``s R | t``) that took the backend's frame (the ``cameras.npz`` the job wrote)
to Blender's. Everything a job computes (a radiance field, a mesh) lives in the backend
frame, so what goes to a job is moved by ``S^-1`` and what comes back by ``S``; cameras
stay free of scale (only their positions scale). A collection without the property was
not moved: ``S`` is the identity.

:func:`write_scene` writes a folder that ``backend/sfm/scene.py: load_scene`` reads as a
Recon job folder (``cameras.npz`` with the photos' paths, ``points.npz``); any job whose
input is "posed photos" can take it.
"""

from __future__ import annotations

import io
from pathlib import Path

import bpy
import numpy as np

from ..backend.protocol import write_bytes_atomic
from . import camera_math, converters, photo_inputs

ALIGNMENT_PROPERTY = "recon_alignment"

# COLMAP model -> how many of its parameters are the pinhole part (the rest are distortion)
PINHOLE_PARAMS = {
    "SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 3, "RADIAL": 3, "OPENCV": 4, "OPENCV_FISHEYE": 4,
    "FULL_OPENCV": 4, "SIMPLE_RADIAL_FISHEYE": 3, "RADIAL_FISHEYE": 3, "THIN_PRISM_FISHEYE": 4, "FOV": 4,
}


def alignment(collection: bpy.types.Collection | None) -> np.ndarray:
    """``S`` (4x4): the backend frame of ``collection`` to Blender's world (identity when unaligned)."""
    values = collection.get(ALIGNMENT_PROPERTY) if collection is not None else None
    if values is None:
        return np.eye(4)
    S = np.asarray(list(values), dtype=np.float64)
    if S.size != 16:
        raise ValueError(f"'{collection.name}' has a damaged '{ALIGNMENT_PROPERTY}' property ({S.size} numbers, not 16)")
    return S.reshape(4, 4)


def points_to_backend(S: np.ndarray, xyz_blender: np.ndarray) -> np.ndarray:
    """Points ``[n, 3]`` in Blender's world to the backend frame."""
    inv = np.linalg.inv(S)
    return np.asarray(xyz_blender, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def points_to_blender(S: np.ndarray, xyz_backend: np.ndarray) -> np.ndarray:
    """Points ``[n, 3]`` in the backend frame to Blender's world."""
    return np.asarray(xyz_backend, dtype=np.float64) @ S[:3, :3].T + S[:3, 3]


def w2c_to_backend(S: np.ndarray, w2c_blender_world: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera matrices ``[n, 4, 4]`` of cameras in Blender's world, for the
    same cameras in the backend frame (scale-free: only the positions move by ``S^-1``)."""
    c2w = camera_math.blender_c2w_from_w2c_opencv(w2c_blender_world)
    return camera_math.w2c_opencv_from_blender_c2w(camera_math.apply_similarity_to_cameras(np.linalg.inv(S), c2w))


def has_photo(obj: bpy.types.Object) -> bool:
    """A camera object showing a photo (a file on disk, or a packed image) as its background."""
    return obj.type == "CAMERA" and _photo_image(obj) is not None


def _photo_image(obj: bpy.types.Object) -> bpy.types.Image | None:
    for background in obj.data.background_images:
        image = background.image
        if image is None or image.source != "FILE":
            continue
        if image.packed_file is not None or (image.filepath and Path(bpy.path.abspath(image.filepath)).is_file()):
            return image
    return None


def collection_cameras(collection: bpy.types.Collection) -> tuple[list[bpy.types.Object], list[bpy.types.Object]]:
    """(cameras with photos, cameras without) among the collection's objects, in name order."""
    cameras = sorted((o for o in collection.all_objects if o.type == "CAMERA"), key=lambda o: o.name)
    return [c for c in cameras if has_photo(c)], [c for c in cameras if not has_photo(c)]


def collection_point_objects(collection: bpy.types.Collection) -> list[bpy.types.Object]:
    """The collection's point clouds that are sparse points (not Gaussian splats)."""
    from . import splats

    return [o for o in collection.all_objects if o.type == "POINTCLOUD" and not splats.is_splat_object(o)]


def distortion_columns(model: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The ``distortion`` array of ``cameras.npz`` (NaN-padded) from ``model`` and ``params``."""
    params = np.asarray(params, dtype=np.float64).reshape(len(model), -1)
    out = np.full((len(model), max(1, params.shape[1])), np.nan)
    for row, name in enumerate(model):  # per camera
        values = params[row][~np.isnan(params[row])]
        extra = values[PINHOLE_PARAMS.get(str(name), len(values)):]
        out[row, : len(extra)] = extra
    return out


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def write_scene(
    folder: str | Path,
    cameras: list[bpy.types.Object],
    scene: bpy.types.Scene,
    S: np.ndarray | None = None,
    point_objects: list[bpy.types.Object] = (),
) -> Path:
    """Write ``cameras`` (camera objects with photo backgrounds, exact intrinsics as
    :func:`.converters.camera_arrays_from_objects` reads them) and the points of
    ``point_objects`` into ``folder`` as a Recon scene (``cameras.npz``, ``points.npz``,
    the photos under ``photos/``: hard links or copies, packed images written out), moved
    into the backend frame by ``S^-1`` (``S``: see :func:`alignment`). Returns ``folder``.
    Raises ValueError naming a camera without a photo."""
    folder = Path(folder)
    missing = [c.name for c in cameras if not has_photo(c)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"Camera '{missing[0]}'{more} shows no photo: give it its photo as a background image, "
                         "or leave it out")
    if not cameras:
        raise ValueError("No cameras with photos to train on: solve or import a reconstruction first")
    S = np.eye(4) if S is None else np.asarray(S, dtype=np.float64)
    arrays = converters.camera_arrays_from_objects(list(cameras), scene)
    images = [_photo_image(c) for c in cameras]
    unique = list({i.name: i for i in images}.values())
    files = photo_inputs.image_file_names(unique)
    photo_dir = photo_inputs.photos_from_images(unique, folder / "photos")
    arrays["paths"] = np.array([str((photo_dir / files[i.name]).resolve()) for i in images])
    arrays["w2c"] = w2c_to_backend(S, arrays["w2c"])
    arrays["distortion"] = distortion_columns(arrays["model"], arrays["params"])
    _write_npz(folder / "cameras.npz", **arrays)
    xyz, rgb = [], []
    for obj in point_objects:  # per object; the points themselves in bulk
        local = converters.object_points_local(obj)
        xyz.append(points_to_backend(S, converters.transform_points(obj.matrix_world, local)))
        rgb.append(converters.object_colors_srgb(obj, len(local)))
    if xyz:
        xyz_all = np.concatenate(xyz)
        _write_npz(folder / "points.npz", xyz=xyz_all, rgb=np.concatenate(rgb).astype(np.uint8),
                   track_length=np.zeros(len(xyz_all), np.int32), error=np.zeros(len(xyz_all)))
    return folder


def render_camera_arrays(
    obj: bpy.types.Object, scene: bpy.types.Scene, frames: list[int], S: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The ``cameras.npz`` layout of ``obj`` as Blender renders it at each of ``frames``
    (animation, constraints and parents evaluated; lens animation too): pinhole intrinsics
    from its lens, sensor and shift at the scene's resolution (percentage and pixel aspect
    applied), poses moved into the backend frame. Names are ``frame_0001``... The scene is
    left at the frame it was on."""
    cam = obj.data
    if obj.type != "CAMERA":
        raise ValueError(f"'{obj.name}' is not a camera")
    if cam.type != "PERSP":
        raise ValueError(f"'{obj.name}' is a {cam.type.lower()} camera: only perspective cameras can render a field")
    render = scene.render
    width = max(1, round(render.resolution_x * render.resolution_percentage / 100))
    height = max(1, round(render.resolution_y * render.resolution_percentage / 100))
    S = np.eye(4) if S is None else np.asarray(S, dtype=np.float64)
    current = (scene.frame_current, scene.frame_subframe)
    Ks, c2ws = [], []
    try:
        for frame in frames:  # per frame: Blender evaluates the animation one frame at a time
            if frame != scene.frame_current or len(frames) > 1:
                scene.frame_set(int(frame))
            intr = camera_math.BlenderIntrinsics(
                lens=cam.lens, sensor_width=cam.sensor_width, sensor_height=cam.sensor_height,
                sensor_fit=cam.sensor_fit, shift_x=cam.shift_x, shift_y=cam.shift_y, resolution_x=width,
                resolution_y=height, pixel_aspect_x=render.pixel_aspect_x, pixel_aspect_y=render.pixel_aspect_y,
            )
            Ks.append(camera_math.K_from_blender_intrinsics(intr))
            matrix = np.array(obj.matrix_world, dtype=np.float64)
            matrix[:3, :3] /= np.linalg.norm(matrix[:3, :3], axis=0)
            c2ws.append(matrix)
    finally:
        if (scene.frame_current, scene.frame_subframe) != current:
            scene.frame_set(current[0], subframe=current[1])
    n = len(frames)
    K = np.stack(Ks)
    w2c = w2c_to_backend(S, camera_math.w2c_opencv_from_blender_c2w(np.stack(c2ws)))
    return {
        "names": np.array([frame_name(f) for f in frames]),
        "K": K,
        "model": np.array(["PINHOLE"] * n),
        "params": np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], axis=1),
        "distortion": np.full((n, 1), np.nan),
        "w2c": w2c,
        "width": np.full(n, width, np.int32),
        "height": np.full(n, height, np.int32),
        "paths": np.array([""] * n),
    }


def frame_name(frame: int) -> str:
    """The name of a rendered frame (its PNG is ``frame_0001.png``)."""
    return f"frame_{int(frame):04d}" if frame >= 0 else f"frame_m{-int(frame):04d}"


def write_cameras(folder: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_npz(folder / "cameras.npz", **arrays)
    return folder
