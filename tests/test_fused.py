# SPDX-License-Identifier: GPL-3.0-or-later
"""The fused numba kernels against their PyTorch references in backend.geometry.losses:
values and gradients, and a whole fit through both paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from backend.deform.fit import FitSettings, fit_mesh_to_points, icosphere
from backend.geometry import fused, losses

pytestmark = pytest.mark.skipif(not fused.AVAILABLE, reason="numba is not installed")


def perturbed_mesh(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=2)
        v, f = mesh.vertices * (1 + 0.15 * rng.random((len(mesh.vertices), 1))), mesh.faces
    else:  # an open, irregular grid
        x, y = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 7))
        v = np.stack([x.ravel(), y.ravel(), 0.2 * rng.random(x.size)], 1) + 0.02 * rng.normal(size=(x.size, 3))
        idx = np.arange(x.size).reshape(x.shape)
        a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
        f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return torch.tensor(v, dtype=torch.float64), torch.tensor(f, dtype=torch.long)


@pytest.mark.parametrize("kind", ["sphere", "grid"])
@pytest.mark.parametrize("target_length", [0.0, 0.3])
def test_regularizers_match_the_pytorch_terms(kind, target_length):
    v, f = perturbed_mesh(kind)
    topology = losses.MeshTopology.from_faces(f, len(v))
    weights = torch.tensor([0.7, 1.3, 0.4], dtype=torch.float64)
    a = v.clone().requires_grad_(True)
    reference = torch.stack([
        losses.edge_loss(a, topology, target_length),
        losses.normal_consistency(a, topology),
        losses.laplacian_smoothing(a, topology, "uniform"),
    ])
    (weights * reference).sum().backward()
    b = v.clone().requires_grad_(True)
    ours = fused.regularizers(b, fused.FusedMesh(topology), target_length)
    (weights * ours).sum().backward()
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-14)
    assert torch.allclose(b.grad, a.grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("num_samples, num_target", [(500, 300), (2000, 40)])
def test_sampled_chamfer_matches_sampling_plus_chamfer(num_samples, num_target):
    v, f = perturbed_mesh("sphere", seed=3)
    topology = losses.MeshTopology.from_faces(f, len(v))
    target = torch.randn(num_target, 3, dtype=torch.float64) * 0.8
    a = v.clone().requires_grad_(True)
    samples = losses.sample_points_from_mesh(a, topology.faces, num_samples, torch.Generator().manual_seed(9))
    reference = losses.chamfer_distance(target, samples)
    reference.backward()
    b = v.clone().requires_grad_(True)
    sampled_chamfer = fused.SampledChamfer(target.numpy(), fused.FusedMesh(topology))
    ours = sampled_chamfer(b, num_samples, torch.Generator().manual_seed(9))  # the same random draws
    ours.backward()
    assert torch.allclose(ours, reference, rtol=1e-12)
    assert torch.allclose(b.grad, a.grad, rtol=1e-10, atol=1e-14)


def test_a_fit_takes_the_same_path_either_way():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(400, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points *= [1.0, 1.6, 0.7]
    v, f = icosphere(3)
    runs = [fit_mesh_to_points(points, v, f, FitSettings(iterations=60, samples=1500, fused=on), template_in_unit_frame=True)
            for on in (True, False)]
    assert [r.compute_path for r in runs] == ["numba-fused", "pytorch"]
    # float32 PyTorch against float64 kernels: the same trajectory up to rounding.
    assert np.abs(runs[0].vertices - runs[1].vertices).max() < 1e-3
    for name in ("chamfer", "edge", "normal", "laplacian"):
        assert runs[0].final_losses[name] == pytest.approx(runs[1].final_losses[name], rel=1e-2)
