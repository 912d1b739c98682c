# SPDX-License-Identifier: GPL-3.0-or-later
"""One interface for every body model: a linear-blend-skinned mesh whose rest shape is
linear in blend-shape coefficients, a bone tree, and COCO-17 keypoints regressed from the
posed vertices (and bone heads).

A pose is one rotation vector per bone (axis times angle, radians), in model axes, turning
the bone and everything below it about the bone's head; the root's turns the whole body
about its head. This is the SMPL convention, and the one every model here is fitted in;
``blender_pose`` converts it to Blender's per-bone ``matrix_basis`` in each bone's own rest
frame (``rest_frames``: Y along the bone).

Model space: Z up, -Y front, +X the body's left, metres. Loaders rotate their model into it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# Limbs drawn in previews (0-based COCO indices).
COCO17_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# The same keypoints with left and right swapped.
COCO17_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
TORSO = (5, 6, 11, 12)  # shoulders and hips

# Joints the fit poses, with the joint each one points at (its limb's direction). "_l"
# joints have a "_r" twin. The wrists and ankles are only directions: COCO-17 sees no hand
# or foot beyond them, so the fit leaves them as they are.
FIT_JOINTS = (
    "spine_lower", "spine_mid", "spine_upper", "neck", "head",
    "collar_l", "collar_r", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r",
    "hip_l", "hip_r", "knee_l", "knee_r",
)
FIT_JOINT_TARGET = {
    "spine_lower": "spine_mid", "spine_mid": "spine_upper", "spine_upper": "neck", "neck": "head", "head": None,
    "collar": "shoulder", "shoulder": "elbow", "elbow": "wrist", "hip": "knee", "knee": "ankle",
}
MAP_JOINTS = FIT_JOINTS + ("root", "wrist_l", "wrist_r", "ankle_l", "ankle_r")

UP = (0.0, 0.0, 1.0)
FRONT = (0.0, -1.0, 0.0)
LEFT = (1.0, 0.0, 0.0)


@dataclass
class BodyOutput:
    """The result of :meth:`BodyModel.forward`, all in model space."""

    vertices: torch.Tensor  # [B, V, 3] posed
    joints: torch.Tensor  # [B, J, 3] posed bone heads
    keypoints: torch.Tensor  # [B, 17, 3] COCO-17
    transforms: torch.Tensor  # [B, J, 3, 4] skinning transforms, rest to posed
    rest_vertices: torch.Tensor  # [B, V, 3] the shaped rest pose (without pose correctives)
    rest_joints: torch.Tensor  # [B, J, 3] rest bone heads
    pose_offsets: torch.Tensor | None  # [B, V, 3] pose-corrective offsets in rest space (SMPL), else None


@dataclass
class BodyModel:
    """A body model. Tensors are float32 on the CPU unless moved with :meth:`to`.

    The rest mesh is ``template + coeffs @ shape_dirs``, the rest bone heads
    ``joint_template + coeffs @ joint_dirs``; ``shape_to_coeffs`` turns the model's shape
    parameters (bounded by ``shape_lo``..``shape_hi``) into those coefficients.
    """

    name: str  # "anny", "smpl", "smplh", "smplx", ...
    rig: str  # which bone set: "default", "mixamo", "game_engine", or the SMPL kind
    bone_names: list[str]
    parents: np.ndarray  # [J] int, -1 for the root; parents come before their children
    faces: np.ndarray  # [F, 3] int64 triangles
    template: torch.Tensor  # [V, 3]
    shape_dirs: torch.Tensor  # [C, V, 3]
    joint_template: torch.Tensor  # [J, 3]
    joint_dirs: torch.Tensor  # [C, J, 3]
    skin_indices: torch.Tensor  # [V, K] int64 bone indices
    skin_weights: torch.Tensor  # [V, K] weights, each row sums to 1
    keypoint_vertex_regressor: torch.Tensor  # [17, V] COCO-17 from posed vertices
    keypoint_joint_regressor: torch.Tensor  # [17, J] plus this times posed bone heads
    keypoint_valid: torch.Tensor  # [17] bool: False where the model only approximates the keypoint
    shape_names: list[str]
    shape_lo: torch.Tensor  # [S]
    shape_hi: torch.Tensor  # [S]
    shape_default: torch.Tensor  # [S]
    shape_to_coeffs: Callable[[torch.Tensor], torch.Tensor]  # [B, S] -> [B, C]
    joint_map: dict[str, int]  # MAP_JOINTS name -> bone index
    rest_frames: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (coeffs [B,C], heads [B,J,3]) -> [B,J,3,3]
    pose_dirs: torch.Tensor | None = None  # [9 (J - 1), V, 3] pose correctives (SMPL), model space
    pose_dirs_axes: torch.Tensor | None = None  # [3, 3] the rotation from the file's axes into model space
    model_file: str = ""
    info: dict = field(default_factory=dict)

    # -- sizes ------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def num_bones(self) -> int:
        return len(self.bone_names)

    @property
    def num_shape(self) -> int:
        return len(self.shape_names)

    def to(self, device: torch.device | str) -> BodyModel:
        for name in ("template", "shape_dirs", "joint_template", "joint_dirs", "skin_indices", "skin_weights",
                     "keypoint_vertex_regressor", "keypoint_joint_regressor", "keypoint_valid", "shape_lo",
                     "shape_hi", "shape_default", "pose_dirs", "pose_dirs_axes"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    # -- the forward pass ---------------------------------------------------------------
    def coeffs(self, shape: torch.Tensor) -> torch.Tensor:
        """Blend-shape coefficients [B, C] of shape parameters [B, S]."""
        return self.shape_to_coeffs(shape)

    def rest(self, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(coeffs [B, C], rest vertices [B, V, 3], rest bone heads [B, J, 3]) of shape [B, S]."""
        c = self.coeffs(shape)
        vertices = self.template + torch.einsum("bc,cvd->bvd", c, self.shape_dirs)
        heads = self.joint_template + torch.einsum("bc,cjd->bjd", c, self.joint_dirs)
        return c, vertices, heads

    def forward(self, shape: torch.Tensor, rotvecs: torch.Tensor) -> BodyOutput:
        """Pose and shape the body.

        shape: [B, S] shape parameters; rotvecs: [B, J, 3] per-bone rotation vectors (model
        axes, about each bone's head; the root's turns the whole body).
        """
        _, rest_vertices, heads = self.rest(shape)
        rotations = rotvec_to_matrix(rotvecs)  # [B, J, 3, 3]
        transforms = chain_transforms(self.parents, heads, rotations)
        offsets = None
        vertices_in = rest_vertices
        if self.pose_dirs is not None:
            offsets = self.pose_offsets(rotations)
            vertices_in = rest_vertices + offsets
        vertices = skin(vertices_in, transforms, self.skin_indices, self.skin_weights)
        joints = apply_rigid(transforms, heads)
        keypoints = torch.einsum("kv,bvd->bkd", self.keypoint_vertex_regressor, vertices)
        keypoints = keypoints + torch.einsum("kj,bjd->bkd", self.keypoint_joint_regressor, joints)
        return BodyOutput(vertices, joints, keypoints, transforms, rest_vertices, heads, offsets)

    __call__ = forward

    def pose_offsets(self, rotations: torch.Tensor) -> torch.Tensor:
        """SMPL's pose correctives [B, V, 3] of per-bone rotations [B, J, 3, 3]."""
        axes = self.pose_dirs_axes
        local = axes.T @ rotations[:, 1:] @ axes  # back into the original model's axes
        eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        features = (local - eye).reshape(rotations.shape[0], -1)
        return torch.einsum("bp,pvd->bvd", features, self.pose_dirs)

    def bone_frames(self, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rest frames of the bones for a rig: (heads [B, J, 3], rotations [B, J, 3, 3] with Y
        along each bone, lengths [B, J])."""
        c, _, heads = self.rest(shape)
        if self.rest_frames is not None:
            frames = self.rest_frames(c, heads)
        else:
            frames = frames_along_bones(self.parents, heads)
        lengths = bone_lengths(self.parents, heads, frames)
        return heads, frames, lengths


# -- rotations and kinematics (differentiable) -----------------------------------------------
def rotvec_to_matrix(rotvecs: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] of rotation vectors [..., 3] (Rodrigues; exact at zero)."""
    angle2 = (rotvecs * rotvecs).sum(-1, keepdim=True)  # [..., 1]
    small = angle2 < 1e-8
    angle = torch.sqrt(torch.where(small, torch.ones_like(angle2), angle2))
    # sin(a)/a and (1 - cos(a))/a^2, with their Taylor series near zero
    a = torch.where(small, 1 - angle2 / 6, torch.sin(angle) / angle)
    b = torch.where(small, 0.5 - angle2 / 24, (1 - torch.cos(angle)) / torch.where(small, torch.ones_like(angle2), angle2))
    x, y, z = rotvecs.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rotvecs.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvecs.dtype, device=rotvecs.device)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation vectors [..., 3] of rotation matrices [..., 3, 3] (numpy, for output)."""
    from scipy.spatial.transform import Rotation

    shape = R.shape[:-2]
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(*shape, 3)


def chain_transforms(parents: np.ndarray, heads: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Skinning transforms [B, J, 3, 4] (rest to posed) of per-bone rotations [B, J, 3, 3]
    about the rest heads [B, J, 3], each applied after its parent's. One batched product per
    depth of the tree."""
    local_t = heads - (rotations @ heads[..., None])[..., 0]  # rotation about the head
    local = torch.cat([rotations, local_t[..., None]], -1)  # [B, J, 3, 4]
    levels, order, rows = _tree_levels(tuple(int(p) for p in parents))
    done = local[:, levels[0][0]]  # the roots
    for bones, parent_rows in levels[1:]:
        P, L = done[:, parent_rows], local[:, bones]
        R = P[..., :3] @ L[..., :3]
        t = (P[..., :3] @ L[..., 3:]) + P[..., 3:]
        done = torch.cat([done, torch.cat([R, t], -1)], 1)
    return done[:, rows]


