# SPDX-License-Identifier: GPL-3.0-or-later
"""The dense reference of :func:`backend.splat.rasterize.rasterize`: every Gaussian against
every pixel, in plain PyTorch, differentiated by autograd.

Written apart from the fast paths on purpose (matrix forms, ``torch.linalg.inv`` for the
conic, a cumulative product over all Gaussians sorted by depth for the transmittance) so
that the tests compare two independent derivations of the same function. It does no tiling
and no radius culling: the tile rasterizer's radii bound exactly where ``alpha >= 1/255``,
so both must agree. Memory is ``C x pixels x N``: small scenes only, or
:func:`dense_backward` in pixel chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sh import eval_sh

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4


def rotation_matrices(quats: Tensor) -> Tensor:  # [N, 4] wxyz -> [N, 3, 3]
    """``R = (w^2 - v.v) I + 2 v v^T + 2 w [v]x`` for unit ``(w, v)``."""
    q = quats / torch.linalg.vector_norm(quats, dim=-1, keepdim=True)
    w, v = q[:, :1], q[:, 1:]
    eye = torch.eye(3, dtype=q.dtype).expand(len(q), 3, 3)
    cross = torch.zeros(len(q), 3, 3, dtype=q.dtype)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    cross = cross - cross.transpose(1, 2)
    return (w * w - (v * v).sum(1, keepdim=True))[:, :, None] * eye + 2 * v[:, :, None] * v[:, None, :] \
        + 2 * w[:, :, None] * cross


def project_dense(means, quats, scales, viewmats, Ks, width, height, near_plane=0.01, far_plane=1e10, eps2d=0.3):
    """Per camera: ``means2d [C, N, 2]``, ``conics [C, N, 2, 2]`` (inverse covariances),
    ``depths [C, N]``, ``in_range [C, N]``."""
    rot = rotation_matrices(quats)
    cov3d = rot @ torch.diag_embed(scales * scales) @ rot.transpose(1, 2)  # [N, 3, 3]
    w_rot, w_t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", w_rot, means) + w_t[:, None]
    cov_c = torch.einsum("cij,njk,clk->cnil", w_rot, cov3d, w_rot)
    z = means_c[..., 2]
    in_range = (z > near_plane) & (z < far_plane)
    z = torch.where(in_range, z, torch.ones_like(z))
    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # The Jacobian at the mean clamped to 1.3 times the field of view (as 3DGS and gsplat).
    u = torch.clamp(means_c[..., 0] / z, min=-(cx / fx + 0.15 * width / fx), max=(width - cx) / fx + 0.15 * width / fx)
    v = torch.clamp(means_c[..., 1] / z, min=-(cy / fy + 0.15 * height / fy), max=(height - cy) / fy + 0.15 * height / fy)
    jac = torch.zeros(*z.shape, 2, 3, dtype=means.dtype)
    jac[..., 0, 0] = fx / z
    jac[..., 0, 2] = -fx * u / z
    jac[..., 1, 1] = fy / z
    jac[..., 1, 2] = -fy * v / z
    cov2d = jac @ cov_c @ jac.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype)
    conics = torch.linalg.inv(cov2d)
    homog = torch.einsum("cij,cnj->cni", Ks, torch.cat([means_c[..., :2], z[..., None]], -1))
    means2d = homog[..., :2] / homog[..., 2:]
    return means2d, conics, means_c[..., 2], in_range


def composite_dense(means2d, conics, depths, in_range, opacities, colors, pixels):
    """Colour ``[P, 3]`` and alpha ``[P]`` of one camera at pixel centres ``pixels [P, 2]``.
    ``means2d [N, 2]``, ``conics [N, 2, 2]``, ``depths [N]``, ``opacities [N]``, ``colors [N, 3]``."""
    order = torch.argsort(torch.where(in_range, depths, torch.full_like(depths, float("inf"))))
    order = order[in_range[order]]  # front to back; behind the near plane: gone
    m, q, o, c = means2d[order], conics[order], opacities[order], colors[order]
    dx = m[None, :, 0] - pixels[:, None, 0]  # [P, N]: mean - pixel
    dy = m[None, :, 1] - pixels[:, None, 1]
    power = -0.5 * (q[:, 0, 0] * dx * dx + (q[:, 0, 1] + q[:, 1, 0]) * dx * dy + q[:, 1, 1] * dy * dy)
    alpha = torch.clamp(o * torch.exp(power), max=ALPHA_MAX)
    alpha = torch.where((power <= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    keep = torch.cumprod(1.0 - alpha, dim=1)  # transmittance after each Gaussian
    t_before = torch.cat([torch.ones_like(keep[:, :1]), keep[:, :-1]], 1)
    used = (keep > T_MIN).detach()  # the Gaussian that would take T to 1e-4 and all behind it: out
    weight = torch.where(used, alpha * t_before, torch.zeros_like(alpha))
    t_final = torch.prod(torch.where(used, 1.0 - alpha, torch.ones_like(alpha)), dim=1)
    return weight @ c, 1.0 - t_final


def _camera_colors(colors, sh_degree, means, viewmats):
    n_cameras = viewmats.shape[0]
    if sh_degree is None:
        return colors if colors.ndim == 3 else colors.expand(n_cameras, *colors.shape)
    centers = torch.stack([-vm[:3, :3].T @ vm[:3, 3] for vm in viewmats])  # [C, 3]
    dirs = means[None] - centers[:, None]
    return torch.clamp_min(eval_sh(sh_degree, dirs, colors.expand(n_cameras, *colors.shape)) + 0.5, 0.0)


def pixel_centers(width: int, height: int, dtype=torch.float32) -> Tensor:  # [H * W, 2]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) + 0.5


def rasterize_dense(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, sh_degree=None,
                    backgrounds=None, near_plane=0.01, far_plane=1e10, eps2d=0.3, pixels=None):
    """Same arguments and results as :func:`backend.splat.rasterize.rasterize` (``meta``:
    ``means2d``, ``depths``). With ``pixels`` (indices into ``H * W``) only those pixels are
    rendered: colours ``[C, P, 3]``, alphas ``[C, P, 1]``."""
    means2d, conics, depths, in_range = project_dense(means, quats, scales, viewmats, Ks, width, height,
                                                      near_plane, far_plane, eps2d)
    rgb_cam = _camera_colors(colors, sh_degree, means, viewmats)
    centers = pixel_centers(width, height, means.dtype)
    if pixels is not None:
        centers = centers[pixels]
    rgbs, alphas = [], []
    for cam in range(viewmats.shape[0]):
        rgb, alpha = composite_dense(means2d[cam], conics[cam], depths[cam], in_range[cam], opacities, rgb_cam[cam],
                                     centers)
        if backgrounds is not None:
            rgb = rgb + (1.0 - alpha)[:, None] * backgrounds.reshape(-1, 3).expand(viewmats.shape[0], 3)[cam]
        rgbs.append(rgb)
        alphas.append(alpha)
    rgb, alpha = torch.stack(rgbs), torch.stack(alphas)[..., None]
    if pixels is None:
        rgb = rgb.reshape(-1, height, width, 3)
        alpha = alpha.reshape(-1, height, width, 1)
    return rgb, alpha, {"means2d": means2d, "depths": depths}


def dense_backward(inputs: dict, v_rgb: Tensor, v_alpha: Tensor, chunk: int = 4096) -> dict:
    """Gradients of ``sum(rgb * v_rgb) + sum(alpha * v_alpha)`` with respect to the leaf
    tensors in ``inputs`` (the keyword arguments of :func:`rasterize_dense`), rendering
    ``chunk`` pixels at a time so memory stays ``C x chunk x N``. Returns ``{name: grad}``
    and ``rgb``, ``alpha``."""
    width, height = inputs["width"], inputs["height"]
    leaves = {k: v for k, v in inputs.items() if isinstance(v, Tensor) and v.requires_grad}
    grads = {k: torch.zeros_like(v) for k, v in leaves.items()}
    n_pix = width * height
    rgb_out, alpha_out = [], []
    for start in range(0, n_pix, chunk):
        pixels = torch.arange(start, min(start + chunk, n_pix))
        rgb, alpha, _ = rasterize_dense(**inputs, pixels=pixels)
        v_r = v_rgb.reshape(v_rgb.shape[0], -1, 3)[:, pixels]
        v_a = v_alpha.reshape(v_alpha.shape[0], -1, 1)[:, pixels]
        part = torch.autograd.grad((rgb * v_r).sum() + (alpha * v_a).sum(), list(leaves.values()), allow_unused=True)
        for name, g in zip(leaves, part, strict=True):
            if g is not None:
                grads[name] += g
        rgb_out.append(rgb.detach())
        alpha_out.append(alpha.detach())
    c = v_rgb.shape[0]
    grads["rgb"] = torch.cat(rgb_out, 1).reshape(c, height, width, 3)
    grads["alpha"] = torch.cat(alpha_out, 1).reshape(c, height, width, 1)
    return grads
