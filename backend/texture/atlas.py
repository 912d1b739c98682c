# SPDX-License-Identifier: GPL-3.0-or-later
"""UV atlases with xatlas, and the atlas's texels as points on the mesh.

Texture convention (OBJ's and Blender's): ``u`` runs left to right, ``v`` bottom to top;
pixel ``(row r, column c)`` of a ``W x H`` texture is centred at
``u = (c + 0.5) / W``, ``v = 1 - (r + 0.5) / H``.
"""

from __future__ import annotations

from collections.abc import Callable
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


JITTERS = (1e-4, 1e-3)  # of the mesh's size: positions xatlas retries on after a crash
MIN_SHRINK = 0.75  # an atlas up to 1/0.75 times too large is scaled down (its padding with it), not re-packed


def build_atlas(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    size: int,
    padding: int = 4,
    check_cancelled: Callable[[], None] | None = None,
) -> Atlas:
    """Charts and packing by xatlas into one ``size x size`` texture, about ``padding``
    texels between charts (room for the seam padding of the bake).

    xatlas picks the texel density for ``size`` by an estimate that can overshoot a little;
    the packed block is then scaled into the square (``padding`` shrinks by at most
    ``MIN_SHRINK``). Only a worse miss packs again at a lower density: every pass
    recomputes the charts, the slow part on large meshes. xatlas runs in a child process
    (:mod:`.unwrap`); if it crashes, it is tried again on positions moved at random by
    ``JITTERS`` of the mesh's size (the UVs still belong to the original faces; seen on a
    perfectly regular icosphere, which a move of 1e-4 unwraps)."""
    require("xatlas", "UV atlases")
    from .unwrap import UnwrapCrashed, pack_isolated

    positions = np.asarray(vertices, np.float64)

    def run(resolution: int, texels_per_unit: float) -> dict:
        nonlocal positions
        extent = float(np.ptp(positions, axis=0).max()) or 1.0
        for attempt, jitter in enumerate((0.0, *JITTERS)):
            if jitter:  # moved a little: xatlas segments and packs differently (the UVs stay the faces')
                noise = np.random.default_rng(attempt).normal(0.0, jitter * extent, positions.shape)
                positions = np.asarray(vertices, np.float64) + noise
            try:
                return pack_isolated(positions, faces, resolution, padding, texels_per_unit, check_cancelled)
            except UnwrapCrashed as exc:
                crash = exc
        raise InputError(f"xatlas could not unwrap the mesh ({crash}).",
                         "Remesh or decimate it (Blender's Decimate modifier) and bake again.")

    result = run(size, 0.0)
    for _ in range(4):
        if result["atlas_count"] == 1 and size / max(result["width"], result["height"], 1) >= MIN_SHRINK:
            break
        # one atlas of free size, at a density that should fit
        result = run(0, result["texels_per_unit"] * 0.95 * min(1.0, size / max(result["width"], result["height"], 1)))
    width, height = result["width"], result["height"]
    scale = min(1.0, size / max(width, height, 1))
    if result["atlas_count"] != 1 or scale < MIN_SHRINK:
        raise InputError(
            f"The mesh's {result['chart_count']:,} UV charts do not fit one {size} x {size} texture.",
            "Raise --texture-size, or decimate the mesh (the mesh job's --max-faces).")
    vmapping, indices = result["vmapping"], result["indices"]
    if len(indices) != len(faces) or not np.array_equal(vmapping[indices], np.asarray(faces, np.int64)):
        raise RuntimeError("xatlas changed the faces' order or corners")
    block = np.array([width, height], np.float64) * scale / size  # the packed block's share of the square
    uv = np.asarray(result["uv"], np.float64) * block
    uv[:, 1] += 1.0 - block[1]  # the block at the top left of the image
    return Atlas(vmapping, indices, uv.astype(np.float32), int(size), int(size), int(result["chart_count"]),
                 float(result["utilization"]) * float(block[0] * block[1]))


def atlas_texels(atlas: Atlas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every texel whose centre lies in a UV triangle: its flat index ``[T]`` (row-major),
    face ``[T]`` and barycentrics ``[T, 3]`` (float64)."""
    face, bary, _ = rasterize(torch.from_numpy(atlas.uv_pixels()), torch.zeros(len(atlas.uv), dtype=torch.float64),
                              torch.from_numpy(atlas.faces), atlas.height, atlas.width, perspective=False)
    face, bary = face.view(-1), bary.view(-1, 3)
    index = torch.nonzero(face >= 0).squeeze(1)
    return index.numpy(), face[index].numpy(), bary[index].numpy()
