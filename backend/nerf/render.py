# SPDX-License-Identifier: GPL-3.0-or-later
"""Rendering a radiance field: the occupancy grid, sampling along rays, volume rendering.

- :class:`OccupancyGrid`: a ``G^3`` grid over the encoding's unit cube holding an
  exponential moving maximum of the density (Instant-NGP / nerfacc): refreshed every few
  steps at a random point of every cell during warm-up, then of a quarter of the cells and
  as many occupied ones; a cell is occupied while ``sigma * step > 0.01`` for the reference
  step (or above the mean, if lower). Cells no training camera sees stay empty.
- :func:`sample_occupied` (hash-grid field): each ray is marched in fine steps (half a cell;
  for contracted scenes, equal steps in ``1 / t`` beyond the inner cube) and its ``S``
  samples are spread evenly over the occupied steps only (stratified during training): empty
  space costs nothing, every ray that meets occupied cells gets the same number of samples,
  so the batch is a dense ``[rays, S]`` block. numba kernel and a PyTorch path.
- :func:`sample_stratified` and :func:`sample_pdf` (the original NeRF): stratified samples
  between near and far, then importance samples from the coarse network's weights.
- :func:`composite`: ``C = sum_i T_i alpha_i c_i + T_S background``, ``alpha_i = 1 -
  exp(-sigma_i dt_i)``, per ray (:mod:`.reference` holds the one-sample-at-a-time version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import _kernels
from .field import Field, NGPField, PENeRF, SceneFrame, trunc_exp

OCCUPANCY_THRESHOLD = 0.01  # alpha over the reference step
T_MIN = 1e-4  # samples behind this transmittance are skipped
REUSE_PREPASS = 2.0 / 3.0  # training: keep the pre-pass's graph when at least this fraction of samples is kept


# -- geometry -------------------------------------------------------------------------------
def ray_box(
    origins: Tensor,  # [R, 3]
    dirs: Tensor,  # [R, 3]
    center: tuple[float, float, float],
    half: tuple[float, float, float],
) -> tuple[Tensor, Tensor]:  # t_enter [R], t_exit [R] (t_exit <= t_enter: a miss)
    """Slab intersection of rays with the box ``center +- half``."""
    c = torch.tensor(center, dtype=origins.dtype, device=origins.device)
    h = torch.tensor(half, dtype=origins.dtype, device=origins.device)
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    inv = 1.0 / safe
    t0 = (c - h - origins) * inv
    t1 = (c + h - origins) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


@dataclass
class RaySpans:
    """Where each ray is sampled: linear from ``near`` to ``mid``, in ``1 / t`` from ``mid`` to ``far``."""

    near: Tensor  # [R]
    mid: Tensor  # [R]
    far: Tensor  # [R]
    hit: Tensor  # [R] bool


def ray_spans(origins: Tensor, dirs: Tensor, frame: SceneFrame, near: float, far: float) -> RaySpans:
    t_in, t_out = ray_box(origins, dirs, frame.center, frame.half_size)
    if not frame.contracted:
        t_near = t_in.clamp_min(near)
        t_far = t_out.clamp_max(far)
        return RaySpans(t_near, t_far, t_far, t_far > t_near)
    t_near = torch.full_like(t_in, near)
    t_far = torch.full_like(t_in, far)
    mid = torch.where(t_out > t_near, t_out.clamp_max(far), t_near)
    return RaySpans(t_near, mid, t_far, t_far > t_near)


# -- the occupancy grid ----------------------------------------------------------------------
class OccupancyGrid:
    """Occupied cells of the unit cube (see the module's docstring). A cell's density is
    unknown (-1, counted as occupied) until it is first evaluated."""

    def __init__(self, resolution: int = 128, decay: float = 0.95, threshold: float = OCCUPANCY_THRESHOLD,
                 cells_per_update: int = 1 << 16, seed: int = 0) -> None:
        self.resolution = int(resolution)
        self.decay = float(decay)
        self.threshold = float(threshold)
        self.cells_per_update = int(cells_per_update)
        cells = self.resolution ** 3
        self.density = torch.full((cells,), -1.0)  # moving maximum of the density per cell, x-major [x, y, z]
        self.visible = torch.ones(cells, dtype=torch.bool)  # seen by some training camera
        self.bits = torch.ones(cells, dtype=torch.bool)
        self.order = torch.randperm(cells, generator=torch.Generator().manual_seed(seed))
        self.cursor = 0
        self.updates = 0

    # -- state --
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"density": self.density.numpy(), "visible": self.visible.numpy(), "bits": self.bits.numpy(),
                "meta": np.array([self.resolution, self.decay, self.threshold, self.updates, self.cursor,
                                  self.cells_per_update], np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OccupancyGrid:
        resolution, decay, threshold, updates, cursor, per_update = arrays["meta"].tolist()
        grid = cls(int(resolution), decay, threshold, int(per_update))
        grid.density = torch.from_numpy(np.array(arrays["density"], np.float32))
        grid.visible = torch.from_numpy(np.array(arrays["visible"], bool))
        grid.bits = torch.from_numpy(np.array(arrays["bits"], bool))
        grid.updates, grid.cursor = int(updates), int(cursor)
        return grid

    def bits_array(self) -> np.ndarray:  # [G, G, G] uint8, x-major
        g = self.resolution
        return self.bits.view(g, g, g).numpy().view(np.uint8)

    @property
    def occupied_fraction(self) -> float:
        return float(self.bits.float().mean())

    # -- geometry --
    def cell_centers(self, cells: Tensor | None = None) -> Tensor:  # [C, 3] unit-cube points
        g = self.resolution
        index = torch.arange(g ** 3) if cells is None else cells
        ijk = torch.stack([index // (g * g), (index // g) % g, index % g], dim=-1)
        return (ijk.float() + 0.5) / g

    def mark_invisible(self, frame: SceneFrame, Ks: Tensor, w2cs: Tensor, sizes: list[tuple[int, int]],
                       near: float) -> None:
        """Cells whose centre no camera sees (in front, inside the image) stay empty for good."""
        centers = unit_to_world(self.cell_centers(), frame).double()
        min_depth = near * 0.5
        if _kernels.AVAILABLE:
            seen = torch.from_numpy(_kernels.visible(centers.numpy(), Ks.numpy(), w2cs.numpy(),
                                                     np.array(sizes, np.float64), min_depth))
        else:
            seen = torch.zeros(centers.shape[0], dtype=torch.bool)
            for K, w2c, (w, h) in zip(Ks.double(), w2cs.double(), sizes, strict=True):
                cam = centers @ w2c[:3, :3].T + w2c[:3, 3]
                z = cam[:, 2]
                px = cam[:, :2] / z.clamp_min(1e-9)[:, None] @ K[:2, :2].T + K[:2, 2]
                seen |= (z > min_depth) & (px[:, 0] >= 0) & (px[:, 0] <= w) & (px[:, 1] >= 0) & (px[:, 1] <= h)
        self.visible = seen
        self.bits &= seen

    @torch.no_grad()
    def update(self, density_fn, step_size: float, generator: torch.Generator, chunk: int = 1 << 17) -> None:
        """Evaluate the density at one random point in each of the next ``cells_per_update``
        cells (a fixed random order, so every cell comes round) and in half as many random
        occupied cells; fold it into the moving maximum; recompute the occupied bits.
        ``density_fn(u [N, 3]) -> [N]``; ``step_size`` the reference step in world units."""
        cells = self.resolution ** 3
        count = min(cells, self.cells_per_update)
        take = self.order[torch.arange(self.cursor, self.cursor + count) % cells]
        self.cursor = (self.cursor + count) % cells
        occupied = torch.nonzero(self.bits).flatten()
        if occupied.numel() > count // 2:
            occupied = occupied[torch.randint(0, occupied.numel(), (count // 2,), generator=generator)]
        chosen = torch.unique(torch.cat([take, occupied]))
        chosen = chosen[self.visible[chosen]]
        g = self.resolution
        ijk = torch.stack([chosen // (g * g), (chosen // g) % g, chosen % g], dim=-1).float()
        u = (ijk + torch.rand(ijk.shape, generator=generator)) / g
        sigma = torch.cat([density_fn(u[s:s + chunk]).float().cpu() for s in range(0, u.shape[0], chunk)]) \
            if u.shape[0] else torch.zeros(0)
        self.density[chosen] = torch.maximum(self.density[chosen] * self.decay, sigma)
        known = self.density[self.visible]
        known = known[known >= 0]
        mean = float(known.mean()) if known.numel() else 0.0
        threshold = min(self.threshold / step_size, mean)
        self.bits = ((self.density > threshold) | (self.density < 0)) & self.visible
        self.updates += 1


def unit_to_world(u: Tensor, frame: SceneFrame) -> Tensor:  # [N, 3] -> [N, 3]
    """The inverse of ``frame.to_unit`` (far points of a contracted frame clamped at 1e4 radii)."""
    center = torch.tensor(frame.center, dtype=u.dtype)
    half = torch.tensor(frame.half_size, dtype=u.dtype)
    if not frame.contracted:
        return (u - 0.5) * 2.0 * half + center
    y = (u - 0.5) * 4.0
    n = y.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    scale = torch.where(n <= 1.0, torch.ones_like(n), (1.0 / (2.0 - n).clamp_min(1e-4)) / n)
    return y * scale * half + center


def reference_step(frame: SceneFrame, grid_resolution: int) -> float:
    """Half a grid cell in world units (the contracted frame's inner cube: a quarter of the grid)."""
    cell = 2.0 * min(frame.half_size) / grid_resolution
    return (2.0 * cell if frame.contracted else cell) * 0.5


# -- sampling for the hash-grid field --------------------------------------------------------
def sample_occupied(
    origins: Tensor,  # [R, 3]
    dirs: Tensor,  # [R, 3] unit
    spans: RaySpans,
    frame: SceneFrame,
    grid: OccupancyGrid,
    jitter: Tensor,  # [R, S] in [0, 1): 0.5 for evaluation
    n_outer: int = 256,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:  # t [R, S], dt [R, S], occupied steps [R] (0: no samples)
    """``S`` samples per ray spread evenly over its occupied fine steps (see the module's docstring)."""
    fine = reference_step(frame, grid.resolution)
    near = torch.where(spans.hit, spans.near, spans.mid).double()  # a miss gets an empty span
    mid, far = spans.mid.double(), torch.where(spans.hit, spans.far, spans.mid).double()
    if not frame.contracted:
        far = mid
    lengths = (mid - near).clamp_min(0.0)
    max_steps = int(math.ceil(float(lengths.max()) / fine)) + 1 if lengths.numel() else 1
    max_steps += n_outer if frame.contracted else 0
    use_numba = backend == "numba" or (backend == "auto" and _kernels.AVAILABLE)
    if use_numba:
        t, dt, count = _kernels.sample_occupied(
            origins.detach().float().cpu().contiguous().numpy(), dirs.detach().float().cpu().contiguous().numpy(),
            near.cpu().numpy(), mid.cpu().numpy(), far.cpu().numpy(), fine, n_outer if frame.contracted else 0,
            frame.contracted, frame.center, frame.half_size, grid.bits_array(),
            jitter.detach().float().cpu().contiguous().numpy(), max_steps)
        return torch.from_numpy(t), torch.from_numpy(dt), torch.from_numpy(count)
    return _sample_occupied_torch(origins, dirs, near, mid, far, fine, n_outer if frame.contracted else 0, frame,
                                  grid, jitter, max_steps)


def _sample_occupied_torch(origins, dirs, near, mid, far, fine, n_outer, frame, grid, jitter, max_steps):
    """The same as the numba kernel, vectorised over rays and fine steps (float64)."""
    n_rays, n_samples = jitter.shape
    o, d = origins.double().cpu(), dirs.double().cpu()
    m = torch.clamp(torch.ceil((mid - near) / fine), min=1).long()  # steps in the linear part
    m = torch.where(mid > near, m, torch.zeros_like(m)).clamp(max=max_steps)
    width = int(m.max()) if n_rays else 0
    i = torch.arange(width, dtype=torch.float64)
    step = torch.where(m > 0, (mid - near) / m.clamp_min(1), torch.zeros_like(near))
    starts = near[:, None] + i[None] * step[:, None]  # [R, W]
    lengths = step[:, None].expand(-1, width)
    valid = i[None] < m[:, None]
    if n_outer and frame.contracted:
        j = torch.arange(n_outer + 1, dtype=torch.float64)
        a, b = 1.0 / mid.clamp_min(1e-9), 1.0 / far
        edges = 1.0 / (a[:, None] + (b - a)[:, None] * j[None] / n_outer)
        starts = torch.cat([starts, edges[:, :-1]], 1)
        lengths = torch.cat([lengths, edges[:, 1:] - edges[:, :-1]], 1)
        valid = torch.cat([valid, (far > mid)[:, None].expand(-1, n_outer)], 1)
    points = o[:, None] + (starts + 0.5 * lengths)[..., None] * d[:, None]
    u = frame.to_unit(points.reshape(-1, 3))
    g = grid.resolution
    inside = frame.inside(u)
    ijk = (u * g).long().clamp(0, g - 1)
    occupied = grid.bits[(ijk[:, 0] * g + ijk[:, 1]) * g + ijk[:, 2]] & inside
    occupied = occupied.view(n_rays, -1) & valid
    count = occupied.sum(1)
    cum = torch.cumsum(occupied.long(), 1)  # number of occupied steps up to and including each
    per = count.double() / n_samples
    q = (torch.arange(n_samples, dtype=torch.float64)[None] + jitter.double().cpu()) * per[:, None]
    k = torch.minimum(q.floor().long(), (count - 1).clamp_min(0)[:, None])
    position = torch.searchsorted(cum, k + 1)  # the fine step holding the k-th occupied step
    position = position.clamp(max=max(cum.shape[1] - 1, 0))
    s = torch.gather(starts, 1, position) if cum.shape[1] else torch.zeros_like(q)
    ln = torch.gather(lengths, 1, position) if cum.shape[1] else torch.zeros_like(q)
    t = s + (q - k) * ln
    dt = ln * per[:, None]
    empty = count == 0
    t[empty] = 0.0
    dt[empty] = 0.0
    return t.float(), dt.float(), count


# -- volume rendering ------------------------------------------------------------------------
def composite(
    sigmas: Tensor,  # [R, S]
    rgbs: Tensor,  # [R, S, 3]
    dts: Tensor,  # [R, S]
    background: Tensor,  # [3] or [R, 3]
    ts: Tensor | None = None,  # [R, S], for the depth
) -> dict[str, Tensor]:  # rgb [R, 3], opacity [R], weights [R, S], depth [R]
    tau = sigmas * dts
    alpha = 1.0 - torch.exp(-tau)
    transmittance = torch.exp(-(torch.cumsum(tau, dim=1) - tau))  # exclusive
    weights = transmittance * alpha
    opacity = weights.sum(1)
    rgb = (weights[..., None] * rgbs).sum(1) + (1.0 - opacity)[:, None] * background.expand(sigmas.shape[0], 3)
    out = {"rgb": rgb, "opacity": opacity, "weights": weights}
    if ts is not None:
        out["depth"] = (weights * ts).sum(1)
    return out


# -- rendering rays --------------------------------------------------------------------------
def render_rays_ngp(
    fld: Field,
    origins: Tensor,  # [R, 3]
    dirs: Tensor,  # [R, 3] unit
    background: Tensor,  # [3] or [R, 3]
    samples: int,
    jitter: Tensor | None = None,  # [R, S]; None: the middle of each stratum
    min_transmittance: float = T_MIN,
) -> dict[str, Tensor]:
    """Colour ``[R, 3]``, opacity ``[R]``, depth ``[R]`` of the hash-grid field along rays, and
    ``samples`` (points that reached the colour MLP).

    A pre-pass evaluates the density of every sample; only samples the light still reaches
    (transmittance above ``min_transmittance``) go through the colour MLP. In training, when
    they are most of the samples (two thirds or more), the pre-pass's graph is kept and its
    backward runs on every sample; otherwise the kept samples' density MLP is evaluated again
    with gradients, their encoding reused from the pre-pass."""
    n = origins.shape[0]
    device = origins.device
    if jitter is None:
        jitter = torch.full((n, samples), 0.5)
    spans = ray_spans(origins, dirs, fld.frame, fld.near, fld.far)
    t, dt, count = sample_occupied(origins, dirs, spans, fld.frame, fld.occupancy, jitter)
    hit = torch.nonzero(count > 0).flatten()
    bg = background.to(device).expand(n, 3)
    rgb = bg.clone()
    opacity = torch.zeros(n, device=device)
    depth = torch.zeros(n, device=device)
    kept = torch.zeros((), dtype=torch.long)
    if hit.numel():
        th, dth = t[hit].to(device), dt[hit].to(device)
        hit_d = hit.to(device)
        d = dirs[hit_d]
        points = origins[hit_d][:, None, :] + th[..., None] * d[:, None, :]  # [H, S, 3]
        u = fld.frame.to_unit(points.reshape(-1, 3)).clamp(0.0, 1.0)
        model = fld.model
        ngp = isinstance(model, NGPField)
        if ngp:  # with gradients when training: kept if most samples go on to the colour MLP
            encoded, geo_all = model.prepass_geometry(u)
            sigma_all = trunc_exp(geo_all[:, 0])
        else:
            encoded, sigma_all = model.prepass(u)
        tau = (sigma_all.detach().view(-1, samples).float() * dth)
        transmittance = torch.exp(-(torch.cumsum(tau, 1) - tau))  # before each sample
        visible = (transmittance > min_transmittance).flatten()
        every = bool(visible.all())
        keep = None if every else torch.nonzero(visible).flatten()
        n_keep = th.numel() if every else keep.numel()
        if ngp and (not torch.is_grad_enabled() or n_keep >= REUSE_PREPASS * th.numel()):
            # the pre-pass's density MLP outputs serve (its backward then runs on every sample,
            # cheaper than a second forward and backward of the kept ones when they are most)
            if every:
                sigma, color = sigma_all, model.color(geo_all, d)  # S samples per ray: no gather
            else:
                sigma_k, rgb_k = sigma_all[keep], model.color(geo_all[keep], d, keep // samples)
        else:
            index = torch.arange(th.numel(), device=device) if every else keep
            sigma_k, rgb_k = model(u[index], d, None if encoded is None else encoded.detach()[index],
                                   index // samples)
            if every:
                sigma, color = sigma_k, rgb_k
        if not every:
            sigma = torch.zeros(th.numel(), device=device, dtype=sigma_k.dtype).index_put((keep,), sigma_k)
            color = torch.zeros(th.numel(), 3, device=device, dtype=rgb_k.dtype).index_put((keep,), rgb_k)
        out = composite(sigma.view(-1, samples).float(), color.view(-1, samples, 3).float(), dth, bg[hit_d], th)
        rgb = rgb.index_copy(0, hit_d, out["rgb"])
        opacity = opacity.index_copy(0, hit_d, out["opacity"])
        depth = depth.index_copy(0, hit_d, out["depth"])
        kept = torch.tensor(n_keep)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "samples": kept}


# -- the original NeRF's sampling ------------------------------------------------------------
def sample_stratified(near: Tensor, far: Tensor, n: int, jitter: Tensor | None) -> Tensor:  # [R], [R] -> [R, n]
    """``n`` samples per ray, one in each of ``n`` equal strata (the stratum's middle without ``jitter``)."""
    s = (torch.arange(n, dtype=near.dtype, device=near.device)[None] + (0.5 if jitter is None else jitter)) / n
    return near[:, None] + (far - near)[:, None] * s


def sample_pdf(bins: Tensor, weights: Tensor, n: int, uniform: Tensor | None) -> Tensor:
    """Inverse-transform samples ``[R, n]`` of the piecewise-constant density ``weights
    [R, B]`` over ``bins [R, B + 1]`` (NeRF's hierarchical sampling); ``uniform [R, n]`` or
    evenly spaced quantiles."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    if uniform is None:
        uniform = torch.linspace(0.0, 1.0, n, device=bins.device).expand(bins.shape[0], n).contiguous()
    idx = torch.searchsorted(cdf, uniform.contiguous(), right=True)
    below = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    above = idx.clamp(0, cdf.shape[-1] - 1)
    cdf_b, cdf_a = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
    bin_b, bin_a = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
    denom = torch.where(cdf_a - cdf_b < 1e-5, torch.ones_like(cdf_a), cdf_a - cdf_b)
    return bin_b + (uniform - cdf_b) / denom * (bin_a - bin_b)


def _pe_pass(net, fld: Field, origins, dirs, t, background) -> dict[str, Tensor]:
    n, s = t.shape
    mids = torch.cat([t[:, 1:] - t[:, :-1], (t[:, -1:] - t[:, -2:-1]).clamp_min(1e-3) if s > 1 else t[:, :1] * 0 + 1e-3],
                     1)
    points = origins[:, None, :] + t[..., None] * dirs[:, None, :]
    u = fld.frame.to_unit(points.reshape(-1, 3))
    inside = fld.frame.inside(u).view(n, s)
    sigma, rgb = net(u, dirs[:, None, :].expand(-1, s, -1).reshape(-1, 3))
    sigma = sigma.view(n, s).float() * inside
    return composite(sigma, rgb.view(n, s, 3).float(), mids, background, t)


def render_rays_pe(
    fld: Field,
    origins: Tensor,
    dirs: Tensor,
    background: Tensor,
    n_coarse: int,
    n_fine: int,
    generator: torch.Generator | None = None,  # None: deterministic (evaluation)
) -> dict[str, Tensor]:
    """The original NeRF: ``n_coarse`` stratified samples through the coarse network, then
    ``n_fine`` more from its weights, all through the fine network. Returns the fine
    ``rgb``, ``opacity``, ``depth`` and the coarse ``rgb_coarse``."""
    model: PENeRF = fld.model
    n = origins.shape[0]
    spans = ray_spans(origins, dirs, fld.frame, fld.near, fld.far)
    near = torch.where(spans.hit, spans.near, torch.full_like(spans.near, fld.near))
    far = torch.where(spans.hit, spans.far, near + 1e-3)
    jitter = None if generator is None else torch.rand(n, n_coarse, generator=generator).to(origins.device)
    t_coarse = sample_stratified(near, far, n_coarse, jitter)
    bg = background.to(origins.device).expand(n, 3)
    coarse = _pe_pass(model.coarse, fld, origins, dirs, t_coarse, bg)
    mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
    uniform = None if generator is None else torch.rand(n, n_fine, generator=generator).to(origins.device)
    t_fine = sample_pdf(mids, coarse["weights"][:, 1:-1].detach(), n_fine, uniform).detach()
    t_all, _ = torch.sort(torch.cat([t_coarse, t_fine], 1), 1)
    fine = _pe_pass(model.fine, fld, origins, dirs, t_all, bg)
    miss = ~spans.hit
    if miss.any():
        for key, value in (("rgb", bg), ("opacity", torch.zeros(n))):
            fine[key] = torch.where(miss.view(-1, *([1] * (value.dim() - 1))), value, fine[key])
    return {"rgb": fine["rgb"], "opacity": fine["opacity"], "depth": fine["depth"], "rgb_coarse": coarse["rgb"],
            "samples": torch.tensor(n * (2 * n_coarse + n_fine))}


def render_rays(fld: Field, origins: Tensor, dirs: Tensor, background: Tensor, samples: int = 64,
                n_fine: int = 128, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Either field's rays (deterministic unless a ``generator`` is given)."""
    if isinstance(fld.model, PENeRF):
        return render_rays_pe(fld, origins, dirs, background, samples, n_fine, generator)
    jitter = None if generator is None else torch.rand(origins.shape[0], samples, generator=generator)
    return render_rays_ngp(fld, origins, dirs, background, samples, jitter)


@torch.no_grad()
def render_image(
    fld: Field,
    origins: Tensor,  # [H * W, 3]
    dirs: Tensor,  # [H * W, 3]
    height: int,
    width: int,
    background: Tensor,  # [3]
    samples: int = 64,
    n_fine: int = 128,
    chunk: int = 1 << 14,
    check_cancelled=None,
) -> dict[str, Tensor]:  # rgb [H, W, 3], opacity [H, W], depth [H, W]
    """A whole image, in chunks of rays, without gradients."""
    parts: dict[str, list[Tensor]] = {"rgb": [], "opacity": [], "depth": []}
    for start in range(0, origins.shape[0], chunk):
        if check_cancelled is not None:
            check_cancelled()
        out = render_rays(fld, origins[start:start + chunk], dirs[start:start + chunk], background, samples, n_fine)
        for key in parts:
            parts[key].append(out[key].float().cpu())
    return {"rgb": torch.cat(parts["rgb"]).view(height, width, 3),
            "opacity": torch.cat(parts["opacity"]).view(height, width),
            "depth": torch.cat(parts["depth"]).view(height, width)}


def is_ngp(fld: Field) -> bool:
    return isinstance(fld.plain_model(), NGPField)
