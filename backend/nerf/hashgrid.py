# SPDX-License-Identifier: GPL-3.0-or-later
"""Instant-NGP's multiresolution hash-grid encoding (Müller et al. 2022), exactly as
tiny-cuda-nn computes it, so that a table trained by one path reads the same in another.

Level ``l`` (of ``L``) has the scale ``s_l = base * b^l - 1`` (float32, ``b`` the per-level
growth) and ``ceil(s_l) + 1`` grid points per axis. A point ``x`` in ``[0, 1]^3`` lies at
``x * s_l + 0.5`` in grid units; its feature is the trilinear interpolation of the 8
surrounding grid points' entries. A level whose grid fits its table is indexed densely
(``i + j r + k r^2``); a finer one by the spatial hash ``i ^ j * 2654435761 ^ k *
805459861`` (uint32), both modulo the level's table size ``min(T, r^3)`` rounded up to a
multiple of 8. The table is level-major: ``[sum of level sizes, F]``, level ``l`` starting
at row ``offsets[l]``. Output ``[N, L * F]``, level-major columns.

Three implementations of one function:

- ``"torch"``: vectorised PyTorch, one pass per level, gathers forward and ``index_add_``
  backward in a ``torch.autograd.Function`` that recomputes corner indices rather than
  storing them; gradients to the table and to the inputs; any device;
- ``"numba"``: the same in fused CPU kernels (:mod:`._kernels`), float32 throughout, for
  2 features per level (Instant-NGP's choice; other widths go to ``"torch"``); the
  table's gradient is accumulated straight into ``table.grad`` (as autograd would, but
  without allocating a table-sized gradient each step), so use ``.backward()`` rather than
  ``torch.autograd.grad`` for the table; inputs that need a gradient go to ``"torch"``; the
  kernels write the features feature-major (``[L * F, N]``) and this path returns the
  transposed view, not a contiguous tensor;
- ``"tcnn"``: tiny-cuda-nn's ``HashGrid`` encoding on CUDA (see :mod:`.field`).

:mod:`.reference` holds a direct per-level, per-corner implementation the tests compare with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from . import _kernels

PRIMES = (1, 2654435761, 805459861)
UINT32 = 0xFFFFFFFF
BACKENDS = ("auto", "numba", "torch")


@dataclass(frozen=True)
class HashGridConfig:
    """The encoding's shape (tiny-cuda-nn's ``HashGrid`` settings)."""

    levels: int = 16
    features: int = 2  # per level
    log2_table_size: int = 19  # entries per level at most
    base_resolution: int = 16
    finest_resolution: int = 2048  # sets the per-level growth b = (finest / base)^(1 / (levels - 1))

    @property
    def per_level_scale(self) -> float:
        if self.levels <= 1:
            return 1.0
        return math.exp(math.log(self.finest_resolution / self.base_resolution) / (self.levels - 1))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features

    def to_dict(self) -> dict:
        return {**asdict(self), "per_level_scale": self.per_level_scale}

    def tcnn_config(self) -> dict:
        return {
            "otype": "HashGrid", "n_levels": self.levels, "n_features_per_level": self.features,
            "log2_hashmap_size": self.log2_table_size, "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
        }


@dataclass(frozen=True)
class Levels:
    """Per-level geometry: ``scales [L] float32``, ``resolutions [L]``, ``sizes [L]`` (table
    rows), ``offsets [L + 1]`` (first row of each level), ``dense [L] bool``."""

    scales: np.ndarray
    resolutions: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    dense: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])


def level_geometry(config: HashGridConfig) -> Levels:
    """tiny-cuda-nn's ``grid_scale``, ``grid_resolution`` and level offsets, in float32 where it uses float32."""
    log2_scale = np.float32(math.log2(config.per_level_scale))
    table = 1 << config.log2_table_size
    scales, resolutions, sizes, dense = [], [], [], []
    for level in range(config.levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale) * np.float32(config.base_resolution) - np.float32(1.0))
        resolution = int(math.ceil(float(scale))) + 1
        cells = float(resolution) ** 3
        size = (1 << 31) - 1 if cells > (1 << 31) - 1 else resolution ** 3
        size = (size + 7) // 8 * 8
        size = min(size, table)
        scales.append(scale)
        resolutions.append(resolution)
        sizes.append(size)
        dense.append(cells <= size)
    sizes_arr = np.array(sizes, np.int64)
    return Levels(
        scales=np.array(scales, np.float32),
        resolutions=np.array(resolutions, np.int64),
        sizes=sizes_arr,
        offsets=np.concatenate([[0], np.cumsum(sizes_arr)]).astype(np.int64),
        dense=np.array(dense, bool),
    )


