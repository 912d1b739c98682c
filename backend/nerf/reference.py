# SPDX-License-Identifier: GPL-3.0-or-later
"""Direct reference implementations the tests compare the fast paths with, written for
clarity, not speed.

- :func:`hash_encode_reference`: the hash-grid encoding as its definition reads: for each
  level, for each of the 8 corners of the cell around the point, the corner's table row
  (dense index or spatial hash, computed per corner with Python integers' rules) and its
  trilinear weight; autograd differentiates it (table and inputs).
- :func:`volume_render_reference`: the quadrature of the volume rendering integral, one
  sample at a time along each ray.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .hashgrid import PRIMES, Levels


def corner_row(corner: tuple[Tensor, Tensor, Tensor], resolution: int, size: int, dense: bool) -> Tensor:
    """The row within its level of the grid point ``corner = (i, j, k)`` (int64 tensors)."""
    i, j, k = corner
    if dense:
        index = i + j * resolution + k * resolution * resolution
    else:
        index = torch.bitwise_xor(torch.bitwise_xor(i * PRIMES[0], j * PRIMES[1]), k * PRIMES[2])
    index = torch.bitwise_and(index, 2**32 - 1)  # uint32 arithmetic
    return torch.remainder(index, size)


def hash_encode_reference(
    x: Tensor,  # [N, 3] in [0, 1]
    table: Tensor,  # [rows, F]
    levels: Levels,
) -> Tensor:  # [N, L * F]
    features = []
    for level in range(len(levels.scales)):
        scale = torch.tensor(float(levels.scales[level]), dtype=torch.float32)
        resolution = int(levels.resolutions[level])
        size = int(levels.sizes[level])
        start = int(levels.offsets[level])
        level_table = table[start:start + size]
        position = x.to(torch.float32) * scale + 0.5  # grid units
        cell = torch.floor(position.detach()).to(torch.int64)
        frac = position - cell.to(position.dtype)  # differentiable in x
        feature = torch.zeros(x.shape[0], table.shape[1], dtype=table.dtype)
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    corner = (cell[:, 0] + dx, cell[:, 1] + dy, cell[:, 2] + dz)
                    row = corner_row(corner, resolution, size, bool(levels.dense[level]))
                    weight = torch.ones(x.shape[0], dtype=frac.dtype)
                    for axis, bit in enumerate((dx, dy, dz)):
                        weight = weight * (frac[:, axis] if bit else 1.0 - frac[:, axis])
                    feature = feature + weight[:, None] * level_table[row]
        features.append(feature)
    return torch.cat(features, dim=1)


def volume_render_reference(
    sigmas: Tensor,  # [R, S] density
    rgbs: Tensor,  # [R, S, 3]
    deltas: Tensor,  # [R, S] segment lengths
    background: Tensor,  # [3] or [R, 3]
) -> tuple[Tensor, Tensor]:  # colour [R, 3], opacity [R]
    """``C = sum_i T_i (1 - exp(-sigma_i delta_i)) c_i + T_S b``, ``T_i = prod_{j<i} exp(-sigma_j delta_j)``."""
    n_rays, n_samples = sigmas.shape
    colour = torch.zeros(n_rays, 3, dtype=rgbs.dtype)
    transmittance = torch.ones(n_rays, dtype=sigmas.dtype)
    for i in range(n_samples):
        alpha = 1.0 - torch.exp(-sigmas[:, i] * deltas[:, i])
        colour = colour + (transmittance * alpha)[:, None] * rgbs[:, i]
        transmittance = transmittance * (1.0 - alpha)
    opacity = 1.0 - transmittance
    return colour + transmittance[:, None] * background.expand(n_rays, 3), opacity
