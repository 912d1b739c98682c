# SPDX-License-Identifier: GPL-3.0-or-later
"""Training 3D Gaussian splats from posed photos (Kerbl et al. 2023).

- Initialisation from the SfM points (colour from the points, isotropic scale from the
  distance to the 3 nearest neighbours, opacity 0.1), or, without points, random points
  in the cameras' bounds; with photos that have an alpha channel, only those that every
  view sees inside the object's silhouette are kept.
- Spherical harmonics raised one degree at a time; L1 + D-SSIM loss (0.8 / 0.2); Adam
  with the reference learning rates, the position rate decaying exponentially.
- Adaptive density control: view-space positional gradients accumulated over visible
  views; small Gaussians with large gradients cloned, large ones split in two (scales /
  1.6); transparent ones pruned, very large ones too after the first opacity reset; opacities
  reset to 0.01 every few thousand iterations. ``max_gaussians`` caps the growth.
- Schedules run on *progress*, the larger of the iteration fraction and the time fraction
  (``max_seconds``), so a time-limited run still decays its learning rate, stops
  densifying half-way and ends converged rather than cut off.

The arrays are the optimiser's raw values (log scales, logit opacities, SH coefficients),
as the 3DGS ``.ply`` stores them (:mod:`.ply`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .ply import Splats
from .rasterize import rasterize, resolve_backend
from .sh import num_coeffs, rgb_to_sh

log = logging.getLogger("recon.splat")

BACKGROUNDS = ("auto", "white", "black", "random")  # auto: white behind photos with alpha, else black
PARAM_NAMES = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")


@dataclass
class TrainSettings:
    """How to train; the job's ``Config`` and presets fill it."""

    iterations: int = 7000
    max_seconds: float = 0.0  # 0: no time limit
    sh_degree: int = 3
    sh_degree_interval: float = 0.1  # progress between raising the SH degree by one
    max_gaussians: int = 300_000
    background: str = "auto"
    ssim_weight: float = 0.2
    # learning rates (3DGS); the position rate is multiplied by the scene scale
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_quats: float = 1e-3
    lr_scales: float = 5e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    # adaptive density control
    refine_start: int = 500
    refine_stop: float = 0.5  # progress after which the set of Gaussians stays fixed
    refine_every: int = 100
    reset_opacity_every: int = 3000
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01  # x scene scale: below, clone; above, split
    prune_opacity: float = 0.005
    prune_scale3d: float = 0.1  # x scene scale, after the first opacity reset
    # initialisation
    random_points: int = 50_000
    init_opacity: float = 0.1
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"  # auto: CUDA when gsplat can rasterize there, else the CPU


@dataclass
class Views:
    """Posed photos, ready to train on. Images are float32 ``[H, W, 3]`` in ``[0, 1]`` (alpha
    ``[H, W, 1]`` when the photo has one); all at the training resolution."""

    names: list[str]
    images: list[Tensor]
    alphas: list[Tensor | None]
    Ks: Tensor  # [V, 3, 3], scaled to the training resolution
    w2c: Tensor  # [V, 4, 4] OpenCV
    widths: list[int]
    heights: list[int]
    train: list[int] = field(default_factory=list)  # view indices trained on
    held_out: list[int] = field(default_factory=list)  # view indices for PSNR

    @property
    def has_alpha(self) -> bool:
        return any(a is not None for a in self.alphas)

    def camera_centers(self) -> np.ndarray:
        w2c = self.w2c.numpy().astype(np.float64)
        return -np.einsum("vji,vj->vi", w2c[:, :3, :3], w2c[:, :3, 3])