def init_table(config: HashGridConfig, generator: torch.Generator | None = None) -> Tensor:  # [rows, F]
    """tiny-cuda-nn's initialisation: uniform in ``[-1e-4, 1e-4]``."""
    rows = level_geometry(config).rows
    table = torch.empty(rows, config.features)
    table.uniform_(-1e-4, 1e-4, generator=generator)
    return table


# -- the vectorised PyTorch path ---------------------------------------------------------
def _corner_indices_weights(
    x: Tensor,  # [N, 3] float32 in [0, 1]
    scale: float,
    resolution: int,
    size: int,
    dense: bool,
    with_frac: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rows within the level ``[N, 8]`` and trilinear weights ``[N, 8]`` of one level
    (corner ``c`` has offset bits ``(c & 1, c >> 1 & 1, c >> 2 & 1)`` on x, y, z); with
    ``with_frac`` also the fractional positions ``[N, 3]``."""
    pos = x * torch.tensor(scale, dtype=torch.float32, device=x.device) + 0.5
    floor = torch.floor(pos)
    frac = pos - floor
    grid = floor.to(torch.int64)
    bits = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=x.device)  # [8, 3]
    corners = grid[:, None, :] + bits[None]  # [N, 8, 3]
    if dense:
        index = corners[..., 0] + corners[..., 1] * resolution + corners[..., 2] * (resolution * resolution)
    else:
        index = corners[..., 0] * PRIMES[0] ^ corners[..., 1] * PRIMES[1] ^ corners[..., 2] * PRIMES[2]
    index = (index & UINT32) % size
    w = torch.where(bits[None].bool(), frac[:, None, :], 1.0 - frac[:, None, :])  # [N, 8, 3]
    weights = w[..., 0] * w[..., 1] * w[..., 2]
    return index, weights, (frac if with_frac else None)


class _TorchEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, levels: Levels) -> Tensor:
        n = x.shape[0]
        f = table.shape[1]
        out = torch.empty(n, len(levels.scales) * f, dtype=table.dtype, device=x.device)
        for level in range(len(levels.scales)):
            index, weights, _ = _corner_indices_weights(
                x, float(levels.scales[level]), int(levels.resolutions[level]), int(levels.sizes[level]),
                bool(levels.dense[level]))
            rows = table[int(levels.offsets[level]):int(levels.offsets[level + 1])]
            values = rows[index]  # [N, 8, F]
            out[:, level * f:(level + 1) * f] = (weights[..., None] * values).sum(1)
        ctx.save_for_backward(x, table)
        ctx.levels = levels
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # [N, L * F]
        x, table = ctx.saved_tensors
        grad_x, grad_table = _torch_backward(x, table, ctx.levels, grad_out, ctx.needs_input_grad[0],
                                             ctx.needs_input_grad[1])
        return grad_x, grad_table, None


def _torch_backward(x: Tensor, table: Tensor, levels: Levels, grad_out: Tensor, need_x: bool,
                    need_table: bool) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of the encoding with respect to ``x`` and ``table`` given ``grad_out [N, L * F]``."""
    f = table.shape[1]
    grad_table = torch.zeros_like(table) if need_table else None
    grad_x = torch.zeros_like(x) if need_x else None
    bits = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=x.device).bool()
    for level in range(len(levels.scales)):
        scale = float(levels.scales[level])
        index, weights, frac = _corner_indices_weights(
            x, scale, int(levels.resolutions[level]), int(levels.sizes[level]), bool(levels.dense[level]),
            with_frac=need_x)
        g = grad_out[:, level * f:(level + 1) * f]  # [N, F]
        start = int(levels.offsets[level])
        if need_table:
            contrib = weights[..., None] * g[:, None, :]  # [N, 8, F]
            grad_table.index_add_(0, (index + start).reshape(-1), contrib.reshape(-1, f))
        if need_x:
            values = table[start:int(levels.offsets[level + 1])][index]  # [N, 8, F]
            dot = (values * g[:, None, :]).sum(-1)  # [N, 8]: d out / d weight
            w = torch.where(bits[None], frac[:, None, :], 1.0 - frac[:, None, :])  # [N, 8, 3]
            sign = torch.where(bits, 1.0, -1.0)  # d w_axis / d frac_axis  [8, 3]
            for axis in range(3):
                others = [a for a in range(3) if a != axis]
                dw = sign[None, :, axis] * w[..., others[0]] * w[..., others[1]]  # [N, 8]
                grad_x[:, axis] += (dot * dw).sum(1) * scale
    return grad_x, grad_table


