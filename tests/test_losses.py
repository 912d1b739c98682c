# SPDX-License-Identifier: GPL-3.0-or-later
# Checks backend.geometry.losses and backend.geometry.nearest against dense, direct
# reference implementations written here (loops and V x V matrices are fine at test sizes).

from __future__ import annotations

import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.geometry import losses  # noqa: E402
from backend.geometry.nearest import PointGrid  # noqa: E402

F64 = torch.float64


# ---------------------------------------------------------------------------------------
# Reference implementations (independent of the code under test)
# ---------------------------------------------------------------------------------------


def ref_nearest_sq_dist(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Squared distance from each query point to its nearest reference point, dense."""
    d = torch.cdist(query.to(F64), reference.to(F64), compute_mode="donot_use_mm_for_euclid_dist")
    return d.min(dim=1).values.square()


def sq_dist_of_match(query: torch.Tensor, reference: torch.Tensor, index) -> torch.Tensor:
    index = torch.as_tensor(np.asarray(index), dtype=torch.long)
    assert index.shape == (len(query),)
    assert int(index.min()) >= 0 and int(index.max()) < len(reference)
    return (query.to(F64) - reference.to(F64)[index]).square().sum(-1)


def ref_chamfer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = (x[:, None, :] - y[None, :, :]).square().sum(-1)  # [N, M]
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()


def ref_edges(faces) -> list[tuple[int, int]]:
    edges = set()
    for f in np.asarray(faces).tolist():
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            edges.add((min(a, b), max(a, b)))
    return sorted(edges)


def ref_face_pairs(faces) -> list[tuple[int, int, int, int]]:
    """(v0, v1, v2, v3): shared edge (v0, v1), opposite vertices v2, v3; all face pairs per edge."""
    around: dict[tuple[int, int], list[int]] = {}
    for f in np.asarray(faces).tolist():
        for k in range(3):
            a, b, c = f[k], f[(k + 1) % 3], f[(k + 2) % 3]
            around.setdefault((min(a, b), max(a, b)), []).append(c)
    pairs = []
    for (a, b), opposite in sorted(around.items()):
        for c, d in itertools.combinations(opposite, 2):
            pairs.append((a, b, c, d))
    return pairs


def ref_edge_loss(verts, faces, target=0.0):
    terms = [((verts[a] - verts[b]).norm() - target) ** 2 for a, b in ref_edges(faces)]
    return torch.stack(terms).mean()


def _pair_cosines(verts, faces):
    cosines = []
    for a, b, c, d in ref_face_pairs(faces):
        e = verts[b] - verts[a]
        n0 = torch.linalg.cross(e, verts[c] - verts[a])
        n1 = -torch.linalg.cross(e, verts[d] - verts[a])
        cosines.append((n0 * n1).sum() / (n0.norm() * n1.norm()))
    return torch.stack(cosines)


def ref_normal_consistency(verts, faces):
    return (1.0 - _pair_cosines(verts, faces)).mean()


def ref_mean_dihedral(verts, faces):
    return torch.arccos(_pair_cosines(verts, faces).clamp(-1.0, 1.0)).mean()


def ref_adjacency(faces, num_verts) -> torch.Tensor:
    a = torch.zeros(num_verts, num_verts, dtype=F64)
    for i, j in ref_edges(faces):
        a[i, j] = a[j, i] = 1.0
    return a


def ref_cot_matrix(verts, faces):
    """Dense cotangent matrix L (L_ij = sum of cot of the angles opposite edge ij) and the
    per-vertex sum of incident face areas, by per-face loops, without autograd."""
    v = verts.detach().to(F64)
    n = len(v)
    lmat = torch.zeros(n, n, dtype=F64)
    area = torch.zeros(n, dtype=F64)
    for f in np.asarray(faces).tolist():
        face_area = 0.5 * torch.linalg.cross(v[f[1]] - v[f[0]], v[f[2]] - v[f[0]]).norm()
        for k in range(3):
            corner, p, q = f[k], f[(k + 1) % 3], f[(k + 2) % 3]
            u, w = v[p] - v[corner], v[q] - v[corner]
            cot = (u * w).sum() / torch.linalg.cross(u, w).norm()
            lmat[p, q] += cot
            lmat[q, p] += cot
        for k in range(3):
            area[f[k]] += face_area
    return lmat, area


def ref_laplacian(verts, faces, method):
    n = len(verts)
    if method == "uniform":
        a = ref_adjacency(faces, n)
        deg = a.sum(1)
        lv = a @ verts / deg.clamp_min(1.0)[:, None] - verts
        lv = torch.where((deg > 0)[:, None], lv, torch.zeros_like(lv))
    else:
        lmat, area = ref_cot_matrix(verts, faces)
        row = lmat.sum(1)
        used = area > 0
        assert bool((row[used] > 0).all()), "test mesh must have positive cotangent row sums"
        if method == "cot":
            lv = (lmat @ verts) / row.clamp_min(1e-300)[:, None] - verts
        else:
            lv = (lmat @ verts - row[:, None] * verts) * 0.25 / area.clamp_min(1e-300)[:, None]
        lv = torch.where(used[:, None], lv, torch.zeros_like(lv))
    return lv.norm(dim=1).mean()


def barycentric(p, a, b, c):
    """Barycentric coordinates of the projection of p onto the plane of (a, b, c), and the
    distance from p to that plane. Broadcasts over leading dimensions."""
    e0, e1, e2 = b - a, c - a, p - a
    d00, d01, d11 = (e0 * e0).sum(-1), (e0 * e1).sum(-1), (e1 * e1).sum(-1)
    d20, d21 = (e2 * e0).sum(-1), (e2 * e1).sum(-1)
    den = d00 * d11 - d01 * d01
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    w0 = 1.0 - w1 - w2
    w = torch.stack([w0, w1, w2], dim=-1)
    proj = w0[..., None] * a + w1[..., None] * b + w2[..., None] * c
    return w, (p - proj).norm(dim=-1)


def locate_on_mesh(points, verts, faces, tol=1e-9):
    """For each point: (face index, barycentric weights [3], distance to the mesh), where the
    distance is the plane distance to the best face the point projects inside of (inf if none)."""
    v = verts.detach().to(F64)
    tri = v[faces]  # [F, 3, 3]
    w, plane = barycentric(points.detach().to(F64)[:, None, :], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    inside = (w >= -tol).all(-1)
    dist = torch.where(inside, plane, torch.full_like(plane, math.inf))
    best = dist.argmin(dim=1)
    rows = torch.arange(len(points))
    return best, w[rows, best], dist[rows, best]


def perturbed_icosphere(seed=0, amount=0.08):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    rng = np.random.default_rng(seed)
    verts = np.asarray(mesh.vertices) * (1.0 + amount * rng.uniform(-1, 1, (len(mesh.vertices), 1)))
    verts = verts + 0.5 * amount * rng.uniform(-1, 1, verts.shape)
    return torch.tensor(verts, dtype=F64), torch.tensor(np.asarray(mesh.faces), dtype=torch.long)


def grid_mesh(n=5, seed=0, xy_noise=0.15, z_noise=0.2):
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float), indexing="ij")
    verts = np.stack([xs, ys, np.zeros_like(xs)], -1).reshape(-1, 3)
    verts[:, :2] += xy_noise * rng.uniform(-1, 1, (len(verts), 2))
    verts[:, 2] += z_noise * rng.uniform(-1, 1, len(verts))
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1
            if (i + j) % 2:
                faces += [[a, b, c], [a, c, d]]
            else:
                faces += [[a, b, d], [b, c, d]]
    return torch.tensor(verts, dtype=F64), torch.tensor(faces, dtype=torch.long)


def non_manifold_mesh(seed=0):
    """Three triangles sharing edge (0, 1), plus a fourth face hanging off one of them."""
    rng = np.random.default_rng(seed)
    verts = np.array(
        [[0, 0, 0], [1, 0, 0], [0.4, 1, 0], [0.5, -0.6, 0.8], [0.6, -0.5, -0.9], [0.9, 1.2, 0.3]], dtype=float
    )
    verts += 0.05 * rng.uniform(-1, 1, verts.shape)
    faces = [[0, 1, 2], [1, 0, 3], [0, 1, 4], [1, 5, 2]]
    return torch.tensor(verts, dtype=F64), torch.tensor(faces, dtype=torch.long)


MESHES = {
    "icosphere": perturbed_icosphere,
    "open_grid": grid_mesh,
    "non_manifold": non_manifold_mesh,
}


def grads(fn, verts):
    v = verts.clone().requires_grad_(True)
    value = fn(v)
    (g,) = torch.autograd.grad(value, v)
    return value.detach(), g


def assert_close64(actual, expected, rtol=1e-9, atol=1e-12):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------
# Nearest neighbours
# ---------------------------------------------------------------------------------------


def _nn_cases():
    g = torch.Generator().manual_seed(1234)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, dtype=F64, generator=g) * scale

    def rand(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, dtype=F64, generator=g)

    cases = {}
    cases["gaussian"] = (randn(3000, 3), randn(2500, 3))
    cases["gaussian_anisotropic"] = (
        randn(2000, 3) * torch.tensor([10.0, 1.0, 0.05], dtype=F64),
        randn(1500, 3) * torch.tensor([10.0, 1.0, 0.05], dtype=F64),
    )
    sphere = randn(2000, 3)
    sphere = sphere / sphere.norm(dim=1, keepdim=True)
    sphere_q = randn(1000, 3)
    sphere_q = sphere_q / sphere_q.norm(dim=1, keepdim=True) * rand(1000, 1, lo=0.5, hi=1.5)
    cases["sphere"] = (sphere_q, sphere)
    cube = rand(1000, 3)
    cases["outside_near"] = (rand(2000, 3, lo=-1.0, hi=2.0), cube)  # within a few cells of the box
    far = randn(500, 3)
    far = far / far.norm(dim=1, keepdim=True) * rand(500, 1, lo=5.0, hi=1e4)
    cases["outside_far"] = (far, cube)
    flat = torch.cat([rand(2000, 2, lo=-3.0, hi=3.0), torch.zeros(2000, 1, dtype=F64)], 1)
    cases["flat_reference"] = (torch.cat([rand(1500, 2, lo=-4, hi=4), randn(1500, 1)], 1), flat)
    line = torch.cat([rand(500, 1, lo=-5, hi=5), torch.zeros(500, 2, dtype=F64)], 1)
    cases["line_reference"] = (randn(800, 3, scale=3.0), line)
    base = randn(300, 3)
    dup = torch.cat([base, base, base[:100]], 0)[torch.randperm(700, generator=g)]
    cases["duplicated"] = (torch.cat([randn(500, 3), base[:50]], 0), dup)
    cases["all_identical"] = (randn(300, 3), torch.full((50, 3), 0.25, dtype=F64))
    cases["single_point"] = (torch.cat([randn(200, 3), torch.zeros(1, 3, dtype=F64)]), randn(1, 3))
    cases["single_query"] = (randn(1, 3), randn(400, 3))
    lattice = torch.stack(torch.meshgrid(*[torch.arange(8, dtype=F64)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lattice_q = torch.cat([lattice[::3] + 0.5, lattice[::5], rand(500, 3, lo=-1, hi=8)], 0)
    cases["lattice_ties"] = (lattice_q, lattice)
    clusters = torch.cat([randn(700, 3, scale=0.01), randn(300, 3, scale=0.01) + 50.0, randn(5, 3, scale=20)])
    cases["clusters"] = (randn(1000, 3, scale=20.0), clusters)
    cases["n_much_less_than_m"] = (randn(10, 3), randn(5000, 3))
    cases["n_much_more_than_m"] = (randn(5000, 3), randn(7, 3))
    return cases


NN_CASES = _nn_cases()


@pytest.mark.parametrize("case", sorted(NN_CASES))
def test_point_grid_nearest_distances_match_dense(case):
    query, reference = NN_CASES[case]
    index = PointGrid(reference.numpy()).query(query.numpy())
    assert np.asarray(index).dtype == np.int64
    got = sq_dist_of_match(query, reference, index)
    assert_close64(got.sqrt(), ref_nearest_sq_dist(query, reference).sqrt(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(NN_CASES))
def test_nearest_neighbors_distances_match_dense(case):
    query, reference = NN_CASES[case]
    index = losses.nearest_neighbors(query, reference)
    assert index.dtype == torch.long and index.shape == (len(query),)
    got = sq_dist_of_match(query, reference, index)
    assert_close64(got.sqrt(), ref_nearest_sq_dist(query, reference).sqrt(), rtol=1e-12, atol=1e-12)


def test_point_grid_is_reusable_for_several_queries():
    query, reference = NN_CASES["gaussian"]
    grid = PointGrid(reference.numpy())
    for part in (query[:10], query[10:1000], query):
        got = sq_dist_of_match(part, reference, grid.query(part.numpy()))
        assert_close64(got, ref_nearest_sq_dist(part, reference), rtol=1e-12, atol=1e-12)


def test_nearest_neighbors_float32_inputs():
    query, reference = (t.float() for t in NN_CASES["sphere"])
    index = losses.nearest_neighbors(query, reference)
    got = sq_dist_of_match(query, reference, index)
    assert_close64(got, ref_nearest_sq_dist(query, reference), rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the chunked path")
def test_nearest_neighbors_chunked_device_path_matches_dense():
    query, reference = NN_CASES["gaussian"]
    index = losses.nearest_neighbors(query.cuda(), reference.cuda(), chunk=333).cpu()
    got = sq_dist_of_match(query, reference, index)
    assert_close64(got, ref_nearest_sq_dist(query, reference), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Chamfer
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m,seed", [(400, 400, 0), (250, 900, 1), (1000, 37, 2), (1, 50, 3), (64, 1, 4)])
def test_chamfer_value_and_gradients_match_dense(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 3, dtype=F64, generator=g)
    y0 = torch.randn(m, 3, dtype=F64, generator=g) * 1.3 + 0.2
    x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    value = losses.chamfer_distance(x, y)
    gx, gy = torch.autograd.grad(value, (x, y))
    xr, yr = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    ref = ref_chamfer(xr, yr)
    rgx, rgy = torch.autograd.grad(ref, (xr, yr))
    assert value.shape == ()
    assert_close64(value.detach(), ref.detach(), rtol=1e-12)
    assert_close64(gx, rgx, rtol=1e-10, atol=1e-14)
    assert_close64(gy, rgy, rtol=1e-10, atol=1e-14)


def test_chamfer_float32_matches_dense():
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(500, 3, generator=g)
    y0 = torch.rand(600, 3, generator=g)
    x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    value = losses.chamfer_distance(x, y)
    gx, gy = torch.autograd.grad(value, (x, y))
    xr, yr = x0.double().requires_grad_(True), y0.double().requires_grad_(True)
    ref = ref_chamfer(xr, yr)
    rgx, rgy = torch.autograd.grad(ref, (xr, yr))
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref.detach(), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gx.double(), rgx, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gy.double(), rgy, rtol=1e-5, atol=1e-8)


def test_chamfer_is_symmetric_and_zero_on_identical_sets():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 3, dtype=F64, generator=g)
    y = torch.randn(200, 3, dtype=F64, generator=g)
    assert_close64(losses.chamfer_distance(x, y), losses.chamfer_distance(y, x), rtol=1e-14)
    assert float(losses.chamfer_distance(x, x[torch.randperm(300, generator=g)])) == 0.0


def test_chamfer_rejects_empty_sets():
    x = torch.randn(5, 3, dtype=F64)
    with pytest.raises(ValueError):
        losses.chamfer_distance(x, x[:0])
    with pytest.raises(ValueError):
        losses.chamfer_distance(x[:0], x)


def test_chamfer_saves_no_n_by_m_tensor_for_backward():
    n, m = 3000, 2000
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, 3, dtype=F64, generator=g).requires_grad_(True)
    y = torch.randn(m, 3, dtype=F64, generator=g).requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = losses.chamfer_distance(x, y)
    assert saved, "expected some tensors saved for backward"
    assert max(saved) <= 3 * max(n, m), max(saved)

    # Also walk the graph: no saved tensor attribute with N x M elements.
    seen, stack, biggest = set(), [value.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for name in dir(node):
            if name.startswith("_saved_"):
                attr = getattr(node, name, None)
                if isinstance(attr, torch.Tensor):
                    biggest = max(biggest, attr.numel())
        stack.extend(f for f, _ in node.next_functions)
    assert biggest < n * m // 100
    value.backward()
    assert x.grad.shape == x.shape and y.grad.shape == y.shape


def test_chamfer_runs_on_large_clouds_quickly():
    n = 20000  # a dense N x M float64 matrix would take 3.2 GB
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 3, dtype=F64, generator=g).requires_grad_(True)
    y = torch.randn(n, 3, dtype=F64, generator=g).requires_grad_(True)
    losses.chamfer_distance(x[:100], y[:100])  # warm up (numba compilation)
    start = time.perf_counter()
    value = losses.chamfer_distance(x, y)
    value.backward()
    elapsed = time.perf_counter() - start
    assert math.isfinite(value.item()) and value.item() > 0
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert elapsed < 5.0, elapsed


# ---------------------------------------------------------------------------------------
# Surface sampling
# ---------------------------------------------------------------------------------------


def tetrahedron():
    verts = torch.tensor([[0.1, 0.0, 0.0], [1.2, 0.1, -0.1], [0.3, 0.9, 0.2], [0.4, 0.3, 1.1]], dtype=F64)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    return verts, faces


def bent_quad():
    verts = torch.tensor([[0, 0, 0], [2, 0, 0.3], [2, 1, -0.2], [0, 1, 0.5]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return verts, faces


@pytest.mark.parametrize("make", [tetrahedron, bent_quad, perturbed_icosphere, grid_mesh])
def test_samples_lie_on_the_mesh(make):
    verts, faces = make()
    g = torch.Generator().manual_seed(0)
    samples = losses.sample_points_from_mesh(verts, faces, 5000, generator=g)
    assert samples.shape == (5000, 3) and samples.dtype == F64
    _, w, dist = locate_on_mesh(samples, verts, faces, tol=1e-12)
    assert torch.isfinite(dist).all()
    assert float(dist.max()) < 1e-12
    assert bool(((w >= -1e-12) & (w <= 1 + 1e-12)).all())


def test_icosphere_samples_lie_in_convex_hull_and_on_boundary():
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    verts = torch.tensor(np.asarray(mesh.vertices), dtype=F64)
    faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.long)
    samples = losses.sample_points_from_mesh(verts, faces, 20000, generator=torch.Generator().manual_seed(1))
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    normal = torch.linalg.cross(v1 - v0, v2 - v0)
    normal = normal / normal.norm(dim=1, keepdim=True)
    assert bool(((normal * v0).sum(1) > 0).all())  # outward winding
    signed = ((samples[:, None, :] - v0[None]) * normal[None]).sum(-1)  # [S, F]
    assert float(signed.max()) < 1e-12  # inside every face's half-space
    assert float(signed.max(dim=1).values.abs().max()) < 1e-12  # on some face's plane
    r = samples.norm(dim=1)
    assert float(r.max()) <= 1.0 + 1e-12 and float(r.min()) > 0.75


def test_sampling_is_area_weighted():
    # Big triangle area 1.5, small one area 0.5, far apart: 75 % / 25 %.
    verts = torch.tensor([[0, 0, 0], [3, 0, 0], [0, 1, 0], [10, 0, 0], [11, 0, 0], [10, 1, 0]], dtype=F64)
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    samples = losses.sample_points_from_mesh(verts, faces, 200_000, generator=torch.Generator().manual_seed(2))
    fraction = float((samples[:, 0] < 5).double().mean())
    assert abs(fraction - 0.75) < 0.01, fraction


def test_sampling_weights_many_faces_by_area():
    verts, faces = perturbed_icosphere(seed=4, amount=0.2)
    samples = losses.sample_points_from_mesh(verts, faces, 40_000, generator=torch.Generator().manual_seed(3))
    face, _, dist = locate_on_mesh(samples, verts, faces)
    assert float(dist.max()) < 1e-9
    counts = torch.bincount(face, minlength=len(faces)).to(F64)
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    area = 0.5 * torch.linalg.cross(v1 - v0, v2 - v0).norm(dim=1)
    p = area / area.sum()
    sigma = (p * (1 - p) / len(samples)).sqrt()
    z = (counts / len(samples) - p) / sigma
    assert float(z.abs().max()) < 5.0


def test_zero_area_faces_get_no_samples():
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [6, 6, 6], [7, 7, 7]], dtype=F64)
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])  # the first face is degenerate (collinear)
    samples = losses.sample_points_from_mesh(verts, faces, 10000, generator=torch.Generator().manual_seed(0))
    assert float(samples[:, 0].max()) <= 1.0 + 1e-12
    assert float(samples[:, 2].abs().max()) == 0.0


def test_sampling_is_uniform_inside_a_triangle():
    a, b, c = [0.3, -0.2, 0.1], [2.5, 0.4, -0.3], [0.9, 1.7, 0.6]
    verts = torch.tensor([a, b, c], dtype=F64)
    faces = torch.tensor([[0, 1, 2]])
    n = 200_000
    samples = losses.sample_points_from_mesh(verts, faces, n, generator=torch.Generator().manual_seed(4))
    # Mean = centroid (each coordinate's standard error is below 0.003 here).
    torch.testing.assert_close(samples.mean(0), verts.mean(0), rtol=0, atol=0.01)
    w, plane = barycentric(samples, verts[0], verts[1], verts[2])
    assert float(plane.max()) < 1e-12 and bool((w >= -1e-12).all())
    # Each of the four midpoint sub-triangles holds a quarter of the samples.
    corner = (w > 0.5).any(dim=1)
    sub = torch.where(corner, w.argmax(dim=1), torch.full_like(w[:, 0], 3, dtype=torch.long))
    fractions = torch.bincount(sub, minlength=4).to(F64) / n
    torch.testing.assert_close(fractions, torch.full((4,), 0.25, dtype=F64), rtol=0, atol=0.01)
    # Uniform on a triangle: P(w_k > t) = (1 - t)^2 for every barycentric coordinate.
    for t in (0.1, 0.3, 0.5, 0.8):
        expected = (1 - t) ** 2
        got = (w > t).double().mean(0)
        torch.testing.assert_close(got, torch.full((3,), expected, dtype=F64), rtol=0, atol=0.01)


def test_sampling_is_reproducible_with_a_generator():
    verts, faces = perturbed_icosphere()
    s1 = losses.sample_points_from_mesh(verts, faces, 1000, generator=torch.Generator().manual_seed(9))
    s2 = losses.sample_points_from_mesh(verts, faces, 1000, generator=torch.Generator().manual_seed(9))
    s3 = losses.sample_points_from_mesh(verts, faces, 1000, generator=torch.Generator().manual_seed(10))
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)


def disjoint_triangles(seed=0, count=5):
    rng = np.random.default_rng(seed)
    verts = []
    for k in range(count):
        verts.append(rng.uniform(0, 1, (3, 3)) + np.array([3.0 * k, 0, 0]))
    verts = np.concatenate(verts)
    faces = np.arange(3 * count).reshape(count, 3)
    return torch.tensor(verts, dtype=F64), torch.tensor(faces, dtype=torch.long)


@pytest.mark.parametrize("make", [disjoint_triangles, tetrahedron, perturbed_icosphere])
def test_sample_gradients_are_barycentric_weights(make):
    verts0, faces = make()
    n = 3000
    verts = verts0.clone().requires_grad_(True)
    samples = losses.sample_points_from_mesh(verts, faces, n, generator=torch.Generator().manual_seed(6))
    coeff = torch.randn(n, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    (g_sum,) = torch.autograd.grad(samples.sum(), verts, retain_graph=True)
    (g_lin,) = torch.autograd.grad((samples * coeff).sum(), verts)

    face, w, dist = locate_on_mesh(samples, verts0, faces)
    assert float(dist.max()) < 1e-9
    corners = faces[face]  # [n, 3]
    ref_sum = torch.zeros(len(verts0), dtype=F64).index_add_(0, corners.reshape(-1), w.reshape(-1))
    ref_lin = torch.zeros(len(verts0), 3, dtype=F64)
    for k in range(3):
        ref_lin.index_add_(0, corners[:, k], w[:, k : k + 1] * coeff)
    assert_close64(g_sum, ref_sum[:, None].expand(-1, 3), rtol=1e-9, atol=1e-9)
    assert_close64(g_lin, ref_lin, rtol=1e-9, atol=1e-9)
    assert_close64(g_sum.sum(), torch.tensor(3.0 * n, dtype=F64), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Topology and regularisers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESHES))
def test_topology_matches_reference(name):
    verts, faces = MESHES[name]()
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    edges = [tuple(e) for e in topo.edges.tolist()]
    assert edges == ref_edges(faces)  # unique, i < j, sorted
    adjacency = ref_adjacency(faces, len(verts))
    assert torch.equal(topo.degree.to(F64), adjacency.sum(1))

    def canonical(rows):
        return sorted((a, b, *sorted((c, d))) for a, b, c, d in rows)

    got = [(*e, *o) for e, o in zip(topo.pair_edges.tolist(), topo.pair_opposite.tolist(), strict=True)]
    assert canonical(got) == canonical(ref_face_pairs(faces))


def test_topology_from_numpy_faces_matches_tensor_faces():
    verts, faces = perturbed_icosphere()
    t1 = losses.MeshTopology.from_faces(faces, len(verts))
    t2 = losses.MeshTopology.from_faces(faces.numpy().astype(np.int32), len(verts))
    for field in ("faces", "edges", "pair_edges", "pair_opposite"):
        assert torch.equal(getattr(t1, field), getattr(t2, field))


@pytest.mark.parametrize("name", sorted(MESHES))
@pytest.mark.parametrize("target", [0.0, 0.7])
def test_edge_loss_matches_reference(name, target):
    verts, faces = MESHES[name]()
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    value, grad = grads(lambda v: losses.edge_loss(v, topo, target_length=target), verts)
    ref_value, ref_grad = grads(lambda v: ref_edge_loss(v, faces, target), verts)
    assert_close64(value, ref_value)
    assert_close64(grad, ref_grad)


@pytest.mark.parametrize("name", sorted(MESHES))
def test_normal_consistency_matches_reference(name):
    verts, faces = MESHES[name]()
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    value, grad = grads(lambda v: losses.normal_consistency(v, topo), verts)
    ref_value, ref_grad = grads(lambda v: ref_normal_consistency(v, faces), verts)
    assert_close64(value, ref_value)
    assert_close64(grad, ref_grad)


def test_normal_consistency_counts_all_pairs_around_a_non_manifold_edge():
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, 0, 1], [0.5, -1, 0]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    assert len(topo.pair_edges) == 3
    # Pairwise (1 - cos): opposite vertices 2 and 3 -> 90 degrees -> 1; 2 and 4 -> flat -> 0;
    # 3 and 4 -> 90 degrees -> 1.  Mean over the 3 pairs: 2 / 3.
    value = losses.normal_consistency(verts, topo)
    assert_close64(value, torch.tensor(2.0 / 3.0, dtype=F64), rtol=1e-12)
    assert_close64(value, ref_normal_consistency(verts, faces), rtol=1e-12)


def test_normal_consistency_ignores_face_winding():
    verts, faces = perturbed_icosphere(seed=3)
    flipped = faces.clone()
    flipped[::2] = flipped[::2].flip(1)
    a = losses.normal_consistency(verts, losses.MeshTopology.from_faces(faces, len(verts)))
    b = losses.normal_consistency(verts, losses.MeshTopology.from_faces(flipped, len(verts)))
    assert_close64(a, b, rtol=1e-12)


def test_normal_consistency_without_adjacent_faces_is_zero_with_gradient():
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=F64, requires_grad=True)
    topo = losses.MeshTopology.from_faces(torch.tensor([[0, 1, 2]]), 3)
    value = losses.normal_consistency(verts, topo)
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(verts.grad, torch.zeros_like(verts))


@pytest.mark.parametrize("name", ["icosphere", "open_grid"])
@pytest.mark.parametrize("method", ["uniform", "cot", "cotcurv"])
def test_laplacian_smoothing_matches_reference(name, method):
    verts, faces = MESHES[name]()
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    value, grad = grads(lambda v: losses.laplacian_smoothing(v, topo, method=method), verts)
    ref_value, ref_grad = grads(lambda v: ref_laplacian(v, faces, method), verts)
    assert_close64(value, ref_value)
    assert_close64(grad, ref_grad)


@pytest.mark.parametrize("method", ["uniform", "cot", "cotcurv"])
def test_laplacian_smoothing_isolated_vertices_contribute_zero(method):
    verts, faces = grid_mesh(n=4, seed=5)
    verts = torch.cat([verts, torch.tensor([[10.0, -3.0, 2.0], [-4.0, 1.0, 7.0]], dtype=F64)])
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    value, grad = grads(lambda v: losses.laplacian_smoothing(v, topo, method=method), verts)
    ref_value, ref_grad = grads(lambda v: ref_laplacian(v, faces, method), verts)
    assert_close64(value, ref_value)
    assert_close64(grad, ref_grad)
    assert torch.equal(grad[-2:], torch.zeros(2, 3, dtype=F64))


def test_laplacian_smoothing_rejects_unknown_method():
    verts, faces = grid_mesh(n=3)
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    with pytest.raises(ValueError):
        losses.laplacian_smoothing(verts, topo, method="bogus")


@pytest.mark.parametrize("name", sorted(MESHES))
def test_mean_dihedral_angle_matches_reference(name):
    verts, faces = MESHES[name]()
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    value, grad = grads(lambda v: losses.mean_dihedral_angle(v, topo), verts)
    ref_value, ref_grad = grads(lambda v: ref_mean_dihedral(v, faces), verts)
    assert_close64(value, ref_value)
    assert_close64(grad, ref_grad, rtol=1e-8, atol=1e-10)


def test_mean_dihedral_angle_is_zero_for_a_flat_grid():
    verts, faces = grid_mesh(n=6, xy_noise=0.2, z_noise=0.0)
    topo = losses.MeshTopology.from_faces(faces, len(verts))
    assert abs(float(losses.mean_dihedral_angle(verts, topo))) < 1e-7


def test_mean_dihedral_angle_of_a_right_angle_fold():
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0.3, 1, 0], [0.6, 0, 1]], dtype=F64)
    for faces in ([[0, 1, 2], [1, 0, 3]], [[0, 1, 2], [0, 1, 3]], [[2, 1, 0], [3, 0, 1]]):
        topo = losses.MeshTopology.from_faces(torch.tensor(faces), 4)
        assert_close64(losses.mean_dihedral_angle(verts, topo), torch.tensor(math.pi / 2, dtype=F64), rtol=1e-12)


def test_mean_dihedral_angle_of_a_known_fold():
    theta = 0.7  # the second triangle is rotated by theta about the shared x axis
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0.4, 1, 0], [0.5, -math.cos(theta), math.sin(theta)]], dtype=F64)
    topo = losses.MeshTopology.from_faces(torch.tensor([[0, 1, 2], [1, 0, 3]]), 4)
    assert_close64(losses.mean_dihedral_angle(verts, topo), torch.tensor(theta, dtype=F64), rtol=1e-12)