# -- loading photos ------------------------------------------------------------------------------
def available_memory() -> int:
    """Bytes of memory the system can still give (Linux MemAvailable), or a large number."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_views(scene, resolution_scale: float = 1.0, hold_out_every: int = 10,
               check_cancelled: Callable[[], None] = lambda: None, memory_budget: float = 0.5) -> Views:
    """The scene's photos at ``resolution_scale`` with matching intrinsics; InputError for
    missing photos, photos whose size does not match their camera, unsupported lenses, or
    photos too large for memory at this scale."""
    from PIL import Image

    cams = scene.cameras
    names = [str(n) for n in cams["names"]]
    if not names:
        raise InputError(f"{scene.path} has no cameras.", "Give a reconstruction with solved cameras.")
    missing = scene.missing_photos
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(
            f"{len(missing)} of {len(names)} camera(s) in {scene.path} have no photo: {listed}.",
            "Splats are trained from the photos: keep them where the reconstruction says (an 'images' folder "
            "beside a COLMAP model, the file_path of a transforms.json), or re-run Solve Cameras on the folder.",
        )
    models = [str(m).upper() for m in cams["model"]]
    unsupported = sorted({m for m in models if m not in UNDISTORTABLE})
    if unsupported:
        raise InputError(f"Lens model(s) {', '.join(unsupported)} cannot be trained on here.",
                         "Solve the cameras with a pinhole, simple_radial or opencv model.")
    widths = [int(w) for w in cams["width"]]
    heights = [int(h) for h in cams["height"]]
    needed = sum(4 * 4 * w * h * resolution_scale ** 2 for w, h in zip(widths, heights, strict=True))
    available = available_memory()
    if needed > memory_budget * available:
        raise InputError(
            f"The {len(names)} photos need {needed / 2**30:.1f} GB at resolution scale {resolution_scale:g}; "
            f"{available / 2**30:.1f} GB of memory is available.",
            f"Lower 'resolution_scale' (to {resolution_scale * math.sqrt(memory_budget * available / needed) * 0.9:.2f} "
            "or less), or use fewer photos.",
        )
    images, alphas, Ks = [], [], []
    mismatched = []
    out_w, out_h = [], []
    for i, path in enumerate(cams["paths"]):
        check_cancelled()
        with Image.open(path) as photo:
            photo.load()
            size = photo.size
            w, h = widths[i], heights[i]
            if size != (w, h):
                # a photo stored at another resolution of the same frame (images_2/, say) is fine
                if abs(size[0] * h - size[1] * w) > max(size[0], w):
                    mismatched.append(f"{names[i]} is {size[0]}x{size[1]}, its camera {w}x{h}")
                    continue
            tw, th = _scaled_size(w, h, resolution_scale)
            has_alpha = photo.mode in ("RGBA", "LA") or (photo.mode == "P" and "transparency" in photo.info)
            photo = photo.convert("RGBA" if has_alpha else "RGB")
            if photo.size != (tw, th):
                photo = photo.resize((tw, th), Image.Resampling.LANCZOS if tw < size[0] else Image.Resampling.BICUBIC)
            array = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0)
        K = torch.tensor(cams["K"][i], dtype=torch.float32).clone()
        K[0] *= tw / w
        K[1] *= th / h
        distortion = np.asarray(cams["distortion"][i], dtype=np.float64)
        distortion = distortion[np.isfinite(distortion)]
        if np.any(distortion != 0):
            array = undistort(array, K, models[i], distortion)
        images.append(array[..., :3].contiguous())
        alphas.append(array[..., 3:].contiguous() if has_alpha else None)
        Ks.append(K)
        out_w.append(tw)
        out_h.append(th)
    if mismatched:
        listed = "; ".join(mismatched[:3]) + (f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        raise InputError(f"{len(mismatched)} photo(s) do not match their camera's size: {listed}.",
                         "Use the photos the cameras were solved from (or solve the cameras again).")
    order = list(range(len(names)))
    held_out = [i for i in order if hold_out_every > 0 and len(names) >= 2 and i % hold_out_every == 0]
    train = [i for i in order if i not in held_out]
    return Views(names, images, alphas, torch.stack(Ks), torch.tensor(np.asarray(cams["w2c"]), dtype=torch.float32),
                 out_w, out_h, train, held_out)


UNDISTORTABLE = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


def undistort(image: Tensor, K: Tensor, model: str, distortion: np.ndarray) -> Tensor:
    """The photo as a pinhole camera with intrinsics ``K`` sees it: every pixel looked up
    (bilinear) where COLMAP's lens model puts it. ``image [H, W, C]``."""
    h, w = image.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    u, v = (xs - cx) / fx, (ys - cy) / fy
    k1, k2, p1, p2 = 0.0, 0.0, 0.0, 0.0
    if model in ("SIMPLE_RADIAL", "RADIAL"):
        k1 = float(distortion[0])
        k2 = float(distortion[1]) if model == "RADIAL" else 0.0
    elif model == "OPENCV":
        k1, k2, p1, p2 = (float(d) for d in distortion[:4])
    r2 = u * u + v * v
    radial = k1 * r2 + k2 * r2 * r2
    ud = u + u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v + v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
    grid = torch.stack([(ud * fx + cx) / w * 2 - 1, (vd * fy + cy) / h * 2 - 1], -1).float()[None]
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).contiguous()


