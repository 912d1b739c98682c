# SPDX-License-Identifier: GPL-3.0-or-later
"""Posed photos as training data, and camera rays.

Photos are read upright (EXIF orientation), scaled to ``resolution_scale`` of their
camera's size (area average, on premultiplied colour) and kept as uint8 premultiplied RGB
plus alpha (255 without an alpha channel), all views in one ``[P, 4]`` array. A pixel's
target colour over a background ``b`` is ``rgb_premultiplied + (1 - alpha) b``.

Rays go through pixel centres in COLMAP's convention (the image spans ``[0, W] x [0, H]``);
lens distortion (COLMAP's SIMPLE_RADIAL, RADIAL, OPENCV, OPENCV_FISHEYE) is removed from
each ray's direction, not from the photo. Directions are unit vectors in the world frame,
so ``t`` along a ray is a distance in scene units.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..sfm.scene import Scene

RADIAL_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
SUPPORTED_MODELS = (*RADIAL_MODELS, "OPENCV_FISHEYE")


@dataclass
class Cameras:
    """Cameras to cast rays from: ``Ks [N, 3, 3]``, ``c2w [N, 4, 4]`` (OpenCV axes), sizes,
    lens models and distortion coefficients (COLMAP's order)."""

    names: list[str]
    Ks: Tensor  # [N, 3, 3] float64
    c2w: Tensor  # [N, 4, 4] float64
    widths: list[int]
    heights: list[int]
    models: list[str]
    distortion: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def w2c(self) -> Tensor:
        return torch.linalg.inv(self.c2w)

    def centers(self) -> np.ndarray:  # [N, 3]
        return self.c2w[:, :3, 3].numpy()

    def rays(self, view: int, pixel_xy: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Origins and unit directions ``[M, 3]`` (float32) of view ``view``'s pixels
        ``pixel_xy [M, 2]`` (pixel coordinates; default every pixel centre, row-major)."""
        if pixel_xy is None:
            pixel_xy = pixel_grid(self.widths[view], self.heights[view])
        return camera_rays(self.Ks[view], self.c2w[view], pixel_xy, self.models[view], self.distortion[view])

    def rays_batch(self, views: Tensor, pixel_xy: Tensor) -> tuple[Tensor, Tensor]:
        """Rays of pixels ``pixel_xy [M, 2]`` of views ``views [M]`` (pinhole cameras in one
        batch, distorted ones per view)."""
        distorted = [i for i in range(len(self)) if len(self.distortion[i]) and np.any(self.distortion[i] != 0)]
        K = self.Ks[views]
        xy = (pixel_xy.double() - K[:, :2, 2]) / torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)
        xy[:, 0] -= K[:, 0, 1] / K[:, 0, 0] * xy[:, 1]
        for v in distorted:
            mask = views == v
            if mask.any():
                xy[mask] = undistort(xy[mask], self.models[v], self.distortion[v])
        c2w = self.c2w[views]
        dirs = torch.einsum("mij,mj->mi", c2w[:, :3, :3], torch.cat([xy, torch.ones_like(xy[:, :1])], -1))
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        return c2w[:, :3, 3].float().contiguous(), dirs.float().contiguous()

    def resized(self, width: int | None, height: int | None) -> Cameras:
        """The same cameras rendering ``width x height`` images (one of them may be None:
        the aspect ratio is kept); intrinsics scaled, distortion unchanged."""
        Ks, widths, heights = self.Ks.clone(), [], []
        for i in range(len(self)):
            w0, h0 = self.widths[i], self.heights[i]
            w = width or max(1, round(w0 * (height / h0)))
            h = height or max(1, round(h0 * (w / w0)))
            Ks[i, 0] *= w / w0
            Ks[i, 1] *= h / h0
            widths.append(int(w))
            heights.append(int(h))
        return Cameras(list(self.names), Ks, self.c2w.clone(), widths, heights, list(self.models),
                       list(self.distortion))


def cameras_from_scene(scene: Scene) -> Cameras:
    cams = scene.cameras
    n = len(cams["names"])
    if n == 0:
        raise InputError(f"{scene.path} has no cameras.", "Give a reconstruction with at least one camera.")
    models = [str(m).upper() for m in cams["model"]]
    unsupported = sorted({m for m in models if m not in SUPPORTED_MODELS})
    if unsupported:
        raise InputError(f"{scene.path}: lens model(s) {', '.join(unsupported)} are not supported for radiance fields.",
                         f"Solve the cameras with one of: {', '.join(m.lower() for m in SUPPORTED_MODELS)}.")
    distortion = []
    for row in np.asarray(cams["distortion"], np.float64).reshape(n, -1):
        distortion.append(row[np.isfinite(row)])
    w2c = torch.as_tensor(np.asarray(cams["w2c"], np.float64))
    return Cameras([str(v) for v in cams["names"]], torch.as_tensor(np.asarray(cams["K"], np.float64)),
                   torch.linalg.inv(w2c), [int(v) for v in cams["width"]], [int(v) for v in cams["height"]],
                   models, distortion)


def pixel_grid(width: int, height: int) -> Tensor:  # [H * W, 2] pixel centres, row-major
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def distort(xy: Tensor, model: str, k: np.ndarray) -> Tensor:  # [M, 2] normalised -> distorted normalised
    """COLMAP's lens models on normalised image coordinates (``OPENCV_FISHEYE``: of ``tan(theta)``)."""
    x, y = xy[:, 0], xy[:, 1]
    c = [float(v) for v in k] + [0.0] * 8
    if model == "OPENCV_FISHEYE":
        r = torch.sqrt(x * x + y * y)
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + c[0] * t2 + c[1] * t2 ** 2 + c[2] * t2 ** 3 + c[3] * t2 ** 4)
        scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
        return xy * scale[:, None]
    k1 = k2 = p1 = p2 = k3 = k4 = k5 = k6 = 0.0
    if model == "SIMPLE_RADIAL":
        k1 = c[0]
    elif model == "RADIAL":
        k1, k2 = c[0], c[1]
    elif model in ("OPENCV", "FULL_OPENCV"):
        k1, k2, p1, p2 = c[:4]
        if model == "FULL_OPENCV":
            k3, k4, k5, k6 = c[4:8]
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3) / (1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
    return torch.stack([xd, yd], -1)


def undistort(xy_distorted: Tensor, model: str, k: np.ndarray, iterations: int = 20) -> Tensor:
    """Normalised coordinates whose :func:`distort` is ``xy_distorted`` (Newton's method
    with a numerical Jacobian, as COLMAP's ``IterativeUndistortion``)."""
    if model in ("SIMPLE_PINHOLE", "PINHOLE") or not np.any(np.asarray(k) != 0):
        return xy_distorted
    xy = xy_distorted.clone()
    eps = 1e-7
    for _ in range(iterations):
        f = distort(xy, model, k) - xy_distorted
        fx = (distort(xy + torch.tensor([eps, 0.0], dtype=xy.dtype), model, k) - distort(xy, model, k)) / eps
        fy = (distort(xy + torch.tensor([0.0, eps], dtype=xy.dtype), model, k) - distort(xy, model, k)) / eps
        a, b, c, d = fx[:, 0], fy[:, 0], fx[:, 1], fy[:, 1]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        step = torch.stack([(d * f[:, 0] - b * f[:, 1]) / det, (-c * f[:, 0] + a * f[:, 1]) / det], -1)
        xy = xy - step
        if float(step.abs().max()) < 1e-12:
            break
    return xy


def camera_rays(
    K: Tensor,  # [3, 3]
    c2w: Tensor,  # [4, 4] OpenCV axes
    pixel_xy: Tensor,  # [M, 2]
    model: str = "PINHOLE",
    distortion: np.ndarray | None = None,
) -> tuple[Tensor, Tensor]:  # origins [M, 3], unit directions [M, 3], float32
    K = K.double()
    xy = (pixel_xy.double() - K[:2, 2]) / torch.stack([K[0, 0], K[1, 1]])
    if K[0, 1] != 0:  # skew
        xy[:, 0] -= K[0, 1] / K[0, 0] * xy[:, 1]
    if distortion is not None and len(distortion):
        xy = undistort(xy, model, distortion)
    dirs_cam = torch.cat([xy, torch.ones_like(xy[:, :1])], -1)
    dirs = dirs_cam @ c2w[:3, :3].double().T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:3, 3].double().expand(dirs.shape[0], 3)
    return origins.float().contiguous(), dirs.float().contiguous()


