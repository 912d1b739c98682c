# SPDX-License-Identifier: GPL-3.0-or-later
"""A signed distance field fitted to a trained radiance field, for smoother meshes
(``mesh --mode sdf``), after Neuralangelo (Li et al. 2023) and NeuS (Wang et al. 2021).

The network (:class:`SDFNetwork`): a hash-grid encoding (:class:`..nerf.hashgrid.HashGrid`)
of the cube around the region to mesh, its features and the point's coordinates through a
small MLP (``3 + L F -> 64 -> 1 + G``, softplus), whose first output is the signed distance
(negative inside) and the rest geometry features for a colour head. Coordinates are
normalised: ``y = (x - center) / half`` in ``[-1, 1]^3``, the distance in the same units
(times ``half`` for world units). The MLP starts as a sphere (the geometric initialisation of
Atzmon and Lipman's SAL: ``|y| - radius``).

Derivatives are numerical (:func:`finite_differences`): central differences at step
``eps`` along each axis, 7 evaluations per point, give the gradient and the Laplacian (the
mean curvature term) without autograd's double backward, and, as Neuralangelo argues, make
each step's gradient reach the hash entries around the point, not only the cell it lies in.
``eps`` runs coarse to fine with the levels: training starts with the coarsest levels of
the encoding (the finer ones masked to zero), adds levels until all are on at half the run,
and ``eps`` is the cell of the finest level on.

Stage A (:func:`fit_to_density`): the field's geometry distilled. The target is the
field's density on the mesh grid (cavities filled, as for density meshes), read between
grid points by trilinear interpolation of its logarithm (a density rises by orders of
magnitude across a surface, its logarithm about linearly; interpolated linearly, the
inside swells by up to a cell: on the test sphere the surface sat 0.6 cells out):
inside where it is above the level. Each step takes points near the level set (the grid
cells next to it, jittered by one and by four grid spacings) and anywhere in the box; the
loss is the binary cross-entropy of ``sigmoid(-sdf / s)`` (``s`` 0.35 grid spacings:
sharper follows the surface more closely and lets more noise through) against
inside/outside, plus the eikonal term ``(|grad sdf| - 1)^2`` and the curvature term
``|laplacian sdf|`` at other points, most near the surface. Adam (lr 0.03; the table's
entries with sparse updates, as the field's training), a short warm-up, the rate decayed
to a tenth by a cosine; every level on by a quarter of the run. The curvature weight stays
constant (``curvature_decay`` shrinks it with ``eps``, as Neuralangelo does: on the
benchmark's Suzanne that gave a rougher surface, adjacent faces turning by 8.8 degrees
against 4.0, and a chamfer of 0.125 % against 0.115 %, for a texture 0.27 dB closer to the
true mesh's).

Stage B (:func:`fit_to_photos`, optional): the SDF rendered as NeuS does (each section
between consecutive samples of a ray has opacity ``(Phi(s f_i) - Phi(s f_i+1)) / Phi(s
f_i)``, ``Phi`` the logistic function, ``s`` a learned sharpness) with a colour head on the
geometry features and the view direction, against the field's photos: L1 on colour, the
same eikonal and curvature terms, and stage A's loss (on a quarter of its points) as an
anchor: at a tenth of the weight the surface drifted off (chamfer 0.146 % against 0.130 %). The
first third of its steps trains the colour head alone (a new head's colours would drag the
surface anywhere). Samples: uniform along the ray's span through the box without
gradients, then as many again drawn from the weights they give.

:func:`grid_sdf` evaluates the SDF on the mesh grid for marching cubes at 0.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nerf.hashgrid import HashGrid, HashGridConfig, sparse_adam_step


def default_hashgrid() -> HashGridConfig:
    return HashGridConfig(levels=16, features=2, log2_table_size=18, base_resolution=16, finest_resolution=512)


@dataclass(frozen=True)
class SDFSettings:
    """How to fit the SDF (the mesh job's ``sdf_*`` options fill it)."""

    steps: int = 3000  # stage A
    photo_steps: int = 0  # stage B
    max_seconds: float = 0.0  # both stages together; 0: no limit
    eikonal: float = 0.1
    curvature: float = 5e-4
    batch: int = 8192  # points with an inside/outside target per step
    regular_batch: int = 1024  # points with the eikonal and curvature terms per step (7 evaluations each)
    lr: float = 3e-2
    start_levels: int = 4  # hash-grid levels on at the start (coarse to fine)
    all_levels_at: float = 0.25  # fraction of the run by which every level is on
    curvature_decay: bool = False  # the curvature weight shrinks with eps (see schedule)
    width: float = 0.35  # grid spacings: s of the inside/outside loss's sigmoid(-sdf / s)
    photo_rays: int = 512
    photo_samples: int = 32  # per ray, uniform; as many again by importance
    anchor: float = 1.0  # stage B: weight of stage A's loss
    hashgrid: HashGridConfig = field(default_factory=default_hashgrid)
    hidden: int = 64
    geo_features: int = 15
    seed: int = 0


# -- the network ----------------------------------------------------------------------------
class SDFNetwork(nn.Module):
    """Signed distance over the cube around ``lo, hi`` (world), see the module's docstring."""

    def __init__(self, lo, hi, config: HashGridConfig | None = None, hidden: int = 64, geo_features: int = 15,
                 radius: float = 0.5, margin: float = 0.05, generator: torch.Generator | None = None) -> None:
        super().__init__()
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        self.config = config or default_hashgrid()
        self.register_buffer("center", torch.tensor(0.5 * (lo + hi), dtype=torch.float32))
        self.half = float(0.5 * np.max(hi - lo) * (1.0 + margin)) or 1.0
        self.encoding = HashGrid(self.config, generator=generator)
        features = self.encoding.output_dim
        self.hidden = nn.Linear(3 + features, hidden)
        self.out = nn.Linear(hidden, 1 + geo_features)
        self.register_buffer("level_mask", torch.ones(features))
        self.active_levels = self.config.levels
        with torch.no_grad():  # SAL's geometric initialisation: softplus(W y) summed ~ |y|
            std = math.sqrt(2.0) / math.sqrt(hidden)
            self.hidden.weight.normal_(0.0, std, generator=generator)
            self.hidden.bias.zero_()
            self.out.weight.normal_(0.0, 1e-4, generator=generator)
            self.out.weight[0].normal_(math.sqrt(math.pi) / math.sqrt(hidden), 1e-4, generator=generator)
            self.out.bias.zero_()
            self.out.bias[0] = -radius

    def set_active_levels(self, levels: int) -> None:
        """Only the ``levels`` coarsest levels of the encoding count (coarse to fine)."""
        levels = max(1, min(int(levels), self.config.levels))
        self.active_levels = levels
        self.level_mask.zero_()
        self.level_mask[:levels * self.config.features] = 1.0

    def cell(self, level: int | None = None) -> float:
        """A grid cell of ``level`` (default: the finest one on), in normalised units."""
        level = self.active_levels - 1 if level is None else level
        return 2.0 / float(self.encoding.levels.scales[level])

    def normalise(self, points_world: Tensor) -> Tensor:  # [N, 3] -> [N, 3] in [-1, 1]
        return (points_world - self.center) / self.half

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:  # [N, 3] normalised -> sdf [N] normalised, geo [N, G]
        u = (y * 0.5 + 0.5).clamp(0.0, 1.0)
        features = self.encoding(u)
        if self.active_levels < self.config.levels:
            features = features * self.level_mask
        h = F.softplus(self.hidden(torch.cat([y, features], -1)), beta=100.0)
        out = self.out(h)
        return out[:, 0], out[:, 1:]

    def sdf(self, y: Tensor) -> Tensor:  # [N, 3] normalised -> [N] normalised
        return self(y)[0]

    @torch.no_grad()
    def sdf_world(self, points_world: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:  # [N, 3] -> [N] world units
        out = np.empty(len(points_world), np.float32)
        for start in range(0, len(points_world), chunk):
            p = torch.from_numpy(np.ascontiguousarray(points_world[start:start + chunk], np.float32))
            out[start:start + chunk] = (self.sdf(self.normalise(p.to(self.center.device))) * self.half).cpu().numpy()
        return out


STENCIL = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])