# -- initialisation -------------------------------------------------------------------------------
def scene_scale(views: Views) -> float:
    """3DGS's camera extent: 1.1 x the largest distance of a camera from their mean."""
    centers = views.camera_centers()
    radius = float(np.linalg.norm(centers - centers.mean(0), axis=1).max()) if len(centers) > 1 else 1.0
    return 1.1 * max(radius, 1e-6)


def look_at_center(views: Views) -> np.ndarray:
    """The point nearest to every camera's optical axis (least squares)."""
    centers = views.camera_centers()
    dirs = views.w2c.numpy().astype(np.float64)[:, 2, :3]  # each camera's +z in world
    eye = np.eye(3)
    a = sum(eye - np.outer(d, d) for d in dirs)
    b = sum((eye - np.outer(d, d)) @ c for d, c in zip(dirs, centers, strict=True))
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return centers.mean(0)


def _project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        px = (cam[:, :2] / z[:, None]) @ K[:2, :2].T + K[:2, 2]
    return px, z


def _in_silhouettes(points: np.ndarray, views: Views) -> np.ndarray:
    """Points that every photo with alpha sees on its object (alpha > 0.5) or not at all, and
    at least a third of them see."""
    keep = np.ones(len(points), bool)
    seen = np.zeros(len(points), np.int64)
    for i, alpha in enumerate(views.alphas):
        if alpha is None:
            continue
        px, z = _project(points, views.Ks[i].numpy().astype(np.float64), views.w2c[i].numpy().astype(np.float64))
        h, w = views.heights[i], views.widths[i]
        inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        ix = np.clip(np.nan_to_num(px[:, 0]), 0, w - 1).astype(np.int64)
        iy = np.clip(np.nan_to_num(px[:, 1]), 0, h - 1).astype(np.int64)
        keep &= ~inside | (alpha.numpy()[iy, ix, 0] > 0.5)
        seen += inside
    return keep & (3 * seen >= sum(a is not None for a in views.alphas))


def _photo_colors(points: np.ndarray, views: Views) -> np.ndarray:
    """The mean colour of the photos' pixels the points project to (occlusion ignored)."""
    total, seen = np.zeros((len(points), 3)), np.zeros(len(points))
    for i, image in enumerate(views.images):
        px, z = _project(points, views.Ks[i].numpy().astype(np.float64), views.w2c[i].numpy().astype(np.float64))
        h, w = views.heights[i], views.widths[i]
        inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        ix, iy = px[inside, 0].astype(np.int64), px[inside, 1].astype(np.int64)
        total[inside] += image.numpy()[iy, ix]
        seen += inside
    return np.where(seen[:, None] > 0, total / np.maximum(seen, 1)[:, None], 0.5)


