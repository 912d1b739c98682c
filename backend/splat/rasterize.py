# SPDX-License-Identifier: GPL-3.0-or-later
"""3D Gaussian splatting rasterizer: the same inputs and outputs as gsplat's ``rasterization``.

:func:`rasterize` projects the Gaussians (EWA splatting: the Jacobian of the perspective
projection at each mean, 0.3 px low-pass added to the 2D covariance), culls those behind
the near plane, beyond the far plane, off-screen or too faint to reach ``alpha = 1/255``
anywhere, bins them into tiles sorted by depth, and composites them front to back with
the 3DGS clamps. Three implementations compute the same function:

- ``"gsplat"``: gsplat's CUDA rasterizer, used on CUDA devices when gsplat imports;
- ``"numba"``: the CPU kernels of :mod:`._kernels` (projection with the SH colours, and
  tile compositing, each forward and backward, compiled by numba) under
  ``torch.autograd.Function``s; tiles are bands up to 256 pixels wide and ``tile_size``
  (16) tall, shared between a few threads;
- ``"torch"``: eager PyTorch only: projection and SH by autograd, then 4 x 4 tiles with
  every Gaussian of a tile against every pixel of it, the transmittance from a segmented
  cumulative sum of ``log(1 - alpha)``, and the compositing backward written out in
  whole-array operations; it needs nothing but torch.

``"auto"`` takes the first available. :mod:`.reference` holds the dense per-pixel reference
the tests compare all of them with.

Per-axis radii (``meta["radii"] [C, N, 2]``) bound exactly the box where a Gaussian can reach
``alpha >= 1/255`` (``sqrt(2 ln(255 o))`` standard deviations, at most 3.33), so tiling
changes nothing in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import _kernels
from .sh import colors_from_sh

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
NUMBA_TILE_WIDTH = 256  # the numba path's tiles are bands this wide (at most) and tile_size tall
T_MIN = 1e-4
BACKENDS = ("auto", "gsplat", "numba", "torch")


@dataclass
class Projection:
    """Gaussians seen from each camera (``C`` cameras, ``N`` Gaussians)."""

    means2d: Tensor  # [C, N, 2] pixels
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    depths: Tensor  # [C, N] camera z
    radii: Tensor  # [C, N, 2] int32, 0 where culled
    opacities: Tensor  # [C, N]


def quat_to_rotmat(quats: Tensor) -> Tensor:  # [N, 4] wxyz -> [N, 3, 3]
    """Rotation matrices of (not necessarily unit) quaternions ``w, x, y, z``."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quats.shape[:-1], 3, 3)


