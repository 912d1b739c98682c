# SPDX-License-Identifier: GPL-3.0-or-later
"""Fused CPU kernels for a mesh-fit step, compiled by numba, gradients computed analytically
in the same pass.

On small meshes a fit step in eager PyTorch is dominated by per-operator overhead (about
150 small operators forward and backward). These kernels compute the same functions as the
PyTorch references in :mod:`.losses` (``sample_points_from_mesh`` + ``chamfer_distance``,
``edge_loss``, ``normal_consistency``, ``laplacian_smoothing(method="uniform")``) with their
gradients with respect to the vertices, in float64, each in one call. Tests compare them
with the references, values and gradients. Used on the CPU when numba imports.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .losses import MeshTopology
from .nearest import PointGrid, numba

AVAILABLE = numba is not None

if AVAILABLE:

    @numba.njit(cache=True, nogil=True)
    def _sample(v, faces, u, out_points, out_faces, out_bary):
        """Area-weighted samples: faces by inverse CDF of ``u[2]``, barycentrics from ``u[0:2]``."""
        nf = faces.shape[0]
        cdf = np.empty(nf)
        total = 0.0
        for f in range(nf):
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            e1x, e1y, e1z = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
            e2x, e2y, e2z = v[c, 0] - v[a, 0], v[c, 1] - v[a, 1], v[c, 2] - v[a, 2]
            cx, cy, cz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
            total += 0.5 * math.sqrt(cx * cx + cy * cy + cz * cz)
            cdf[f] = total
        for s in range(u.shape[1]):
            f = min(np.searchsorted(cdf, u[2, s] * total, side="right"), nf - 1)
            su = math.sqrt(u[0, s])
            w0, w1, w2 = 1.0 - su, su * (1.0 - u[1, s]), su * u[1, s]
            out_faces[s] = f
            out_bary[s, 0], out_bary[s, 1], out_bary[s, 2] = w0, w1, w2
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            for k in range(3):
                out_points[s, k] = w0 * v[a, k] + w1 * v[b, k] + w2 * v[c, k]

    @numba.njit(cache=True, nogil=True)
    def _chamfer_value_grad(target, samples, nn_ts, nn_st, grad_samples):
        """Chamfer value; fills d(value)/d(samples). ``nn_ts``: nearest sample of each target
        point; ``nn_st``: nearest target point of each sample."""
        n, m = target.shape[0], samples.shape[0]
        grad_samples[:] = 0.0
        a = 0.0
        for i in range(n):
            j = nn_ts[i]
            for k in range(3):
                d = samples[j, k] - target[i, k]
                a += d * d
                grad_samples[j, k] += 2.0 * d / n
        b = 0.0
        for j in range(m):
            i = nn_st[j]
            for k in range(3):
                d = samples[j, k] - target[i, k]
                b += d * d
                grad_samples[j, k] += 2.0 * d / m
        return a / n + b / m

    @numba.njit(cache=True, nogil=True)
    def _scatter_bary(grad_samples, faces, sample_faces, bary, grad_v):
        grad_v[:] = 0.0
        for s in range(grad_samples.shape[0]):
            f = sample_faces[s]
            for c in range(3):
                w = bary[s, c]
                vi = faces[f, c]
                for k in range(3):
                    grad_v[vi, k] += w * grad_samples[s, k]

    @numba.njit(cache=True, nogil=True)
    def _regularizers(v, edges, quads, src, dst, degree, target_length, g_edge, g_normal, g_lap):
        """(edge, normal consistency, uniform Laplacian) and their gradients w.r.t. ``v``."""
        g_edge[:] = 0.0
        g_normal[:] = 0.0
        g_lap[:] = 0.0
        nv = v.shape[0]
        # Edge length: mean (|v_a - v_b| - t)^2.
        ne = edges.shape[0]
        edge = 0.0
        for k in range(ne):
            a, b = edges[k, 0], edges[k, 1]
            dx, dy, dz = v[a, 0] - v[b, 0], v[a, 1] - v[b, 1], v[a, 2] - v[b, 2]
            length = math.sqrt(dx * dx + dy * dy + dz * dz)
            r = length - target_length
            edge += r * r
            if length > 0.0:
                c = 2.0 * r / (ne * length)
                g_edge[a, 0] += c * dx
                g_edge[a, 1] += c * dy
                g_edge[a, 2] += c * dz
                g_edge[b, 0] -= c * dx
                g_edge[b, 1] -= c * dy
                g_edge[b, 2] -= c * dz
        edge = edge / ne if ne else 0.0
        # Normal consistency: mean 1 - cos(n0, n1), n0 = e x a, n1 = b x e (= -(e x b)).
        npairs = quads.shape[0]
        normal = 0.0
        e = np.empty(3)
        pa = np.empty(3)
        pb = np.empty(3)
        n0 = np.empty(3)
        n1 = np.empty(3)
        g0 = np.empty(3)
        g1 = np.empty(3)
        for p in range(npairs):
            i0, i1, i2, i3 = quads[p, 0], quads[p, 1], quads[p, 2], quads[p, 3]
            for k in range(3):
                e[k] = v[i1, k] - v[i0, k]
                pa[k] = v[i2, k] - v[i0, k]
                pb[k] = v[i3, k] - v[i0, k]
            n0[0], n0[1], n0[2] = e[1] * pa[2] - e[2] * pa[1], e[2] * pa[0] - e[0] * pa[2], e[0] * pa[1] - e[1] * pa[0]
            n1[0], n1[1], n1[2] = pb[1] * e[2] - pb[2] * e[1], pb[2] * e[0] - pb[0] * e[2], pb[0] * e[1] - pb[1] * e[0]
            l0 = max(math.sqrt(n0[0] ** 2 + n0[1] ** 2 + n0[2] ** 2), 1e-6)
            l1 = max(math.sqrt(n1[0] ** 2 + n1[1] ** 2 + n1[2] ** 2), 1e-6)
            cos = (n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2]) / (l0 * l1)
            normal += 1.0 - cos
            # d(1 - cos)/dn = -(other / (l0 l1) - cos n / l^2), over the number of pairs.
            for k in range(3):
                g0[k] = -(n1[k] / (l0 * l1) - cos * n0[k] / (l0 * l0)) / npairs
                g1[k] = -(n0[k] / (l0 * l1) - cos * n1[k] / (l1 * l1)) / npairs
            # n0 = e x pa: de += pa x g0, dpa += g0 x e; n1 = pb x e: dpb += e x g1, de += g1 x pb.
            ge0 = pa[1] * g0[2] - pa[2] * g0[1] + g1[1] * pb[2] - g1[2] * pb[1]
            ge1 = pa[2] * g0[0] - pa[0] * g0[2] + g1[2] * pb[0] - g1[0] * pb[2]
            ge2 = pa[0] * g0[1] - pa[1] * g0[0] + g1[0] * pb[1] - g1[1] * pb[0]
            ga0, ga1, ga2 = g0[1] * e[2] - g0[2] * e[1], g0[2] * e[0] - g0[0] * e[2], g0[0] * e[1] - g0[1] * e[0]
            gb0, gb1, gb2 = e[1] * g1[2] - e[2] * g1[1], e[2] * g1[0] - e[0] * g1[2], e[0] * g1[1] - e[1] * g1[0]
            g_normal[i1, 0] += ge0
            g_normal[i1, 1] += ge1
            g_normal[i1, 2] += ge2
            g_normal[i2, 0] += ga0
            g_normal[i2, 1] += ga1
            g_normal[i2, 2] += ga2
            g_normal[i3, 0] += gb0
            g_normal[i3, 1] += gb1
            g_normal[i3, 2] += gb2
            g_normal[i0, 0] -= ge0 + ga0 + gb0
            g_normal[i0, 1] -= ge1 + ga1 + gb1
            g_normal[i0, 2] -= ge2 + ga2 + gb2
        normal = normal / npairs if npairs else 0.0
        # Uniform Laplacian: mean |mean(neighbours) - v| (0 for isolated vertices).
        lv = np.zeros((nv, 3))
        for k in range(src.shape[0]):
            i, j = src[k], dst[k]
            for c in range(3):
                lv[i, c] += v[j, c] / degree[i]
        lap = 0.0
        u = np.zeros((nv, 3))
        for i in range(nv):
            if degree[i] == 0:
                continue
            for c in range(3):
                lv[i, c] -= v[i, c]
            norm = math.sqrt(lv[i, 0] ** 2 + lv[i, 1] ** 2 + lv[i, 2] ** 2)
            lap += norm
            if norm > 0.0:
                for c in range(3):
                    u[i, c] = lv[i, c] / (norm * nv)
                    g_lap[i, c] -= u[i, c]
        for k in range(src.shape[0]):
            i, j = src[k], dst[k]
            for c in range(3):
                g_lap[j, c] += u[i, c] / degree[i]
        return edge, normal, lap / nv


class FusedMesh:
    """Index arrays of a :class:`MeshTopology` as numpy, for the kernels."""

    def __init__(self, topology: MeshTopology) -> None:
        def np_(t):
            return np.ascontiguousarray(t.cpu().numpy())

        self.faces = np_(topology.faces)
        self.edges = np_(topology.edges)
        self.quads = np_(topology.pair_quads)
        self.src = np_(topology.directed_src)
        self.dst = np_(topology.directed_dst)
        self.degree = np_(topology.degree).astype(np.float64)
        self.num_verts = topology.num_verts


class _SampledChamfer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, target_np, target_grid, mesh, u):  # noqa: D401 - autograd API
        v = verts.detach().double().numpy()
        samples = np.empty((u.shape[1], 3))
        sample_faces = np.empty(u.shape[1], np.int64)
        bary = np.empty((u.shape[1], 3))
        _sample(v, mesh.faces, u, samples, sample_faces, bary)
        nn_st = target_grid.query(samples)  # nearest target point of each sample
        nn_ts = PointGrid(samples).query(target_np)  # nearest sample of each target point
        grad_samples = np.empty_like(samples)
        value = _chamfer_value_grad(target_np, samples, nn_ts, nn_st, grad_samples)
        grad_v = np.empty_like(v)
        _scatter_bary(grad_samples, mesh.faces, sample_faces, bary, grad_v)
        ctx.save_for_backward(torch.from_numpy(grad_v).to(verts.dtype))
        return verts.new_tensor(value)

    @staticmethod
    def backward(ctx, grad_out):
        (grad_v,) = ctx.saved_tensors
        return grad_out * grad_v, None, None, None, None


class _Regularizers(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, mesh, target_length):
        v = verts.detach().double().numpy()
        grads = np.empty((3, *v.shape))
        values = _regularizers(v, mesh.edges, mesh.quads, mesh.src, mesh.dst, mesh.degree, target_length,
                               grads[0], grads[1], grads[2])
        ctx.save_for_backward(torch.from_numpy(grads).to(verts.dtype))
        return verts.new_tensor(values)

    @staticmethod
    def backward(ctx, grad_out):  # grad_out [3]
        (grads,) = ctx.saved_tensors
        return (grad_out[:, None, None] * grads).sum(0), None, None


class SampledChamfer:
    """``chamfer_distance(target, sample_points_from_mesh(verts, faces, n))`` in one fused call;
    the target cloud is fixed, so its grid is built once."""

    def __init__(self, target: np.ndarray, mesh: FusedMesh) -> None:
        self.target = np.ascontiguousarray(target, dtype=np.float64)
        self.grid = PointGrid(self.target)
        self.mesh = mesh

    def __call__(self, verts: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        # The same random numbers, in the same order, as losses.sample_points_from_mesh draws.
        u = torch.rand(3, num_samples, 1, dtype=verts.dtype, generator=generator)[:, :, 0].double().numpy()
        return _SampledChamfer.apply(verts, self.target, self.grid, self.mesh, u)


def regularizers(verts: Tensor, mesh: FusedMesh, target_length: float = 0.0) -> Tensor:
    """``[edge_loss, normal_consistency, laplacian_smoothing(uniform)]`` as one tensor ``[3]``."""
    return _Regularizers.apply(verts, mesh, float(target_length))
