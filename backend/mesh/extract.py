# SPDX-License-Identifier: GPL-3.0-or-later
"""A density's level set as a triangle mesh, cleaned and (optionally) decimated.

Everything here works on plain numpy arrays and a density function ``f(points [N, 3]) ->
[N]`` in world units, so it is tested on analytic densities as well as fields and splats.

- :class:`Grid`: a dense grid of sample points, ``lo + index * spacing``.
- :func:`sample_grid`: the density on the grid, evaluated in slabs of bounded size, with
  progress and cancel between slabs.
- :func:`fill_cavities`: regions below the level that the outside cannot reach (the hollow
  inside of a shell of density, as splats and many fields have) raised above it, so that
  marching cubes gives only the outer surface.
- :func:`opacity_level`: a field's default level, from the densities where lines through
  the grid become opaque.
- :func:`level_set`: marching cubes (scikit-image) with faces wound counter-clockwise seen
  from outside (normals point out of the dense region).
- :func:`keep_components`: connected components by area; the largest kept, components below
  a fraction of it (floaters) dropped.
- :func:`decimate`: quadric edge collapse to a face budget (``fast_simplification``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Grid:
    """Sample points ``lo + (i, j, k) * spacing`` for ``0 <= i, j, k < shape``."""

    lo: np.ndarray  # [3] float64
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def around(cls, lo, hi, resolution: int) -> Grid:
        """``resolution`` cells along the box's longest side, the same spacing on the others."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        extent = np.maximum(hi - lo, 1e-9)
        spacing = float(extent.max()) / max(int(resolution), 2)
        shape = tuple(int(n) for n in np.maximum(np.ceil(extent / spacing - 1e-6).astype(int) + 1, 2))
        return cls(lo, spacing, shape)

    @property
    def hi(self) -> np.ndarray:
        return self.lo + (np.array(self.shape) - 1) * self.spacing

    def points(self, i0: int, i1: int) -> np.ndarray:  # the slab i0 <= i < i1: [(i1 - i0) * ny * nz, 3] float32
        ii, jj, kk = np.meshgrid(np.arange(i0, i1), np.arange(self.shape[1]), np.arange(self.shape[2]), indexing="ij")
        index = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], -1)
        return (self.lo + index * self.spacing).astype(np.float32)