@functools.lru_cache(maxsize=16)
def _tree_levels(parents: tuple[int, ...]):
    """Bones grouped by depth: [(bones, rows of their parents in the stacked result)], the
    stacking order, and each bone's row in it."""
    depth = []
    for p in parents:
        depth.append(0 if p < 0 else depth[p] + 1)
    depth = np.array(depth)
    order: list[int] = []
    levels = []
    row = {}
    for d in range(depth.max() + 1):
        bones = [j for j in range(len(parents)) if depth[j] == d]
        levels.append((bones, [row[parents[j]] for j in bones] if d else []))
        for j in bones:
            row[j] = len(order)
            order.append(j)
    return levels, order, [row[j] for j in range(len(parents))]


def apply_rigid(transforms: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Each of [B, N, 3, 4] transforms applied to its point [B, N, 3]."""
    return (transforms[..., :3] @ points[..., None])[..., 0] + transforms[..., 3]


def skin(vertices: torch.Tensor, transforms: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: rest vertices [B, V, 3], bone transforms [B, J, 3, 4], sparse
    weights (indices [V, K], weights [V, K]) -> posed vertices [B, V, 3]."""
    blended = torch.einsum("vk,bvkij->bvij", weights, transforms[:, indices])  # [B, V, 3, 4]
    return (blended[..., :3] @ vertices[..., None])[..., 0] + blended[..., 3]


def frames_along_bones(parents: np.ndarray, heads: torch.Tensor) -> torch.Tensor:
    """Rest frames [B, J, 3, 3] (columns X, Y, Z) with Y from each bone's head towards its
    children's mean head (a leaf continues its parent's direction; a bone without one
    points up), and Z as close to the character's back (+Y) as Y allows (up when the bone
    points front or back)."""
    B, J, _ = heads.shape
    children = [[] for _ in range(J)]
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    dirs = []
    for j in range(J):
        if children[j]:
            d = heads[:, children[j]].mean(1) - heads[:, j]
        elif parents[j] >= 0:
            d = heads[:, j] - heads[:, parents[j]]
        else:
            d = torch.tensor(UP, dtype=heads.dtype).expand(B, 3)
        dirs.append(d)
    y = torch.stack(dirs, 1)
    norm = y.norm(dim=-1, keepdim=True)
    up = torch.tensor(UP, dtype=heads.dtype, device=heads.device).expand_as(y)
    y = torch.where(norm > 1e-6, y / norm.clamp_min(1e-12), up)
    ref = torch.tensor((0.0, 1.0, 0.0), dtype=heads.dtype, device=heads.device).expand_as(y)  # the back
    alt = torch.tensor(UP, dtype=heads.dtype, device=heads.device).expand_as(y)
    ref = torch.where(((ref * y).sum(-1, keepdim=True).abs() > 0.95), alt, ref)
    z = ref - (ref * y).sum(-1, keepdim=True) * y
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.cross(y, z, dim=-1)
    return torch.stack([x, y, z], -1)


def bone_lengths(parents: np.ndarray, heads: torch.Tensor, frames: torch.Tensor, minimum: float = 0.02) -> torch.Tensor:
    """Lengths [B, J] for drawing bones: the reach of the children's heads along the bone's Y
    axis, a leaf's half its parent's, never below ``minimum`` metres (Blender drops
    zero-length bones)."""
    B, J, _ = heads.shape
    lengths = torch.zeros(B, J, dtype=heads.dtype, device=heads.device)
    children = [[] for _ in range(J)]
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    for j in range(J):
        if children[j]:
            along = ((heads[:, children[j]] - heads[:, j, None]) * frames[:, j, None, :, 1]).sum(-1)
            lengths[:, j] = along.max(1).values
    for j in range(J):
        if not children[j] and parents[j] >= 0:
            lengths[:, j] = 0.5 * lengths[:, parents[j]]
    return lengths.clamp_min(minimum)


def blender_pose(rotvecs: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Blender ``pose_bone.matrix_basis`` rotations [J, 3, 3] of model-space rotation vectors
    [J, 3] for bones whose rest frames (rotations, Y along the bone) are ``frames`` [J, 3, 3]."""
    from scipy.spatial.transform import Rotation

    world = Rotation.from_rotvec(rotvecs).as_matrix()
    return np.einsum("jba,jbc,jcd->jad", frames, world, frames)


def fit_bone_basis(model: BodyModel, heads: torch.Tensor) -> dict[str, torch.Tensor]:
    """Anatomical axes [3, 3] of each fitted joint, columns (twist, flex, abduct), from the
    rest bone heads [J, 3]: twist along the limb, flexion moving the limb forwards (about
    limb x front), abduction moving it away from the body's midline. The right side's axes
    mirror the left's, so one set of limits serves both."""
    front = torch.tensor(FRONT, dtype=heads.dtype)
    up = torch.tensor(UP, dtype=heads.dtype)
    bases = {}
    for name in FIT_JOINTS:
        base, side_name = (name[:-2], name[-1]) if name[-2:] in ("_l", "_r") else (name, "")
        side = -1.0 if side_name == "r" else 1.0
        target = FIT_JOINT_TARGET[base]
        head = heads[model.joint_map[name]]
        if target is None:
            u = up.clone()
        else:
            target_name = target + (f"_{side_name}" if side_name else "")
            u = heads[model.joint_map[target_name]] - head
            if float(u.norm()) < 1e-6:
                u = up.clone()
        u = u / u.norm()
        flex = torch.linalg.cross(u, front)
        if float(flex.norm()) < 1e-3:  # a limb pointing forwards: flex about the left axis
            flex = torch.tensor(LEFT, dtype=heads.dtype) * side
        flex = flex / flex.norm()
        abduct = -side * torch.linalg.cross(u, flex)
        bases[name] = torch.stack([side * u, flex, abduct], -1)
    return bases


def elevation(model: BodyModel, heads: torch.Tensor, joint: str) -> float:
    """The angle (radians) of the limb from ``joint`` above the horizontal in the rest pose."""
    base, side = joint[:-2], joint[-2:]
    target = FIT_JOINT_TARGET[base] + side
    u = heads[model.joint_map[target]] - heads[model.joint_map[joint]]
    return float(torch.asin((u / u.norm())[2].clamp(-1, 1)))
