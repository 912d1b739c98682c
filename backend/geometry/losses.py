# SPDX-License-Identifier: GPL-3.0-or-later
"""Differentiable mesh and point-cloud losses in PyTorch.

Single (unbatched) meshes and clouds: ``verts [V, 3]``, ``faces [F, 3]`` (long), points
``[N, 3]``. Definitions follow PyTorch3D's so that settings carry over from its tutorials
and from "3D Deep Learning with Python":

- :func:`chamfer_distance`: mean squared distance to the nearest neighbour, both ways.
  Memory-bounded: nearest neighbours are found without autograd (a uniform grid on the
  CPU, chunked brute force elsewhere), then only the matched distances are recomputed with
  autograd, so no ``N x M`` matrix is ever kept for the backward pass. The gradient is the
  same as the dense version's (the arg-min is piecewise constant).
- :func:`sample_points_from_mesh`: area-weighted uniform surface samples, differentiable
  with respect to the vertices.
- :func:`edge_loss`, :func:`normal_consistency`, :func:`laplacian_smoothing` (uniform,
  cotangent, cotangent-curvature), over a :class:`MeshTopology` computed once per mesh,
  since the topology does not change while the vertices are optimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .nearest import PointGrid


def gather(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for a 1-D or 2-D long ``index`` through ``index_select``, whose
    backward is an ``index_add_``: several times faster on the CPU than advanced indexing,
    whose backward is an accumulating ``index_put_``."""
    return values.index_select(0, index.reshape(-1)).view(*index.shape, *values.shape[1:])


# ---------------------------------------------------------------------------------------
# Chamfer
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def nearest_neighbors(
    query: Tensor,  # [N, 3]
    reference: Tensor,  # [M, 3]
    chunk: int = 2048,
) -> Tensor:  # [N] long: index into reference of each query point's nearest neighbour
    """Index of the nearest reference point for each query point, without autograd.

    CPU: a uniform grid compiled by numba (:mod:`.nearest`). Other devices: brute force in
    chunks of rows, so memory stays at ``chunk x M``."""
    if query.device.type == "cpu":
        index = PointGrid(reference.detach().numpy()).query(query.detach().numpy())
        return torch.from_numpy(index)
    out = torch.empty(len(query), dtype=torch.long, device=query.device)
    ref = reference.detach()
    ref_sq = ref.square().sum(-1)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk].detach()
        out[start : start + chunk] = (ref_sq[None, :] - 2.0 * q @ ref.T).argmin(dim=1)
    return out


def chamfer_distance(
    x: Tensor,  # [N, 3]
    y: Tensor,  # [M, 3]
) -> Tensor:  # []
    """Symmetric chamfer distance: mean over x of the squared distance to the nearest y, plus
    the same from y to x (PyTorch3D's ``chamfer_distance`` with mean reductions)."""
    if len(x) == 0 or len(y) == 0:
        raise ValueError("chamfer_distance needs two non-empty point sets")
    x_to_y = (x - gather(y, nearest_neighbors(x, y).to(x.device))).square().sum(-1)
    y_to_x = (y - gather(x, nearest_neighbors(y, x).to(y.device))).square().sum(-1)
    return x_to_y.mean() + y_to_x.mean()


# ---------------------------------------------------------------------------------------
# Surface sampling
# ---------------------------------------------------------------------------------------


def face_areas_normals(
    verts: Tensor,  # [V, 3]
    faces: Tensor,  # [F, 3] long
) -> tuple[Tensor, Tensor]:  # areas [F], unit normals [F, 3]
    v0, v1, v2 = gather(verts, faces).unbind(1)
    cross = torch.linalg.cross(v1 - v0, v2 - v0)
    norm = cross.norm(dim=1)
    return 0.5 * norm, cross / norm.clamp_min(1e-12)[:, None]


def sample_points_from_mesh(
    verts: Tensor,  # [V, 3]
    faces: Tensor,  # [F, 3] long
    num_samples: int,
    generator: torch.Generator | None = None,
) -> Tensor:  # [num_samples, 3]
    """Uniform samples on the surface: faces chosen by area, points by uniform barycentric
    coordinates (``w0 = 1 - sqrt(u)``, ``w1 = sqrt(u) (1 - v)``, ``w2 = sqrt(u) v``).
    Differentiable with respect to ``verts``; the face choice is not."""
    with torch.no_grad():
        areas, _ = face_areas_normals(verts, faces)
        # Faces by area through the inverse CDF (torch.multinomial is ten times slower here).
        cdf = areas.double().cumsum(0)
        u = torch.rand(3, num_samples, 1, dtype=verts.dtype, device=verts.device, generator=generator)
        face_index = torch.searchsorted(cdf, u[2, :, 0].double() * cdf[-1], right=True).clamp_max(len(faces) - 1)
        su = u[0].sqrt()
        weights = torch.stack([1.0 - su, su * (1.0 - u[1]), su * u[1]], dim=1)  # [S, 3, 1]
    corners = gather(verts, faces.index_select(0, face_index))  # [S, 3, 3]
    return (weights * corners).sum(1)


