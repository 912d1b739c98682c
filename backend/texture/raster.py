# SPDX-License-Identifier: GPL-3.0-or-later
"""A small z-buffer triangle rasteriser in PyTorch, vectorised over (triangle, pixel) pairs.

Pixel convention: COLMAP's (the image spans ``[0, W] x [0, H]``; pixel ``(i, j)`` has its
centre at ``(i + 0.5, j + 0.5)``). A pixel belongs to a triangle when its centre lies inside
or on an edge. With ``perspective=True`` the per-vertex ``z`` is a camera depth: depth and
barycentrics are interpolated perspective-correctly (``1/z`` is affine in screen space);
otherwise they are affine (UV space). Of the triangles covering a pixel the nearest wins,
ties going to the lower face index.

:func:`rasterize` is the fast path (chunks of candidate pixels from each triangle's bounding
box, one ``scatter_reduce`` per chunk on a key that packs the depth's float bits above the
face index); :func:`rasterize_reference` loops over triangles in Python and is what the
tests compare it with.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

FACE_BITS = 31
_FACE_MASK = (1 << FACE_BITS) - 1
_EMPTY = torch.iinfo(torch.int64).max
EDGE_EPS = 1e-7  # relative to the triangle's doubled area: centres on a shared edge go to both


def _bounds(tri: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inclusive pixel index ranges whose centres can fall in each triangle ``tri [F, 3, 2]``."""
    lo = torch.ceil(tri.amin(1) - 0.5).long()
    hi = torch.floor(tri.amax(1) - 0.5).long()
    x0, y0 = lo[:, 0].clamp(0, width - 1), lo[:, 1].clamp(0, height - 1)
    x1, y1 = hi[:, 0].clamp(-1, width - 1), hi[:, 1].clamp(-1, height - 1)
    empty = (hi[:, 0] < 0) | (hi[:, 1] < 0) | (lo[:, 0] >= width) | (lo[:, 1] >= height)
    x1 = torch.where(empty, x0 - 1, x1)
    return x0, y0, x1, y1


def _edge_weights(tri: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Affine barycentrics ``[M, 3]`` of points ``(px, py) [M]`` in triangles ``tri [M, 3, 2]``."""
    ax, ay = tri[:, 0, 0], tri[:, 0, 1]
    bx, by = tri[:, 1, 0], tri[:, 1, 1]
    cx, cy = tri[:, 2, 0], tri[:, 2, 1]
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    w0 = (bx - px) * (cy - py) - (by - py) * (cx - px)
    w1 = (cx - px) * (ay - py) - (cy - py) * (ax - px)
    w2 = (ax - px) * (by - py) - (ay - py) * (bx - px)
    return torch.stack([w0, w1, w2], -1) / area[:, None]


def _perspective(bary: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics and depth from affine ones ``bary [M, 3]``, depths ``z [M, 3]``."""
    inv = bary / z
    total = inv.sum(-1)
    return inv / total[:, None], 1.0 / total


def _usable(tri: Tensor, z: Tensor, perspective: bool, near: float) -> Tensor:
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])
    ok = torch.isfinite(tri).all(-1).all(-1) & (area.abs() > 1e-12)
    if perspective:
        ok &= (z > near).all(-1)
    return ok


