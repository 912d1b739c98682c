# SPDX-License-Identifier: GPL-3.0-or-later
"""UV atlases with xatlas, and the atlas's texels as points on the mesh.

Texture convention (OBJ's and Blender's): ``u`` runs left to right, ``v`` bottom to top;
pixel ``(row r, column c)`` of a ``W x H`` texture is centred at
``u = (c + 0.5) / W``, ``v = 1 - (r + 0.5) / H``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError, require
from .raster import rasterize

MIN_TEXELS_PER_FACE = 2.0  # below this a texture cannot show a face's colour at all


@dataclass
class Atlas:
    """A mesh cut into charts and packed into one texture."""

    vmapping: np.ndarray  # [Va] int64: the input vertex of each atlas vertex (seams split vertices)
    faces: np.ndarray  # [F, 3] int64 into the atlas vertices, same order as the input faces
    uv: np.ndarray  # [Va, 2] float32 in [0, 1]
    width: int
    height: int
    charts: int
    utilization: float

    def corner_uv(self) -> np.ndarray:  # [F * 3, 2] float32: the UV of every face corner
        return self.uv[self.faces].reshape(-1, 2).astype(np.float32)

    def uv_pixels(self) -> np.ndarray:  # [Va, 2] float64 texel coordinates (x right, y down)
        return np.stack([self.uv[:, 0] * self.width, (1.0 - self.uv[:, 1]) * self.height], -1).astype(np.float64)


def check_budget(faces: int, size: int, max_faces: int) -> None:
    """InputError naming the face budget when a mesh is too large for ``max_faces`` or for a
    ``size x size`` texture."""
    if faces > max_faces:
        raise InputError(
            f"The mesh has {faces:,} faces, more than the face budget of {max_faces:,} ('max_faces').",
            f"Decimate it to {max_faces:,} faces or fewer (the mesh job's --max-faces, or Blender's Decimate "
            "modifier), or raise --max-faces (the atlas then takes longer).")
    fit = int(size * size / (MIN_TEXELS_PER_FACE * 4))  # charts fill about half the atlas; texels per face
    if faces > fit:
        raise InputError(
            f"A {size} x {size} texture cannot hold {faces:,} faces (at most about {fit:,}).",
            f"Decimate the mesh to {fit:,} faces or fewer (the mesh job's --max-faces), or raise --texture-size.")


def build_atlas(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    size: int,
    padding: int = 4,
) -> Atlas:
    """Charts and packing by xatlas into one ``size x size`` texture, ``padding`` texels
    between charts (room for the seam padding of the bake)."""
    xatlas = require("xatlas", "UV atlases")
    pack = xatlas.PackOptions()
    pack.padding = int(padding)
    pack.bilinear = True
    pack.rotate_charts = True
    pack.resolution = int(size)  # first pass: xatlas's estimate of the texel density for this size

    def generate():
        atlas = xatlas.Atlas()
        atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
        atlas.generate(xatlas.ChartOptions(), pack)
        return atlas

    atlas = generate()
    for _ in range(6):  # its estimate can overshoot: one atlas of free size, shrunk until it fits
        if atlas.atlas_count == 1 and max(atlas.width, atlas.height) <= size:
            break
        pack.resolution = 0
        pack.texels_per_unit = float(atlas.texels_per_unit) * 0.98 * min(1.0, size / max(atlas.width, atlas.height, 1))
        atlas = generate()
    if atlas.atlas_count != 1 or max(atlas.width, atlas.height) > size:
        raise InputError(
            f"The mesh's {atlas.chart_count:,} UV charts do not fit one {size} x {size} texture.",
            "Raise --texture-size, or decimate the mesh (the mesh job's --max-faces).")
    vmapping, indices, uv = atlas[0]
    indices = np.asarray(indices, np.int64).reshape(-1, 3)
    vmapping = np.asarray(vmapping, np.int64)
    if len(indices) != len(faces) or not np.array_equal(vmapping[indices], np.asarray(faces, np.int64)):
        raise RuntimeError("xatlas changed the faces' order or corners")
    uv = np.asarray(uv, np.float64) * [atlas.width / size, atlas.height / size]  # into the size x size square
    uv[:, 1] += 1.0 - atlas.height / size  # the packed block at the top left, as xatlas lays it out
    return Atlas(vmapping, indices, uv.astype(np.float32), int(size), int(size), int(atlas.chart_count),
                 float(atlas.utilization) * atlas.width * atlas.height / size**2)


def atlas_texels(atlas: Atlas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every texel whose centre lies in a UV triangle: its flat index ``[T]`` (row-major),
    face ``[T]`` and barycentrics ``[T, 3]`` (float64)."""
    face, bary, _ = rasterize(torch.from_numpy(atlas.uv_pixels()), torch.zeros(len(atlas.uv), dtype=torch.float64),
                              torch.from_numpy(atlas.faces), atlas.height, atlas.width, perspective=False)
    face, bary = face.view(-1), bary.view(-1, 3)
    index = torch.nonzero(face >= 0).squeeze(1)
    return index.numpy(), face[index].numpy(), bary[index].numpy()