# -- photos ----------------------------------------------------------------------------------
@dataclass
class Views:
    """Training photos of :class:`Cameras` (scaled): ``pixels [P, 4]`` uint8 (premultiplied
    RGB, alpha), view ``i``'s pixels (row-major) at ``offsets[i]:offsets[i + 1]``."""

    cameras: Cameras
    pixels: Tensor  # [P, 4] uint8
    offsets: Tensor  # [N + 1] int64
    has_alpha: bool

    def image(self, view: int, background: Tensor) -> Tensor:  # [H, W, 3] float32 over ``background [3]``
        h, w = self.cameras.heights[view], self.cameras.widths[view]
        block = self.pixels[int(self.offsets[view]):int(self.offsets[view + 1])]
        return composite_target(block, background).view(h, w, 3)

    def sample(self, views: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``count`` random pixels of the given views: origins, directions ``[M, 3]``, the
        pixels ``[M, 4]`` uint8, and each one's view ``[M]``."""
        sizes = (self.offsets[1:] - self.offsets[:-1])[views].double()
        which = torch.multinomial(sizes / sizes.sum(), count, replacement=True, generator=generator)
        view = views[which]
        local = (torch.rand(count, generator=generator, dtype=torch.float64) * sizes[which]).long()
        local = torch.minimum(local, sizes[which].long() - 1)
        widths = torch.tensor(self.cameras.widths, dtype=torch.long)[view]
        xy = torch.stack([(local % widths).double() + 0.5, (local // widths).double() + 0.5], -1)
        origins, dirs = self.cameras.rays_batch(view, xy)
        return origins, dirs, self.pixels[self.offsets[view] + local], view


def composite_target(pixels: Tensor, background: Tensor) -> Tensor:  # [M, 4] uint8, [3] or [M, 3] -> [M, 3]
    p = pixels.float() / 255.0
    return p[:, :3] + (1.0 - p[:, 3:4]) * background


def load_views(
    scene: Scene,
    resolution_scale: float = 1.0,
    check_cancelled: Callable[[], None] | None = None,
) -> Views:
    """Every photo of ``scene`` at ``resolution_scale`` of its camera's size (see the module's docstring)."""
    from PIL import Image, ImageOps

    cameras = cameras_from_scene(scene)
    paths = [str(p) for p in scene.cameras["paths"]]
    missing = scene.missing_photos
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            f"{len(missing)} of the {len(paths)} cameras in {scene.path} have no photo: {listed}.",
            "A radiance field is trained from the photos: put them where the reconstruction says (for a "
            "transforms.json, its 'file_path's; for a COLMAP model, an 'images' folder beside or above it).")
    if not 0 < resolution_scale <= 4:
        raise InputError(f"Resolution scale {resolution_scale} is out of range.", "Use a value in (0, 4], such as 0.25.")
    needed = 4 * sum(round(w * resolution_scale) * round(h * resolution_scale)
                     for w, h in zip(cameras.widths, cameras.heights, strict=True))
    available = available_memory()
    if available and needed > 0.6 * available:
        fit = resolution_scale * math.sqrt(0.6 * available / needed) * 0.95
        raise InputError(
            f"The {len(paths)} photos need {needed / 2**30:.1f} GB at resolution scale {resolution_scale:g}; "
            f"{available / 2**30:.1f} GB of memory is free.",
            f"Lower 'resolution_scale' to {fit:.2f} or less, or use fewer photos.")
    blocks, offsets, any_alpha = [], [0], False
    scaled_widths, scaled_heights = [], []
    Ks = cameras.Ks.clone()
    for i, path in enumerate(paths):
        if check_cancelled is not None:
            check_cancelled()
        w0, h0 = cameras.widths[i], cameras.heights[i]
        w, h = max(1, round(w0 * resolution_scale)), max(1, round(h0 * resolution_scale))
        try:
            with Image.open(path) as photo:
                photo = ImageOps.exif_transpose(photo)
                has_alpha = photo.mode in ("RGBA", "LA", "PA") or "transparency" in photo.info
                photo = photo.convert("RGBA" if has_alpha else "RGB")
                size = photo.size
                if abs(size[0] * h0 - size[1] * w0) > max(size[0], w0):
                    raise InputError(f"Photo {path} is {size[0]}x{size[1]}, but its camera is {w0}x{h0}.",
                                     "Use the photos the cameras were solved from.")
                array = _resize_premultiplied(photo, w, h, has_alpha)
        except OSError as exc:
            raise InputError(f"Could not read photo {path}: {exc}", "Replace or remove that photo.") from exc
        any_alpha |= has_alpha
        Ks[i, 0] *= w / w0
        Ks[i, 1] *= h / h0
        scaled_widths.append(w)
        scaled_heights.append(h)
        blocks.append(torch.from_numpy(array.reshape(-1, 4)))
        offsets.append(offsets[-1] + w * h)
    scaled = Cameras(cameras.names, Ks, cameras.c2w, scaled_widths, scaled_heights, cameras.models,
                     cameras.distortion)
    return Views(scaled, torch.cat(blocks), torch.tensor(offsets, dtype=torch.long), any_alpha)


def available_memory() -> int:
    """Bytes of memory free for this process (Linux: MemAvailable), 0 if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _resize_premultiplied(photo, width: int, height: int, has_alpha: bool) -> np.ndarray:  # [H, W, 4] uint8
    from PIL import Image

    w0, h0 = photo.size
    rgba = np.asarray(photo, dtype=np.float32) / 255.0
    if not has_alpha:
        rgba = np.concatenate([rgba, np.ones_like(rgba[..., :1])], -1)
    rgba[..., :3] *= rgba[..., 3:4]
    fx, fy = w0 / width, h0 / height
    if fx == fy and fx >= 1 and float(fx).is_integer():  # an integer factor: the exact area average
        f = int(fx)
        rgba = rgba.reshape(height, f, width, f, 4).mean(axis=(1, 3))
    elif (w0, h0) != (width, height):
        channels = [np.asarray(Image.fromarray(rgba[..., c]).resize((width, height), Image.Resampling.BOX))
                    for c in range(4)]
        rgba = np.stack(channels, -1)
    return np.clip(np.rint(rgba * 255.0), 0, 255).astype(np.uint8)


def focus_point(cameras: Cameras) -> np.ndarray:
    """The point nearest to every camera's optical axis (least squares), or their mean."""
    centers = cameras.centers()
    axes = cameras.c2w[:, :3, 2].numpy()
    eye = np.eye(3)
    a = sum(eye - np.outer(d, d) for d in axes)
    b = sum((eye - np.outer(d, d)) @ c for d, c in zip(axes, centers, strict=True))
    try:
        point = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return centers.mean(0)
    return point if np.all(np.isfinite(point)) else centers.mean(0)

