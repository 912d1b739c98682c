# SPDX-License-Identifier: GPL-3.0-or-later
"""Baking a texture from posed photos.

Every texel of the atlas is a point on the mesh (with an interpolated vertex normal). For
each camera, the mesh is rendered into a depth map (:func:`raster.rasterize`, at most
``depth_size`` pixels on a side) and each texel is projected through the camera's lens
model (photos are sampled through the distortion, never resampled). A texel is seen by the
camera when it lies in the image, faces it, and no surface in the 3 x 3 depth pixels around
its projection is nearer than the texel by more than a tolerance (silhouette and occlusion
edges are left to other views). Its weight there is ``cos(angle)^angle_power * (f / d)^2``
(the photo's resolution on the surface: focal length ``f`` in pixels over the distance
``d``) times the photo's alpha. The ``views`` best-weighted photos are blended by weight.
Texels no photo sees take a fallback colour (the radiance field's, seen along the normal,
or the nearest seen texel's in 3D), and empty atlas space is filled from the nearest
texel, so bilinear filtering and mipmaps never pull in black across a seam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..nerf.rays import Cameras, distort
from .atlas import Atlas
from .raster import rasterize

CHUNK = 1 << 20  # texels per step
NEAREST_SAMPLE = 1 << 18  # seen texels searched for the colour of unseen ones


@dataclass(frozen=True)
class BakeSettings:
    views: int = 3  # photos blended per texel
    angle_power: float = 4.0  # the viewing-angle weight is cos^angle_power
    min_cos: float = 0.05  # texels seen more edge-on than this are not taken from that photo
    depth_size: int = 1024  # longest side of the visibility depth maps, pixels


def vertex_normals(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:  # [V, 3], [F, 3] -> [V, 3], [F, 3]
    """Area-weighted unit vertex normals and unit face normals."""
    tri = vertices[faces]
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), cross.repeat_interleave(3, 0))
    face_n = cross / cross.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-30), face_n


def project(
    points: Tensor,  # [N, 3] world, float64
    K: Tensor,  # [3, 3]
    w2c: Tensor,  # [4, 4] OpenCV axes
    model: str,
    distortion: np.ndarray,
) -> tuple[Tensor, Tensor]:  # pixel xy [N, 2] (COLMAP's convention), depth z [N]
    """World points to pixels through the camera's lens model."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    xy = cam[:, :2] / torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)[:, None]
    if len(distortion) and np.any(np.asarray(distortion) != 0):
        xy = distort(xy, model, distortion)
    px = K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]
    py = K[1, 1] * xy[:, 1] + K[1, 2]
    return torch.stack([px, py], -1), z


def read_photo(path: str, width: int, height: int) -> Tensor:  # [4, h, w] float32 straight RGBA in [0, 1]
    """A photo upright (EXIF), checked against its camera's aspect ratio."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as photo:
            photo = ImageOps.exif_transpose(photo).convert("RGBA")
            array = np.asarray(photo)
    except OSError as exc:
        raise InputError(f"Could not read photo {path}: {exc}", "Replace or remove that photo.") from exc
    h, w = array.shape[:2]
    if abs(w * height - h * width) > max(w, width):
        raise InputError(f"Photo {path} is {w}x{h}, but its camera is {width}x{height}.",
                         "Use the photos the cameras were solved from.")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def sample_bilinear(image: Tensor, xy: Tensor) -> Tensor:  # [C, h, w], [N, 2] pixels -> [N, C]
    h, w = image.shape[1:]
    grid = torch.stack([xy[:, 0] / w * 2 - 1, xy[:, 1] / h * 2 - 1], -1).float().view(1, 1, -1, 2)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def depth_map(vertices: Tensor, faces: Tensor, K: Tensor, w2c: Tensor, model: str, distortion: np.ndarray,
              width: int, height: int) -> Tensor:  # [h, w] float64, inf where empty
    xy, z = project(vertices, K, w2c, model, distortion)
    _, _, depth = rasterize(xy, z, faces, height, width, perspective=True)
    return depth


def _min_max_3x3(depth: Tensor) -> tuple[Tensor, Tensor]:
    """The nearest and farthest depth in each pixel's 3 x 3 neighbourhood (inf: empty)."""
    d = depth[None, None]
    return -F.max_pool2d(-d, 3, 1, 1)[0, 0], F.max_pool2d(d, 3, 1, 1)[0, 0]


