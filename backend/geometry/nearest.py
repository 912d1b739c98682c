# SPDX-License-Identifier: GPL-3.0-or-later
"""Exact nearest-neighbour search for 3-D points on the CPU: a uniform grid, compiled by numba.

The grid is built by a counting sort of the reference points into small cubic cells; a
query visits cells in rings of growing Chebyshev radius around its own cell and stops once
no unvisited cell can hold a closer point. Queries that are still open after a few rings
(far from every point, as early in a fit) go to ``scipy.spatial.cKDTree``. The result is
exact (ties may pick a different index than a brute-force search). Serial on purpose:
numba's parallel threads contend with torch's and made a fit step several times slower.

:func:`nearest_neighbors_reference` is the dense PyTorch reference the tests compare with.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

try:  # numba is optional: without it, scipy's k-d tree is used
    import numba
except ImportError:  # pragma: no cover - exercised only in environments without numba
    numba = None


def nearest_neighbors_reference(
    query: Tensor,  # [N, 3]
    reference: Tensor,  # [M, 3]
) -> Tensor:  # [N] long
    """Dense reference: arg-min over the full ``N x M`` distance matrix."""
    return torch.cdist(query.double(), reference.double()).argmin(dim=1)


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _build(points, cell):  # points [M, 3] float64
        lo = np.empty(3)
        dims = np.empty(3, np.int64)
        for a in range(3):
            lo[a] = points[:, a].min()
            dims[a] = int((points[:, a].max() - lo[a]) / cell) + 1
        m = points.shape[0]
        keys = np.empty(m, np.int64)
        for i in range(m):
            ix = min(int((points[i, 0] - lo[0]) / cell), dims[0] - 1)
            iy = min(int((points[i, 1] - lo[1]) / cell), dims[1] - 1)
            iz = min(int((points[i, 2] - lo[2]) / cell), dims[2] - 1)
            keys[i] = (ix * dims[1] + iy) * dims[2] + iz
        n_cells = dims[0] * dims[1] * dims[2]
        start = np.zeros(n_cells + 1, np.int64)
        for i in range(m):
            start[keys[i] + 1] += 1
        for c in range(n_cells):
            start[c + 1] += start[c]
        fill = start[:-1].copy()
        order = np.empty(m, np.int64)
        for i in range(m):
            order[fill[keys[i]]] = i
            fill[keys[i]] += 1
        # The points themselves in cell order: a cell's points are read contiguously.
        sorted_points = np.empty((m, 3))
        for k in range(m):
            sorted_points[k, 0] = points[order[k], 0]
            sorted_points[k, 1] = points[order[k], 1]
            sorted_points[k, 2] = points[order[k], 2]
        return lo, dims, start, order, sorted_points

    @numba.njit(cache=True, nogil=True)
    def _query(queries, lo, dims, start, order, points, cell, ring_limit):
        n = queries.shape[0]
        out = np.empty(n, np.int64)
        max_ring = max(dims[0], max(dims[1], dims[2]))
        # Visit the queries in cell order too, so that consecutive queries read the same cells.
        keys = np.empty(n, np.int64)
        for qi in range(n):
            kx = min(max(int((queries[qi, 0] - lo[0]) / cell), 0), dims[0] - 1)
            ky = min(max(int((queries[qi, 1] - lo[1]) / cell), 0), dims[1] - 1)
            kz = min(max(int((queries[qi, 2] - lo[2]) / cell), 0), dims[2] - 1)
            keys[qi] = (kx * dims[1] + ky) * dims[2] + kz
        for qi in np.argsort(keys):
            qx, qy, qz = queries[qi, 0], queries[qi, 1], queries[qi, 2]
            # Project the query onto the grid's box: for any grid point p,
            # |q - p|^2 >= |q - box(q)|^2 + |box(q) - p|^2, so rings grow around box(q)'s cell.
            off2 = 0.0
            cx = int(math.floor((qx - lo[0]) / cell))
            cy = int(math.floor((qy - lo[1]) / cell))
            cz = int(math.floor((qz - lo[2]) / cell))
            if cx < 0 or cx >= dims[0]:
                edge_x = lo[0] + (0.0 if cx < 0 else dims[0] * cell)
                off2 += (qx - edge_x) ** 2
                cx = 0 if cx < 0 else dims[0] - 1
            if cy < 0 or cy >= dims[1]:
                edge_y = lo[1] + (0.0 if cy < 0 else dims[1] * cell)
                off2 += (qy - edge_y) ** 2
                cy = 0 if cy < 0 else dims[1] - 1
            if cz < 0 or cz >= dims[2]:
                edge_z = lo[2] + (0.0 if cz < 0 else dims[2] * cell)
                off2 += (qz - edge_z) ** 2
                cz = 0 if cz < 0 else dims[2] - 1
            best = np.inf
            best_i = -1
            resolved = False
            r = 0
            while r <= max_ring:
                # Unvisited points (ring r and beyond) are at least (r - 1) cells from box(q).
                if best_i >= 0 and r >= 2 and off2 + ((r - 1) * cell) ** 2 > best:
                    resolved = True
                    break
                if r > ring_limit:
                    break  # far from every point: left to the k-d tree (-1)
                # Only the ring's cells inside the grid: ranges clamped to the grid's bounds.
                for dx in range(max(-r, -cx), min(r, dims[0] - 1 - cx) + 1):
                    x = cx + dx
                    for dy in range(max(-r, -cy), min(r, dims[1] - 1 - cy) + 1):
                        y = cy + dy
                        if abs(dx) == r or abs(dy) == r:
                            z_lo, z_hi, z_step = max(-r, -cz), min(r, dims[2] - 1 - cz), 1
                        else:  # interior column of the ring: only its two caps
                            z_lo, z_hi, z_step = -r, r, max(2 * r, 1)
                        for dz in range(z_lo, z_hi + 1, z_step):
                            z = cz + dz
                            if z < 0 or z >= dims[2]:
                                continue
                            c = (x * dims[1] + y) * dims[2] + z
                            for k in range(start[c], start[c + 1]):
                                ex = points[k, 0] - qx
                                ey = points[k, 1] - qy
                                ez = points[k, 2] - qz
                                d = ex * ex + ey * ey + ez * ez
                                if d < best:
                                    best = d
                                    best_i = k
                r += 1
            out[qi] = order[best_i] if (resolved or r > max_ring) and best_i >= 0 else -1
        return out


class PointGrid:
    """A nearest-neighbour index over fixed reference points ``[M, 3]`` (build once, query often).

    Queries near the points (the common case once a fit is under way) are answered by the
    grid; the rest, which would visit many empty rings, by scipy's k-d tree."""

    CELL_SCALE = 1.0  # cell edge relative to (box volume / points)^(1/3): tuned on the tutorial load
    RING_LIMIT = 4  # rings visited before a query is handed to the k-d tree

    def __init__(self, reference: np.ndarray) -> None:
        self.points = np.ascontiguousarray(reference, dtype=np.float64)
        extent = np.ptp(self.points, axis=0)
        volume = float(np.prod(np.maximum(extent, extent.max() * 1e-3 + 1e-12)))
        self.cell = max(self.CELL_SCALE * (volume / len(self.points)) ** (1.0 / 3.0), 1e-12)
        self._tree = None
        self._grid = _build(self.points, self.cell) if numba is not None else None

    def _kdtree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.points)
        return self._tree

    def query(self, queries: np.ndarray) -> np.ndarray:  # [N, 3] -> [N] int64
        queries = np.ascontiguousarray(queries, dtype=np.float64)
        if self._grid is None:
            return self._kdtree().query(queries, k=1)[1].astype(np.int64)
        index = _query(queries, *self._grid, self.cell, self.RING_LIMIT)
        unresolved = np.flatnonzero(index < 0)
        if len(unresolved):
            index[unresolved] = self._kdtree().query(queries[unresolved], k=1)[1]
        return index