def sample_grid(
    density: Callable[[np.ndarray], np.ndarray],
    grid: Grid,
    max_points: int = 1 << 20,
    progress: Callable[[int, int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> np.ndarray:  # [nx, ny, nz] float32
    """``density`` at every grid point, ``max_points`` (at least one x-slice) at a time."""
    nx, ny, nz = grid.shape
    out = np.empty(grid.shape, np.float32)
    step = max(1, int(max_points) // (ny * nz))
    for i0 in range(0, nx, step):
        if check_cancelled is not None:
            check_cancelled()
        i1 = min(nx, i0 + step)
        out[i0:i1] = np.asarray(density(grid.points(i0, i1)), np.float32).reshape(i1 - i0, ny, nz)
        if progress is not None:
            progress(i1, nx)
    return out


def fill_cavities(values: np.ndarray, level: float) -> int:
    """Raise (in place) the regions below ``level`` that do not reach the grid's border
    above it; returns how many samples were raised."""
    from scipy import ndimage

    inside = values >= level
    cavities = ndimage.binary_fill_holes(inside) & ~inside
    count = int(cavities.sum())
    if count:
        values[cavities] = max(float(values.max()), 2.0 * float(level), float(level) + 1.0)
    return count


def opacity_level(values: np.ndarray, spacing: float, percentile: float = 5.0, facing: float = 0.8) -> float | None:
    """A density level from where the density becomes opaque: along every grid line, in
    both directions of each axis, the density at the first sample where the transmittance
    from outside falls below 0.5, kept where the line meets the surface head-on (the
    density's gradient there within ``acos(facing)`` of the line: lines grazing a surface
    turn opaque far out in its thin outskirts); the ``percentile`` of those densities. A low
    percentile keeps the level below nearly every line's surface density, so thin but opaque
    parts are not punctured. None when no line is opaque."""
    shape = np.array(values.shape)
    found = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for flip in (False, True):
            a = np.flip(values, axis) if flip else values
            depth = np.cumsum(a, axis=axis, dtype=np.float32) * np.float32(spacing)  # optical depth from outside
            opaque = np.take(depth, -1, axis=axis) > np.log(2.0)
            first = np.argmax(depth > np.log(2.0), axis=axis)
            del depth
            # the crossing samples' indices in the unflipped grid
            line = np.nonzero(opaque)
            index = [None, None, None]
            index[others[0]], index[others[1]] = line[0], line[1]
            index[axis] = (shape[axis] - 1 - first[opaque]) if flip else first[opaque]
            index = np.stack(index, -1)
            gradient = np.empty((len(index), 3), np.float32)
            for g in range(3):
                up, down = index.copy(), index.copy()
                up[:, g] = np.minimum(up[:, g] + 1, shape[g] - 1)
                down[:, g] = np.maximum(down[:, g] - 1, 0)
                gradient[:, g] = values[tuple(up.T)] - values[tuple(down.T)]
            head_on = np.abs(gradient[:, axis]) >= facing * np.linalg.norm(gradient, axis=1)
            found.append(values[tuple(index[head_on].T)])
    found = np.concatenate(found)
    found = found[found > 0]
    return float(np.percentile(found, percentile)) if len(found) else None


LOG_FLOOR = 1e-6  # densities below this fraction of the level count as this much, in log space


def level_set(values: np.ndarray, level: float, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``values >= level``: vertices [V, 3] float32 in world units and
    faces [F, 3] int32 wound so that their normals point towards lower values.

    A density (no negative values, a positive level) is interpolated along the cube edges in
    log space: it rises by orders of magnitude from one grid point to the next across a
    surface, and a linear interpolation puts nearly every vertex next to the outer grid point
    (a tenth of a cell off on average, a third at worst, on an exponential ramp); its
    logarithm changes about linearly there, as a distance would."""
    from skimage import measure

    lo, hi = float(values.min()), float(values.max())
    if not lo < level < hi:
        raise ValueError(f"level {level:g} outside the sampled range [{lo:g}, {hi:g}]")
    if lo >= 0.0 and level > 0.0:
        floor = np.float32(level * LOG_FLOOR)
        values = np.log(np.maximum(values, floor))
        level = float(np.log(np.float32(level)))
    vertices, faces, _normals, _values = measure.marching_cubes(
        values, level=level, spacing=(grid.spacing,) * 3, gradient_direction="descent", allow_degenerate=False)
    vertices = (vertices + grid.lo).astype(np.float32)
    faces = np.ascontiguousarray(faces[:, ::-1], dtype=np.int32)  # scikit-image winds them clockwise from outside
    return vertices, faces


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:  # [F]
    v = vertices.astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:  # [V, 3] unit, area-weighted
    v = vertices.astype(np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # length: twice the area
    out = np.zeros_like(v)
    for axis in range(3):
        out[:, axis] = np.bincount(faces.ravel(), np.repeat(n[:, axis], 3), minlength=len(v))
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(length > 0, length, 1.0)).astype(np.float32)


def compact(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None):
    """Drop the vertices no face uses; returns (vertices, faces, colors)."""
    used = np.zeros(len(vertices), bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    faces = remap[faces].astype(np.int32)
    return vertices[used], faces, (colors[used] if colors is not None else None)


def keep_components(
    vertices: np.ndarray,
    faces: np.ndarray,
    min_fraction: float = 0.05,
    max_components: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The connected components (sharing vertices) whose area is at least ``min_fraction``
    of the largest one's, at most ``max_components`` of them (0: no limit), largest first."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return vertices, faces, {"components": 0, "kept": 0, "dropped_faces": 0}
    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    area = np.bincount(face_label, face_areas(vertices, faces), minlength=count)
    order = np.argsort(-area, kind="stable")
    keep = order[area[order] >= min_fraction * area[order[0]]]
    if max_components > 0:
        keep = keep[:max_components]
    mask = np.isin(face_label, keep)
    kept_faces = faces[mask]
    stats = {"components": int((area > 0).sum()), "kept": int(len(keep)), "dropped_faces": int((~mask).sum())}
    vertices, kept_faces, _ = compact(vertices, kept_faces)
    return vertices, kept_faces, stats


def decimate(
    vertices: np.ndarray,
    faces: np.ndarray,
    max_faces: int,
    colors: np.ndarray | None = None,  # [V, C], each new vertex takes its nearest old vertex's
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quadric edge collapse (``fast_simplification``: Garland-Heckbert error quadrics) down
    to at most ``max_faces`` faces. It keeps the surface manifold where the input is, which
    the UV atlas needs: vertex clustering, the earlier method here, left about 10,000 edges
    shared by three or more faces on a 50,000-face mesh, and xatlas then charted for minutes."""
    if max_faces <= 0 or len(faces) <= max_faces:
        return vertices, faces, colors
    import fast_simplification

    points, new_faces = fast_simplification.simplify(
        np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64),
        target_count=max_faces)
    for _ in range(4):  # it stops near the target, sometimes a few faces above it
        if len(new_faces) <= max_faces:
            break
        points, new_faces = fast_simplification.simplify(points, new_faces, target_count=int(max_faces * 0.98))
    # edge collapses can leave a triangle twice (either winding) or with a repeated corner;
    # Blender's mesh validation would drop those, so they go here
    new_faces = new_faces[(new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2])
                          & (new_faces[:, 0] != new_faces[:, 2])]
    _, first = np.unique(np.sort(new_faces, axis=1), axis=0, return_index=True)
    new_faces = new_faces[np.sort(first)]
    new_colors = None
    if colors is not None:
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(vertices).query(points, k=1)
        new_colors = colors[nearest]
    return compact(points.astype(np.float32), new_faces.astype(np.int32), new_colors)


def empty_level_set_error(level: float, values: np.ndarray, what: str, option: str = "the threshold (--threshold)") -> InputError:
    """The error for a level with no surface: the density range found, and which way to move."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= level:
        fix = (f"Lower {option} below {hi:.4g} (the highest density found), e.g. {hi * 0.5:.4g}." if hi > 0 else
               "The density is zero everywhere: check that the field or splats were trained.")
    else:
        fix = f"Raise {option} above {lo:.4g} (the lowest density found)."
    return InputError(f"No surface at threshold {level:.4g} in {what}: the densities found range from {lo:.4g} "
                      f"to {hi:.4g}.", fix)


@dataclass
class MeshResult:
    vertices: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int32
    stats: dict


def extract(
    values: np.ndarray,
    grid: Grid,
    level: float,
    what: str = "the density",
    fill: bool = True,
    min_fraction: float = 0.05,
    max_components: int = 0,
) -> MeshResult:
    """Level set, cleanup: the steps after :func:`sample_grid`. Raises InputError when the
    level set is empty."""
    if not float(values.min()) < level < float(values.max()):
        raise empty_level_set_error(level, values, what)
    stats: dict = {"level": float(level), "density_min": float(values.min()), "density_max": float(values.max())}
    if fill:
        stats["filled_samples"] = fill_cavities(values, level)
    vertices, faces = level_set(values, level, grid)
    stats["raw_faces"] = int(len(faces))
    vertices, faces, parts = keep_components(vertices, faces, min_fraction, max_components)
    stats.update(parts)
    return MeshResult(vertices, faces, stats)