class _NumbaEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, levels: Levels) -> Tensor:
        out = _kernels.encode_forward(x.detach().contiguous().numpy(), table.detach().numpy(), levels.offsets,
                                      levels.scales, levels.resolutions, levels.dense)
        ctx.save_for_backward(x)
        ctx.table = table
        ctx.levels = levels
        return torch.from_numpy(out).T  # the kernel writes [L * F, N]: a transposed view, no copy

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            _numba_backward_into_grad(x, ctx.table, ctx.levels, grad_out)
        return None, None, None


def _numba_backward_into_grad(x: Tensor, table: Tensor, levels: Levels, grad_out: Tensor) -> None:
    if table.grad is None:
        table.grad = torch.zeros_like(table)
    _kernels.encode_backward(x.detach().contiguous().numpy(), grad_out.T.contiguous().numpy(), levels.offsets,
                             levels.scales, levels.resolutions, levels.dense, table.grad.numpy())


class _CachedEncode(torch.autograd.Function):
    """Features computed earlier without gradients, reconnected to the table: the forward
    passes them through, the backward is the encoding's."""

    @staticmethod
    def forward(ctx, features: Tensor, x: Tensor, table: Tensor, levels: Levels, fused: bool) -> Tensor:
        ctx.save_for_backward(x)
        ctx.table, ctx.levels, ctx.fused = table, levels, fused
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        if ctx.fused:
            _numba_backward_into_grad(x, ctx.table, ctx.levels, grad_out)
            return None, None, None, None, None
        _, grad_table = _torch_backward(x, ctx.table.detach(), ctx.levels, grad_out, False, True)
        return None, None, grad_table, None, None


def kernels_take(table: Tensor) -> bool:
    """Whether the numba kernels can work on ``table``: numba installed, and a contiguous CPU
    float32 table of 2 features per level (the kernels read its rows by address)."""
    return (_kernels.AVAILABLE and table.device.type == "cpu" and table.dtype == torch.float32
            and table.shape[1] == 2 and table.is_contiguous())


def resolve_backend(name: str, x: Tensor, table: Tensor) -> str:
    """``"auto"``: numba where :func:`kernels_take` the table and the points are on the CPU
    without a gradient, else torch."""
    fused_ok = kernels_take(table) and x.device.type == "cpu" and not x.requires_grad
    if name == "auto":
        return "numba" if fused_ok else "torch"
    if name == "numba" and not fused_ok:
        raise ValueError("the numba hash-grid path needs numba, CPU float32 tensors, 2 features per level, a "
                         "contiguous table and inputs without a gradient")
    return name


