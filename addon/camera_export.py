# SPDX-License-Identifier: GPL-3.0-or-later
"""Cameras out of Blender for other tools: a COLMAP text model and a NeRF/nerfstudio
``transforms.json``. Numpy and the standard library only (tests call it without Blender).

Input: the ``cameras.npz`` layout (``names``, ``K [n, 3, 3]``, ``w2c [n, 4, 4]`` in OpenCV
axes, ``width``, ``height``), optionally ``model [n]`` and ``params [n, p]`` (COLMAP camera
models with their exact parameters, NaN-padded: written as they are, so a model read in and
written out again is unchanged) and ``paths [n]`` (the photos, for ``file_path``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from . import camera_math

# COLMAP model -> the parameter names transforms.json uses for it, after fl_x fl_y cx cy
TRANSFORMS_KEYS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "OPENCV_FISHEYE": ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4"),
}


def _camera_params(cameras: dict, row: int) -> tuple[str, list[float]]:
    """(COLMAP model, parameters) of one camera: its own when given, else PINHOLE from K."""
    model = str(cameras["model"][row]) if "model" in cameras else ""
    if model in TRANSFORMS_KEYS and "params" in cameras:
        params = np.asarray(cameras["params"][row], dtype=np.float64)
        params = params[~np.isnan(params)]
        if len(params) == len(TRANSFORMS_KEYS[model]):
            return model, [float(v) for v in params]
    K = cameras["K"][row]
    return "PINHOLE", [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]


def _num(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same double


def write_colmap_text(folder: str | os.PathLike, cameras: dict, points: dict | None = None) -> Path:
    """``cameras.txt``, ``images.txt`` and ``points3D.txt`` in ``folder`` (created). Cameras
    with the same model, size and parameters share one COLMAP camera. Points (``xyz``,
    optional ``rgb`` uint8 and ``error``) are written without tracks."""
    spaced = [str(n) for n in cameras["names"] if any(c.isspace() for c in str(n))]
    if spaced:
        raise ValueError(f"COLMAP's text format cannot hold spaces in photo names ('{spaced[0]}'"
                         f"{f' and {len(spaced) - 1} more' if len(spaced) > 1 else ''}): rename the photos, or export "
                         "transforms.json only")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    camera_ids: dict[tuple, int] = {}
    camera_lines, image_lines = [], []
    quats = camera_math.quaternion_wxyz_from_matrix(np.asarray(cameras["w2c"])[:, :3, :3])
    for row, name in enumerate(cameras["names"]):  # one line per camera
        model, params = _camera_params(cameras, row)
        key = (model, int(cameras["width"][row]), int(cameras["height"][row]), tuple(params))
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            camera_lines.append(" ".join([str(camera_ids[key]), model, str(key[1]), str(key[2]), *map(_num, params)]))
        t = np.asarray(cameras["w2c"][row])[:3, 3]
        image_lines.append(" ".join([str(row + 1), *map(_num, quats[row]), *map(_num, t), str(camera_ids[key]), str(name)]))
        image_lines.append("")  # no 2D points
    _write_text(folder / "cameras.txt", "# Camera list: CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n", camera_lines)
    _write_text(folder / "images.txt",
                "# Image list: IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n",
                image_lines)
    header = "# 3D point list: POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]\n"
    tmp = folder / "points3D.txt.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(header)
        if points is not None and len(points["xyz"]):
            xyz = np.asarray(points["xyz"], dtype=np.float64).reshape(-1, 3)
            rgb = np.asarray(points.get("rgb", np.full((len(xyz), 3), 200)), dtype=np.float64)
            error = np.asarray(points.get("error", np.zeros(len(xyz))), dtype=np.float64)
            table = np.column_stack([np.arange(1, len(xyz) + 1), xyz, rgb, error])
            np.savetxt(f, table, fmt=["%d", "%.17g", "%.17g", "%.17g", "%d", "%d", "%d", "%.17g"])
    os.replace(tmp, folder / "points3D.txt")
    return folder


def _write_text(path: Path, header: str, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def transforms_dict(cameras: dict, root: str | os.PathLike, ply_file: str | None = None) -> dict:
    """A nerfstudio-style ``transforms.json`` as a dict: per frame ``file_path`` (relative to
    ``root`` when the photo is known, else the camera's name), ``transform_matrix``
    (camera-to-world, OpenGL/Blender camera axes) and the intrinsics; the intrinsics every
    frame shares go to the top level (what instant-ngp and the NeRF synthetic readers expect)."""
    root = Path(root)
    c2w = camera_math.blender_c2w_from_w2c_opencv(np.asarray(cameras["w2c"]))
    frames = []
    for row, name in enumerate(cameras["names"]):  # per camera
        model, params = _camera_params(cameras, row)
        values = dict(zip(TRANSFORMS_KEYS[model], params, strict=True))
        fx = values.get("fx", values.get("f"))
        intrinsics = {"w": int(cameras["width"][row]), "h": int(cameras["height"][row]),
                      "fl_x": fx, "fl_y": values.get("fy", fx), "cx": values["cx"], "cy": values["cy"]}
        distortion = {k: values.get(k, 0.0) for k in ("k1", "k2", "k3", "k4", "p1", "p2") if k in values}
        if model == "OPENCV_FISHEYE":
            intrinsics.update(camera_model="OPENCV_FISHEYE", **distortion)
        elif distortion:
            intrinsics.update(camera_model="OPENCV", **{k: distortion.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")})
        else:
            intrinsics.update(camera_model="OPENCV")
        photo = str(cameras["paths"][row]) if "paths" in cameras else ""
        file_path = _relative(photo, root) if photo else str(name)
        frames.append({"file_path": file_path, "transform_matrix": c2w[row].tolist(), **intrinsics})
    shared = {key: frames[0][key] for key in frames[0] if key not in ("file_path", "transform_matrix")
              and all(frame.get(key) == frames[0][key] for frame in frames)}
    for frame in frames:
        for key in shared:
            del frame[key]
    if {"fl_x", "w"} <= set(shared):
        shared["camera_angle_x"] = 2.0 * math.atan(0.5 * shared["w"] / shared["fl_x"])
    out = {**shared, "frames": frames}
    if ply_file:
        out["ply_file_path"] = ply_file
    return out


def _relative(path: str, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def write_transforms_json(path: str | os.PathLike, cameras: dict, ply_file: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(transforms_dict(cameras, path.parent, ply_file), indent=2)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_points_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray | None = None) -> Path:
    """A binary little-endian PLY of points (``x y z`` float, ``red green blue`` uchar)."""
    path = Path(path)
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    rgb = np.full((len(xyz), 3), 200, np.uint8) if rgb is None else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    record = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for axis, key in enumerate("xyz"):
        record[key] = xyz[:, axis]
    for channel, key in enumerate(("red", "green", "blue")):
        record[key] = rgb[:, channel]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(record.tobytes())
    os.replace(tmp, path)
    return path