def project(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmats: Tensor,  # [C, 4, 4] world to camera, OpenCV axes
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """EWA projection of 3D Gaussians, as gsplat's ``fully_fused_projection`` (pinhole):
    the Jacobian is evaluated with the mean clamped to 1.3 times the field of view."""
    rot = viewmats[:, :3, :3]  # [C, 3, 3]
    means_c = torch.einsum("cij,nj->cni", rot, means) + viewmats[:, None, :3, 3]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    in_depth = (z > near_plane) & (z < far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # culled ones: finite values, no NaN gradients
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + 0.15 * width / fx
    lim_x_neg = cx / fx + 0.15 * width / fx
    lim_y_pos = (height - cy) / fy + 0.15 * height / fy
    lim_y_neg = cy / fy + 0.15 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(*z.shape, 2, 3)
    # Broadcast products rather than batched 3x3 matmuls, which cost microseconds per matrix.
    rs = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]: R S
    wrs = (rot[:, None, :, :, None] * rs[None, :, None, :, :]).sum(-2)  # [C, N, 3, 3]: W R S
    t = (jac[..., :, :, None] * wrs[..., None, :, :]).sum(-2)  # [C, N, 2, 3]: J W R S
    cov = (t[..., :, None, :] * t[..., None, :, :]).sum(-1)  # [C, N, 2, 2]
    a = cov[..., 0, 0] + eps2d
    b = cov[..., 0, 1]
    c = cov[..., 1, 1] + eps2d
    det = a * c - b * b
    good = in_depth & (det > 0)
    det = torch.where(good, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    with torch.no_grad():
        o = opacities.detach().expand_as(z)
        extent = torch.sqrt(2.0 * torch.log((255.0 * o).clamp_min(1.0)))  # alpha >= 1/255 inside
        rx = torch.ceil(extent * a.detach().clamp_min(0).sqrt() + 1e-3)
        ry = torch.ceil(extent * c.detach().clamp_min(0).sqrt() + 1e-3)
        m = means2d.detach()
        visible = good & (o > ALPHA_MIN) & (m[..., 0] + rx > 0) & (m[..., 0] - rx < width) \
            & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height)
        radii = torch.stack([rx, ry], -1).where(visible[..., None], torch.zeros((), dtype=rx.dtype)).int()
    return Projection(means2d, conics, means_c[..., 2], radii, opacities.unsqueeze(0).expand(z.shape[0], -1))


def camera_centers(viewmats: Tensor) -> Tensor:  # [C, 4, 4] -> [C, 3]
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -torch.einsum("cji,cj->ci", rot, trans)


def camera_colors(colors: Tensor, sh_degree: int | None, means: Tensor, viewmats: Tensor) -> Tensor:
    """``[C, N, 3]`` colours from ``[N, 3]``, ``[C, N, 3]`` or SH coefficients ``[N, K, 3]``."""
    n_cameras = viewmats.shape[0]
    if sh_degree is not None:
        if colors.ndim != 3 or colors.shape[-1] != 3:
            raise ValueError(f"with sh_degree, colors must be SH coefficients [N, K, 3], got {tuple(colors.shape)}")
        return colors_from_sh(sh_degree, means, colors, camera_centers(viewmats))
    if colors.ndim == 2:
        return colors.unsqueeze(0).expand(n_cameras, -1, -1)
    if colors.ndim == 3 and colors.shape[0] == n_cameras:
        return colors
    raise ValueError(f"colors must be [N, 3], [C, N, 3] or SH [N, K, 3] with sh_degree, got {tuple(colors.shape)}")


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height) -> None:
    n = means.shape[0]
    expected = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
                "opacities": (opacities, (n,))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    c = viewmats.shape[0]
    if tuple(viewmats.shape) != (c, 4, 4) or tuple(Ks.shape) != (c, 3, 3):
        raise ValueError(f"viewmats must be [C, 4, 4] and Ks [C, 3, 3], got {tuple(viewmats.shape)}, {tuple(Ks.shape)}")
    if colors.shape[-1] != 3 or not (colors.shape[0] == n or (colors.ndim == 3 and colors.shape[1] == n)):
        raise ValueError(f"colors must be [N, 3], [C, N, 3] or [N, K, 3] for N = {n}, got {tuple(colors.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The implementation ``"auto"`` stands for here; ValueError for an unusable choice."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and gsplat_available():
            return "gsplat"
        return "numba" if _kernels.AVAILABLE and device.type == "cpu" else "torch"
    if backend == "numba" and not _kernels.AVAILABLE:
        raise ValueError("backend 'numba' needs numba, which does not import here")
    if backend == "gsplat" and not gsplat_available():
        raise ValueError("backend 'gsplat' needs CUDA and the gsplat package")
    return backend


def gsplat_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def rasterize(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, need not be normalised
    scales: Tensor,  # [N, 3] (activated)
    opacities: Tensor,  # [N] (activated)
    colors: Tensor,  # [N, 3], [C, N, 3], or SH coefficients [N, K, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4] world to camera, OpenCV axes
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,  # [C, 3] or [3]
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Render ``C`` views: colours ``[C, H, W, 3]``, alphas ``[C, H, W, 1]`` and ``meta``.

    ``meta`` holds ``means2d [C, N, 2]`` (in the graph: ``retain_grad()`` it for the
    densification statistics), ``radii [C, N, 2]``, ``depths``, ``conics``, ``width``,
    ``height``, ``n_cameras``, ``tile_size``, ``n_isects`` and ``backend``. With SH
    coefficients the colour is ``max(SH(dir) + 0.5, 0)`` as in gsplat and 3DGS.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    backend = resolve_backend(backend, means.device)
    if backend == "gsplat":
        return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                                 backgrounds, near_plane, far_plane, eps2d, tile_size or 16)
    tile_size = tile_size or (16 if backend == "numba" else 4)
    if backend == "numba":
        proj, rgb_cam = project_numba(means, quats, scales, opacities, colors, sh_degree, viewmats, Ks, width, height,
                                      near_plane, far_plane, eps2d)
    else:
        proj = project(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
        rgb_cam = camera_colors(colors, sh_degree, means, viewmats)
    if backend == "numba":
        bins = NumbaBins(proj, width, height, tile_size)
        rgb, alpha = _NumbaComposite.apply(proj.means2d, proj.conics, rgb_cam, proj.opacities, bins)
        n_isects = bins.n_isects
    else:
        rgb, alpha, n_isects = composite_torch(proj, rgb_cam, width, height, tile_size)
    if backgrounds is not None:
        bg = backgrounds.to(rgb.dtype).reshape(-1, 3).expand(rgb.shape[0], 3)
        rgb = rgb + (1.0 - alpha) * bg[:, None, None, :]
    meta = {
        "means2d": proj.means2d, "radii": proj.radii, "depths": proj.depths, "conics": proj.conics,
        "opacities": proj.opacities, "width": width, "height": height, "n_cameras": viewmats.shape[0],
        "tile_size": tile_size, "n_isects": n_isects, "backend": backend,
    }
    return rgb, alpha, meta


# -- numba path -------------------------------------------------------------------------------
def _np32(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)


def _gaussian_chunks(n: int) -> list[np.ndarray]:
    threads = _kernels.get_threads()
    pieces = 1 if threads == 1 or n < 4096 else 2 * threads
    bounds = np.linspace(0, n, pieces + 1).astype(np.int64)
    return [bounds[i : i + 2].copy() for i in range(pieces) if bounds[i + 1] > bounds[i]]


class _NumbaProject(torch.autograd.Function):
    """Projection and SH colours in one numba pass each way (what :func:`project` and
    :func:`camera_colors` compute with autograd)."""

    @staticmethod
    def forward(ctx, means, quats, scales, coeffs, opacities, viewmats, Ks, width, height, near, far, eps2d,
                sh_degree):  # noqa: D401 - autograd API
        n_cameras, n = viewmats.shape[0], means.shape[0]
        arrays = [_np32(t) for t in (means, quats, scales, coeffs, opacities, viewmats, Ks)]
        means2d = np.empty((n_cameras, n, 2), np.float32)
        conics = np.empty((n_cameras, n, 3), np.float32)
        depths = np.empty((n_cameras, n), np.float32)
        radii = np.empty((n_cameras, n, 2), np.int32)
        colors = np.empty((n_cameras, n, 3) if sh_degree >= 0 else (0, 0, 3), np.float32)
        chunks = _gaussian_chunks(n)
        m, q, s, c, o, vm, k = arrays
        _kernels.run_chunks(_kernels.project_forward, chunks, m, q, s, o, c, sh_degree, vm, k, width, height, near, far,
                            eps2d, means2d, conics, depths, radii, colors)
        ctx.arrays = (arrays, radii, colors, chunks)
        ctx.settings = (width, height, eps2d, sh_degree)
        out = [torch.from_numpy(a) for a in (means2d, conics, colors, depths, radii)]
        ctx.mark_non_differentiable(out[3], out[4])
        return tuple(out)

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_colors, _v_depths, _v_radii):
        arrays, radii, colors, chunks = ctx.arrays
        width, height, eps2d, sh_degree = ctx.settings
        means, quats, scales, coeffs, _, viewmats, Ks = arrays
        v_means = np.empty_like(means)
        v_quats = np.empty_like(quats)
        v_scales = np.empty_like(scales)
        v_coeffs = np.zeros_like(coeffs)
        v_colors_np = _np32(v_colors) if sh_degree >= 0 else np.zeros((0, 0, 3), np.float32)
        _kernels.run_chunks(_kernels.project_backward, chunks, means, quats, scales, coeffs, sh_degree, viewmats, Ks,
                            width, height, eps2d, radii, colors, _np32(v_means2d), _np32(v_conics), v_colors_np,
                            v_means, v_quats, v_scales, v_coeffs)
        grads = [torch.from_numpy(a) for a in (v_means, v_quats, v_scales, v_coeffs)]
        return (*grads, None, None, None, None, None, None, None, None, None)


def project_numba(means, quats, scales, opacities, colors, sh_degree, viewmats, Ks, width, height, near_plane,
                  far_plane, eps2d) -> tuple[Projection, Tensor]:
    """:func:`project` and :func:`camera_colors` through the numba kernels."""
    use_sh = sh_degree is not None
    coeffs = colors if use_sh else torch.zeros(means.shape[0], 1, 3)
    means2d, conics, rgb, depths, radii = _NumbaProject.apply(
        means, quats, scales, coeffs, opacities, viewmats, Ks, width, height, float(near_plane), float(far_plane),
        float(eps2d), sh_degree if use_sh else -1)
    if not use_sh:
        rgb = camera_colors(colors, None, means, viewmats)
    proj = Projection(means2d, conics, depths, radii, opacities.unsqueeze(0).expand(viewmats.shape[0], -1))
    return proj, rgb


class NumbaBins:
    """Tile lists of one projection, and the split of the tiles between numba's threads."""

    def __init__(self, proj: Projection, width: int, height: int, tile_size: int) -> None:
        n_cameras, n = proj.depths.shape
        self.width, self.height = width, height
        # Wide tiles: a tile's work is set up row by row per Gaussian, so rows that tile edges
        # cut in two cost twice; bands up to NUMBA_TILE_WIDTH wide, tile_size tall.
        self.tile_w = min(width, max(NUMBA_TILE_WIDTH, tile_size))
        self.tile_h = tile_size
        self.tiles_x = (width + self.tile_w - 1) // self.tile_w
        self.tiles_y = (height + self.tile_h - 1) // self.tile_h
        self.tiles_per_camera = self.tiles_x * self.tiles_y
        self.shape = (n_cameras, n)
        radii = proj.radii.reshape(-1, 2).numpy()
        depths = proj.depths.detach().reshape(n_cameras, n).numpy()
        visible = (radii > 0).all(1).reshape(n_cameras, n)
        orders = []
        for cam in range(n_cameras):  # per camera: visible Gaussians by depth
            idx = np.flatnonzero(visible[cam])
            orders.append(cam * n + idx[np.argsort(depths[cam, idx], kind="stable")])
        order = np.concatenate(orders) if orders else np.zeros(0, np.int64)
        self.means2d = np.ascontiguousarray(proj.means2d.detach().reshape(-1, 2).numpy(), dtype=np.float32)
        self.bbox, self.offsets, self.ids = _kernels.bin_tiles(
            self.means2d, np.ascontiguousarray(radii, dtype=np.int32), order.astype(np.int64), n, width, height,
            self.tile_w, self.tile_h, self.tiles_x, self.tiles_y)
        cost = _kernels.tile_costs(self.offsets, self.ids, self.bbox, self.tile_w, self.tile_h, self.tiles_x,
                                   self.tiles_per_camera)
        threads = _kernels.get_threads()
        self.chunks = _kernels.split_work(cost, 1 if threads == 1 else 4 * threads)
        self.n_isects = int(len(self.ids))


def _flat(t: Tensor, width: int) -> np.ndarray:
    return np.ascontiguousarray(t.detach().reshape(-1, width).numpy(), dtype=np.float32)


class _NumbaComposite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, bins: NumbaBins):  # noqa: D401 - autograd API
        n_cameras = bins.shape[0]
        h, w = bins.height, bins.width
        conics_np, colors_np = _flat(conics, 3), _flat(colors, 3)
        opac_np = np.ascontiguousarray(opacities.detach().reshape(-1).numpy(), dtype=np.float32)
        rgb = np.zeros((n_cameras, h, w, 3), np.float32)
        final_t = np.ones((n_cameras, h, w), np.float32)
        last = np.zeros((n_cameras, h, w), np.int32)
        _kernels.run_chunks(_kernels.composite_forward, bins.chunks, bins.offsets, bins.ids, bins.bbox, bins.means2d,
                            conics_np, colors_np, opac_np, w, h, bins.tile_w, bins.tile_h, bins.tiles_x, bins.tiles_per_camera,
                            rgb, final_t, last)
        ctx.bins = bins
        ctx.arrays = (conics_np, colors_np, opac_np, rgb, final_t, last)
        ctx.dtypes = (means2d.dtype, conics.dtype, colors.dtype, opacities.dtype)
        rgb_t = torch.from_numpy(rgb).to(colors.dtype)
        alpha_t = torch.from_numpy(1.0 - final_t).unsqueeze(-1).to(colors.dtype)
        return rgb_t, alpha_t

    @staticmethod
    def backward(ctx, v_rgb, v_alpha):
        bins: NumbaBins = ctx.bins
        conics_np, colors_np, opac_np, rgb, final_t, last = ctx.arrays
        n_cameras, n = bins.shape
        v_rgb_np = np.ascontiguousarray(v_rgb.numpy(), dtype=np.float32)
        v_alpha_np = np.ascontiguousarray(v_alpha[..., 0].numpy(), dtype=np.float32)
        isect_grad = np.empty((bins.n_isects, 9), np.float32)
        _kernels.run_chunks(_kernels.composite_backward, bins.chunks, bins.offsets, bins.ids, bins.bbox, bins.means2d,
                            conics_np, colors_np, opac_np, bins.width, bins.height, bins.tile_w, bins.tile_h, bins.tiles_x,
                            bins.tiles_per_camera, rgb, final_t, last, v_rgb_np, v_alpha_np, isect_grad)
        grads = torch.from_numpy(_kernels.gather_gradients(bins.ids, isect_grad, n_cameras * n)).reshape(n_cameras, n, 9)
        dt_means, dt_conics, dt_colors, dt_opac = ctx.dtypes
        return (grads[..., 0:2].to(dt_means), grads[..., 2:5].to(dt_conics), grads[..., 6:9].to(dt_colors),
                grads[..., 5].to(dt_opac), None)


