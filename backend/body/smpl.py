# SPDX-License-Identifier: GPL-3.0-or-later
"""SMPL, SMPL-H and SMPL-X from a model file the user gives (never shipped, never
downloaded): ``.npz``, or ``.pkl`` read with :mod:`backend.body.safe_pickle`.

The file must hold the official layout: ``v_template`` [V, 3], ``shapedirs`` [V, 3, S],
``posedirs`` [V, 3, 9 (J - 1)], ``J_regressor`` [J, V] (dense or scipy sparse), ``weights``
[V, J], ``kintree_table`` [2, J] and ``f`` [F, 3]. The kind follows from the joint count:
24 SMPL, 52 SMPL-H, 55 SMPL-X. The model is rotated from its Y-up, +Z-front axes into
Recon's model space (Z up, -Y front); its pose correctives are kept exact.

COCO-17: shoulders, elbows, wrists, hips, knees and ankles are the model's joints; nose,
eyes and ears are the standard SMPL/SMPL-X vertices when the mesh has the official
topology (6,890 or 10,475 vertices), else the head joint, marked approximate
(``keypoint_valid`` False) so the fit ignores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .model import BodyModel

REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
BODY_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
BODY_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
_FINGERS = [f"{finger}{i}" for finger in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)]
HAND_NAMES = tuple(f"left_{f}" for f in _FINGERS) + tuple(f"right_{f}" for f in _FINGERS)
KINDS = {
    24: ("smpl", BODY_NAMES + ("left_hand", "right_hand")),
    52: ("smplh", BODY_NAMES + HAND_NAMES),
    55: ("smplx", BODY_NAMES + ("jaw", "left_eye_smplhf", "right_eye_smplhf") + HAND_NAMES),
}
JOINT_MAP = {
    "root": 0, "spine_lower": 3, "spine_mid": 6, "spine_upper": 9, "neck": 12, "head": 15,
    "collar_l": 13, "collar_r": 14, "shoulder_l": 16, "shoulder_r": 17, "elbow_l": 18, "elbow_r": 19,
    "wrist_l": 20, "wrist_r": 21, "hip_l": 1, "hip_r": 2, "knee_l": 4, "knee_r": 5, "ankle_l": 7, "ankle_r": 8,
}
# COCO-17 index -> SMPL joint, for the 12 limb keypoints
COCO_JOINTS = {5: 16, 6: 17, 7: 18, 8: 19, 9: 20, 10: 21, 11: 1, 12: 2, 13: 4, 14: 5, 15: 7, 16: 8}
# nose, left eye, right eye, left ear, right ear: vertices of the official topologies
FACE_VERTICES = {6890: (332, 2800, 6260, 583, 4071), 10475: (9120, 9448, 9929, 6, 616)}
# SMPL's axes (Y up, +Z front) to Recon's model space (Z up, -Y front)
TO_MODEL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _read_arrays(path: Path) -> dict:
    if path.suffix.lower() == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - a broken file is bad input
            raise InputError(f"{path} is not a readable .npz file ({exc}).", "Give an SMPL-family model file.") from exc
        with archive:
            missing = [key for key in REQUIRED if key not in archive.files]
            if missing:
                raise InputError(
                    f"{path} is not a body model: it has no {', '.join(missing)} "
                    f"(an SMPL-family file holds {', '.join(REQUIRED)}).",
                    "Give the SMPL, SMPL-H or SMPL-X model file itself.")
            out = {}
            for key in REQUIRED:
                try:
                    out[key] = archive[key]
                except ValueError as exc:  # object arrays need pickle: refused
                    raise InputError(f"{path}: '{key}' is stored as Python objects, which Recon does not unpickle.",
                                     "Save it as a plain numeric array.") from exc
            return out
    if path.suffix.lower() == ".pkl":
        from .safe_pickle import load_restricted_pickle

        data = load_restricted_pickle(path)
        if not isinstance(data, dict):
            raise InputError(f"{path} holds a {type(data).__name__}, not a body model's dictionary of arrays.",
                             "Give an SMPL, SMPL-H or SMPL-X model file.")
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise InputError(f"{path} is not a body model: it has no {', '.join(missing)}.",
                             "Give the SMPL, SMPL-H or SMPL-X model file itself.")
        return {key: data[key] for key in REQUIRED}
    raise InputError(f"{path} is neither .npz nor .pkl.", "Give an SMPL-family model file (.npz or .pkl), or 'anny'.")


def _dense(value, key: str, path: Path) -> np.ndarray:
    if hasattr(value, "toarray"):
        value = value.toarray()
    array = np.asarray(value)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: '{key}' is not a numeric array ({array.dtype}).", "Give an SMPL-family model file.")
    return array


def load_smpl(path: str | Path, num_betas: int = 10) -> BodyModel:
    """An SMPL-family model from ``path`` (.npz or .pkl), with its first ``num_betas`` shape
    components as the shape parameters (each bounded to -3..3 standard deviations)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Body model file {path} does not exist.", "Check the path in Recon's preferences or --model.")
    raw = {key: _dense(value, key, path) for key, value in _read_arrays(path).items()}
    v_template = raw["v_template"].astype(np.float64)
    V = len(v_template)
    kintree = raw["kintree_table"].astype(np.int64)
    if v_template.ndim != 2 or v_template.shape[1] != 3 or kintree.ndim != 2 or kintree.shape[0] != 2:
        raise InputError(f"{path}: v_template is {v_template.shape} and kintree_table {kintree.shape}; "
                         "expected [V, 3] and [2, J].", "Give an SMPL-family model file.")
    J = kintree.shape[1]
    if J not in KINDS:
        raise InputError(f"{path}: kintree_table has {J} joints; SMPL has 24, SMPL-H 52, SMPL-X 55.",
                         "Give an SMPL, SMPL-H or SMPL-X model file.")
    kind, names = KINDS[J]
    order = kintree[1]
    if not np.array_equal(order, np.arange(J)):
        raise InputError(f"{path}: kintree_table's second row is not 0..{J - 1}.", "Give an unmodified model file.")
    parents = kintree[0].copy()
    parents[0] = -1
    if tuple(parents[:22]) != BODY_PARENTS or (parents[1:] >= np.arange(1, J)).any():
        raise InputError(f"{path}: its kinematic tree is not SMPL's.", "Give an SMPL, SMPL-H or SMPL-X model file.")
    shapedirs = raw["shapedirs"].astype(np.float64)
    posedirs = raw["posedirs"].astype(np.float64)
    J_regressor = raw["J_regressor"].astype(np.float64)
    weights = raw["weights"].astype(np.float64)
    faces = raw["f"].astype(np.int64)
    problems = []
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3):
        problems.append(f"shapedirs is {shapedirs.shape}, expected [{V}, 3, S]")
    if posedirs.ndim != 3 or posedirs.shape != (V, 3, 9 * (J - 1)):
        problems.append(f"posedirs is {posedirs.shape}, expected [{V}, 3, {9 * (J - 1)}]")
    if J_regressor.shape != (J, V):
        problems.append(f"J_regressor is {J_regressor.shape}, expected [{J}, {V}]")
    if weights.shape != (V, J):
        problems.append(f"weights is {weights.shape}, expected [{V}, {J}]")
    if faces.ndim != 2 or faces.shape[1] != 3 or (len(faces) and (faces.min() < 0 or faces.max() >= V)):
        problems.append(f"f is {faces.shape} with indices outside 0..{V - 1}")
    if problems:
        raise InputError(f"{path} is not a consistent body model: {'; '.join(problems)}.",
                         "Give an unmodified SMPL, SMPL-H or SMPL-X model file.")
    S = min(num_betas, shapedirs.shape[2])

    Q = TO_MODEL
    template = v_template @ Q.T
    shape_dirs = np.einsum("vds,ed->sve", shapedirs[:, :, :S], Q)
    pose_dirs = np.einsum("vdp,ed->pve", posedirs, Q)
    joint_template = J_regressor @ template
    joint_dirs = np.einsum("jv,sve->sje", J_regressor, shape_dirs)

    # sparse skin weights: as many per vertex as the busiest vertex has
    K = int(max(1, (weights > 0).sum(1).max()))
    top = np.argsort(-weights, axis=1)[:, :K]
    top_w = np.take_along_axis(weights, top, 1)
    top_w = top_w / top_w.sum(1, keepdims=True)

    vertex_regressor = np.zeros((17, V))
    joint_regressor = np.zeros((17, J))
    valid = np.ones(17, dtype=bool)
    for k, j in COCO_JOINTS.items():
        joint_regressor[k, j] = 1.0
    face = FACE_VERTICES.get(V)
    for k in range(5):
        if face is not None:
            vertex_regressor[k, face[k]] = 1.0
        else:
            joint_regressor[k, 15] = 1.0
            valid[k] = False

    def f32(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

    return BodyModel(
        name=kind,
        rig=kind,
        bone_names=list(names),
        parents=parents,
        faces=faces,
        template=f32(template),
        shape_dirs=f32(shape_dirs),
        joint_template=f32(joint_template),
        joint_dirs=f32(joint_dirs),
        skin_indices=torch.as_tensor(top, dtype=torch.int64),
        skin_weights=f32(top_w),
        keypoint_vertex_regressor=f32(vertex_regressor),
        keypoint_joint_regressor=f32(joint_regressor),
        keypoint_valid=torch.as_tensor(valid),
        shape_names=[f"beta{i}" for i in range(S)],
        shape_lo=torch.full((S,), -3.0),
        shape_hi=torch.full((S,), 3.0),
        shape_default=torch.zeros(S),
        shape_to_coeffs=lambda shape: shape,
        joint_map=dict(JOINT_MAP),
        pose_dirs=f32(pose_dirs),
        pose_dirs_axes=f32(Q),
        model_file=str(path.resolve()),
        info={"vertices": V, "joints": J, "betas_in_file": int(shapedirs.shape[2])},
    )


def load_model(spec: str, rig: str = "default", num_betas: int = 10) -> BodyModel:
    """``"anny"`` (with one of its rigs) or the path of an SMPL-family file."""
    if spec in ("", "anny"):
        from .anny_model import load_anny

        return load_anny(rig)
    return load_smpl(spec, num_betas=num_betas)