def stencil_points(y: Tensor, eps: float) -> Tensor:  # [N, 3] -> [7 N, 3]: the points, then 6 neighbours each
    offsets = STENCIL.to(y) * eps
    return torch.cat([y, (y[:, None, :] + offsets[None]).reshape(-1, 3)])


def stencil_derivatives(values: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Value [N], gradient [N, 3] and Laplacian [N] from ``values [7 N]`` at :func:`stencil_points`."""
    n = values.shape[0] // 7
    centre, around = values[:n], values[n:].view(n, 6)
    gradient = (around[:, 0::2] - around[:, 1::2]) / (2.0 * eps)
    laplacian = (around.sum(1) - 6.0 * centre) / (eps * eps)
    return centre, gradient, laplacian


def finite_differences(fn: Callable[[Tensor], Tensor], y: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``fn``'s value [N], gradient [N, 3] and Laplacian [N] at ``y [N, 3]`` by central
    differences at step ``eps`` (one call of ``fn`` on ``7 N`` points)."""
    return stencil_derivatives(fn(stencil_points(y, eps)), eps)


# -- stage A: the field's density as the target ----------------------------------------------
class DensityTarget:
    """Inside/outside from the density on a grid (``values [nx, ny, nz]``, at ``grid``'s
    points, inside where ``>= level``), trilinear between grid points; and the cells next
    to the level set, to sample near."""

    def __init__(self, values: np.ndarray, grid, level: float, device="cpu") -> None:
        from scipy import ndimage

        self.shape = tuple(int(n) for n in values.shape)
        self.lo = torch.tensor(grid.lo, dtype=torch.float32, device=device)
        self.spacing = float(grid.spacing)
        self.level = float(level)
        self.device = torch.device(device)
        floor = np.float32(level * 1e-4) if level > 0 else np.float32(1e-12)
        self.log_values = torch.from_numpy(np.log(np.maximum(values, floor))).reshape(-1).to(device)
        self.log_level = math.log(level) if level > 0 else math.log(1e-12)
        inside = values >= level
        band = inside ^ ndimage.binary_erosion(inside)
        band |= ndimage.binary_dilation(inside) ^ inside
        self.surface = torch.from_numpy(np.flatnonzero(band)).to(device)  # [S] flat indices
        self.inside_fraction = float(inside.mean())

    def log_density(self, points_world: Tensor) -> Tensor:  # [N, 3] -> [N]; the floor outside the grid
        shape = torch.tensor(self.shape, device=points_world.device)
        g = (points_world - self.lo) / self.spacing
        outside = ((g < 0) | (g > shape - 1)).any(-1)
        i0 = torch.minimum(g.floor().long().clamp_min(0), shape - 2)
        f = (g - i0).clamp(0.0, 1.0)
        ny, nz = self.shape[1], self.shape[2]
        out = torch.zeros(len(points_world), device=points_world.device)
        for corner in range(8):
            bits = [(corner >> a) & 1 for a in range(3)]
            index = ((i0[:, 0] + bits[0]) * ny + i0[:, 1] + bits[1]) * nz + i0[:, 2] + bits[2]
            w = ((f[:, 0] if bits[0] else 1 - f[:, 0]) * (f[:, 1] if bits[1] else 1 - f[:, 1])
                 * (f[:, 2] if bits[2] else 1 - f[:, 2]))
            out += w * self.log_values[index]
        return torch.where(outside, torch.full_like(out, self.log_level - 10.0), out)

    def inside(self, points_world: Tensor) -> Tensor:  # [N, 3] -> [N] float 0/1
        return (self.log_density(points_world) >= self.log_level).float()

    def near_surface(self, n: int, sigma: float, generator: torch.Generator) -> Tensor:  # [n, 3] world
        """Grid points next to the level set, moved by a normal offset of ``sigma`` (world units)."""
        if len(self.surface) == 0:
            return self.anywhere(n, generator)
        pick = self.surface[torch.randint(0, len(self.surface), (n,), generator=generator).to(self.device)]
        ny, nz = self.shape[1], self.shape[2]
        ijk = torch.stack([pick // (ny * nz), (pick // nz) % ny, pick % nz], -1).float()
        noise = torch.randn(n, 3, generator=generator).to(self.device) * sigma
        return self.lo + ijk * self.spacing + noise

    def anywhere(self, n: int, generator: torch.Generator) -> Tensor:  # [n, 3] world, uniform in the grid's box
        extent = (torch.tensor(self.shape, dtype=torch.float32, device=self.device) - 1) * self.spacing
        return self.lo + torch.rand(n, 3, generator=generator).to(self.device) * extent


@dataclass
class _Optimiser:
    """Adam for the MLP, sparse Adam for the hash table (entries without a gradient left alone)."""

    net: SDFNetwork
    lr: float

    def __post_init__(self) -> None:
        table = self.net.encoding.table
        self.others = [p for name, p in self.net.named_parameters() if not name.startswith("encoding.")]
        self.adam = torch.optim.Adam(self.others, lr=self.lr, betas=(0.9, 0.99), eps=1e-15)
        self.moments = [torch.zeros_like(table), torch.zeros_like(table)]
        self.count = 0

    def add(self, params: list[nn.Parameter]) -> None:
        self.adam.add_param_group({"params": params, "lr": self.lr})

    def step(self, lr: float) -> None:
        for group in self.adam.param_groups:
            group["lr"] = lr
        self.adam.step()
        self.count += 1
        table = self.net.encoding.table
        if table.grad is not None:
            sparse_adam_step(table, table.grad, *self.moments, self.count, lr)

    def zero_grad(self) -> None:  # the table's gradient: sparse_adam_step has zeroed it
        self.adam.zero_grad(set_to_none=True)


def schedule(net: SDFNetwork, settings: SDFSettings, progress: float) -> tuple[float, float, float]:
    """Turn on the levels for ``progress`` (0 to 1; all on at ``all_levels_at``), and return
    the learning rate (a cosine down to a tenth), ``eps`` (the finest level's cell) and the
    curvature term's weight (with ``curvature_decay``, shrinking with ``eps`` from the
    starting levels' cell, as Neuralangelo's: the fine levels keep their detail)."""
    start = min(settings.start_levels, net.config.levels)
    levels = start + int(math.ceil((net.config.levels - start) * min(1.0, progress / max(settings.all_levels_at, 1e-6))))
    net.set_active_levels(levels)
    lr = settings.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    eps = net.cell()
    curvature = settings.curvature * (eps / net.cell(start - 1) if settings.curvature_decay else 1.0)
    return lr, eps, curvature


def _regular_points(target: DensityTarget, net: SDFNetwork, n: int, generator: torch.Generator) -> Tensor:
    near = n * 3 // 4  # normalised points for the eikonal and curvature terms, most near the surface
    points = torch.cat([target.near_surface(near, 2.0 * target.spacing, generator), target.anywhere(n - near, generator)])
    return net.normalise(points)


def density_loss(net: SDFNetwork, target: DensityTarget, settings: SDFSettings, generator: torch.Generator,
                 eps: float, curvature_weight: float | None = None) -> tuple[Tensor, dict]:
    """Stage A's loss on a fresh batch (see the module's docstring) and its parts."""
    n = settings.batch
    a, b = n // 2, n // 4
    points = torch.cat([target.near_surface(a, target.spacing, generator),
                        target.near_surface(b, 4.0 * target.spacing, generator),
                        target.anywhere(n - a - b, generator)])
    inside = target.inside(points)
    regular = _regular_points(target, net, settings.regular_batch, generator)
    values = net.sdf(torch.cat([net.normalise(points), stencil_points(regular, eps)]))
    s = settings.width * target.spacing / net.half
    bce = F.binary_cross_entropy_with_logits(-values[:n] / s, inside)
    m = 7 * len(regular)
    if m:
        _, gradient, laplacian = stencil_derivatives(values[n:n + m], eps)
        eikonal = ((gradient.norm(dim=1) - 1.0) ** 2).mean()
        curvature = laplacian.abs().mean()
    else:
        eikonal = curvature = values.new_zeros(())
    weight = settings.curvature if curvature_weight is None else curvature_weight
    loss = bce + settings.eikonal * eikonal + weight * curvature
    return loss, {"bce": bce, "eikonal": eikonal, "curvature": curvature}


def _steps(steps: int, started: float, max_seconds: float, check_cancelled: Callable[[], None] | None):
    """``(step, fraction of the run done)`` for a fit of ``steps`` steps that started at
    ``started`` (``time.perf_counter``) and stops after ``max_seconds`` (0: no cap): the
    fraction is the steps' or the time's, whichever is further; cancel is checked each step."""
    for step in range(steps):
        if check_cancelled is not None:
            check_cancelled()
        elapsed = time.perf_counter() - started
        if max_seconds > 0 and elapsed >= max_seconds:
            return
        yield step, max(step / max(1, steps), elapsed / max_seconds if max_seconds > 0 else 0.0)


def fit_to_density(
    net: SDFNetwork,
    target: DensityTarget,
    settings: SDFSettings,
    progress: Callable[[int, int, dict], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    max_seconds: float = 0.0,
) -> dict:
    """Stage A (see the module's docstring); returns the last step's loss parts, the steps
    and seconds."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimiser = _Optimiser(net, settings.lr)
    started = time.perf_counter()
    metrics: dict = {}
    steps = settings.steps
    step = 0
    for step, fraction in _steps(steps, started, max_seconds, check_cancelled):
        lr, eps, curvature = schedule(net, settings, fraction)
        lr *= min(1.0, (step + 1) / 50)
        loss, parts = density_loss(net, target, settings, generator, eps, curvature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step(lr)
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            metrics = {k: float(v.detach()) for k, v in parts.items()}
            metrics.update(loss=float(loss.detach()), eps=eps * net.half, levels=net.active_levels)
            progress(step + 1, steps, metrics)
    net.set_active_levels(net.config.levels)
    return {"steps": step + 1, "seconds": round(time.perf_counter() - started, 2),
            **{k: round(float(v), 6) for k, v in metrics.items()}}


# -- stage B: the photos ----------------------------------------------------------------------
def spherical_harmonics_4(dirs: Tensor) -> Tensor:  # [N, 3] -> [N, 16]
    from ..nerf.field import spherical_harmonics_4 as sh

    return sh(dirs)


class ColourHead(nn.Module):
    """Colour from the SDF's geometry features and the view direction (SH degree 4)."""

    def __init__(self, geo_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(geo_features + 16, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, geo: Tensor, dirs: Tensor) -> Tensor:  # [N, G], [N, 3] -> [N, 3]
        return torch.sigmoid(self.net(torch.cat([geo, spherical_harmonics_4(dirs)], -1)))


def neus_alpha(sdf: Tensor, inv_s: Tensor) -> Tensor:  # [R, S] normalised -> [R, S - 1]
    """NeuS's discrete opacity of each section between consecutive samples."""
    cdf = torch.sigmoid(sdf * inv_s)
    return ((cdf[:, :-1] - cdf[:, 1:]) / cdf[:, :-1].clamp_min(1e-5)).clamp(0.0, 1.0)


def _section_weights(alpha: Tensor) -> Tensor:  # [R, K] -> [R, K]: alpha times the transmittance before
    return alpha * torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-7], 1), 1)


def fit_to_photos(
    net: SDFNetwork,
    views,
    target: DensityTarget,
    settings: SDFSettings,
    progress: Callable[[int, int, dict], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    max_seconds: float = 0.0,
) -> dict:
    """Stage B (see the module's docstring) on ``views`` (:class:`..nerf.rays.Views`)."""
    from ..nerf.rays import composite_target
    from ..nerf.render import ray_box, sample_pdf

    generator = torch.Generator().manual_seed(settings.seed + 1)
    device = net.center.device
    head = ColourHead(settings.geo_features).to(device)
    log_s = nn.Parameter(torch.tensor(math.log(net.half / target.spacing), device=device))
    optimiser = _Optimiser(net, settings.lr * 0.1)
    optimiser.add(list(head.parameters()))
    optimiser.add([log_s])
    all_views = torch.arange(len(views.cameras))
    started = time.perf_counter()
    metrics: dict = {}
    steps, samples = settings.photo_steps, settings.photo_samples
    net.set_active_levels(net.config.levels)
    eps = net.cell()
    center = tuple(net.center.tolist())
    anchor_settings = dataclasses.replace(settings, batch=settings.batch // 4, regular_batch=0)
    warm = steps // 3
    step = 0
    for step, fraction in _steps(steps, started, max_seconds, check_cancelled):
        lr = settings.lr * 0.1 * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction))))
        origins, dirs, pixels, _ = views.sample(all_views, settings.photo_rays, generator)
        if views.has_alpha:
            background = torch.rand(len(origins), 3, generator=generator)
        else:
            background = torch.ones(len(origins), 3)
        truth = composite_target(pixels, background).to(device)
        origins, dirs, background = origins.to(device), dirs.to(device), background.to(device)
        t_in, t_out = ray_box(origins, dirs, center, (net.half,) * 3)
        t_in = t_in.clamp_min(1e-3)
        hit = t_out > t_in
        t_out = torch.where(hit, t_out, t_in + 1e-3)
        # uniform samples without gradients, then as many from the weights they give
        grid_t = t_in[:, None] + (t_out - t_in)[:, None] * (torch.arange(samples, device=device) + 0.5) / samples
        with torch.no_grad():
            y = net.normalise(origins[:, None, :] + grid_t[..., None] * dirs[:, None, :]).reshape(-1, 3)
            coarse = net.sdf(y).view(-1, samples)
            alpha = neus_alpha(coarse, log_s.detach().exp())
            weights = _section_weights(alpha)
            uniform = torch.rand(len(origins), samples, generator=generator).to(device)
            fine = sample_pdf(grid_t, torch.cat([weights, torch.zeros_like(weights[:, :1])], 1)[:, :-1] + 1e-3 / samples,
                              samples, uniform)
        t, _ = torch.sort(torch.cat([grid_t, fine], 1), 1)
        y = net.normalise(origins[:, None, :] + t[..., None] * dirs[:, None, :]).reshape(-1, 3)
        dirs_k = dirs.repeat_interleave(t.shape[1], 0)
        if step < warm:  # the colour head alone, on the geometry as it is
            with torch.no_grad():
                values, geo = net(y)
                w = _section_weights(neus_alpha(values.view(len(origins), -1), log_s.exp()))
            colour = head(geo, dirs_k).view(len(origins), -1, 3)[:, :-1]
            rgb = (w[..., None] * colour).sum(1) + (1 - w.sum(1, keepdim=True)) * background
            photo = (rgb - truth).abs().mean()
            loss = photo
            eikonal = curvature = bce = torch.zeros(())
        else:
            regular = net.normalise(target.near_surface(settings.regular_batch, 2.0 * target.spacing, generator))
            values, geo = net(torch.cat([y, stencil_points(regular, eps)]))
            k = len(y)
            _, gradient, laplacian = stencil_derivatives(values[k:], eps)
            w = _section_weights(neus_alpha(values[:k].view(len(origins), -1), log_s.exp()))  # [R, 2S - 1]
            colour = head(geo[:k], dirs_k).view(len(origins), -1, 3)[:, :-1]
            rgb = (w[..., None] * colour).sum(1) + (1 - w.sum(1, keepdim=True)) * background
            photo = (rgb - truth).abs().mean()
            eikonal = ((gradient.norm(dim=1) - 1.0) ** 2).mean()
            curvature = laplacian.abs().mean()
            anchor, parts_a = density_loss(net, target, anchor_settings, generator, eps)
            bce = parts_a["bce"]
            loss = photo + settings.eikonal * eikonal + settings.curvature * curvature + settings.anchor * anchor
        optimiser.zero_grad()
        head.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step(lr * min(1.0, (step + 1) / 20))
        if progress is not None and (step % 5 == 0 or step == steps - 1):
            metrics = {"photo": float(photo.detach()), "eikonal": float(eikonal.detach()),
                       "curvature": float(curvature.detach()), "bce": float(bce.detach()),
                       "sharpness": float(log_s.detach().exp()), "loss": float(loss.detach())}
            progress(step + 1, steps, metrics)
    return {"steps": step + 1 if steps else 0, "seconds": round(time.perf_counter() - started, 2),
            **{k: round(float(v), 6) for k, v in metrics.items()}}


# -- the mesh grid ----------------------------------------------------------------------------
def grid_sdf(net: SDFNetwork, grid, progress=None, check_cancelled=None) -> np.ndarray:  # [nx, ny, nz] world units
    """The SDF at every point of ``grid`` (:class:`.extract.Grid`)."""
    from .extract import sample_grid

    return sample_grid(net.sdf_world, grid, max_points=1 << 18, progress=progress, check_cancelled=check_cancelled)
