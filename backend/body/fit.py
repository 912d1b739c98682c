# SPDX-License-Identifier: GPL-3.0-or-later
"""Fit a body model to COCO-17 keypoints in one or more photos (SMPLify-style).

Terms: a robust Geman-McClure 2D keypoint term weighted by each keypoint's confidence
(residuals in percent of the person's size in the photo, so one setting serves every
resolution); joint-angle limits and a pose prior on each fitted joint, in anatomical axes
(twist along the limb, flexion forwards, abduction away from the midline; left and right
mirrored); a shape prior that keeps the shape inside the model's valid range (shape
parameters are a sigmoid of the optimised variables); where a photo shows the face, the
face turns towards that camera; optionally a silhouette term from the person mask (mask
pixels far from the body, body outside the mask).

Stages: the body is placed from the torso (facing from the shoulders' and hips' left/right
order, how far it is turned from how wide they look against the torso's length, roll from
the torso's direction, distance from the torso's size in pixels, as ``depth = focal *
torso_length / torso_pixels`` in a weak-perspective fit); then the placement alone is
refined on the torso keypoints ("camera" stage); then pose, shape and placement together,
with the prior weights lowered and the robust scale narrowed stage by stage. A photo does
not tell whether the body is turned left or right, so both headings start (and, when the
shoulders are ambiguous, as in side views, the other facing too); the first body stage
runs from a standing and from a crouching pose; the two best starts after it are fitted to
the end and the lower loss wins. L-BFGS throughout.

Several photos of one person with known cameras are fitted jointly: one body, one
placement in the cameras' world (with a free scale unless the cameras are metric),
initialised by triangulating the torso keypoints. One photo without a camera: the camera is
at the origin looking along +Z; the result is then given in a level world (Z up, the camera
upright and level, the feet at z = 0).

Speed: the keypoints are linear in the bone transforms, and only ~16 joints are posed (the
other bones follow their parents), so each step needs per-joint sums of the keypoint
regressor times the skin weights times the rest vertices ("moments", precomputed per shape
basis vector) rather than the mesh: a step costs a few milliseconds whatever the mesh size.
Pose correctives (SMPL's posedirs) are left out of the fit's keypoints (millimetres) and
included in everything written out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from .model import FIT_JOINTS, TORSO, BodyModel, chain_transforms, elevation, fit_bone_basis, rotvec_to_matrix

DEG = math.pi / 180.0
# Per joint kind: (twist, flex, abduct) lower limits, upper limits, prior sigmas, in degrees,
# from the rest pose (the shoulders' from arms hanging 45 degrees down, whatever the model's
# rest pose: Anny's A-pose, SMPL's T-pose).
JOINT_LIMITS = {
    "spine_lower": ((-10, -25, -20), (10, 45, 20), (5, 15, 8)),
    "spine_mid": ((-15, -25, -20), (15, 45, 20), (7, 15, 8)),
    "spine_upper": ((-15, -25, -20), (15, 45, 20), (7, 15, 8)),
    "neck": ((-35, -40, -30), (35, 50, 30), (15, 20, 12)),
    "head": ((-35, -45, -30), (35, 45, 30), (15, 20, 12)),
    "collar": ((-10, -20, -10), (10, 20, 30), (5, 8, 8)),
    "shoulder": ((-90, -70, -60), (90, 170, 150), (35, 45, 40)),
    "elbow": ((-80, 0, -5), (80, 150, 5), (30, 50, 3)),
    "hip": ((-45, -30, -30), (45, 120, 60), (15, 35, 15)),
    "knee": ((-10, -150, -5), (10, 0, 5), (5, 45, 3)),
}
ARM_REST_ELEVATION = -45.0 * DEG  # the prior's mean arm: 45 degrees below the horizontal
# The prior's mean bends knees, hips and elbows a little, as people stand: from a straight
# limb, bending either way looks the same in a photo taken from the front (zero gradient),
# so a fit started straight would stay straight.
PRIOR_BEND = {"knee": (0, -15, 0), "hip": (0, 8, 0), "elbow": (0, 20, 0)}


@dataclass(frozen=True)
class FitSettings:
    camera_steps: int = 25  # L-BFGS iterations placing the body from the torso
    body_steps: tuple[int, ...] = (25, 25, 30, 40)  # L-BFGS iterations per body stage
    pose_prior: tuple[float, ...] = (10.0, 3.0, 1.0, 0.5)  # pose-prior weight per body stage
    shape_prior: tuple[float, ...] = (10.0, 4.0, 2.0, 1.0)  # shape-prior weight per body stage
    w_limits: float = 10.0  # joint-angle limits (per (5 degrees)^2 beyond a limit)
    w_face: float = 100.0  # a visible face turns towards its camera
    gm_sigma: tuple[float, ...] = (30.0, 30.0, 15.0, 10.0)  # Geman-McClure scale per body stage, % of the person's size
    starts: tuple[str, ...] = ("mean", "crouch")  # start poses of the first body stage (the best goes on)
    fit_shape: bool = True
    flip: str = "auto"  # "auto": try both facings when the shoulders are ambiguous; "always"; "never"
    metric_cameras: bool = False  # several photos: the cameras are in metres (else a free scale)
    w_silhouette: float = 0.0  # weight of the mask term in the last stage (0: off)
    silhouette_vertices: int = 1000  # vertices the mask term samples
    min_confidence: float = 0.3  # keypoints below this are ignored
    ambiguous_ratio: float = 0.35  # shoulder and hip width / torso length below this: try both facings
    keep_headings: int = 2  # start headings fitted to the end (the best after the first body stage)
    keep_ratio: float = 2.0  # ... whose first-stage loss is at most this times the best one

    def __post_init__(self) -> None:
        if not (len(self.body_steps) == len(self.pose_prior) == len(self.shape_prior) == len(self.gm_sigma)):
            raise ValueError("body_steps, pose_prior, shape_prior and gm_sigma need one value per stage")


@dataclass
class View:
    """One photo of the person: camera (OpenCV) and what was found in it."""

    name: str
    K: np.ndarray  # [3, 3]
    w2c: np.ndarray  # [4, 4] world to camera
    width: int
    height: int
    keypoints: np.ndarray  # [17, 3] x, y (pixels), confidence
    mask: np.ndarray | None = None  # [H, W] person probability


@dataclass
class FitResult:
    shape: np.ndarray  # [S]
    rotvecs: np.ndarray  # [J, 3] per-bone rotation vectors, model axes (root zero)
    placement: np.ndarray  # [4, 4] model space to world: scale * rotation, translation
    scale: float
    K: np.ndarray  # [P, 3, 3]
    w2c: np.ndarray  # [P, 4, 4] world to camera (OpenCV), in the result's world
    keypoints_2d: np.ndarray  # [P, 17, 2] the fitted model's keypoints in each photo
    keypoints_3d: np.ndarray  # [17, 3] world
    errors_px: np.ndarray  # [P] median distance to the confident input keypoints
    facing: str  # "camera" or "away": where the pelvis faces, seen from the first camera
    tried_flip: bool  # the other facing was among the starts
    headings: int  # start headings tried
    loss: float
    seconds: float
    stage_losses: dict[str, float] = field(default_factory=dict)


Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message); may raise Cancelled


def gm(residual2: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure of squared residuals: sigma^2 r^2 / (r^2 + sigma^2)."""
    s2 = sigma * sigma
    return s2 * residual2 / (residual2 + s2)


