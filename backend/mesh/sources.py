# SPDX-License-Identifier: GPL-3.0-or-later
"""The densities a mesh is extracted from: a trained radiance field, or Gaussian splats.

Field (:class:`FieldSource`): the region sampled is the field's box (for a contracted,
unbounded scene, its inner cube: the contracted rest is not meshed) cut down to the
occupancy grid's occupied cells; only grid points in occupied cells are evaluated (the rest
are empty by the grid's own test). The default level comes from where the field turns
opaque: along each grid line, from both ends, the density at the first sample where the
transmittance from outside drops below one half, on lines meeting the surface head-on;
the 5th percentile of those (a low one, so that thin opaque parts are not punctured; a
field trained for a short time is soft and its surface densities are low, a well trained
one's high), halved (:data:`FIELD_LEVEL_FRACTION`): a trained field's density rises over a
few grid cells around the true surface (the photos blur it over about a pixel), and the
level set of the crossing density itself lies about a fifth of a cell inside it. On the
known scene of ``bench/mesh.py`` (two fields trained for 12 minutes) halving moved the
surface's mean offset from -0.12 % of the object's size to +0.02 %, and the baked texture
from 2.1 dB below the true mesh's to 1.6 dB. Vertex colours: a short
ray along ``-normal`` through the vertex (two spacings either side), volume-rendered with
the field's colour seen from that direction.

Splats (:class:`SplatSource`): the density is ``sum_i opacity_i exp(-d_i^2 / 2)`` (``d_i``
the Mahalanobis distance to Gaussian ``i``), accumulated on the grid only where it adds at least 0.01 (within three standard
deviations at most), over the box that ellipsoid fits in per axis (flat and faint Gaussians
cost few samples), Gaussians grouped by box size so each group is one vectorised step; each Gaussian's scales are widened to at least half a
grid spacing so that thin Gaussians are not missed between samples. The default level is
half the median density at the centres of the opaque Gaussians (overlapping Gaussians sum to
several times one's opacity, so a fixed level would sit outside the surface). The region is the Gaussians' centres between their 0.5 and 99.5 percentiles (stray
far-away Gaussians left out), with a margin; vertex colours are the kernel-weighted mean of
the Gaussians' base (degree-0) colours, interpolated from the grid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError

SPLAT_LEVEL_FRACTION = 0.5
FIELD_LEVEL_FRACTION = 0.5  # of the crossing density (see the module's docstring)
MIN_SCALE = 0.5  # grid spacings: the thinnest a Gaussian is drawn
CUTOFF = 0.01  # a Gaussian's contribution below this is left out
MAX_FOOTPRINT = 16  # voxels: half the side of the largest box a Gaussian is accumulated into
SH_C0 = 0.28209479177387814


def resolve_source(path: str) -> tuple[str, Path]:
    """``("field", folder)`` or ``("splats", ply)`` for what ``--field`` names; InputError otherwise."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist.", "Give a 'nerf' job folder, a 3DGS splats .ply or a 'splat' job folder.")
    if p.is_file():
        if p.name == "field.json":
            return "field", p.parent
        if p.suffix.lower() == ".ply":
            return "splats", p
        raise InputError(f"{p} is neither a trained field nor a splats .ply.",
                         "Give a 'nerf' job folder, a 3DGS splats .ply or a 'splat' job folder.")
    if (p / "field.json").is_file():
        return "field", p
    if (p / "splats.ply").is_file():
        return "splats", p / "splats.ply"
    raise InputError(f"{p} holds neither a trained field (field.json) nor splats (splats.ply).",
                     "Give the output folder of a 'nerf' or 'splat' job, or a 3DGS .ply file.")