# ---------------------------------------------------------------------------------------
# Topology-based regularisers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshTopology:
    """Index arrays derived once from ``faces``.

    ``edges [E, 2]`` unique undirected edges (i < j); ``degree [V]`` neighbours per vertex;
    ``pair_edges [P, 2]``, ``pair_opposite [P, 2]``: for every pair of faces that share an
    edge, the edge's vertices and the two vertices opposite it.
    """

    faces: Tensor  # [F, 3] long
    edges: Tensor  # [E, 2] long
    degree: Tensor  # [V] float
    pair_edges: Tensor  # [P, 2] long
    pair_opposite: Tensor  # [P, 2] long
    num_verts: int
    pair_quads: Tensor  # [P, 4] long: pair_edges and pair_opposite side by side, for one gather
    directed_src: Tensor  # [2E] long: both directions of every edge ...
    directed_dst: Tensor  # [2E] long: ... and the neighbour on the other end

    @staticmethod
    def from_faces(faces: Tensor | np.ndarray, num_verts: int, device: torch.device | str = "cpu") -> MeshTopology:
        f = np.asarray(faces.cpu() if isinstance(faces, Tensor) else faces, dtype=np.int64)
        # Each face has 3 directed edges (a, b) with the opposite corner c.
        a = f[:, [0, 1, 2]].reshape(-1)
        b = f[:, [1, 2, 0]].reshape(-1)
        c = f[:, [2, 0, 1]].reshape(-1)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        key = lo * num_verts + hi
        order = np.argsort(key, kind="stable")
        key_sorted = key[order]
        unique_keys, first, counts = np.unique(key_sorted, return_index=True, return_counts=True)
        edges = np.stack([unique_keys // num_verts, unique_keys % num_verts], axis=1)
        degree = np.bincount(edges.reshape(-1), minlength=num_verts).astype(np.float32)
        # Face pairs around each edge: every combination of the faces sharing it.
        pair_e, pair_o = [], []
        for k in np.unique(counts[counts >= 2]):  # one iteration per distinct valence (2 when manifold)
            starts = first[counts == k]
            i, j = np.triu_indices(k, 1)
            ci = c[order[starts[:, None] + i[None, :]]].reshape(-1)
            cj = c[order[starts[:, None] + j[None, :]]].reshape(-1)
            e = np.repeat(edges[counts == k], len(i), axis=0)
            pair_e.append(e)
            pair_o.append(np.stack([ci, cj], axis=1))
        pair_edges = np.concatenate(pair_e) if pair_e else np.zeros((0, 2), np.int64)
        pair_opposite = np.concatenate(pair_o) if pair_o else np.zeros((0, 2), np.int64)

        def t(array, dtype=torch.long):
            return torch.as_tensor(array, dtype=dtype, device=device)

        return MeshTopology(
            faces=t(f),
            edges=t(edges),
            degree=t(degree, torch.float32),
            pair_edges=t(pair_edges),
            pair_opposite=t(pair_opposite),
            num_verts=num_verts,
            pair_quads=t(np.concatenate([pair_edges, pair_opposite], axis=1)),
            directed_src=t(np.concatenate([edges[:, 0], edges[:, 1]])),
            directed_dst=t(np.concatenate([edges[:, 1], edges[:, 0]])),
        )


def edge_loss(verts: Tensor, topology: MeshTopology, target_length: float = 0.0) -> Tensor:
    """Mean over edges of ``(length - target_length)^2`` (PyTorch3D ``mesh_edge_loss``)."""
    e = topology.edges
    ends = gather(verts, e)
    length = (ends[:, 0] - ends[:, 1]).norm(dim=1)
    return (length - target_length).square().mean()


def normal_consistency(verts: Tensor, topology: MeshTopology) -> Tensor:
    """Mean over pairs of faces sharing an edge of ``1 - cos`` of the angle between their
    normals (PyTorch3D ``mesh_normal_consistency``), independent of face winding."""
    if len(topology.pair_edges) == 0:
        return verts.sum() * 0.0
    v0, v1, v2, v3 = gather(verts, topology.pair_quads).unbind(1)
    edge = v1 - v0
    n0 = torch.linalg.cross(edge, v2 - v0)
    n1 = -torch.linalg.cross(edge, v3 - v0)
    return (1.0 - torch.nn.functional.cosine_similarity(n0, n1, dim=1, eps=1e-6)).mean()


LAPLACIAN_METHODS = ("uniform", "cot", "cotcurv")


def _cotangent_weights(verts: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-face-corner cotangent weights and per-vertex inverse areas (no autograd).

    Returns ``(i, j, w, inv_area)``: the symmetric weight ``w`` between vertices ``i`` and
    ``j`` (each face contributes to the edge opposite each corner), and ``inv_area [V]``."""
    with torch.no_grad():
        v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
        a2 = (v1 - v2).square().sum(1)  # squared side lengths opposite v0, v1, v2
        b2 = (v0 - v2).square().sum(1)
        c2 = (v0 - v1).square().sum(1)
        a, b, c = a2.sqrt(), b2.sqrt(), c2.sqrt()
        s = 0.5 * (a + b + c)
        area = (s * (s - a) * (s - b) * (s - c)).clamp_min(1e-12).sqrt()
        cot = torch.stack([b2 + c2 - a2, a2 + c2 - b2, a2 + b2 - c2], dim=1) / (4.0 * area[:, None])  # [F, 3]
        i = faces[:, [1, 2, 0]].reshape(-1)  # corner 0's weight sits on edge (1, 2), and so on
        j = faces[:, [2, 0, 1]].reshape(-1)
        vert_area = torch.zeros(len(verts), dtype=verts.dtype, device=verts.device)
        vert_area.index_add_(0, faces.reshape(-1), area.repeat_interleave(3))
        inv_area = torch.where(vert_area > 0, 1.0 / vert_area.clamp_min(1e-30), torch.zeros_like(vert_area))
        return i, j, cot.reshape(-1), inv_area


def laplacian_smoothing(verts: Tensor, topology: MeshTopology, method: str = "uniform") -> Tensor:
    """Mean over vertices of ``|L v|`` (PyTorch3D ``mesh_laplacian_smoothing``).

    ``uniform``: ``L v = mean(neighbours) - v``. ``cot``: the cotangent-weighted mean of the
    neighbours minus ``v``. ``cotcurv``: ``(sum_j w_ij (v_j - v_i)) / (4 area_i)``, the
    mean-curvature normal. Weights are computed without autograd, as PyTorch3D does.
    Isolated vertices contribute zero.
    """
    if method == "uniform":
        neighbour_sum = torch.zeros_like(verts).index_add(0, topology.directed_src, gather(verts, topology.directed_dst))
        degree = topology.degree.to(verts.dtype)
        has = degree > 0
        lv = torch.where(has[:, None], neighbour_sum / degree.clamp_min(1.0)[:, None] - verts, torch.zeros_like(verts))
    elif method in ("cot", "cotcurv"):
        i, j, w, inv_area = _cotangent_weights(verts, topology.faces)
        weighted = torch.zeros_like(verts)
        weighted = weighted.index_add(0, i, w[:, None] * verts[j]).index_add(0, j, w[:, None] * verts[i])
        w_sum = torch.zeros(len(verts), dtype=verts.dtype, device=verts.device)
        w_sum = w_sum.index_add(0, i, w).index_add(0, j, w)
        if method == "cot":
            norm_w = torch.where(w_sum > 0, 1.0 / w_sum.clamp_min(1e-30), torch.zeros_like(w_sum))
            lv = torch.where((w_sum > 0)[:, None], weighted * norm_w[:, None] - verts, torch.zeros_like(verts))
        else:
            lv = (weighted - w_sum[:, None] * verts) * (0.25 * inv_area)[:, None]
    else:
        raise ValueError(f"unknown Laplacian method {method!r}; use one of {LAPLACIAN_METHODS}")
    return lv.norm(dim=1).mean()


def mean_dihedral_angle(verts: Tensor, topology: MeshTopology) -> Tensor:
    """Mean angle in radians between the normals of adjacent faces: 0 for a plane; a
    measure of (lack of) smoothness used to compare fitted meshes. 0 when no faces touch."""
    if len(topology.pair_edges) == 0:
        return verts.sum() * 0.0
    v0, v1, v2, v3 = gather(verts, topology.pair_quads).unbind(1)
    edge = v1 - v0
    n0 = torch.linalg.cross(edge, v2 - v0)
    n1 = -torch.linalg.cross(edge, v3 - v0)
    cos = torch.nn.functional.cosine_similarity(n0, n1, dim=1, eps=1e-12).clamp(-1.0, 1.0)
    return torch.arccos(cos).mean()