class Rig:
    """The fitted joints of a model, and the keypoint moments that make a step cheap."""

    def __init__(self, model: BodyModel) -> None:
        self.model = model
        parents = model.parents
        J = model.num_bones
        if model.joint_map["root"] != 0 or parents[0] >= 0 or (parents[1:] >= np.arange(1, J)).any():
            raise ValueError("bones must be ordered parents first, with the root as bone 0")
        named = {model.joint_map[name]: name for name in FIT_JOINTS}
        self.bones = [0] + sorted(named)  # fitted bones in tree order, the root first
        self.names = ["root"] + [named[b] for b in self.bones[1:]]
        position = {b: i for i, b in enumerate(self.bones)}
        group = np.zeros(J, dtype=np.int64)
        for j in range(J):
            group[j] = position[j] if j in position else (group[parents[j]] if parents[j] >= 0 else 0)
        self.group = group  # [J] the fitted bone each bone moves with
        self.parents = np.array([-1] + [group[parents[b]] for b in self.bones[1:]], dtype=np.int64)
        F = len(self.bones)

        W = torch.zeros(model.num_vertices, F)
        W.index_put_((torch.arange(model.num_vertices)[:, None].expand_as(model.skin_indices),
                      torch.as_tensor(group)[model.skin_indices]), model.skin_weights, accumulate=True)
        self.vertex_group_weights = W  # [V, F]
        R = model.keypoint_vertex_regressor
        support = torch.nonzero(R.abs().sum(0) > 0)[:, 0]
        Rs, Ws = R[:, support], W[support]
        G1 = torch.nn.functional.one_hot(torch.as_tensor(group), F).float()  # [J, F]
        Q = model.keypoint_joint_regressor
        self.A0 = torch.einsum("kv,vf,vd->kfd", Rs, Ws, model.template[support]) + \
            torch.einsum("kj,jf,jd->kfd", Q, G1, model.joint_template)  # [17, F, 3]
        dA = torch.einsum("kv,vf,cvd->ckfd", Rs, Ws, model.shape_dirs[:, support]) + \
            torch.einsum("kj,jf,cjd->ckfd", Q, G1, model.joint_dirs)  # [C, 17, F, 3]
        self.dA = dA.reshape(len(dA), -1).contiguous()  # [C, 17 F 3]: one matrix product per step
        self.S = (torch.einsum("kv,vf->kf", Rs, Ws) + Q @ G1).contiguous()  # [17, F]
        self.A0 = self.A0.contiguous()
        self.H0 = model.joint_template[self.bones].contiguous()  # [F, 3]
        self.dH = model.joint_dirs[:, self.bones].reshape(len(dA), -1).contiguous()  # [C, F 3]

        # anatomical axes, limits and prior of each fitted joint (from the default shape's rest pose)
        _, _, heads = model.rest(model.shape_default[None])
        bases = fit_bone_basis(model, heads[0])
        self.basis = torch.stack([bases[name] for name in self.names[1:]])  # [F-1, 3, 3]
        lo, hi, sigma, mean = [], [], [], []
        for name in self.names[1:]:
            kind = name[:-2] if name[-2:] in ("_l", "_r") else name
            low, high, spread = (torch.tensor(v, dtype=torch.float32) * DEG for v in JOINT_LIMITS[kind])
            m = torch.zeros(3)
            if kind == "shoulder":  # the prior's arms hang 45 degrees down whatever the rest pose
                m[2] = ARM_REST_ELEVATION - elevation(model, heads[0], name)
            lo.append(low + m)
            hi.append(high + m)
            sigma.append(spread)
            mean.append(m + torch.tensor(PRIOR_BEND.get(kind, (0, 0, 0)), dtype=torch.float32) * DEG)
        self.lo, self.hi = torch.stack(lo), torch.stack(hi)  # [F-1, 3]
        self.sigma, self.mean = torch.stack(sigma), torch.stack(mean)
        rest_kp = self.keypoints(model.coeffs(model.shape_default[None])[0], torch.zeros(F - 1, 3))
        self.rest_keypoints = rest_kp.detach()  # [17, 3] of the default shape's rest pose

    def start_pose(self, name: str) -> torch.Tensor:
        """Joint coefficients [F-1, 3] of a start pose: "mean" (the prior's), "crouch" (knees
        and hips bent as in skiing, sitting down or jumping)."""
        coefs = self.mean.clone()
        if name == "crouch":
            for i, joint in enumerate(self.names[1:]):
                if joint.startswith("knee"):
                    coefs[i, 1] = -50 * DEG
                elif joint.startswith("hip"):
                    coefs[i, 1] = 30 * DEG
        elif name.startswith("prior"):  # "prior1", "prior2", ...: a draw from the prior
            generator = torch.Generator().manual_seed(int(name[5:] or 0))
            coefs = coefs + 0.7 * self.sigma * torch.randn(coefs.shape, generator=generator)
            coefs = torch.maximum(torch.minimum(coefs, self.hi), self.lo)
        elif name != "mean":
            raise ValueError(f"unknown start pose {name!r}")
        return coefs

    def rotvecs(self, coefs: torch.Tensor) -> torch.Tensor:
        """Model-axis rotation vectors [F-1, 3] of anatomical coefficients [F-1, 3]."""
        return torch.einsum("fij,fj->fi", self.basis, coefs)

    def transforms(self, coeffs: torch.Tensor, coefs: torch.Tensor) -> torch.Tensor:
        """Skinning transforms [F, 3, 4] of the fitted bones."""
        heads = self.H0 + (coeffs @ self.dH).reshape(self.H0.shape)
        rot = rotvec_to_matrix(self.rotvecs(coefs))
        rot = torch.cat([torch.eye(3)[None], rot], 0)
        return chain_transforms(self.parents, heads[None], rot[None])[0]

    def keypoints(self, coeffs: torch.Tensor, coefs: torch.Tensor, G: torch.Tensor | None = None) -> torch.Tensor:
        """Model-space COCO-17 [17, 3] of blend-shape coefficients [C] and joint coefficients [F-1, 3]."""
        A = self.A0 + (coeffs @ self.dA).reshape(self.A0.shape)
        G = self.transforms(coeffs, coefs) if G is None else G
        return torch.einsum("fij,kfj->ki", G[..., :3], A) + self.S @ G[..., 3]

    def sample_vertices(self, count: int, seed: int = 0) -> None:
        """Keep ``count`` random vertices for the silhouette term (their rest positions per
        shape basis vector and their weights on the fitted bones)."""
        generator = torch.Generator().manual_seed(seed)
        V = self.model.num_vertices
        index = torch.randperm(V, generator=generator)[:min(count, V)]
        self.sample_template = self.model.template[index]  # [n, 3]
        self.sample_dirs = self.model.shape_dirs[:, index].reshape(len(self.model.shape_dirs), -1).contiguous()
        self.sample_weights = self.vertex_group_weights[index]  # [n, F]

    def sample_posed(self, coeffs: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """The sampled vertices [n, 3] posed, model space."""
        rest = self.sample_template + (coeffs @ self.sample_dirs).reshape(self.sample_template.shape)
        blended = torch.einsum("nf,fij->nij", self.sample_weights, G)
        return (blended[..., :3] @ rest[..., None])[..., 0] + blended[..., 3]

    def full_rotvecs(self, coefs: torch.Tensor) -> torch.Tensor:
        """Per-bone rotation vectors [J, 3] of the whole skeleton (zero but at fitted joints)."""
        out = torch.zeros(self.model.num_bones, 3)
        out[self.bones[1:]] = self.rotvecs(coefs)
        return out


def _weak_perspective(points: np.ndarray, observed: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """(scale, shift [2]) minimising sum w |scale * points + shift - observed|^2 (points [N, 2])."""
    w = weights / weights.sum()
    mp, mo = (w[:, None] * points).sum(0), (w[:, None] * observed).sum(0)
    dp, do = points - mp, observed - mo
    scale = float((w * (dp * do).sum(1)).sum() / max((w * (dp * dp).sum(1)).sum(), 1e-12))
    return scale, mo - scale * mp


def facing_of(keypoints: np.ndarray, min_confidence: float) -> tuple[float, float, np.ndarray | None]:
    """(facing, clarity, torso up [2]): facing +1 when the person faces the camera (their left
    shoulder and hip on the image's right of their torso axis), -1 away; clarity is the
    width of shoulders and hips across the torso axis over the torso's length (about 0.8
    facing, 0 side-on); up is the image direction from the hips to the shoulders."""
    kp = keypoints
    ok = kp[:, 2] >= min_confidence
    shoulders = ok[5] and ok[6]
    hips = ok[11] and ok[12]
    if not (shoulders or hips):
        return 1.0, 0.0, None
    up = None
    if shoulders and hips:
        up = (kp[5, :2] + kp[6, :2]) / 2 - (kp[11, :2] + kp[12, :2]) / 2
    elif ok[0] and hips:
        up = kp[0, :2] - (kp[11, :2] + kp[12, :2]) / 2
    elif ok[0] and shoulders:
        up = kp[0, :2] - (kp[5, :2] + kp[6, :2]) / 2
    if up is None or np.linalg.norm(up) < 1e-6:
        return 1.0, 0.0, None
    length = np.linalg.norm(up)
    across = []
    for a, b in ((5, 6), (11, 12)):
        if ok[a] and ok[b]:
            d = kp[a, :2] - kp[b, :2]  # left minus right
            across.append((up[0] * d[1] - up[1] * d[0]) / length)  # image y points down
    value = float(np.mean(across))
    return (1.0 if value >= 0 else -1.0), abs(value) / length, up / length


def start_headings(rig: Rig, keypoints: np.ndarray, settings: FitSettings) -> tuple[list[float], bool, np.ndarray | None]:
    """The headings (radians about the body's up axis, 0 facing the camera) a single photo's
    fit starts from, whether the other facing is among them, and the torso's image direction.

    How far the body is turned follows from how wide its shoulders and hips look across
    the torso against the model's own proportions; which way (left or right) a photo does
    not tell from the torso alone, so both are tried. Nearly side-on (width below
    ``ambiguous_ratio`` of the torso's length), or with ``flip="always"``, the other facing
    is tried too. Every start gets the whole fit; the lowest loss wins."""
    facing, clarity, up2d = facing_of(keypoints, settings.min_confidence)
    rest = rig.rest_keypoints.numpy()
    torso = np.linalg.norm((rest[5] + rest[6]) / 2 - (rest[11] + rest[12]) / 2)
    frontal = (abs(rest[5, 0] - rest[6, 0]) + abs(rest[11, 0] - rest[12, 0])) / 2 / torso
    turn = math.acos(min(1.0, clarity / frontal)) if up2d is not None else 0.0
    base = 0.0 if facing > 0 else math.pi
    yaws = [base + turn, base - turn] if turn > 10 * DEG else [base]
    flip = bool(settings.flip == "always" or (settings.flip == "auto" and clarity < settings.ambiguous_ratio))
    if flip:
        yaws += [yaw + math.pi for yaw in yaws]
    return yaws, flip, up2d


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(axis, float) * angle).as_matrix()


# model space -> camera frame for a body upright and facing the camera: x -> x, z (up) -> -y, -y (front) -> -z
FACING_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# camera frame -> level world (Z up, camera looking along +Y): x -> x, y (down) -> -z, z -> y
CAMERA_TO_LEVEL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _triangulate(views: list[View], k: int, min_confidence: float) -> np.ndarray | None:
    rows = []
    for view in views:
        x, y, c = view.keypoints[k]
        if c < min_confidence:
            continue
        P = view.K @ view.w2c[:3]
        rows.append(c * (x * P[2] - P[0]))
        rows.append(c * (y * P[2] - P[1]))
    if len(rows) < 4:
        return None
    _, _, Vt = np.linalg.svd(np.array(rows))
    X = Vt[-1]
    if abs(X[3]) < 1e-12:
        return None
    return X[:3] / X[3]


def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt)) or 1.0
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / max((xs ** 2).sum(1).mean(), 1e-12))
    return s, R, mu_d - s * R @ mu_s


