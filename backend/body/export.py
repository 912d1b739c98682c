# SPDX-License-Identifier: GPL-3.0-or-later
"""What a fit leaves behind: the arrays of ``body.npz`` (everything Blender needs to build a
mesh, an armature, vertex groups and the pose with numpy alone; the layout is documented in
``backend/jobs/body.py``), a numpy reference of how Blender poses them, and preview images."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import require
from .fit import FitResult, View
from .model import COCO17_NAMES, BodyModel, blender_pose


def body_arrays(model: BodyModel, result: FitResult, views: list[View], world: str) -> dict[str, np.ndarray]:
    """The contents of ``body.npz`` for a fitted ``model``."""
    shape = torch.as_tensor(result.shape, dtype=torch.float32)[None]
    rotvecs = torch.as_tensor(result.rotvecs, dtype=torch.float32)[None]
    with torch.no_grad():
        out = model(shape, rotvecs)
        heads, frames, lengths = model.bone_frames(shape)
    heads, frames, lengths = heads[0].numpy().astype(np.float64), frames[0].numpy().astype(np.float64), lengths[0].numpy()
    # exactly orthonormal frames (Blender keeps a bone's matrix as head, tail and roll)
    U, _, Vt = np.linalg.svd(frames)
    frames = U @ Vt
    rest = np.tile(np.eye(4), (model.num_bones, 1, 1))
    rest[:, :3, :3] = frames
    rest[:, :3, 3] = heads
    tails = heads + frames[:, :, 1] * lengths[:, None]
    basis_rot = blender_pose(result.rotvecs, frames)
    basis = np.tile(np.eye(4), (model.num_bones, 1, 1))
    basis[:, :3, :3] = basis_rot
    from scipy.spatial.transform import Rotation

    quat_xyzw = Rotation.from_matrix(basis_rot).as_quat()
    quaternions = np.concatenate([quat_xyzw[:, 3:], quat_xyzw[:, :3]], 1)  # w, x, y, z as Blender
    M = result.placement
    vertices = out.vertices[0].numpy().astype(np.float64) @ M[:3, :3].T + M[:3, 3]
    joints = out.joints[0].numpy().astype(np.float64) @ M[:3, :3].T + M[:3, 3]
    offsets = out.pose_offsets[0].numpy() if out.pose_offsets is not None else np.zeros((model.num_vertices, 3))
    deltas = shape_deltas(model, result.shape)
    return {
        "model": np.array(model.name),
        "rig": np.array(model.rig),
        "model_file": np.array(model.model_file),
        "shape_names": np.array(model.shape_names),
        "shape": result.shape.astype(np.float32),
        "faces": model.faces.astype(np.int32),
        "rest_vertices": out.rest_vertices[0].numpy().astype(np.float32),
        "pose_offsets": offsets.astype(np.float32),
        "vertices": vertices.astype(np.float32),
        "bone_names": np.array(model.bone_names),
        "bone_parents": model.parents.astype(np.int32),
        "bone_rest_matrices": rest.astype(np.float32),
        "bone_heads": heads.astype(np.float32),
        "bone_tails": tails.astype(np.float32),
        "skin_indices": model.skin_indices.numpy().astype(np.int32),
        "skin_weights": model.skin_weights.numpy().astype(np.float32),
        "pose_rotvecs": result.rotvecs.astype(np.float32),
        "pose_matrices": basis.astype(np.float32),
        "pose_quaternions": quaternions.astype(np.float32),
        "model_to_world": M.astype(np.float64),
        "scale": np.float64(result.scale),
        "world": np.array(world),
        "joints": joints.astype(np.float32),
        "keypoint_names": np.array(COCO17_NAMES),
        "keypoints_3d": result.keypoints_3d.astype(np.float32),
        "keypoints_2d": result.keypoints_2d.astype(np.float32),
        "keypoints_input": np.stack([v.keypoints for v in views]).astype(np.float32),
        "photo_names": np.array([v.name for v in views]),
        "K": result.K.astype(np.float64),
        "w2c": result.w2c.astype(np.float64),
        "width": np.array([v.width for v in views], dtype=np.int32),
        "height": np.array([v.height for v in views], dtype=np.int32),
        "fit_error_px": result.errors_px.astype(np.float32),
        "shape_lo": model.shape_lo.numpy().astype(np.float32),
        "shape_hi": model.shape_hi.numpy().astype(np.float32),
        "shape_deltas_vertices": deltas["vertices"],
        "shape_deltas_heads": deltas["heads"],
        "shape_deltas_tails": deltas["tails"],
    }


def shape_deltas(model: BodyModel, shape: np.ndarray) -> dict[str, np.ndarray]:
    """Change of the rest vertices [S, V, 3], bone heads and tails [S, J, 3] per unit of each
    shape parameter around ``shape`` [S] (central differences: exact for SMPL's betas, the
    local slope of Anny's phenotypes), so a shape can be edited later without the model."""
    base = torch.as_tensor(shape, dtype=torch.float32)
    span = (model.shape_hi - model.shape_lo).numpy()
    S = model.num_shape
    out = {"vertices": [], "heads": [], "tails": []}
    for i in range(S):
        h = float(0.02 * span[i])
        lo_shape, hi_shape = base.clone(), base.clone()
        lo_shape[i] = max(float(model.shape_lo[i]), float(base[i]) - h)
        hi_shape[i] = min(float(model.shape_hi[i]), float(base[i]) + h)
        step = float(hi_shape[i] - lo_shape[i])
        with torch.no_grad():
            both = torch.stack([lo_shape, hi_shape])
            _, vertices, _ = model.rest(both)
            heads, frames, lengths = model.bone_frames(both)
        tails = heads + frames[..., 1] * lengths[..., None]
        out["vertices"].append(((vertices[1] - vertices[0]) / step).numpy())
        out["heads"].append(((heads[1] - heads[0]) / step).numpy())
        out["tails"].append(((tails[1] - tails[0]) / step).numpy())
    return {key: np.stack(value).astype(np.float32) for key, value in out.items()}


def pose_like_blender(body: dict) -> np.ndarray:
    """Posed world vertices [V, 3] built from ``body.npz`` arrays the way Blender poses an
    armature: pose_bone.matrix = parent.matrix @ parent_rest^-1 @ rest @ matrix_basis, each
    bone deforming by pose_bone.matrix @ rest^-1 with the skin weights, the pose offsets as a
    shape key, the object's matrix_world = model_to_world. Numpy only (the reference the
    Blender import is tested against)."""
    rest = body["bone_rest_matrices"].astype(np.float64)
    basis = body["pose_matrices"].astype(np.float64)
    parents = body["bone_parents"]
    posed = np.empty_like(rest)
    for j, p in enumerate(parents):
        local = rest[j] if p < 0 else np.linalg.inv(rest[p]) @ rest[j]
        posed[j] = (local if p < 0 else posed[p] @ local) @ basis[j]
    deform = posed @ np.linalg.inv(rest)  # [J, 4, 4]
    v = body["rest_vertices"].astype(np.float64) + body["pose_offsets"]
    blended = np.einsum("vk,vkij->vij", body["skin_weights"].astype(np.float64), deform[body["skin_indices"]])
    local_v = np.einsum("vij,vj->vi", blended[:, :3, :3], v) + blended[:, :3, 3]
    M = body["model_to_world"]
    return local_v @ M[:3, :3].T + M[:3, 3]


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [N, 2] and depths [N] of world points [N, 3]."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / np.maximum(z, 1e-6)[:, None] @ K[:2, :2].T + K[:2, 2]
    return uv, z


def overlay_mesh(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, w2c: np.ndarray,
                 colour=(90, 160, 255), alpha: float = 0.6) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with the mesh drawn over it, shaded by its normals: a
    z-buffered splat of its vertices (a preview, not a renderer)."""
    height, width = image.shape[:2]
    uv, z = project(vertices, K, w2c)
    normals = np.zeros_like(vertices)
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for i in range(3):
        np.add.at(normals, faces[:, i], face_n)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    view = centre - vertices
    view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
    shade = 0.35 + 0.65 * np.abs((normals * view).sum(1))
    edges = np.linalg.norm(uv[faces[:, 0]] - uv[faces[:, 1]], axis=1)
    edges = edges[np.isfinite(edges)]
    size = int(np.clip(np.ceil(np.percentile(edges, 90)) + 1 if len(edges) else 2, 2, 12))
    ok = z > 1e-3
    offsets = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2) - size / 2 + 0.5
    x = np.floor(uv[ok, None, 0] + offsets[None, :, 0]).astype(np.int64).ravel()
    y = np.floor(uv[ok, None, 1] + offsets[None, :, 1]).astype(np.int64).ravel()
    depth = np.repeat(z[ok], len(offsets))
    value = np.repeat(shade[ok], len(offsets))
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    x, y, depth, value = x[inside], y[inside], depth[inside], value[inside]
    pixel = y * width + x
    order = np.lexsort((depth, pixel))  # by pixel, nearest first
    _, first = np.unique(pixel[order], return_index=True)
    nearest = order[first]
    out = image[..., :3].astype(np.float64).copy()
    layer = np.zeros(height * width)
    covered = np.zeros(height * width, bool)
    layer[pixel[nearest]] = value[nearest]
    covered[pixel[nearest]] = True
    layer = layer.reshape(height, width)[..., None] * np.asarray(colour, np.float64)
    covered = covered.reshape(height, width)
    out[covered] = (1 - alpha) * out[covered] + alpha * layer[covered]
    return np.clip(out, 0, 255).astype(np.uint8)


def save_png(path, image) -> None:
    """A PIL image or uint8 array as PNG, written atomically."""
    import io

    from ..protocol import write_bytes_atomic

    Image = require("PIL.Image", "Writing previews")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
