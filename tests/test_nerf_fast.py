# SPDX-License-Identifier: GPL-3.0-or-later
"""The fast paths of a hash-grid training step against the plain ones: the blocked numba
encoding with any number of workers, the sparse Adam kernel against the PyTorch path
(including whole cache lines without a gradient), the colour MLP's per-ray broadcast
against its gather, and rendering that reuses the density pre-pass against rendering that
evaluates the kept samples again (values and every parameter's gradient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.nerf import _kernels, render
from backend.nerf.field import Field, FieldConfig, NGPField, SceneFrame
from backend.nerf.hashgrid import HashGridConfig, hash_encode, level_geometry, sparse_adam_step
from backend.nerf.render import OccupancyGrid, render_rays_ngp

needs_numba = pytest.mark.skipif(not _kernels.AVAILABLE, reason="numba is not installed")
GRID = HashGridConfig(levels=8, log2_table_size=12, base_resolution=4, finest_resolution=128)


def _rays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=g)
    origins = origins / origins.norm(dim=-1, keepdim=True) * 3.0
    dirs = -origins / 3.0 + 0.2 * torch.randn(n, 3, generator=g)
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def _field(seed: int = 0, density_gain: float = 1.0) -> Field:
    config = FieldConfig(hashgrid=GRID)
    torch.manual_seed(seed)  # the MLPs' initialisation
    model = NGPField(config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.encoding.table.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(seed + 1))
        model.density_net[-1].weight[0] *= density_gain
    frame = SceneFrame("box", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return Field(config, model, frame, 0.5, 6.0, (1.0, 1.0, 1.0), OccupancyGrid(16))


@needs_numba
@pytest.mark.parametrize("workers", [1, 3])
def test_blocked_encoding_kernels_match_the_pytorch_path_with_any_workers(workers):
    levels = level_geometry(GRID)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1001, 3, generator=g)  # not a multiple of the block
    x[:7] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.5], [0.5, 0.5, 1.0],
                          [1.0, 0.25, 0.0], [0.999999, 1.0, 0.0]])  # the cube's faces: the wrap of dense levels
    table = torch.rand(levels.rows, 2, generator=g) - 0.5
    out = np.empty((2 * GRID.levels, 1001), np.float32)  # feature-major
    _kernels.encode_forward_t(np.ascontiguousarray(x.numpy().T), table.numpy(), levels.offsets, levels.scales,
                              levels.resolutions, levels.dense, out, workers)
    torch.testing.assert_close(torch.from_numpy(out).T, hash_encode(x, table, levels, "torch"), rtol=0, atol=2e-6)

    grad_out = torch.randn(1001, 2 * GRID.levels, generator=g)
    grad_table = np.zeros((levels.rows, 2), np.float32)
    _kernels.encode_backward_t(np.ascontiguousarray(x.numpy().T), grad_out.T.numpy(), levels.offsets, levels.scales,
                               levels.resolutions, levels.dense, grad_table, workers=workers)
    reference = table.clone().requires_grad_()
    (hash_encode(x, reference, levels, "torch") * grad_out).sum().backward()
    torch.testing.assert_close(torch.from_numpy(grad_table), reference.grad, rtol=1e-5, atol=1e-5)


@needs_numba
def test_a_table_that_is_not_contiguous_is_encoded_like_its_contiguous_copy():
    """The kernels read the table's rows by address; a strided table takes the PyTorch path."""
    levels = level_geometry(GRID)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 3, generator=g)
    strided = (torch.rand(2, levels.rows, generator=g) - 0.5).T  # [rows, 2], column-major
    assert not strided.is_contiguous()
    torch.testing.assert_close(hash_encode(x, strided, levels), hash_encode(x, strided.contiguous(), levels),
                               rtol=0, atol=2e-6)


@needs_numba
def test_sparse_adam_kernel_matches_the_pytorch_path_and_skips_untouched_lines(monkeypatch):
    g = torch.Generator().manual_seed(0)
    rows = 5000
    param = torch.randn(rows, 2, generator=g)
    grads = []
    for step in range(3):
        grad = torch.randn(rows, 2, generator=g) * 10.0 ** -step
        grad[1000:3000] = 0.0  # whole cache lines without a gradient
        grad[torch.rand(rows, generator=g) < 0.3] = 0.0  # and scattered rows within touched lines
        grads.append(grad)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(_kernels, "AVAILABLE", fused)
        p, m, v = param.clone(), torch.zeros_like(param), torch.zeros_like(param)
        for step, grad in enumerate(grads, 1):
            gradient = grad.clone()
            sparse_adam_step(p, gradient, m, v, step, 1e-2)
            assert not gradient.any()
        results.append((p, m, v))
    for fast, slow in zip(*results, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-7)
    assert torch.equal(results[0][0][1000:3000], param[1000:3000])  # untouched: not a bit changed
    assert not results[0][1][1000:3000].any()


def test_colour_per_ray_broadcast_equals_the_gather():
    model = _field().model
    g = torch.Generator().manual_seed(2)
    rays, samples = 37, 11
    geo = torch.randn(rays * samples, 16, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(rays, 3, generator=g), dim=1)
    weights = torch.rand(rays * samples, 3, generator=g)
    results = []
    for ray_index in (None, torch.arange(rays).repeat_interleave(samples)):
        model.zero_grad()
        geo_leaf = geo.clone().requires_grad_()
        rgb = model.color(geo_leaf, dirs, ray_index)
        (rgb * weights).sum().backward()
        results.append((rgb.detach(), geo_leaf.grad, [p.grad.clone() for p in model.color_net.parameters()]))
    (a, ga, pa), (b, gb, pb) = results
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("min_transmittance", [0.0, render.T_MIN])
def test_reusing_the_prepass_gives_the_same_render_and_gradients(monkeypatch, min_transmittance):
    origins, dirs = _rays(300, 4)
    target = torch.rand(300, 3, generator=torch.Generator().manual_seed(9))
    jitter = torch.rand(300, 24, generator=torch.Generator().manual_seed(3))
    results = []
    for reuse in (0.0, 2.0):  # 0: always reuse the pre-pass; 2: never (evaluate the kept samples again)
        monkeypatch.setattr(render, "REUSE_PREPASS", reuse)
        fld = _field(density_gain=6.0)  # opaque enough that some samples are pruned
        out = render_rays_ngp(fld, origins, dirs, torch.ones(3), 24, jitter, min_transmittance=min_transmittance)
        ((out["rgb"] - target) ** 2).mean().backward()
        grads = {name: p.grad.clone() for name, p in fld.model.named_parameters()}
        results.append((out, grads))
    (a, ga), (b, gb) = results
    assert int(a["samples"]) == int(b["samples"])
    if min_transmittance > 0:
        assert int(a["samples"]) < 300 * 24  # some samples were pruned: the gather path ran
    for key in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    for name in ga:
        scale = float(gb[name].abs().max())
        torch.testing.assert_close(ga[name], gb[name], rtol=0, atol=1e-4 * scale, msg=name)