# -- eager PyTorch path --------------------------------------------------------------------------
def bin_tiles_torch(proj: Projection, width: int, height: int, tile_size: int) -> tuple[Tensor, Tensor, int, int]:
    """Intersections sorted by (camera, tile, depth): ``(flat Gaussian [M], tile [M])`` and the
    tile grid ``tiles_x, tiles_y``. Tiles are numbered ``camera * tiles + ty * tiles_x + tx``."""
    n_cameras, n = proj.depths.shape
    tiles_x, tiles_y = (width + tile_size - 1) // tile_size, (height + tile_size - 1) // tile_size
    with torch.no_grad():
        radii = proj.radii.reshape(-1, 2).to(torch.float64)
        m = proj.means2d.detach().reshape(-1, 2).to(torch.float64)
        x0 = torch.ceil(m[:, 0] - radii[:, 0] - 0.5).clamp(min=0).long()
        x1 = torch.floor(m[:, 0] + radii[:, 0] - 0.5).clamp(max=width - 1).long()
        y0 = torch.ceil(m[:, 1] - radii[:, 1] - 0.5).clamp(min=0).long()
        y1 = torch.floor(m[:, 1] + radii[:, 1] - 0.5).clamp(max=height - 1).long()
        visible = (radii > 0).all(1) & (x0 <= x1) & (y0 <= y1)
        flat = torch.arange(n_cameras * n)
        depth = proj.depths.detach().reshape(-1)
        # camera-major, then front to back
        order = flat[visible][torch.sort(depth[visible], stable=True).indices]
        order = order[torch.sort(order // n, stable=True).indices]
        tx0, ty0 = x0[order] // tile_size, y0[order] // tile_size
        nx, ny = x1[order] // tile_size - tx0 + 1, y1[order] // tile_size - ty0 + 1
        counts = nx * ny
        gauss = torch.repeat_interleave(order, counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        local = torch.arange(len(gauss)) - first
        nx_r = torch.repeat_interleave(nx, counts)
        tile = (gauss // n) * (tiles_x * tiles_y) + (torch.repeat_interleave(ty0, counts) + local // nx_r) * tiles_x \
            + torch.repeat_interleave(tx0, counts) + local % nx_r
        by_tile = torch.sort(tile, stable=True).indices
    return gauss[by_tile], tile[by_tile], tiles_x, tiles_y


def composite_torch(proj: Projection, colors: Tensor, width: int, height: int, tile_size: int = 8
                    ) -> tuple[Tensor, Tensor, int]:
    """Front-to-back compositing in eager PyTorch, every pixel of a tile against every
    Gaussian binned to it, with the backward pass written out (:class:`_TorchComposite`).
    ``colors [C, N, 3]``."""
    n_cameras, n = proj.depths.shape
    gauss, tile, tiles_x, tiles_y = bin_tiles_torch(proj, width, height, tile_size)
    dtype = proj.means2d.dtype
    n_pix = tile_size * tile_size
    if len(gauss) == 0:
        zeros = (proj.means2d.sum() + proj.conics.sum() + proj.opacities.sum() + colors.sum()) * 0.0  # a connected graph
        rgb = zeros + torch.zeros(n_cameras, height, width, 3, dtype=dtype)
        return rgb, zeros + torch.zeros(n_cameras, height, width, 1, dtype=dtype), 0
    with torch.no_grad():
        local = tile % (tiles_x * tiles_y)
        offs = torch.arange(n_pix)
        px = (local % tiles_x * tile_size)[:, None] + offs % tile_size  # [M, P]
        py = (local // tiles_x * tile_size)[:, None] + offs // tile_size
        inside = (px < width) & (py < height)
        pixel = ((tile // (tiles_x * tiles_y))[:, None] * height + py.clamp(max=height - 1)) * width \
            + px.clamp(max=width - 1)
        starts = torch.ones_like(tile, dtype=torch.bool)
        starts[1:] = tile[1:] != tile[:-1]
        seg_start = torch.cummax(torch.where(starts, torch.arange(len(tile)), 0), 0).values  # [M]
        centers = (px.to(dtype) + 0.5, py.to(dtype) + 0.5)
    rgb, alpha = _TorchComposite.apply(proj.means2d.reshape(-1, 2), proj.conics.reshape(-1, 3), colors.reshape(-1, 3),
                                       proj.opacities.reshape(-1), gauss, pixel, inside, seg_start, centers,
                                       n_cameras * height * width)
    return rgb.reshape(n_cameras, height, width, 3), alpha.reshape(n_cameras, height, width, 1), int(len(gauss))


def _segmented_cumsum(values: Tensor, seg_start: Tensor) -> Tensor:
    """Inclusive cumulative sum along dim 0 restarting at each segment (float64)."""
    cum = torch.cumsum(values, 0)
    return cum - (cum[seg_start] - values[seg_start])


class _TorchComposite(torch.autograd.Function):
    """Tile compositing on ``[M, P]`` pairs (M intersections sorted by tile then depth, P
    pixels of a tile): transmittance from a segmented cumulative sum of ``log(1 - alpha)``;
    the backward uses ``dC/dalpha_i = c_i T_i - (sum of what is behind i) / (1 - alpha_i)``,
    the sums behind from the same segmented sums. A few dozen whole-array operations
    instead of autograd's hundred and seventy."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, gauss, pixel, inside, seg_start, centers, total):
        m2, con, opac = means2d[gauss], conics[gauss], opacities[gauss]
        dx = m2[:, 0:1] - centers[0]
        dy = m2[:, 1:2] - centers[1]
        power = -0.5 * (con[:, 0:1] * dx * dx + con[:, 2:3] * dy * dy) - con[:, 1:2] * dx * dy
        vis = torch.exp(power)
        alpha_raw = opac[:, None] * vis
        alpha = alpha_raw.clamp(max=ALPHA_MAX)
        valid = (power <= 0) & (alpha >= ALPHA_MIN) & inside
        alpha = torch.where(valid, alpha, 0.0)
        log_keep = torch.log1p(-alpha).double()
        log_t_after = _segmented_cumsum(log_keep, seg_start)
        used = log_t_after > math.log(T_MIN)  # the 3DGS stop: nothing from the Gaussian that would reach 1e-4
        t_before = torch.exp(log_t_after - log_keep).to(alpha.dtype)
        weight = torch.where(used, alpha * t_before, 0.0)  # [M, P]
        col = colors[gauss]
        flat = pixel.reshape(-1)
        rgb = torch.zeros(total, 3, dtype=alpha.dtype).index_add_(0, flat, (weight[:, :, None] * col[:, None, :]).reshape(-1, 3))
        log_t = torch.zeros(total, dtype=torch.float64).index_add_(0, flat, torch.where(used, log_keep, 0.0).reshape(-1))
        final_t = torch.exp(log_t).to(alpha.dtype)
        ctx.save_for_backward(means2d, conics, colors, opacities, gauss, pixel, seg_start, vis, alpha, weight, used,
                              final_t, *centers)
        ctx.valid_unclamped = valid & (alpha_raw <= ALPHA_MAX)
        return rgb, 1.0 - final_t

    @staticmethod
    def backward(ctx, v_rgb, v_alpha_img):
        (means2d, conics, colors, opacities, gauss, pixel, seg_start, vis, alpha, weight, used, final_t, cx,
         cy) = ctx.saved_tensors
        flat = pixel.reshape(-1)
        col = colors[gauss]  # [M, 3]
        v_pix = v_rgb[pixel]  # [M, P, 3]
        v_col = (v_pix * col[:, None, :]).sum(-1)  # [M, P]: upstream . colour
        grad_colors = torch.zeros_like(colors).index_add_(0, gauss, (weight[:, :, None] * v_pix).sum(1))
        # what each pair hides: the weighted colours behind it in its pixel (float64 sums)
        contrib = (weight * v_col).double()
        per_pixel = torch.zeros(len(final_t), dtype=torch.float64).index_add_(0, flat, contrib.reshape(-1))
        behind = (per_pixel[pixel] - _segmented_cumsum(contrib, seg_start)).to(alpha.dtype)
        inv = 1.0 / (1.0 - alpha)
        t_before = torch.where(used, weight / alpha.clamp_min(ALPHA_MIN), 0.0)
        v_alpha = torch.where(used, t_before * v_col - behind * inv + v_alpha_img[pixel] * final_t[pixel] * inv, 0.0)
        v_alpha = torch.where(ctx.valid_unclamped, v_alpha, 0.0)
        opac = opacities[gauss]
        grad_opacities = torch.zeros_like(opacities).index_add_(0, gauss, (v_alpha * vis).sum(1))
        v_power = v_alpha * vis * opac[:, None]
        m2, con = means2d[gauss], conics[gauss]
        dx = m2[:, 0:1] - cx
        dy = m2[:, 1:2] - cy
        a, b, c = con[:, 0:1], con[:, 1:2], con[:, 2:3]
        grad_pairs = torch.stack([
            -(v_power * (a * dx + b * dy)).sum(1), -(v_power * (b * dx + c * dy)).sum(1),
            -0.5 * (v_power * dx * dx).sum(1), -(v_power * dx * dy).sum(1), -0.5 * (v_power * dy * dy).sum(1),
        ], 1)
        grad = torch.zeros(len(means2d), 5, dtype=means2d.dtype).index_add_(0, gauss, grad_pairs)
        return grad[:, :2], grad[:, 2:], grad_colors, grad_opacities, None, None, None, None, None, None


# -- gsplat path ----------------------------------------------------------------------------------
def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds,
                      near_plane, far_plane, eps2d, tile_size):
    import gsplat

    if backgrounds is not None:
        backgrounds = backgrounds.reshape(-1, 3).expand(viewmats.shape[0], 3)
    rgb, alpha, info = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, backgrounds=backgrounds, tile_size=tile_size,
        packed=False)
    meta = dict(info)
    meta.update(width=width, height=height, n_cameras=viewmats.shape[0], tile_size=tile_size, backend="gsplat",
                n_isects=int(info["isect_ids"].numel()) if "isect_ids" in info else -1)
    return rgb, alpha, meta