def random_points(views: Views, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random points in the cameras' bounds (a cube around the point they look at,
    half the median camera distance across) and their colours in the photos. With alpha,
    only points inside every silhouette that sees them (the box first shrunk to a probe's)."""
    center = look_at_center(views)
    half = 0.5 * float(np.median(np.linalg.norm(views.camera_centers() - center, axis=1)))
    lo, hi = center - half, center + half
    if views.has_alpha:
        probe = rng.uniform(lo, hi, size=(20_000, 3))
        inside = probe[_in_silhouettes(probe, views)]
        if len(inside) >= 50:
            margin = (hi - lo) / 20_000 ** (1 / 3)
            lo, hi = np.maximum(lo, inside.min(0) - margin), np.minimum(hi, inside.max(0) + margin)
    parts, total = [], 0
    for _ in range(20 if views.has_alpha else 1):
        candidates = rng.uniform(lo, hi, size=(max(count, 10_000), 3))
        if views.has_alpha:
            candidates = candidates[_in_silhouettes(candidates, views)]
        parts.append(candidates)
        total += len(candidates)
        if total >= count:
            break
    points = np.concatenate(parts)[:count]
    if len(points) < min(count, 1000):
        log.warning("the photos' silhouettes left %d random points; sampling the whole box instead", len(points))
        points = rng.uniform(lo, hi, size=(count, 3))
    return points, _photo_colors(points, views)


def initial_splats(xyz: np.ndarray, rgb: np.ndarray, sh_degree: int, opacity: float) -> Splats:
    """Isotropic Gaussians at ``xyz`` (colour ``rgb`` in [0, 1]), each as wide as the mean
    distance to its 3 nearest neighbours."""
    from scipy.spatial import cKDTree

    n = len(xyz)
    k = min(4, n)
    if k > 1:
        dist, _ = cKDTree(xyz).query(xyz, k=k)
        mean_sq = np.mean(dist[:, 1:] ** 2, axis=1)
    else:
        mean_sq = np.full(n, 1e-4)
    scale = np.sqrt(np.clip(mean_sq, 1e-7, None))
    sh = np.zeros((n, num_coeffs(sh_degree), 3), np.float32)
    sh[:, 0] = rgb_to_sh(torch.as_tensor(rgb, dtype=torch.float32)).numpy()
    return Splats(
        means=xyz.astype(np.float32),
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        log_scales=np.repeat(np.log(scale)[:, None], 3, 1).astype(np.float32),
        logit_opacities=np.full(n, math.log(opacity / (1 - opacity)), np.float32),
        sh=sh,
    )


# -- losses ----------------------------------------------------------------------------------------
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


_WINDOW = _gaussian_window()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of two images ``[H, W, 3]`` (11 x 11 Gaussian window, sigma 1.5, zero
    padding, as the 3DGS reference)."""
    x = torch.cat([a, b, a * a, b * b, a * b], -1).permute(2, 0, 1)[None]  # [1, 15, H, W]
    c = x.shape[1]
    w = _WINDOW.to(x)
    x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, 5), groups=c)
    x = F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(5, 0), groups=c)
    mu_a, mu_b, aa, bb, ab = x[0].split(3)
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.mean()


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float(torch.mean((a.clamp(0, 1) - b) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


# -- the trainer ---------------------------------------------------------------------------------
def choose_device(device: str, backend: str) -> torch.device:
    """``auto``: CUDA when it is there and the rasterizer can use it (gsplat), else the CPU."""
    from .rasterize import gsplat_available

    if device == "cuda" or (device == "auto" and backend in ("auto", "gsplat") and gsplat_available()):
        if not torch.cuda.is_available():
            raise InputError("Device 'cuda' was asked for, but this backend has no CUDA device.", "Choose 'auto'.")
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run torch's own operators on ``n`` threads for a while. Training uses 1: its torch
    work is many small operators, and OpenMP's spinning threads made a step 5 to 10 times
    slower on a 2-core machine shared with other busy processes (the rasterizer kernels
    run on their own threads, see ``_kernels.run_chunks``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Trainer:
    """The Gaussians, their optimiser and the density control, one view per step."""

    def __init__(self, views: Views, settings: TrainSettings, splats: Splats) -> None:
        if settings.background not in BACKGROUNDS:
            raise InputError(f"Background must be one of {', '.join(BACKGROUNDS)}, got {settings.background!r}.")
        if not views.train:
            raise InputError("No views are left to train on.", "Lower 'hold_out_every' or give more photos.")
        self.views = views
        if settings.background == "auto":
            settings = replace(settings, background="white" if views.has_alpha else "black")
        self.settings = settings
        self.device = choose_device(settings.device, settings.backend)
        try:
            self.backend = resolve_backend(settings.backend, self.device)
        except ValueError as exc:
            raise InputError(f"Rasterizer '{settings.backend}' cannot run here: {exc}.", "Choose 'auto'.") from exc
        self._w2c = views.w2c.to(self.device)
        self._Ks = views.Ks.to(self.device)
        self._images: dict[int, tuple[Tensor, Tensor | None]] = {}
        self.scale = scene_scale(views)
        self.step = 0
        self.seconds = 0.0  # training time so far (not counting evaluations and previews)
        self.rng = torch.Generator().manual_seed(settings.seed)
        self._queue: list[int] = []
        self.last_reset = -1
        self._make_params(splats)
        self._reset_stats()

    # parameters and optimiser
    def _make_params(self, splats: Splats) -> None:
        s = self.settings
        k = num_coeffs(s.sh_degree)
        sh = torch.as_tensor(splats.sh, dtype=torch.float32)
        if sh.shape[1] < k:
            sh = torch.cat([sh, torch.zeros(len(sh), k - sh.shape[1], 3)], 1)
        values = {
            "means": torch.as_tensor(splats.means, dtype=torch.float32),
            "quats": torch.as_tensor(splats.quats, dtype=torch.float32),
            "log_scales": torch.as_tensor(splats.log_scales, dtype=torch.float32),
            "logit_opacities": torch.as_tensor(splats.logit_opacities, dtype=torch.float32),
            "sh0": sh[:, :1].contiguous(),
            "shN": sh[:, 1:k].contiguous(),
        }
        self.params = {name: v.to(self.device).clone().requires_grad_(True) for name, v in values.items()}
        lrs = {"means": s.lr_means * self.scale, "quats": s.lr_quats, "log_scales": s.lr_scales,
               "logit_opacities": s.lr_opacities, "sh0": s.lr_sh0, "shN": s.lr_shN}
        self.optimizer = torch.optim.Adam(
            [{"params": [self.params[n]], "lr": lrs[n], "name": n} for n in PARAM_NAMES],
            eps=1e-15, fused=True,
        )

    def __len__(self) -> int:
        return len(self.params["means"])

    def progress(self) -> float:
        """The larger of the iteration fraction and the time fraction."""
        s = self.settings
        p = self.step / max(s.iterations, 1)
        if s.max_seconds > 0:
            p = max(p, self.seconds / s.max_seconds)
        return min(p, 1.0)

    def done(self) -> bool:
        return self.progress() >= 1.0

    def active_sh_degree(self) -> int:
        s = self.settings
        return min(s.sh_degree, int(self.progress() / max(s.sh_degree_interval, 1e-9)))

    # rendering
    def render(self, view: int, background: Tensor, sh_degree: int | None = None) -> tuple[Tensor, Tensor, dict]:
        p = self.params
        degree = self.active_sh_degree() if sh_degree is None else sh_degree
        coeffs = torch.cat([p["sh0"], p["shN"][:, : num_coeffs(degree) - 1]], 1)
        rgb, alpha, meta = rasterize(
            p["means"], p["quats"], torch.exp(p["log_scales"]), torch.sigmoid(p["logit_opacities"]), coeffs,
            self._w2c[view : view + 1], self._Ks[view : view + 1], self.views.widths[view],
            self.views.heights[view], sh_degree=degree, backgrounds=background[None], backend=self.backend,
        )
        return rgb[0], alpha[0], meta

    def target(self, view: int, background: Tensor) -> Tensor:
        if view not in self._images:  # photos move to the device as they are first used
            alpha = self.views.alphas[view]
            self._images[view] = (self.views.images[view].to(self.device),
                                  None if alpha is None else alpha.to(self.device))
        image, alpha = self._images[view]
        return image if alpha is None else image * alpha + background * (1 - alpha)

    def eval_background(self) -> Tensor:
        value = 0.0 if self.settings.background == "black" else 1.0
        return torch.full((3,), value, device=self.device)

    def _next_view(self) -> int:
        if not self._queue:
            order = torch.randperm(len(self.views.train), generator=self.rng).tolist()
            self._queue = [self.views.train[i] for i in order]
        return self._queue.pop()

    # one optimisation step
    def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        s = self.settings
        view = self._next_view()
        if s.background == "random":
            background = torch.rand(3, generator=self.rng).to(self.device)
        else:
            background = self.eval_background()
        rgb, _, meta = self.render(view, background)
        meta["means2d"].retain_grad()
        gt = self.target(view, background)
        l1 = (rgb - gt).abs().mean()
        loss = (1 - s.ssim_weight) * l1 + s.ssim_weight * (1 - ssim(rgb, gt)) if s.ssim_weight > 0 else l1
        loss.backward()
        self._update_lr()
        self._accumulate(meta)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._refine()
        self.seconds += time.perf_counter() - started
        return {"loss": float(loss.detach()), "l1": float(l1.detach())}

    def _update_lr(self) -> None:
        s = self.settings
        p = self.progress()
        lr = s.lr_means * self.scale * (s.lr_means_final / s.lr_means) ** p
        for group in self.optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = lr

    # adaptive density control
    def _reset_stats(self) -> None:
        n = len(self)
        self.grad2d = torch.zeros(n, device=self.device)
        self.count = torch.zeros(n, device=self.device)

    def _accumulate(self, meta: dict) -> None:
        if self.progress() >= self.settings.refine_stop:
            return
        grad = meta["means2d"].grad
        if grad is None:
            return
        radii = meta["radii"][0]
        visible = (radii > 0).all(-1) if radii.dim() == 2 else radii > 0  # gsplat < 1.5: [C, N]
        g = grad[0].clone()
        g[:, 0] *= meta["width"] / 2.0
        g[:, 1] *= meta["height"] / 2.0
        self.grad2d[visible] += g[visible].norm(dim=-1)
        self.count[visible] += 1

    def _refine(self) -> None:
        s = self.settings
        step = self.step
        if self.progress() >= s.refine_stop:
            return
        if step > s.refine_start and step % s.refine_every == 0:
            self._grow_and_prune()
        if step > 0 and step % s.reset_opacity_every == 0:
            self._reset_opacity()

    @torch.no_grad()
    def _grow_and_prune(self) -> None:
        s = self.settings
        p = self.params
        n = len(self)
        avg = self.grad2d / self.count.clamp_min(1)
        high = avg > s.grow_grad2d
        max_scale = torch.exp(p["log_scales"]).amax(-1)
        small = max_scale <= s.grow_scale3d * self.scale
        room = max(s.max_gaussians - n, 0)
        candidates = torch.nonzero(high).squeeze(1)
        if len(candidates) > room:  # the cap: grow where the gradient is largest
            candidates = candidates[torch.argsort(avg[candidates], descending=True)[:room]]
        clone = torch.zeros(n, dtype=torch.bool, device=self.device)
        split = torch.zeros(n, dtype=torch.bool, device=self.device)
        clone[candidates] = small[candidates]
        split[candidates] = ~small[candidates]
        new = {name: [] for name in PARAM_NAMES}
        idx = torch.nonzero(clone).squeeze(1)
        for name in PARAM_NAMES:
            new[name].append(p[name][idx])
        idx = torch.nonzero(split).squeeze(1)
        if len(idx):
            from .rasterize import quat_to_rotmat

            scales = torch.exp(p["log_scales"][idx])
            rot = quat_to_rotmat(p["quats"][idx])
            samples = torch.randn(2, len(idx), 3, generator=self.rng).to(self.device) * scales
            offsets = torch.einsum("nij,snj->sni", rot, samples)
            for k in range(2):
                new["means"].append(p["means"][idx] + offsets[k])
                new["log_scales"].append(p["log_scales"][idx] - math.log(1.6))
                for name in ("quats", "logit_opacities", "sh0", "shN"):
                    new[name].append(p[name][idx])
        prune = split | (torch.sigmoid(p["logit_opacities"]) < s.prune_opacity)
        if self.last_reset >= 0:
            prune |= max_scale > s.prune_scale3d * self.scale
        keep = torch.nonzero(~prune).squeeze(1)
        self._replace(keep, {name: torch.cat(parts) for name, parts in new.items()})
        self._reset_stats()

    @torch.no_grad()
    def _reset_opacity(self) -> None:
        limit = math.log(2 * self.settings.prune_opacity / (1 - 2 * self.settings.prune_opacity))
        opac = self.params["logit_opacities"]
        opac.clamp_(max=limit)
        state = self.optimizer.state.get(opac)
        if state:
            state["exp_avg"].zero_()
            state["exp_avg_sq"].zero_()
        self.last_reset = self.step

    @torch.no_grad()
    def _replace(self, keep: Tensor, extra: dict[str, Tensor]) -> None:
        """Keep rows ``keep`` of every parameter and append ``extra`` (zero Adam moments)."""
        for group in self.optimizer.param_groups:
            name = group["name"]
            old = group["params"][0]
            value = torch.cat([old.detach()[keep], extra[name]]).contiguous().requires_grad_(True)
            state = self.optimizer.state.pop(old, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    pad = torch.zeros((len(extra[name]), *state[key].shape[1:]), dtype=state[key].dtype,
                                      device=self.device)
                    state[key] = torch.cat([state[key][keep], pad]).contiguous()
                self.optimizer.state[value] = state
            group["params"][0] = value
            self.params[name] = value

    # evaluation, export, checkpoints
    @torch.no_grad()
    def evaluate(self, views: list[int] | None = None) -> dict[str, float]:
        """Mean PSNR (and SSIM) on ``views`` (default: the held-out ones, else the training ones)."""
        views = views if views is not None else (self.views.held_out or self.views.train)
        background = self.eval_background()
        psnrs, ssims = [], []
        for v in views:
            rgb, _, _ = self.render(v, background)
            gt = self.target(v, background)
            psnrs.append(psnr(rgb, gt))
            ssims.append(float(ssim(rgb.clamp(0, 1), gt)))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "views": len(views)}

    @torch.no_grad()
    def preview_png(self, view: int | None = None) -> bytes:
        from PIL import Image

        view = view if view is not None else (self.views.held_out or self.views.train)[0]
        rgb, _, _ = self.render(view, self.eval_background())
        buffer = io.BytesIO()
        Image.fromarray((rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    def splats(self) -> Splats:
        p = {name: t.detach().cpu() for name, t in self.params.items()}
        degree = self.settings.sh_degree
        return Splats(p["means"].numpy().copy(), p["quats"].numpy().copy(), p["log_scales"].numpy().copy(),
                      p["logit_opacities"].numpy().copy(),
                      torch.cat([p["sh0"], p["shN"][:, : num_coeffs(degree) - 1]], 1).numpy().copy())

    def state_dict(self) -> dict:
        return {
            "format": "recon-splat-checkpoint-1",
            "step": self.step, "seconds": self.seconds, "last_reset": self.last_reset,
            "settings": asdict(self.settings), "views": self.views.names,
            "params": {name: t.detach().cpu().clone() for name, t in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "grad2d": self.grad2d.cpu().clone(), "count": self.count.cpu().clone(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        p = state["params"]
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        self._make_params(Splats(p["means"].numpy(), p["quats"].numpy(), p["log_scales"].numpy(),
                                 p["logit_opacities"].numpy(), sh.numpy()))
        if p["shN"].shape[1] == self.params["shN"].shape[1]:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.seconds, self.last_reset = state["step"], state["seconds"], state["last_reset"]
        self.grad2d, self.count = state["grad2d"].to(self.device), state["count"].to(self.device)
        self.rng.set_state(state["rng"])


def save_checkpoint(path: str | os.PathLike, trainer: Trainer) -> None:
    """``torch.save`` of the trainer's state, written atomically."""
    from ..protocol import write_bytes_atomic

    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint {path} does not exist.", "Give the checkpoint.pt of an earlier splat job.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise InputError(f"{path} is not a readable checkpoint: {exc}", "Give the checkpoint.pt of a splat job.") from exc
    if not isinstance(state, dict) or state.get("format") != "recon-splat-checkpoint-1":
        raise InputError(f"{path} is not a Recon splat checkpoint.", "Give the checkpoint.pt of a splat job.")
    return state