# -- fields --------------------------------------------------------------------------------
class FieldSource:
    """A trained field's density and colour at world points (see the module's docstring)."""

    def __init__(self, folder: Path, device="cpu") -> None:
        import torch

        from ..nerf.field import load_field

        self.torch = torch
        self.field = load_field(folder, device)
        self.device = torch.device(device)
        self.frame = self.field.frame
        occ = self.field.occupancy
        self.bits = None if occ is None else occ.bits.view(-1).to(self.device)
        self.grid_resolution = 0 if occ is None else occ.resolution
        self.what = f"the field {folder}"

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The world box to sample: the field's box (inner cube when contracted) cut to the occupied cells."""
        torch = self.torch
        from ..nerf.render import unit_to_world

        u_lo, u_hi = (np.array([0.25] * 3), np.array([0.75] * 3)) if self.frame.contracted else (np.zeros(3), np.ones(3))
        if self.bits is not None and bool(self.bits.any()):
            g = self.grid_resolution
            cells = torch.nonzero(self.bits.cpu()).view(-1)
            ijk = torch.stack([cells // (g * g), (cells // g) % g, cells % g], -1).numpy()
            u_lo = np.maximum(u_lo, ijk.min(0) / g)
            u_hi = np.minimum(u_hi, (ijk.max(0) + 1) / g)
            if np.any(u_hi <= u_lo):  # occupied only outside the inner cube
                u_lo, u_hi = np.array([0.25] * 3), np.array([0.75] * 3)
        corners = torch.tensor(np.stack([u_lo, u_hi]), dtype=torch.float64)
        world = unit_to_world(corners, self.frame).numpy()
        return world.min(0), world.max(0)

    def default_level(self, grid, values: np.ndarray) -> float:
        """Half the density where lines through the grid turn opaque (see
        :func:`.extract.opacity_level` and the module's docstring); else half the density
        that makes one grid spacing half opaque."""
        from .extract import opacity_level

        return FIELD_LEVEL_FRACTION * (opacity_level(values, grid.spacing) or math.log(2.0) / grid.spacing)

    def density(self, points: np.ndarray) -> np.ndarray:  # [N, 3] world -> [N]
        torch = self.torch
        with torch.no_grad():
            p = torch.from_numpy(np.ascontiguousarray(points, np.float32)).to(self.device)
            u = self.frame.to_unit(p)
            keep = self.frame.inside(u)
            if self.bits is not None:
                g = self.grid_resolution
                ijk = (u.clamp(0.0, 1.0 - 1e-7) * g).long()
                keep &= self.bits[(ijk[:, 0] * g + ijk[:, 1]) * g + ijk[:, 2]]
            sigma = torch.zeros(len(p), device=self.device)
            if keep.any():
                sigma[keep] = self.field.model.density(u[keep]).float()
            return sigma.cpu().numpy()

    def colors(self, vertices: np.ndarray, normals: np.ndarray, spacing: float, chunk: int = 1 << 16) -> np.ndarray:
        """uint8 [V, 3]: the field seen along ``-normal`` on a short ray through each vertex."""
        torch = self.torch
        offsets = torch.linspace(2.0, -2.0, 9, dtype=torch.float32) * spacing  # outside to inside
        delta = float(offsets[0] - offsets[1])
        out = np.empty((len(vertices), 3), np.uint8)
        with torch.no_grad():
            for start in range(0, len(vertices), chunk):
                v = torch.from_numpy(np.ascontiguousarray(vertices[start:start + chunk], np.float32))
                n = torch.from_numpy(np.ascontiguousarray(normals[start:start + chunk], np.float32))
                points = (v[:, None, :] + n[:, None, :] * offsets[None, :, None]).reshape(-1, 3).to(self.device)
                dirs = (-n).repeat_interleave(len(offsets), 0).to(self.device)
                u = self.frame.to_unit(points)
                inside = self.frame.inside(u)
                sigma, rgb = self.field.model(u.clamp(0.0, 1.0), dirs)
                sigma = torch.where(inside, sigma.float(), torch.zeros_like(sigma, dtype=torch.float32))
                sigma, rgb = sigma.view(len(v), -1).cpu(), rgb.float().view(len(v), -1, 3).cpu()
                alpha = 1.0 - torch.exp(-sigma * delta)
                trans = torch.cumprod(torch.cat([torch.ones(len(v), 1), 1.0 - alpha[:, :-1] + 1e-10], 1), 1)
                weights = trans * alpha
                total = weights.sum(1, keepdim=True)
                color = (weights[..., None] * rgb).sum(1) / total.clamp_min(1e-8)
                color = torch.where(total > 1e-3, color, rgb[:, len(offsets) // 2])
                out[start:start + chunk] = (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return out


# -- splats --------------------------------------------------------------------------------
class SplatSource:
    """Gaussian splats as a density on a grid (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        from ..splat.ply import read_splats

        splats = read_splats(path)
        if len(splats) == 0:
            raise InputError(f"{path} holds no Gaussians.", "Give splats from a trained 'splat' job.")
        self.means = splats.means.astype(np.float64)
        q = splats.quats.astype(np.float64)
        self.quats = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        self.scales = np.exp(splats.log_scales.astype(np.float64))
        self.opacity = 1.0 / (1.0 + np.exp(-splats.logit_opacities.astype(np.float64)))
        self.rgb = np.clip(splats.sh[:, 0].astype(np.float64) * SH_C0 + 0.5, 0.0, 1.0)
        self.what = f"the splats {path}"

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.percentile(self.means, 0.5, axis=0)
        hi = np.percentile(self.means, 99.5, axis=0)
        margin = 0.05 * float((hi - lo).max()) + 3.0 * float(np.median(self.scales.max(1)))
        return lo - margin, hi + margin

    def default_level(self, grid, values: np.ndarray) -> float:
        """Half the median density at the centres of the (mostly) opaque Gaussians."""
        from scipy import ndimage

        pick = self.opacity >= 0.5 if np.count_nonzero(self.opacity >= 0.5) >= 10 else np.ones(len(self.means), bool)
        coords = ((self.means[pick] - grid.lo) / grid.spacing).T
        peak = ndimage.map_coordinates(values, coords, order=1, mode="constant", cval=0.0)
        peak = peak[peak > 0]
        return SPLAT_LEVEL_FRACTION * float(np.median(peak)) if len(peak) else SPLAT_LEVEL_FRACTION

    def rotations(self) -> np.ndarray:  # [N, 3, 3] from w x y z
        w, x, y, z = self.quats.T
        return np.stack([
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ], 1)

    def accumulate(self, grid, max_work: int = 1 << 22, progress=None, check_cancelled=None) -> tuple[np.ndarray, np.ndarray]:
        """The density [nx, ny, nz] and the weighted base colour sums [nx, ny, nz, 3] on ``grid``.

        Each Gaussian is drawn into the box its ellipsoid of contribution fits in (``m <
        2 ln(opacity / CUTOFF)``, at most three standard deviations), per axis, so flat and
        faint Gaussians cost few samples; Gaussians with the same box size are one step."""
        import torch

        shape = np.array(grid.shape)
        total = int(np.prod(shape))
        density = torch.zeros(total, dtype=torch.float32)
        color = torch.zeros(total, 3, dtype=torch.float32)
        scales = np.maximum(self.scales, MIN_SCALE * grid.spacing)
        rotations = self.rotations()
        reach = np.minimum(9.0, 2.0 * np.log(np.maximum(self.opacity, 1e-12) / CUTOFF))  # m below this counts
        # half extent of the ellipsoid m <= reach along each world axis: sqrt(reach * Sigma_ii)
        sigma_diag = np.einsum("nij,nj->ni", rotations ** 2, scales ** 2)
        radius = np.clip(np.ceil(np.sqrt(np.maximum(reach, 0.0)[:, None] * sigma_diag) / grid.spacing), 1,
                         MAX_FOOTPRINT).astype(np.int64)
        center = np.round((self.means - grid.lo) / grid.spacing).astype(np.int64)
        near = (reach > 0) & np.all((center + radius >= 0) & (center - radius < shape), axis=1)
        groups, group_of = np.unique(radius[near], axis=0, return_inverse=True)
        members = np.nonzero(near)[0]
        order = np.argsort(group_of.ravel(), kind="stable")
        bounds = np.searchsorted(group_of.ravel()[order], np.arange(len(groups) + 1))
        work_total = int(sum((bounds[g + 1] - bounds[g]) * np.prod(2 * groups[g] + 1) for g in range(len(groups)))) or 1
        work_done = 0
        means = self.means.astype(np.float32)
        inv_scales = (1.0 / scales).astype(np.float32)
        rotations = rotations.astype(np.float32)
        lo = grid.lo.astype(np.float32)
        for g, r in enumerate(groups):
            index = members[order[bounds[g]:bounds[g + 1]]]
            axes = [np.arange(-int(k), int(k) + 1) for k in r]
            offsets = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [K, 3]
            per_chunk = max(1, max_work // len(offsets))
            for start in range(0, len(index), per_chunk):
                if check_cancelled is not None:
                    check_cancelled()
                sel = index[start:start + per_chunk]
                ijk = center[sel][:, None, :] + offsets[None]  # [n, K, 3]
                valid = np.all((ijk >= 0) & (ijk < shape), axis=-1)
                d = lo + ijk.astype(np.float32) * np.float32(grid.spacing) - means[sel][:, None, :]  # [n, K, 3]
                local = np.einsum("nkj,nji->nki", d, rotations[sel]) * inv_scales[sel][:, None, :]  # R^T d / s
                m = np.einsum("nki,nki->nk", local, local)
                valid &= m < reach[sel][:, None]
                w = self.opacity[sel][:, None].astype(np.float32) * np.exp(-0.5 * m)
                flat = torch.from_numpy(((ijk[..., 0] * shape[1] + ijk[..., 1]) * shape[2] + ijk[..., 2])[valid])
                weight = torch.from_numpy(np.ascontiguousarray(w[valid], dtype=np.float32))
                density.index_add_(0, flat, weight)
                rgb = torch.from_numpy(np.repeat(self.rgb[sel].astype(np.float32), valid.sum(1), axis=0))
                color.index_add_(0, flat, weight[:, None] * rgb)
                work_done += len(sel) * len(offsets)
                if progress is not None:
                    progress(work_done, work_total)
        return density.view(*grid.shape).numpy(), color.view(*grid.shape, 3).numpy()

    @staticmethod
    def colors(vertices: np.ndarray, density: np.ndarray, color_sums: np.ndarray, grid) -> np.ndarray:
        """uint8 [V, 3]: the weighted mean colour, interpolated (trilinear) at the vertices."""
        from scipy import ndimage

        coords = ((vertices.astype(np.float64) - grid.lo) / grid.spacing).T
        weight = ndimage.map_coordinates(density, coords, order=1, mode="nearest")
        rgb = np.stack([ndimage.map_coordinates(color_sums[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
        rgb = rgb / np.maximum(weight, 1e-8)[:, None]
        return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