def hash_encode(
    x: Tensor,  # [N, 3] float32 in [0, 1]
    table: Tensor,  # [rows, F]
    levels: Levels,
    backend: str = "auto",
) -> Tensor:  # [N, L * F]
    """The hash-grid features of ``x``; ``backend`` one of :data:`BACKENDS`."""
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x must be [N, 3], got {tuple(x.shape)}")
    if table.shape[0] != levels.rows:
        raise ValueError(f"table has {table.shape[0]} rows, the levels need {levels.rows}")
    x = x.to(torch.float32)
    if resolve_backend(backend, x, table) == "numba":
        if table.requires_grad and torch.is_grad_enabled():
            return _NumbaEncode.apply(x, table, levels)
        out = _kernels.encode_forward(x.detach().contiguous().numpy(), table.detach().numpy(), levels.offsets,
                                      levels.scales, levels.resolutions, levels.dense)
        return torch.from_numpy(out).T
    return _TorchEncode.apply(x, table, levels)


def hash_encode_cached(
    features: Tensor,  # [N, L * F], computed by hash_encode without gradients
    x: Tensor,  # [N, 3], the points they were computed at
    table: Tensor,
    levels: Levels,
    backend: str = "auto",
) -> Tensor:  # [N, L * F], differentiable with respect to the table
    """``hash_encode(x, table, levels)`` without computing it again: for points whose features
    an earlier pass without gradients (say, a density pre-pass) already holds."""
    if not (table.requires_grad and torch.is_grad_enabled()):
        return features
    fused = resolve_backend(backend, x.detach(), table) == "numba"
    return _CachedEncode.apply(features.detach(), x.detach().to(torch.float32), table, levels, fused)


class HashGrid(nn.Module):
    """The encoding as a module: ``forward(x [N, 3] in [0, 1]) -> [N, L * F]``; the table is
    the parameter ``table [rows, F]``."""

    def __init__(self, config: HashGridConfig = HashGridConfig(), backend: str = "auto",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.config = config
        self.levels = level_geometry(config)
        self.backend = backend
        self.table = nn.Parameter(init_table(config, generator))

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor) -> Tensor:
        return hash_encode(x, self.table, self.levels, self.backend)

    def reconnect(self, features: Tensor, x: Tensor) -> Tensor:
        """See :func:`hash_encode_cached`."""
        return hash_encode_cached(features, x, self.table, self.levels, self.backend)


def sparse_adam_step(
    param: Tensor,  # [rows, F]
    grad: Tensor,  # [rows, F]: zeroed on return
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-15,
) -> None:
    """Adam on the table, skipping entries whose gradient is exactly 0 (Instant-NGP's rule
    for hash tables: untouched entries keep their value and moments); zeroes ``grad``."""
    b1, b2 = betas
    c1 = 1.0 - b1 ** step
    c2 = 1.0 - b2 ** step
    if _kernels.AVAILABLE and param.device.type == "cpu" and param.dtype == torch.float32:
        _kernels.sparse_adam(param.detach().view(-1).numpy(), grad.view(-1).numpy(), exp_avg.view(-1).numpy(),
                             exp_avg_sq.view(-1).numpy(), lr, b1, b2, eps, c1, c2)
        return
    with torch.no_grad():
        touched = grad != 0
        g = grad[touched]
        m = exp_avg[touched].mul_(b1).add_(g, alpha=1 - b1)
        v = exp_avg_sq[touched].mul_(b2).addcmul_(g, g, value=1 - b2)
        exp_avg[touched] = m
        exp_avg_sq[touched] = v
        param[touched] -= lr * (m / c1) / ((v / c2).sqrt() + eps)
        grad.zero_()