def bake(
    vertices: np.ndarray,  # [V, 3] world
    faces: np.ndarray,  # [F, 3]
    atlas: Atlas,
    texel_index: np.ndarray,  # [T] flat texel indices
    texel_face: np.ndarray,  # [T]
    texel_bary: np.ndarray,  # [T, 3]
    cameras: Cameras,
    photo_paths: list[str],
    settings: BakeSettings = BakeSettings(),
    fallback: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[np.ndarray, dict]:  # texture [H, W, 3] uint8, statistics
    """The texture (see the module's docstring) and counts: texels, seen, per-camera use."""
    verts = torch.from_numpy(np.asarray(vertices, np.float64))
    tris = torch.from_numpy(np.asarray(faces, np.int64))
    vnormals, fnormals = vertex_normals(verts, tris)
    tf = torch.from_numpy(texel_face)
    bary = torch.from_numpy(texel_bary)
    points = (verts[tris[tf]] * bary[..., None]).sum(1)  # [T, 3]
    normals = (vnormals[tris[tf]] * bary[..., None]).sum(1)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    normals = torch.where(torch.isfinite(normals).all(-1, keepdim=True), normals, fnormals[tf])
    extent = float((verts.amax(0) - verts.amin(0)).norm())
    abs_tol = 2e-3 * extent
    T, k = len(points), max(1, settings.views)
    top_w = torch.zeros(T, k, dtype=torch.float32)
    top_rgb = torch.zeros(T, k, 3, dtype=torch.float32)
    used = []
    for i in range(len(cameras)):  # per camera: a depth map, then every texel in chunks
        if check_cancelled is not None:
            check_cancelled()
        if progress is not None:
            progress(i, len(cameras), f"baking from {cameras.names[i]}")
        w0, h0 = cameras.widths[i], cameras.heights[i]
        photo = read_photo(photo_paths[i], w0, h0)
        h, w = photo.shape[1:]
        K = cameras.Ks[i].clone()
        K[0] *= w / w0
        K[1] *= h / h0
        w2c = torch.linalg.inv(cameras.c2w[i])
        centre = cameras.c2w[i, :3, 3]
        model, dist = cameras.models[i], cameras.distortion[i]
        s = min(1.0, settings.depth_size / max(w, h))
        wd, hd = max(1, round(w * s)), max(1, round(h * s))
        Kd = K.clone()
        Kd[0] *= wd / w
        Kd[1] *= hd / h
        dmin, dmax = _min_max_3x3(depth_map(verts, tris, Kd, w2c, model, dist, wd, hd))
        focal_d = float(Kd[0, 0] + Kd[1, 1]) / 2
        focal = float(K[0, 0] + K[1, 1]) / 2
        count = 0
        for start in range(0, T, CHUNK):
            sel = slice(start, start + CHUNK)
            p, n = points[sel], normals[sel]
            xy, z = project(p, K, w2c, model, dist)
            to_cam = centre - p
            dist_cam = to_cam.norm(dim=-1)
            cos = (n * to_cam).sum(-1) / dist_cam.clamp_min(1e-12)
            ok = (z > 0) & (cos > settings.min_cos) & (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
            ix = (xy[:, 0] * (wd / w)).long().clamp(0, wd - 1)
            iy = (xy[:, 1] * (hd / h)).long().clamp(0, hd - 1)
            near, far = dmin[iy, ix], dmax[iy, ix]
            tol = abs_tol + 2.0 * z / (focal_d * cos.clamp_min(0.2))
            ok &= (z <= near + tol) & torch.isfinite(far)
            idx = torch.nonzero(ok).squeeze(1)
            if not len(idx):
                continue
            rgba = sample_bilinear(photo, xy[idx])
            weight = (cos[idx].clamp(0, 1) ** settings.angle_power * (focal / dist_cam[idx]) ** 2).float() * rgba[:, 3]
            rows = idx + start
            cand_w = torch.cat([top_w[rows], weight[:, None]], 1)
            cand_rgb = torch.cat([top_rgb[rows], rgba[:, None, :3]], 1)
            best_w, order = cand_w.topk(k, dim=1)
            top_w[rows] = best_w
            top_rgb[rows] = torch.gather(cand_rgb, 1, order[..., None].expand(-1, -1, 3))
            count += int((weight > 0).sum())
        used.append(count)
    if progress is not None:
        progress(len(cameras), len(cameras), "blending")
    total = top_w.sum(1)
    seen = total > 0
    colors = (top_rgb * top_w[..., None]).sum(1) / total.clamp_min(1e-30)[:, None]
    unseen = torch.nonzero(~seen).squeeze(1)
    fallback_kind = "none"
    if len(unseen):
        if fallback is not None:
            colors[unseen] = torch.as_tensor(fallback(points[unseen].numpy(), normals[unseen].numpy()), dtype=torch.float32)
            fallback_kind = "field"
        elif bool(seen.any()):
            from scipy.spatial import cKDTree

            seen_idx = torch.nonzero(seen).squeeze(1)
            if len(seen_idx) > NEAREST_SAMPLE:  # a colour from close by is enough: a sample of the seen texels
                pick = torch.randperm(len(seen_idx), generator=torch.Generator().manual_seed(0))[:NEAREST_SAMPLE]
                seen_idx = seen_idx[pick]
            _, nearest = cKDTree(points[seen_idx].numpy()).query(points[unseen].numpy(),
                                                                  workers=torch.get_num_threads())
            colors[unseen] = colors[seen_idx[torch.from_numpy(np.asarray(nearest, np.int64))]]
            fallback_kind = "nearest"
        else:
            colors[unseen] = 0.5
            fallback_kind = "grey"
    image = fill_empty(atlas.height, atlas.width, texel_index, colors.clamp(0, 1).numpy())
    stats = {"texels": T, "seen": int(seen.sum()), "unseen_fallback": fallback_kind,
             "texels_per_camera": dict(zip(cameras.names, used, strict=True))}
    return image, stats


def fill_empty(height: int, width: int, texel_index: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """A ``[H, W, 3]`` uint8 image holding ``colors [T, 3]`` (in [0, 1]) at ``texel_index``
    and, everywhere else, the colour of the nearest of those texels (seam padding)."""
    from scipy import ndimage

    image = np.zeros((height * width, 3), np.float32)
    image[texel_index] = colors
    filled = np.zeros(height * width, bool)
    filled[texel_index] = True
    image, filled = image.reshape(height, width, 3), filled.reshape(height, width)
    if len(texel_index) and not filled.all():
        _, (rows, cols) = ndimage.distance_transform_edt(~filled, return_indices=True)
        image = image[rows, cols]
    return (image * 255.0 + 0.5).astype(np.uint8)
