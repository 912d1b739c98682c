# SPDX-License-Identifier: GPL-3.0-or-later
"""Posed photos from any of the formats artists bring, in one layout.

:func:`load_scene` reads

- a Recon ``sfm`` or ``import`` job folder (``cameras.npz``, ``points.npz``, ``observations.npz``);
- a COLMAP model folder, text or binary (``cameras``, ``images``, ``points3D``), or a folder
  holding one under ``sparse/0``, ``sparse``, ``model`` or ``colmap``; photos are looked up
  in an ``images`` folder beside or above it;
- a NeRF/nerfstudio/instant-ngp ``transforms.json`` (or a folder holding one): per-frame
  ``transform_matrix`` (camera-to-world, OpenGL/Blender camera axes), intrinsics per file
  or per frame (``fl_x fl_y cx cy w h``, ``k1 k2 k3 k4 p1 p2``, or ``camera_angle_x``).

and returns the ``cameras.npz`` arrays (``names``, ``K``, ``params``, ``distortion``,
``model``, ``w2c`` in OpenCV axes, ``width``, ``height``, ``paths``), the sparse points and,
from COLMAP models, the 2D observations of the points. Pixel convention: COLMAP's (the
image spans ``[0, W] x [0, H]``), which nerfstudio shares.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, require

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # camera-frame flip, its own inverse

# transforms.json distortion keys per COLMAP model, in COLMAP's parameter order
TRANSFORMS_DISTORTION = {
    "SIMPLE_PINHOLE": (),
    "PINHOLE": (),
    "SIMPLE_RADIAL": ("k1",),
    "RADIAL": ("k1", "k2"),
    "OPENCV": ("k1", "k2", "p1", "p2"),
    "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4"),
    "FULL_OPENCV": ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}


@dataclass
class Scene:
    cameras: dict[str, np.ndarray]  # the cameras.npz layout, plus ``paths`` (absolute, "" if unknown)
    points: dict[str, np.ndarray]  # xyz [m, 3], rgb [m, 3] uint8, track_length [m], error [m]
    observations: dict[str, np.ndarray] | None  # point_index, image_index, xy, xy_undistorted
    source: str  # "recon", "colmap" or "transforms"
    path: Path

    @property
    def missing_photos(self) -> list[str]:
        return [str(n) for n, p in zip(self.cameras["names"], self.cameras["paths"], strict=True) if not p or not Path(p).is_file()]


def empty_points() -> dict[str, np.ndarray]:
    return {"xyz": np.zeros((0, 3)), "rgb": np.zeros((0, 3), np.uint8), "track_length": np.zeros(0, np.int32), "error": np.zeros(0)}


def load_scene(path: str | Path) -> Scene:
    """The posed photos at ``path`` (see the module's docstring); InputError names what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist.", "Give a Recon job folder, a COLMAP model folder or a transforms.json.")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return load_transforms(path)
        if path.name == "cameras.npz":
            return load_recon(path.parent)
        raise InputError(f"{path} is not a transforms.json or cameras.npz.", "Give a folder or a transforms.json.")
    if (path / "cameras.npz").is_file():
        return load_recon(path)
    model = find_colmap_model(path)
    if model is not None:
        return load_colmap(model)
    for name in ("transforms.json", "transforms_train.json"):
        if (path / name).is_file():
            return load_transforms(path / name)
    raise InputError(
        f"{path} holds no reconstruction: no cameras.npz, COLMAP model (cameras/images/points3D .bin or .txt) "
        "or transforms.json.",
        "Point at the folder that holds the COLMAP model files, or at the transforms.json itself.",
    )


# -- Recon job folders --------------------------------------------------------------------
def load_recon(folder: Path) -> Scene:
    with np.load(folder / "cameras.npz") as data:
        cameras = {key: data[key] for key in data.files}
    if "paths" not in cameras:
        cameras["paths"] = np.array([""] * len(cameras["names"]))
    points = empty_points()
    if (folder / "points.npz").is_file():
        with np.load(folder / "points.npz") as data:
            points = {key: data[key] for key in data.files}
    observations = None
    if (folder / "observations.npz").is_file():
        with np.load(folder / "observations.npz") as data:
            observations = {key: data[key] for key in data.files}
    return Scene(cameras, points, observations, "recon", folder)


# -- COLMAP -------------------------------------------------------------------------------
def _is_colmap_model(folder: Path) -> bool:
    return all((folder / f"{name}.bin").is_file() or (folder / f"{name}.txt").is_file() for name in ("cameras", "images"))


def find_colmap_model(folder: Path) -> Path | None:
    for candidate in (folder, folder / "sparse" / "0", folder / "sparse", folder / "model", folder / "colmap", folder / "colmap" / "sparse" / "0"):
        if candidate.is_dir() and _is_colmap_model(candidate):
            return candidate
    return None


def find_image_dir(model: Path, names: list[str]) -> Path | None:
    """The folder holding the model's photos: ``images`` beside the model or up to three
    levels above it (COLMAP's ``project/sparse/0`` next to ``project/images``)."""
    candidates = []
    for parent in [model, *list(model.parents)[:3]]:
        candidates += [parent / "images", parent]
    for folder in candidates:
        if names and (folder / names[0]).is_file():
            return folder
    return None


def load_colmap(model: Path) -> Scene:
    pycolmap = require("pycolmap", "reading COLMAP models")
    try:
        reconstruction = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # noqa: BLE001 - pycolmap raises plain RuntimeError/ValueError on bad files
        raise InputError(f"Could not read the COLMAP model in {model}: {exc}", "Check that the model files are complete.") from exc
    return scene_from_reconstruction(reconstruction, model, "colmap")


def scene_from_reconstruction(reconstruction, model: Path, source: str, image_dir: Path | None = None) -> Scene:
    from .pipeline import cameras_arrays

    if reconstruction.num_reg_images() == 0:
        raise InputError(f"The COLMAP model in {model} has no registered images.", "Export a model with solved cameras.")
    cameras = cameras_arrays(reconstruction)
    names = [str(n) for n in cameras["names"]]
    image_dir = image_dir or find_image_dir(model, names)
    cameras["paths"] = np.array([str((image_dir / n).resolve()) if image_dir else "" for n in names])
    points, observations = points_and_observations(reconstruction)
    return Scene(cameras, points, observations, source, model)


def points_and_observations(reconstruction) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The sparse points and every 2D observation of them: ``point_index [k]`` (row in the
    points), ``image_index [k]`` (row in ``cameras_arrays``, images sorted by name), ``xy [k, 2]``
    (the keypoint, pixels) and ``xy_undistorted [k, 2]`` (the keypoint with the lens
    distortion removed, where a pinhole camera such as Blender's sees the point)."""
    point_ids = sorted(reconstruction.point3D_ids())
    row_of_point = {pid: row for row, pid in enumerate(point_ids)}
    points = empty_points()
    if point_ids:  # pycolmap has no bulk accessor: each point is read once
        records = [reconstruction.points3D[pid] for pid in point_ids]
        points = {
            "xyz": np.array([p.xyz for p in records], dtype=np.float64),
            "rgb": np.array([p.color for p in records], dtype=np.uint8),
            "track_length": np.array([p.track.length() for p in records], dtype=np.int32),
            "error": np.array([p.error for p in records], dtype=np.float64),
        }
    images = sorted(reconstruction.images.values(), key=lambda image: image.name)
    point_index, image_index, xy, xy_undistorted = [], [], [], []
    for row, image in enumerate(images):  # per image; the keypoints of each go in bulk
        observed = image.get_observation_points2D()
        if not observed:
            continue
        pixels = np.array([p.xy for p in observed], dtype=np.float64)
        camera = reconstruction.cameras[image.camera_id]
        normalized = np.asarray(camera.cam_from_img(pixels), dtype=np.float64)
        K = camera.calibration_matrix()
        point_index.append(np.array([row_of_point[p.point3D_id] for p in observed], dtype=np.int64))
        image_index.append(np.full(len(observed), row, dtype=np.int32))
        xy.append(pixels)
        xy_undistorted.append(normalized @ K[:2, :2].T + K[:2, 2])
    if not xy:
        return points, {"point_index": np.zeros(0, np.int64), "image_index": np.zeros(0, np.int32),
                        "xy": np.zeros((0, 2)), "xy_undistorted": np.zeros((0, 2))}
    return points, {
        "point_index": np.concatenate(point_index),
        "image_index": np.concatenate(image_index),
        "xy": np.concatenate(xy),
        "xy_undistorted": np.concatenate(xy_undistorted),
    }


# -- transforms.json ----------------------------------------------------------------------
def _frame_image_path(root: Path, file_path: str) -> Path:
    path = (root / file_path).resolve()
    if path.suffix == "" and not path.is_file():  # the NeRF synthetic sets leave out ".png"
        for suffix in (".png", ".jpg", ".jpeg", ".exr"):
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    return path


def _image_size(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except OSError:
        return None


def load_transforms(path: Path) -> Scene:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"Could not read {path}: {exc}", "Check that it is a NeRF/nerfstudio transforms.json.") from exc
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames:
        raise InputError(f"{path} has no 'frames'.", "A transforms.json lists its cameras under 'frames'.")
    root = path.parent
    rows = []
    for index, frame in enumerate(frames):  # per camera
        def value(key, default=None, frame=frame):
            return frame.get(key, meta.get(key, default))

        if "transform_matrix" not in frame or "file_path" not in frame:
            raise InputError(f"{path}: frame {index} lacks 'transform_matrix' or 'file_path'.", "Every frame needs both.")
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
        if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
            raise InputError(f"{path}: frame {index} has a transform_matrix that is not a finite 4x4 matrix.", "Fix or remove that frame.")
        image_path = _frame_image_path(root, str(frame["file_path"]))
        w, h = value("w"), value("h")
        if w is None or h is None:
            size = _image_size(image_path)
            if size is None:
                raise InputError(
                    f"{path}: frame {index} gives no image size ('w', 'h') and its photo {image_path} cannot be read.",
                    "Add 'w' and 'h' to the file or put the photos where 'file_path' says.",
                )
            w, h = size
        w, h = int(w), int(h)
        fx, fy = value("fl_x"), value("fl_y")
        if fx is None:
            angle_x = value("camera_angle_x")
            if angle_x is None:
                raise InputError(f"{path}: frame {index} has no focal length ('fl_x' or 'camera_angle_x').", "Add one of them.")
            fx = 0.5 * w / math.tan(0.5 * float(angle_x))
        if fy is None:
            angle_y = value("camera_angle_y")
            fy = 0.5 * h / math.tan(0.5 * float(angle_y)) if angle_y is not None else fx
        model = str(value("camera_model", "OPENCV")).upper()
        keys = TRANSFORMS_DISTORTION.get(model, TRANSFORMS_DISTORTION["OPENCV"])
        distortion = [float(value(k, 0.0)) for k in keys]
        if model in ("OPENCV", "OPENCV_FISHEYE") and not any(distortion):  # nerfstudio's default with no distortion
            model, distortion = "PINHOLE", []
        rows.append({
            "name": image_path.name, "path": image_path,
            "K": np.array([[float(fx), 0.0, float(value("cx", w / 2.0))], [0.0, float(fy), float(value("cy", h / 2.0))], [0.0, 0.0, 1.0]]),
            "distortion": distortion, "model": model, "w2c": np.linalg.inv(c2w @ OPENGL_TO_OPENCV), "width": w, "height": h,
        })
    width = max([4 + len(r["distortion"]) for r in rows])
    params = np.full((len(rows), width), np.nan)
    distortion = np.full((len(rows), width), np.nan)
    for row, r in enumerate(rows):
        K = r["K"]
        values = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *r["distortion"]]
        params[row, : len(values)] = values
        distortion[row, : len(r["distortion"])] = r["distortion"]
    names = [r["name"] for r in rows]
    if len(set(names)) < len(names):  # photos of the same name in different folders: keep the folders
        names = [str(frame["file_path"]).removeprefix("./") for frame in frames]
    cameras = {
        "names": np.array(names),
        "K": np.stack([r["K"] for r in rows]),
        "params": params,
        "distortion": distortion,
        "model": np.array([r["model"] for r in rows]),
        "w2c": np.stack([r["w2c"] for r in rows]),
        "width": np.array([r["width"] for r in rows], dtype=np.int32),
        "height": np.array([r["height"] for r in rows], dtype=np.int32),
        "paths": np.array([str(r["path"]) for r in rows]),
    }
    points = empty_points()
    ply = meta.get("ply_file_path")
    if ply and (root / ply).is_file():
        points = _points_from_ply(root / ply)
    return Scene(cameras, points, None, "transforms", path)


def _points_from_ply(path: Path) -> dict[str, np.ndarray]:
    from ..geometry.ply import read_ply

    vertex = read_ply(path)["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    if all(k in vertex for k in ("red", "green", "blue")):
        rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(np.uint8)
    else:
        rgb = np.full((len(xyz), 3), 200, np.uint8)
    return {
        "xyz": xyz, "rgb": rgb,
        "track_length": np.asarray(vertex.get("track_length", np.zeros(len(xyz))), dtype=np.int32),
        "error": np.asarray(vertex.get("error", np.zeros(len(xyz))), dtype=np.float64),
    }


def write_scene(folder: Path, scene: Scene) -> list[tuple[str, Path, str]]:
    """Write ``cameras.npz``, ``points.npz``, ``points.ply`` and (when known)
    ``observations.npz`` into ``folder``, atomically; returns ``(artifact name, path, format)``."""
    from ..geometry.io import write_npz, write_points_ply

    written = []
    write_npz(folder / "cameras.npz", **scene.cameras)
    written.append(("cameras", folder / "cameras.npz", "npz"))
    points = scene.points
    xyz = points["xyz"].astype(np.float32)
    write_points_ply(
        folder / "points.ply", x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2],
        red=points["rgb"][:, 0], green=points["rgb"][:, 1], blue=points["rgb"][:, 2],
        track_length=points["track_length"].astype(np.int32), error=points["error"].astype(np.float32),
    )
    written.append(("points", folder / "points.ply", "ply"))
    write_npz(folder / "points.npz", **points)
    written.append(("points_arrays", folder / "points.npz", "npz"))
    if scene.observations is not None:
        write_npz(folder / "observations.npz", **scene.observations)
        written.append(("observations", folder / "observations.npz", "npz"))
    return written