def rasterize(
    xy: Tensor,  # [V, 2] pixel coordinates
    z: Tensor,  # [V] camera depth (perspective) or any per-vertex value (ignored when not perspective)
    faces: Tensor,  # [F, 3] int64
    height: int,
    width: int,
    perspective: bool = True,
    near: float = 1e-6,
    chunk: int = 1 << 22,
) -> tuple[Tensor, Tensor, Tensor]:  # face [H, W] int64 (-1: empty), bary [H, W, 3] float, depth [H, W] (inf: empty)
    """The nearest triangle at every pixel centre, with its barycentrics and depth.

    Triangles with a vertex at or behind ``near`` (perspective) or of zero area are skipped.
    Work is done in chunks of at most ``chunk`` candidate (triangle, pixel) pairs."""
    xy, z = xy.double(), z.double()
    faces = faces.long()
    tri_all = xy[faces]  # [F, 3, 2]
    z_all = z[faces] if perspective else torch.ones(faces.shape, dtype=torch.float64)
    keep = torch.nonzero(_usable(tri_all, z_all, perspective, near)).squeeze(1)
    x0, y0, x1, y1 = _bounds(tri_all[keep], width, height)
    nx, ny = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    counts = nx * ny
    some = counts > 0
    keep, x0, y0, nx, counts = keep[some], x0[some], y0[some], nx[some], counts[some]
    zbuf = torch.full((height * width,), _EMPTY, dtype=torch.int64)
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < len(keep):  # chunks of triangles holding about ``chunk`` candidate pixels
        base = int(ends[start - 1]) if start else 0
        stop = int(torch.searchsorted(ends, base + chunk, right=True))
        stop = max(stop, start + 1)
        sel = slice(start, stop)
        n = counts[sel]
        which = torch.repeat_interleave(torch.arange(stop - start), n)
        local = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        px = x0[sel][which] + local % nx[sel][which]
        py = y0[sel][which] + local // nx[sel][which]
        fid = keep[sel][which]
        bary = _edge_weights(tri_all[fid], px.double() + 0.5, py.double() + 0.5)
        inside = (bary >= -EDGE_EPS).all(-1)
        fid, px, py, bary = fid[inside], px[inside], py[inside], bary[inside]
        if perspective:
            _, depth = _perspective(bary, z_all[fid])
        else:
            depth = torch.zeros(len(fid), dtype=torch.float64)
        bits = depth.float().clamp_min(0).view(torch.int32).long()  # non-negative floats sort as their bits
        key = (bits << FACE_BITS) | fid
        zbuf.scatter_reduce_(0, py * width + px, key, "amin")
        start = stop
    covered = zbuf != _EMPTY
    face = torch.full((height * width,), -1, dtype=torch.int64)
    face[covered] = zbuf[covered] & _FACE_MASK
    pix = torch.nonzero(covered).squeeze(1)
    bary_out = torch.zeros((height * width, 3), dtype=torch.float64)
    depth_out = torch.full((height * width,), float("inf"), dtype=torch.float64)
    if len(pix):
        fid = face[pix]
        b = _edge_weights(tri_all[fid], (pix % width).double() + 0.5, (pix // width).double() + 0.5)
        if perspective:
            b, d = _perspective(b, z_all[fid])
            depth_out[pix] = d
        else:
            depth_out[pix] = 0.0
        bary_out[pix] = b
    return face.view(height, width), bary_out.view(height, width, 3), depth_out.view(height, width)


def rasterize_reference(
    xy: np.ndarray,  # [V, 2]
    z: np.ndarray,  # [V]
    faces: np.ndarray,  # [F, 3]
    height: int,
    width: int,
    perspective: bool = True,
    near: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:  # face [H, W] (-1 empty), depth [H, W]
    """The same as :func:`rasterize`, one triangle at a time (float64 depth, strict ``<``)."""
    xy, z = np.asarray(xy, np.float64), np.asarray(z, np.float64)
    face_out = np.full((height, width), -1, np.int64)
    depth_out = np.full((height, width), np.inf)
    for f, (a, b, c) in enumerate(np.asarray(faces)):  # reference: per triangle
        tri = xy[[a, b, c]]
        zs = z[[a, b, c]] if perspective else np.ones(3)
        area = (tri[1, 0] - tri[0, 0]) * (tri[2, 1] - tri[0, 1]) - (tri[1, 1] - tri[0, 1]) * (tri[2, 0] - tri[0, 0])
        if not np.all(np.isfinite(tri)) or abs(area) <= 1e-12 or (perspective and np.any(zs <= near)):
            continue
        xs = np.arange(max(0, int(np.ceil(tri[:, 0].min() - 0.5))), min(width - 1, int(np.floor(tri[:, 0].max() - 0.5))) + 1)
        ys = np.arange(max(0, int(np.ceil(tri[:, 1].min() - 0.5))), min(height - 1, int(np.floor(tri[:, 1].max() - 0.5))) + 1)
        if not len(xs) or not len(ys):
            continue
        px, py = np.meshgrid(xs + 0.5, ys + 0.5)
        w = np.stack([
            (tri[1, 0] - px) * (tri[2, 1] - py) - (tri[1, 1] - py) * (tri[2, 0] - px),
            (tri[2, 0] - px) * (tri[0, 1] - py) - (tri[2, 1] - py) * (tri[0, 0] - px),
            (tri[0, 0] - px) * (tri[1, 1] - py) - (tri[0, 1] - py) * (tri[1, 0] - px),
        ], -1) / area
        inside = np.all(w >= -EDGE_EPS, -1)
        depth = 1.0 / np.sum(w / zs, -1) if perspective else np.zeros(px.shape)
        iy, ix = np.meshgrid(ys, xs, indexing="ij")
        current = depth_out[iy, ix]
        better = inside & (np.float32(depth) < np.float32(current))
        if not perspective:
            better = inside & (face_out[iy, ix] < 0)
        depth_out[iy[better], ix[better]] = depth[better]
        face_out[iy[better], ix[better]] = f
    return face_out, depth_out
