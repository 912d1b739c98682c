# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading point clouds and meshes, writing meshes. Arrays are numpy: points and vertices
``(n, 3) float32``, faces ``(m, 3) int32``. Every write is atomic (temporary name, rename)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from ..protocol import write_bytes_atomic
from .ply import PlyError, read_ply

POINT_FORMATS = (".ply", ".npz", ".npy", ".xyz", ".txt")


def _read_ply(path: Path) -> dict:
    with open(path, "rb") as handle:
        head = handle.read(3)
    if head != b"ply":
        raise InputError(f"{path} is not a PLY file (it does not start with 'ply').", "Export the cloud as .ply and try again.")
    try:
        return read_ply(path)
    except PlyError as exc:
        raise InputError(f"{path} is not a readable PLY file: {exc}.", "Re-export it from the scanning or modelling tool.") from exc


def _ply_vertices(ply: dict, path: Path) -> np.ndarray:
    if "vertex" not in ply:
        raise InputError(f"{path} has no 'vertex' element, so it holds no points.", "Use a PLY with vertices.")
    vertex = ply["vertex"]
    missing = [axis for axis in "xyz" if axis not in vertex]
    if missing:
        raise InputError(f"{path} has vertices without {', '.join(missing)} coordinates.", "Use a PLY with x, y, z.")
    return np.stack([vertex[axis].astype(np.float32) for axis in "xyz"], axis=1)


def read_points(path: str | os.PathLike) -> np.ndarray:
    """Points ``(n, 3) float32`` from ``.ply`` (vertex x, y, z), ``.npz`` (key ``points``),
    ``.npy`` or whitespace-separated ``.xyz``/``.txt``. Checks emptiness and finiteness."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Point cloud file {path} does not exist.", "Check the path.")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        points = _ply_vertices(_read_ply(path), path)
    elif suffix == ".npz":
        with np.load(path) as data:
            if "points" not in data:
                raise InputError(f"{path} has no array named 'points' (it has {', '.join(data.files) or 'none'}).")
            points = np.asarray(data["points"], dtype=np.float32)
    elif suffix == ".npy":
        points = np.load(path).astype(np.float32)
    elif suffix in (".xyz", ".txt"):
        try:
            points = np.loadtxt(path, dtype=np.float32, ndmin=2)[:, :3]
        except ValueError as exc:
            raise InputError(f"{path} is not a text file of x y z rows: {exc}.") from exc
    else:
        raise InputError(f"{path}: unsupported point cloud format '{suffix}'.", f"Use one of {', '.join(POINT_FORMATS)}.")
    return check_points(points, str(path))


def check_points(points: np.ndarray, what: str) -> np.ndarray:
    """Validate a point array ``(n, 3)``: non-empty and finite; names ``what`` in errors."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{what}: expected points of shape (n, 3), got {points.shape}.")
    if len(points) == 0:
        raise InputError(f"{what} has no points.", "Give a point cloud with at least a few points.")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{what} has {int(bad.sum())} point(s) with NaN or infinite coordinates (the first at index {first}).",
            "Remove them (in Blender: select by attribute or delete loose/invalid vertices) and run again.",
        )
    return points


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(n, 3) float32`` and triangle faces ``(m, 3) int32`` from ``.ply``, ``.npz``
    (keys ``vertices``, ``faces``) or any format trimesh reads (``.obj``, ``.glb``, ``.stl``, ...).
    Polygons are fan-triangulated."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Mesh file {path} does not exist.", "Check the path.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as data:
            vertices, faces = np.asarray(data["vertices"], np.float32), np.asarray(data["faces"], np.int64)
    elif suffix == ".ply" and (mesh := _ply_faces(path)) is not None:
        vertices, faces = mesh
    else:
        trimesh = require("trimesh", "Reading meshes")
        try:
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path} could not be read as a mesh: {exc}.") from exc
        vertices, faces = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)
    return check_mesh(vertices, faces, str(path))


def _ply_faces(path: Path):
    """``(vertices, faces)`` of a triangle PLY, or None for polygons of mixed sizes."""
    try:
        ply = read_ply(path)
    except PlyError as exc:
        if "different vertex counts" in str(exc):
            return None  # ragged polygons: trimesh reads and triangulates them
        raise InputError(f"{path} is not a readable PLY file: {exc}.", "Re-export it.") from exc
    vertices = _ply_vertices(ply, path)
    face = ply.get("face", {})
    indices = face.get("vertex_indices", face.get("vertex_index"))
    if indices is None or len(indices) == 0:
        raise InputError(f"{path} has no faces, so it is not a mesh.", "Use a mesh with faces as the template.")
    if indices.shape[1] < 3:
        raise InputError(f"{path} has faces with fewer than 3 corners.", "Re-export it.")
    k = indices.shape[1]  # fan-triangulate quads and n-gons of one size in bulk
    faces = np.concatenate([indices[:, [0, j, j + 1]] for j in range(1, k - 1)])
    return vertices, faces


def check_mesh(vertices: np.ndarray, faces: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    vertices = check_points(vertices, what)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise InputError(f"{what} has no faces, so it is not a mesh.", "Use a mesh with faces as the template.")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(f"{what} has faces that index missing vertices.", "Re-export the mesh.")
    return vertices, faces.astype(np.int32)


def write_mesh_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY with float32 x y z and int32 vertex_indices, written in bulk."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    face = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by Recon\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    write_bytes_atomic(path, header.encode("ascii") + vertices.astype("<f4").tobytes() + face.tobytes())


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Arrays into an ``.npz``, written to a temporary name and renamed into place."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def write_mesh_npz(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, **extra: np.ndarray) -> None:
    write_npz(path, vertices=np.asarray(vertices, np.float32), faces=np.asarray(faces, np.int32), **extra)

_PLY_TYPES = {"f4": "float", "f8": "double", "u1": "uchar", "i4": "int", "u4": "uint", "i2": "short", "u2": "ushort"}


def write_points_ply(path: str | os.PathLike, **columns: np.ndarray) -> None:
    """Binary little-endian PLY of one ``vertex`` element whose properties are ``columns``
    (1-D arrays of equal length, written in the given order and dtype), in bulk."""
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns of different lengths: { {k: len(a) for k, a in arrays.items()} }")
    table = np.empty(lengths.pop(), dtype=[(name, "<" + a.dtype.str[1:]) for name, a in arrays.items()])
    for name, a in arrays.items():
        table[name] = a
    props = "".join(f"property {_PLY_TYPES[a.dtype.str[1:]]} {name}\n" for name, a in arrays.items())
    header = f"ply\nformat binary_little_endian 1.0\ncomment written by Recon\nelement vertex {len(table)}\n{props}end_header\n"
    write_bytes_atomic(path, header.encode("ascii") + table.tobytes())