class _Problem:
    """One fit: the views, the rig, the variables and the loss."""

    def __init__(self, rig: Rig, views: list[View], settings: FitSettings, free_scale: bool) -> None:
        self.rig, self.views, self.settings = rig, views, settings
        self.free_scale = free_scale
        kp = np.stack([v.keypoints for v in views]).astype(np.float64)  # [P, 17, 3]
        conf = np.where(kp[..., 2] >= settings.min_confidence, kp[..., 2], 0.0)
        valid = rig.model.keypoint_valid.numpy()
        conf = conf * valid[None]
        self.observed = torch.as_tensor(kp[..., :2], dtype=torch.float32)
        self.conf = torch.as_tensor(conf, dtype=torch.float32)
        sizes = []
        for v, c in zip(kp, conf, strict=True):
            good = v[c > 0, :2]
            extent = (good.max(0) - good.min(0)).max() if len(good) >= 2 else 100.0
            sizes.append(max(float(extent), 10.0))
        self.unit = torch.as_tensor(sizes, dtype=torch.float32)[:, None] / 100.0  # [P, 1] px per percent
        self.K = torch.as_tensor(np.stack([v.K for v in views]), dtype=torch.float32)
        self.w2c = torch.as_tensor(np.stack([v.w2c for v in views]), dtype=torch.float32)
        self.centres = -torch.einsum("pji,pj->pi", self.w2c[:, :3, :3], self.w2c[:, :3, 3])  # [P, 3]
        face = (kp[:, 0, 2] >= 0.5) & (np.maximum(kp[:, 1, 2], kp[:, 2, 2]) >= 0.5) & bool(valid[:5].all())
        self.face_views = torch.as_tensor(np.nonzero(face)[0], dtype=torch.int64)
        S = rig.model.num_shape
        lo, hi, default = rig.model.shape_lo, rig.model.shape_hi, rig.model.shape_default
        self.shape_lo, self.shape_span = lo, hi - lo
        frac = ((default - lo) / (hi - lo)).clamp(1e-3, 1 - 1e-3)
        self.shape_offset = torch.log(frac / (1 - frac))
        self.z = torch.zeros(S, requires_grad=True)  # shape = lo + span * sigmoid(z + offset)
        self.coefs = rig.mean.clone().requires_grad_(True)  # [F-1, 3] anatomical joint coefficients
        self.dr = torch.zeros(3, requires_grad=True)  # placement rotation update
        self.t = torch.zeros(3, requires_grad=True)
        self.log_s = torch.zeros(1, requires_grad=True)
        self.R0 = torch.eye(3)
        self.silhouettes: list[dict] = []  # see prepare_silhouettes

    def shape(self) -> torch.Tensor:
        return self.shape_lo + self.shape_span * torch.sigmoid(self.z + self.shape_offset)

    def placement(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        R = rotvec_to_matrix(self.dr) @ self.R0
        s = torch.exp(self.log_s) if self.free_scale else torch.ones(1)
        return s, R, self.t

    def world_keypoints(self) -> torch.Tensor:
        return self.world_points()[0]

    def world_points(self, vertices: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """World keypoints [17, 3], and the silhouette's sampled vertices [n, 3] when asked."""
        coeffs = self.rig.model.coeffs(self.shape()[None])[0]
        G = self.rig.transforms(coeffs, self.coefs)
        local = self.rig.keypoints(coeffs, self.coefs, G)
        s, R, t = self.placement()
        sampled = s * self.rig.sample_posed(coeffs, G) @ R.T + t if vertices else None
        return s * local @ R.T + t, sampled

    def prepare_silhouettes(self, samples: int = 300, seed: int = 0) -> None:
        """Per view with a mask: the distance (pixels) to the mask outside it, on a grid of at
        most 160 px, and ``samples`` pixels inside it."""
        from scipy.ndimage import distance_transform_edt

        rng = np.random.default_rng(seed)
        self.silhouettes = []
        for p, view in enumerate(self.views):
            if view.mask is None:
                continue
            mask = np.asarray(view.mask, dtype=np.float32) > 0.5
            if mask.sum() < 20:
                continue
            step = max(1, int(math.ceil(max(mask.shape) / 160)))
            small = mask[::step, ::step]
            outside = distance_transform_edt(~small) * step  # pixels to the mask, 0 inside
            inside = np.argwhere(mask)
            pick = inside[rng.choice(len(inside), size=min(samples, len(inside)), replace=False)]
            sx, sy = view.width / mask.shape[1], view.height / mask.shape[0]  # mask to camera pixels
            self.silhouettes.append({
                "view": p,
                "distance": torch.as_tensor(outside * sx, dtype=torch.float32)[None, None],  # [1, 1, h, w]
                "grid_scale": torch.tensor([2.0 / (small.shape[1] * step * sx), 2.0 / (small.shape[0] * step * sy)]),
                "pixels": torch.as_tensor(pick[:, ::-1].copy() * [sx, sy], dtype=torch.float32) + 0.5,  # [M, 2] x, y
            })

    def silhouette_term(self, vertices: torch.Tensor) -> torch.Tensor:
        """Sampled vertices outside the person's mask, and mask pixels far from every vertex
        (squared, in percent of the person's size; the second capped at 5 %, since clothes
        and hair reach beyond the body)."""
        total = vertices.new_zeros(())
        if not self.silhouettes:
            return total
        uv, _ = self.project(vertices)
        for item in self.silhouettes:
            p = item["view"]
            unit = self.unit[p, 0]
            grid = (uv[p] * item["grid_scale"] - 1.0)[None, None]  # [1, 1, n, 2] in -1..1
            outside = torch.nn.functional.grid_sample(item["distance"], grid, align_corners=False,
                                                      padding_mode="border")[0, 0, 0]  # [n]
            total = total + ((outside / unit) ** 2).mean()
            gap = torch.cdist(item["pixels"], uv[p]).min(1).values / unit  # [M]
            total = total + (gap.clamp(max=5.0) ** 2).mean()
        return total

    def project(self, world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [P, N, 2] and depths [P, N] of world points [N, 3] in every view."""
        cam = torch.einsum("pij,nj->pni", self.w2c[:, :3, :3], world) + self.w2c[:, None, :3, 3]
        z = cam[..., 2]
        zs = z.clamp_min(1e-3)
        uv = torch.einsum("pij,pnj->pni", self.K[:, :2, :2], cam[..., :2] / zs[..., None]) + self.K[:, None, :2, 2]
        return uv, z

    def data_term(self, world_kp: torch.Tensor, mask: torch.Tensor | None = None, sigma: float = 10.0) -> torch.Tensor:
        uv, z = self.project(world_kp)
        r2 = (((uv - self.observed) / self.unit[..., None]) ** 2).sum(-1)  # [P, 17]
        conf = self.conf if mask is None else self.conf * mask
        behind = torch.relu(0.05 - z).pow(2).sum() * 1e4
        return (conf * gm(r2, sigma)).sum() + behind

    def face_term(self, world_kp: torch.Tensor) -> torch.Tensor:
        """Where a photo shows the nose and an eye, the face turns towards its camera: the
        nose, seen from the ears' midpoint, must not point away from the camera."""
        if self.face_views.numel() == 0:
            return world_kp.new_zeros(())
        forward = world_kp[0] - (world_kp[3] + world_kp[4]) / 2
        forward = forward / forward.norm().clamp_min(1e-9)
        to_camera = self.centres[self.face_views] - world_kp[0]
        to_camera = to_camera / to_camera.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return (torch.relu(0.2 - to_camera @ forward) ** 2).sum()

    def prior_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rig = self.rig
        pose = (((self.coefs - rig.mean) / rig.sigma) ** 2).sum()
        limits = (torch.relu(self.coefs - rig.hi) ** 2 + torch.relu(rig.lo - self.coefs) ** 2).sum() / (5 * DEG) ** 2
        shape = (self.z ** 2).sum()
        return pose, limits, shape


def _stage(problem: _Problem, params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], steps: int,
           name: str, progress: Progress | None, done: list[int], total: int) -> float:
    if steps <= 0:
        return float(loss_fn().detach())
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-8)
    calls = [0]

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        calls[0] += 1
        if progress is not None and calls[0] % 5 == 0:
            progress(name, min(done[0] + calls[0] // 2, total), total, f"{name}: loss {float(loss.detach()):.3f}")
        return loss

    optimizer.step(closure)
    done[0] += steps
    with torch.no_grad():
        value = float(loss_fn())
    if not math.isfinite(value):
        raise InputError("The body fit diverged.", "Check the keypoints (are they of one person?) and try again.")
    return value


def _initial_placement(problem: _Problem, yaw: float, up2d: np.ndarray | None, settings: FitSettings,
                       cameras_known: bool) -> None:
    rig, views = problem.rig, problem.views
    rest = rig.rest_keypoints.numpy().astype(np.float64)
    if cameras_known and len(views) >= 2:
        points = {k: _triangulate(views, k, settings.min_confidence) for k in range(17)}
        usable = [k for k in (5, 6, 11, 12, 0) if points[k] is not None]
        if len([k for k in usable if k != 0]) >= 3:
            s, R, t = _umeyama(rest[usable], np.stack([points[k] for k in usable]))
            if s > 0 and np.isfinite(R).all():
                problem.R0 = torch.as_tensor(R, dtype=torch.float32)
                problem.t.data = torch.as_tensor(t, dtype=torch.float32)
                problem.log_s.data = torch.tensor([math.log(s)], dtype=torch.float32)
                return
    # one view: turned by ``yaw`` from facing the camera, rolled with the torso, weak perspective for the distance
    best = int(np.argmax([(v.keypoints[:, 2] >= settings.min_confidence).sum() for v in views]))
    view = views[best]
    R_cam = FACING_CAMERA @ _rotation_about((0, 0, 1), yaw)
    if up2d is not None:
        roll = math.atan2(up2d[0], -up2d[1])
        R_cam = _rotation_about((0, 0, 1), roll) @ R_cam
    kp = view.keypoints
    ok = (kp[:, 2] >= settings.min_confidence) & rig.model.keypoint_valid.numpy()
    torso = [k for k in TORSO if ok[k]]
    use = torso if len(torso) >= 3 else list(np.nonzero(ok)[0])
    if len(use) < 2:
        raise InputError(f"{view.name}: too few keypoints to place a body ({len(use)} found).",
                         "Use a photo where the person's shoulders and hips can be seen.")
    cam_pts = rest[use] @ R_cam.T
    f = float(view.K[0, 0])
    c = view.K[:2, 2]
    scale, shift = _weak_perspective(cam_pts[:, :2], kp[use, :2], kp[use, 2])
    if scale <= 0:
        scale = f / 3.0
    depth = f / scale
    # the rest keypoints' mean goes where the weak-perspective fit put it
    centre2d = scale * cam_pts[:, :2].mean(0) + shift
    centre = np.array([(centre2d[0] - c[0]) * depth / f, (centre2d[1] - c[1]) * depth / f, depth])
    t_cam = centre - cam_pts.mean(0)
    # into the world of the view's camera
    R_w, t_w = view.w2c[:3, :3].T, -view.w2c[:3, :3].T @ view.w2c[:3, 3]
    problem.R0 = torch.as_tensor(R_w @ R_cam, dtype=torch.float32)
    problem.t.data = torch.as_tensor(R_w @ t_cam + t_w, dtype=torch.float32)


def _body_loss(problem: _Problem, i: int) -> Callable[[], torch.Tensor]:
    """The loss of body stage ``i``."""
    settings = problem.settings
    w_pose, w_shape, sigma = settings.pose_prior[i], settings.shape_prior[i], settings.gm_sigma[i]
    silhouette = settings.w_silhouette > 0 and bool(problem.silhouettes) and i == len(settings.body_steps) - 1

    def body_loss():
        pose, limits, shape = problem.prior_terms()
        world_kp, vertices = problem.world_points(vertices=silhouette)
        loss = (problem.data_term(world_kp, sigma=sigma) + w_pose * pose + settings.w_limits * limits
                + w_shape * shape + settings.w_face * problem.face_term(world_kp))
        if silhouette:
            loss = loss + settings.w_silhouette * problem.silhouette_term(vertices)
        return loss
    return body_loss


def _params(problem: _Problem, i: int) -> list[torch.Tensor]:
    placement = [problem.dr, problem.t] + ([problem.log_s] if problem.free_scale else [])
    return placement + [problem.coefs] + ([problem.z] if problem.settings.fit_shape and i > 0 else [])


def _start(rig: Rig, views: list[View], settings: FitSettings, cameras_known: bool, yaw: float,
           up2d: np.ndarray | None, progress: Progress | None, done: list[int], total: int) -> _Problem:
    """Place the body (camera stage) and run the first body stage from each start pose,
    keeping the best."""
    problem = _Problem(rig, views, settings, free_scale=cameras_known and len(views) >= 2 and not settings.metric_cameras)
    if settings.w_silhouette > 0:
        problem.prepare_silhouettes()
    _initial_placement(problem, yaw, up2d, settings, cameras_known)
    torso_mask = torch.zeros(17)
    torso_mask[list(TORSO)] = 1.0
    if float((problem.conf * torso_mask).sum()) < 1.5:
        torso_mask = torch.ones(17)

    def camera_loss():
        return problem.data_term(problem.world_keypoints(), torso_mask, sigma=settings.gm_sigma[0])

    placement = [problem.dr, problem.t] + ([problem.log_s] if problem.free_scale else [])
    problem.stage_losses = {"camera": _stage(problem, placement, camera_loss, settings.camera_steps, "camera",
                                             progress, done, total)}
    params = _params(problem, 0)
    saved = [p.detach().clone() for p in placement]
    best = None
    for start in settings.starts:
        for p, value in zip(placement, saved, strict=True):
            p.data = value.clone()
        problem.coefs.data = rig.start_pose(start)
        loss = _stage(problem, params, _body_loss(problem, 0), settings.body_steps[0], "body", progress, done, total)
        if best is None or loss < best[0]:
            best = (loss, [p.detach().clone() for p in params])
    for p, value in zip(params, best[1], strict=True):
        p.data = value
    problem.stage_losses["body1"] = best[0]
    return problem


def _finish(problem: _Problem, progress: Progress | None, done: list[int], total: int) -> _Problem:
    """The remaining body stages."""
    for i in range(1, len(problem.settings.body_steps)):
        problem.stage_losses[f"body{i + 1}"] = _stage(problem, _params(problem, i), _body_loss(problem, i),
                                                     problem.settings.body_steps[i], "body", progress, done, total)
    problem.final_loss = problem.stage_losses[f"body{len(problem.settings.body_steps)}"]
    return problem


def fit_body(model: BodyModel, views: list[View], settings: FitSettings = FitSettings(), *,
             cameras_known: bool = False, progress: Progress | None = None) -> FitResult:
    """Fit ``model`` to the keypoints of ``views`` (one or more photos of one person)."""
    if not views:
        raise InputError("No photo with a person to fit.", "Give at least one photo in which a person can be seen.")
    started = time.perf_counter()
    threads = torch.get_num_threads()
    # The fit's tensors are tiny: with more threads, every product waits for the other
    # core (measured 20 times slower on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        return _fit(model, views, settings, cameras_known, progress, started)
    finally:
        torch.set_num_threads(threads)


def _fit(model: BodyModel, views: list[View], settings: FitSettings, cameras_known: bool,
         progress: Progress | None, started: float) -> FitResult:
    with torch.no_grad():
        rig = Rig(model)
        if settings.w_silhouette > 0:
            rig.sample_vertices(settings.silhouette_vertices)
    yaws, tried_flip, up2d = [0.0], False, None
    if not (cameras_known and len(views) >= 2):
        best = max(views, key=lambda v: (v.keypoints[:, 2] >= settings.min_confidence).sum())
        yaws, tried_flip, up2d = start_headings(rig, best.keypoints, settings)
    first = settings.camera_steps + settings.body_steps[0] * len(settings.starts)
    finished = min(len(yaws), settings.keep_headings)
    total = first * len(yaws) + sum(settings.body_steps[1:]) * finished
    done = [0]
    started_problems = [_start(rig, views, settings, cameras_known, yaw, up2d, progress, done, total) for yaw in yaws]
    # the headings whose first stage went well enough go on; the lowest final loss wins
    started_problems.sort(key=lambda p: p.stage_losses["body1"])
    best_first = started_problems[0].stage_losses["body1"]
    going_on = [p for p in started_problems[:settings.keep_headings]
                if p.stage_losses["body1"] <= settings.keep_ratio * best_first]
    total = done[0] + sum(settings.body_steps[1:]) * len(going_on)
    best_problem = None
    for problem in going_on:
        _finish(problem, progress, done, total)
        if best_problem is None or problem.final_loss < best_problem.final_loss:
            best_problem = problem
    problem = best_problem
    problem.hypotheses = len(yaws)
    return _result(rig, problem, cameras_known, tried_flip, time.perf_counter() - started)


def _result(rig: Rig, problem: _Problem, cameras_known: bool, tried_flip: bool, seconds: float) -> FitResult:
    model = rig.model
    with torch.no_grad():
        shape = problem.shape()
        rotvecs = rig.full_rotvecs(problem.coefs)
        s, R, t = problem.placement()
        placement = np.eye(4)
        placement[:3, :3] = float(s) * R.numpy()
        placement[:3, 3] = t.numpy()
        out = model(shape[None], rotvecs[None])
        vertices = out.vertices[0].numpy().astype(np.float64)
        keypoints = out.keypoints[0].numpy().astype(np.float64)
    w2c = np.stack([v.w2c for v in problem.views]).astype(np.float64)
    if not cameras_known:
        # level world: Z up, camera upright looking along +Y; feet on z = 0, the body above the origin
        level = np.eye(4)
        level[:3, :3] = CAMERA_TO_LEVEL
        placement = level @ placement
        world_vertices = vertices @ placement[:3, :3].T + placement[:3, 3]
        shift = np.eye(4)
        root = placement[:3, :3] @ model.joint_template[0].numpy() + placement[:3, 3]
        shift[:3, 3] = -np.array([root[0], root[1], world_vertices[:, 2].min()])
        placement = shift @ placement
        world_from_camera = shift @ level
        w2c = np.stack([v.w2c @ np.linalg.inv(world_from_camera) for v in problem.views])
    world_kp = keypoints @ placement[:3, :3].T + placement[:3, 3]
    K = np.stack([v.K for v in problem.views]).astype(np.float64)
    cam = np.einsum("pij,nj->pni", w2c[:, :3, :3], world_kp) + w2c[:, None, :3, 3]
    uv = np.einsum("pij,pnj->pni", K[:, :2, :2], cam[..., :2] / np.maximum(cam[..., 2:], 1e-6)) + K[:, None, :2, 2]
    errors = []
    for p, view in enumerate(problem.views):
        ok = (view.keypoints[:, 2] >= problem.settings.min_confidence) & model.keypoint_valid.numpy()
        d = np.linalg.norm(uv[p] - view.keypoints[:, :2], axis=1)[ok]
        errors.append(float(np.median(d)) if len(d) else float("nan"))
    # which way the pelvis faces, seen from the first camera
    front = placement[:3, :3] @ np.array([0.0, -1.0, 0.0])
    to_camera = -w2c[0, :3, :3].T @ w2c[0, :3, 3] - placement[:3, 3]
    facing = "camera" if float(front @ to_camera) >= 0 else "away"
    return FitResult(
        shape=shape.numpy().astype(np.float64),
        rotvecs=rotvecs.numpy().astype(np.float64),
        placement=placement,
        scale=float(s),
        K=K,
        w2c=w2c,
        keypoints_2d=uv,
        keypoints_3d=world_kp,
        errors_px=np.array(errors),
        facing=facing,
        tried_flip=tried_flip,
        headings=int(getattr(problem, "hypotheses", 1)),
        loss=float(problem.final_loss),
        seconds=seconds,
        stage_losses=problem.stage_losses,
    )
