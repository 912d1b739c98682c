# SPDX-License-Identifier: GPL-3.0-or-later
"""The hash-grid encoding: its level geometry, lookups and gradients of every path against
the direct reference (and against tiny-cuda-nn where it runs), and the sparse Adam step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.nerf import _kernels
from backend.nerf.hashgrid import (
    HashGrid,
    HashGridConfig,
    hash_encode,
    hash_encode_cached,
    init_table,
    level_geometry,
    sparse_adam_step,
)
from backend.nerf.reference import hash_encode_reference

needs_numba = pytest.mark.skipif(not _kernels.AVAILABLE, reason="numba is not installed")
SMALL = HashGridConfig(levels=6, log2_table_size=10, base_resolution=4, finest_resolution=96)


def _points(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [0.999999, 1e-7, 0.5]])
    return x


def _table(config: HashGridConfig, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = level_geometry(config).rows
    return torch.rand(rows, config.features, generator=g) - 0.5


def test_level_geometry_follows_tiny_cuda_nn():
    config = HashGridConfig()
    levels = level_geometry(config)
    b = config.per_level_scale
    assert math.isclose(b, (2048 / 16) ** (1 / 15))
    for level in range(config.levels):
        scale = np.float32(np.exp2(np.float32(level) * np.float32(math.log2(b))) * np.float32(16) - np.float32(1))
        assert levels.scales[level] == scale
        assert levels.resolutions[level] == math.ceil(scale) + 1
        cells = levels.resolutions[level] ** 3
        assert levels.sizes[level] == min(-(-cells // 8) * 8, 2**19)
        assert levels.dense[level] == (cells <= levels.sizes[level])
    assert levels.resolutions[0] == 16 and levels.dense[0] and not levels.dense[-1]
    assert levels.offsets[-1] == levels.sizes.sum() == levels.rows
    assert levels.rows < 16 * 2**19  # the coarse levels are smaller than the table
    table = init_table(config)
    assert table.shape == (levels.rows, 2) and float(table.abs().max()) <= 1e-4
    assert config.tcnn_config()["per_level_scale"] == b


@pytest.mark.parametrize("backend", ["torch", pytest.param("numba", marks=needs_numba)])
def test_lookups_match_the_reference(backend):
    levels = level_geometry(SMALL)
    x, table = _points(3000), _table(SMALL)
    expected = hash_encode_reference(x, table, levels)
    got = hash_encode(x, table, levels, backend)
    assert got.shape == (3000, SMALL.levels * SMALL.features)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


def test_dense_and_hashed_levels_both_appear_in_the_small_grid():
    levels = level_geometry(SMALL)
    assert levels.dense.any() and not levels.dense.all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("numba", marks=needs_numba)])
def test_table_gradients_match_the_reference(backend):
    levels = level_geometry(SMALL)
    x, table = _points(2000, 3), _table(SMALL, 4)
    grad_out = torch.randn(2000, SMALL.levels * SMALL.features, generator=torch.Generator().manual_seed(5))
    ref_table = table.clone().requires_grad_()
    (hash_encode_reference(x, ref_table, levels) * grad_out).sum().backward()
    ours = table.clone().requires_grad_()
    (hash_encode(x, ours, levels, backend) * grad_out).sum().backward()
    torch.testing.assert_close(ours.grad, ref_table.grad, rtol=1e-5, atol=1e-5)
    # A second backward accumulates, as autograd does.
    (hash_encode(x, ours, levels, backend) * grad_out).sum().backward()
    torch.testing.assert_close(ours.grad, 2 * ref_table.grad, rtol=1e-5, atol=2e-5)


def test_input_gradients_match_the_reference():
    levels = level_geometry(SMALL)
    table = _table(SMALL, 6)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(7)) * 0.98 + 0.01
    grad_out = torch.randn(500, SMALL.levels * SMALL.features, generator=torch.Generator().manual_seed(8))
    x_ref = x.clone().requires_grad_()
    (hash_encode_reference(x_ref, table, levels) * grad_out).sum().backward()
    x_ours = x.clone().requires_grad_()
    assert hash_encode(x_ours, table, levels, "auto").requires_grad  # auto takes torch for inputs with a gradient
    (hash_encode(x_ours, table, levels, "torch") * grad_out).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-3, atol=1e-3)
    # and the reference itself is the derivative: a central difference along x
    eps = 1e-4
    dx = torch.tensor([eps, 0.0, 0.0])
    f = lambda p: (hash_encode_reference(p, table, levels).double() * grad_out.double()).sum(1)  # noqa: E731
    numeric = (f(x + dx) - f(x - dx)) / (2 * eps)
    close = (numeric - x_ref.grad[:, 0].double()).abs() <= 0.05 * numeric.abs().clamp_min(1.0)
    assert close.float().mean() > 0.9  # a few points straddle a cell face within eps


@pytest.mark.parametrize("backend", ["torch", pytest.param("numba", marks=needs_numba)])
def test_cached_features_give_the_same_table_gradient(backend):
    levels = level_geometry(SMALL)
    x, table = _points(800, 9), _table(SMALL, 10)
    grad_out = torch.randn(800, SMALL.levels * SMALL.features, generator=torch.Generator().manual_seed(11))
    direct = table.clone().requires_grad_()
    (hash_encode(x, direct, levels, backend) * grad_out).sum().backward()
    cached = table.clone().requires_grad_()
    with torch.no_grad():
        features = hash_encode(x, cached, levels, backend)
    (hash_encode_cached(features, x, cached, levels, backend) * grad_out).sum().backward()
    torch.testing.assert_close(cached.grad, direct.grad, rtol=1e-6, atol=1e-6)


@needs_numba
def test_the_fused_path_equals_the_pytorch_path_at_full_size():
    config = HashGridConfig()  # the default: 16 levels, 2^19 entries
    grid = HashGrid(config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        grid.table.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
    x = _points(4000, 12)
    torch.testing.assert_close(hash_encode(x, grid.table.detach(), grid.levels, "numba"),
                               hash_encode(x, grid.table.detach(), grid.levels, "torch"), rtol=0, atol=3e-6)


@pytest.mark.parametrize("fused", [pytest.param(True, marks=needs_numba), False])
def test_sparse_adam_updates_only_entries_with_a_gradient(fused, monkeypatch):
    if not fused:
        monkeypatch.setattr(_kernels, "AVAILABLE", False)
    g = torch.Generator().manual_seed(0)
    param = torch.randn(100, 2, generator=g)
    grad = torch.randn(100, 2, generator=g)
    grad[::3] = 0.0
    reference = param.clone().requires_grad_()
    optimizer = torch.optim.Adam([reference], lr=0.01, betas=(0.9, 0.99), eps=1e-15)
    m, v = torch.zeros_like(param), torch.zeros_like(param)
    before = param.clone()
    for step in (1, 2):
        reference.grad = grad.clone()
        optimizer.step()
        g_step = grad.clone()
        sparse_adam_step(param, g_step, m, v, step, 0.01)
        assert not g_step.any()  # zeroed for the next step
    touched = grad != 0
    torch.testing.assert_close(param[touched], reference.detach()[touched], rtol=1e-5, atol=1e-6)
    assert torch.equal(param[~touched], before[~touched])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_cuda_nn_encoding_matches_ours():
    tcnn = pytest.importorskip("tinycudann")
    config = HashGridConfig(log2_table_size=15)
    levels = level_geometry(config)
    table = _table(config, 13) * 0.2
    encoding = tcnn.Encoding(3, config.tcnn_config(), dtype=torch.float32)
    assert encoding.params.numel() == table.numel()
    encoding.params.data.copy_(table.reshape(-1).cuda())
    x = _points(5000, 14)
    got = encoding(x.cuda()).float().cpu()
    torch.testing.assert_close(got, hash_encode(x, table, levels, "torch"), rtol=1e-3, atol=1e-4)
    grad_out = torch.randn_like(got)
    (encoding(x.cuda()).float() * grad_out.cuda()).sum().backward()
    ours = table.clone().requires_grad_()
    (hash_encode(x, ours, levels, "torch") * grad_out).sum().backward()
    torch.testing.assert_close(encoding.params.grad.float().cpu().view_as(table), ours.grad, rtol=1e-3, atol=1e-4)
