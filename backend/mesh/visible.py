# SPDX-License-Identifier: GPL-3.0-or-later
"""The faces of a mesh that some camera sees.

A level set of a trained field can hold surfaces inside the object (walls of density in
places no photo constrains, joined to the outside through small gaps, so filling hollow
insides does not remove them). No training camera sees them, so they are dropped here.

For each camera the mesh is rendered into a depth map (the texture job's rasteriser,
:func:`backend.texture.raster.rasterize`, at most ``size`` pixels on a side, never more
than the photo's). A face is seen by that camera when its centre projects into the image,
in front of the camera, no deeper than the mesh's depth at that pixel plus a tolerance
(``tolerance``, e.g. a grid cell, plus ``pixels`` pixel footprints, more on a surface
seen edge-on): small faces that own
no pixel centre still count. A face must be seen by ``min_views`` cameras: inner surfaces
glimpsed by one camera through a pixel-sized gap in the outer surface are dropped too (on
the known-geometry benchmark's field, faces 1 % of the diagonal or more off the true
surface: 9 % of the area seen by one camera or more, 2.7 % by two, while only 0.02 % of the
area near the true surface is seen by fewer than two). The seen faces can then be grown
by ``rings`` rings of faces sharing a vertex, so that thin visible parts survive.
Vectorised over faces; one rasterisation per camera.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def seen_faces(
    vertices: np.ndarray,  # [V, 3] world
    faces: np.ndarray,  # [F, 3]
    cameras,  # backend.nerf.rays.Cameras
    size: int = 512,
    tolerance: float = 0.0,  # world units added to the depth test (e.g. a grid cell)
    rings: int = 0,
    min_views: int = 1,  # cameras that must see a face (capped at the number of cameras)
    pixels: float = 1.0,  # pixel footprints added to the depth test
    progress: Callable[[int, int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> np.ndarray:  # [F] bool
    """Which faces at least ``min_views`` of ``cameras`` see (see the module's docstring)."""
    import torch

    from ..texture.bake import project
    from ..texture.raster import rasterize

    verts = torch.from_numpy(np.asarray(vertices, np.float64))
    tris = torch.from_numpy(np.asarray(faces, np.int64))
    corners = verts[tris]
    centres = corners.mean(1)  # [F, 3]
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    seen = torch.zeros(len(tris), dtype=torch.int32)  # cameras that see each face
    for i in range(len(cameras)):
        if check_cancelled is not None:
            check_cancelled()
        w0, h0 = cameras.widths[i], cameras.heights[i]
        s = min(1.0, size / max(w0, h0))
        w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
        K = cameras.Ks[i].clone()
        K[0] *= w / w0
        K[1] *= h / h0
        w2c = torch.linalg.inv(cameras.c2w[i])
        model, dist = cameras.models[i], cameras.distortion[i]
        xy, z = project(verts, K, w2c, model, dist)
        _, _, depth = rasterize(xy, z, tris, h, w, perspective=True)
        cxy, cz = project(centres, K, w2c, model, dist)
        inside = (cz > 1e-6) & (cxy[:, 0] >= 0) & (cxy[:, 0] < w) & (cxy[:, 1] >= 0) & (cxy[:, 1] < h)
        inside &= torch.isfinite(cxy).all(-1)
        idx = torch.nonzero(inside).squeeze(1)
        px = cxy[idx, 0].long().clamp(0, w - 1)
        py = cxy[idx, 1].long().clamp(0, h - 1)
        footprint = cz[idx] / float(K[0, 0] + K[1, 1]) * 2.0  # one pixel's size at that depth
        view = centres[idx] - cameras.c2w[i, :3, 3]
        facing = (normals[idx] * view).sum(-1).abs() / view.norm(dim=-1).clamp_min(1e-30)
        slope = 1.0 / facing.clamp_min(0.2)  # depth changes faster across a pixel on a surface seen edge-on
        ok = cz[idx] <= depth[py, px] + tolerance + pixels * footprint * slope
        seen[idx[ok]] += 1
        if progress is not None:
            progress(i + 1, len(cameras))
    mask = seen.numpy() >= max(1, min(min_views, len(cameras)))
    faces = np.asarray(faces)
    for _ in range(max(0, rings)):  # faces sharing a vertex with a seen face
        touched = np.zeros(len(vertices), bool)
        touched[faces[mask].ravel()] = True
        mask = touched[faces].any(axis=1)
    return mask
