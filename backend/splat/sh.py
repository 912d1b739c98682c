# SPDX-License-Identifier: GPL-3.0-or-later
"""Real spherical harmonics of degrees 0 to 3 with the constants and sign conventions of the
3DGS reference implementation (Kerbl et al. 2023) and gsplat, so splats trained here look
the same in every viewer.

Coefficients are ``[..., K, 3]`` with ``K = (degree + 1) ** 2`` (at least as many as the
degree evaluated needs; extra ones are ignored), ordered ``l = 0; l = 1 (m = -1, 0, 1);
...``. The DC term maps to colour as ``rgb = SH_C0 * dc + 0.5``.
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)
MAX_DEGREE = 3


def num_coeffs(degree: int) -> int:
    """Coefficients per channel for ``degree``: 1, 4, 9 or 16."""
    return (degree + 1) ** 2


def degree_of(num: int) -> int:
    """The degree whose coefficient count is ``num``; ValueError if there is none."""
    for degree in range(MAX_DEGREE + 1):
        if num_coeffs(degree) == num:
            return degree
    raise ValueError(f"{num} is not a spherical-harmonics coefficient count (1, 4, 9 or 16)")


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """The DC coefficient that evaluates to ``rgb`` (any shape)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: Tensor) -> Tensor:
    """The view-independent colour of DC coefficients (any shape)."""
    return dc * SH_C0 + 0.5


def sh_basis(degree: int, dirs: Tensor) -> Tensor:  # [..., 3] -> [..., (degree + 1) ** 2]
    """The real SH basis functions (3DGS constants and signs) along ``dirs`` (normalised here)."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be 0..{MAX_DEGREE}, got {degree}")
    terms = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree > 0:
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        x, y, z = dirs.unbind(-1)
        terms += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree > 1:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        terms += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * xz,
                  SH_C2[4] * (xx - yy)]
    if degree > 2:
        terms += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4.0 * zz - xx - yy),
                  SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), SH_C3[4] * x * (4.0 * zz - xx - yy),
                  SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(terms, -1)


def eval_sh(
    degree: int,
    dirs: Tensor,  # [..., 3], need not be normalised
    coeffs: Tensor,  # [..., K, 3], K >= (degree + 1) ** 2
) -> Tensor:  # [..., 3]
    """The SH expansion of degree ``degree`` along ``dirs``, without the +0.5 offset or
    clamping (see :func:`colors_from_sh`). Differentiable in both inputs."""
    k = num_coeffs(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"degree {degree} needs {k} coefficients, got {coeffs.shape[-2]}")
    basis = sh_basis(degree, dirs)  # [..., K]
    return (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(-2)


def colors_from_sh(
    degree: int,
    means: Tensor,  # [N, 3] world
    coeffs: Tensor,  # [N, K, 3]
    campos: Tensor,  # [C, 3] camera centres, world
) -> Tensor:  # [C, N, 3]
    """Per-camera colours as gsplat and 3DGS compute them: SH along the direction from the
    camera centre to each Gaussian, plus 0.5, clamped at 0 (not above)."""
    if degree == 0:  # view-independent: one evaluation for every camera
        rgb = (SH_C0 * coeffs[:, 0, :] + 0.5).clamp_min(0.0)
        return rgb.unsqueeze(0).expand(campos.shape[0], -1, -1)
    k = num_coeffs(degree)
    dirs = means.unsqueeze(0) - campos.unsqueeze(1)  # [C, N, 3]
    basis = sh_basis(degree, dirs)  # [C, N, K]
    return ((basis.unsqueeze(-1) * coeffs[:, :k].unsqueeze(0)).sum(-2) + 0.5).clamp_min(0.0)
