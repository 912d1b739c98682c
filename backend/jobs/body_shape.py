# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``body_shape``: a fitted body with new shape parameters, in the same pose.

The input is a ``body.npz`` (the ``body`` job's, or the one Blender writes from a fitted
rig): ``model`` and ``rig`` (or ``--model``/``--rig``), ``shape_names`` and ``shape``, and
where present the body's pose as Blender holds it, ``pose_matrices`` [J, 4, 4] (each pose
bone's ``matrix_basis``) with ``bone_rest_matrices`` [J, 4, 4] (the bones' rest matrices they
are relative to), else ``pose_rotvecs`` [J, 3], else the rest pose; and ``model_to_world``
[4, 4] (else the identity). ``--shape name=value,...`` changes some parameters (the others
keep the file's); values are clamped to the model's range.

The pose is kept as the body model means it: each bone's rotation in model axes
(``bone rest @ matrix_basis @ bone rest^-1``, SMPL's rotation vectors), re-expressed in the
new bones' rest frames, so the limbs point where they pointed; translations in a
``matrix_basis`` keep their direction in model axes too.

Writes ``body.npz`` with the layout of ``backend/jobs/body.py`` for the new shape: ``model``,
``rig``, ``model_file``, ``shape_names``, ``shape``, ``faces``, ``rest_vertices``,
``pose_offsets``, ``bone_names``, ``bone_parents``, ``bone_rest_matrices``, ``bone_heads``,
``bone_tails``, ``skin_indices``, ``skin_weights``, ``pose_rotvecs``, ``pose_matrices``,
``pose_quaternions``, ``model_to_world``, ``vertices`` (posed, in the world: what Blender
shows), ``joints``; and the input's camera arrays (``photo_names``, ``K``, ``w2c``, ``width``,
``height``, ``world``, ``scale``) when it has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import option, path_input
from ..errors import InputError

KIND = "body_shape"
PASSED_THROUGH = ("photo_names", "K", "w2c", "width", "height", "world", "scale")


@dataclass(frozen=True)
class Config:
    """Settings of a shape change."""

    model: str = option("", "Body model: 'anny' or an SMPL-family file; empty: the body file's")
    rig: str = option("", "Anny's skeleton; empty: the body file's", ("", "default", "mixamo", "game_engine"))
    num_betas: int = option(0, "SMPL-family models: shape components (0: as many as the body file has)", minimum=0)
    shape: str = option("", "New shape values as name=value pairs separated by commas, e.g. 'height=0.7,weight=0.4' "
                            "(the others keep the body file's)")


@dataclass(frozen=True)
class Inputs:
    body: str = path_input("a body.npz: the body job's, or one Blender writes from a fitted rig")


def cli_overrides(inputs: dict, args) -> dict:
    """On the command line, a relative --model path is taken from the current folder."""
    from pathlib import Path

    model = getattr(args, "model", None)
    if model and model != "anny":
        return {"model": str(Path(model).expanduser().resolve())}
    return {}


def _read_body(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable body.npz ({exc}).",
                         "Pass the body.npz written by the body job.") from exc


def parse_shape(text: str, names: list[str]) -> dict[str, float]:
    """``'height=0.7, weight=0.4'`` -> ``{"height": 0.7, "weight": 0.4}``; raises InputError
    naming an unknown parameter or a value that is no number."""
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise InputError(f"--shape item {item!r} is not name=value.", "Write e.g. --shape height=0.7,weight=0.4.")
        if name not in names:
            raise InputError(f"The body has no shape parameter {name!r}.", f"Its parameters: {', '.join(names)}.")
        try:
            values[name] = float(value)
        except ValueError:
            raise InputError(f"--shape {name}={value.strip()!r} is not a number.", "Give a number.") from None
        if not np.isfinite(values[name]):
            raise InputError(f"--shape {name} is {value.strip()}.", "Give a finite number.")
    return values


def rest_matrices(model, shape) -> tuple[np.ndarray, np.ndarray]:
    """Bone rest matrices [J, 4, 4] (exactly orthonormal frames, as ``body_arrays`` writes
    them) and tails [J, 3] of the model at ``shape`` [1, S] (a torch tensor)."""
    import torch

    with torch.no_grad():
        heads, frames, lengths = model.bone_frames(shape)
    heads, frames = heads[0].numpy().astype(np.float64), frames[0].numpy().astype(np.float64)
    U, _, Vt = np.linalg.svd(frames)
    frames = U @ Vt
    rest = np.tile(np.eye(4), (len(heads), 1, 1))
    rest[:, :3, :3] = frames
    rest[:, :3, 3] = heads
    tails = heads + frames[:, :, 1] * lengths[0].numpy()[:, None]
    return rest, tails


def _nearest_rotations(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    U[..., :, -1] *= d[..., None]
    return U @ Vt


def run(ctx, config: Config, inputs: Inputs) -> dict:
    import torch
    from scipy.spatial.transform import Rotation

    from ..body.export import pose_like_blender
    from ..body.model import matrix_to_rotvec
    from ..body.smpl import load_model
    from ..geometry.io import write_mesh_ply, write_npz

    if not inputs.body:
        raise InputError("No body was given.", "Pass --body body.npz (the body job's).")
    body = _read_body(inputs.body)
    model_name = str(body.get("model", ""))
    spec = config.model or (str(body["model_file"]) if model_name not in ("", "anny") and "model_file" in body
                            else model_name)
    if not spec:
        raise InputError(f"{inputs.body} names no body model.", "Pass --model anny or --model PATH.")
    rig = config.rig or str(body.get("rig", "")) or "default"
    names_in = [str(n) for n in body.get("shape_names", ())]
    shape_in = np.asarray(body.get("shape", np.zeros(len(names_in))), np.float64).ravel()
    num_betas = config.num_betas or len(shape_in) or 10

    ctx.progress("model", 0, 1, "loading the body model")
    model = load_model(spec, rig if spec in ("", "anny") else "default", num_betas)
    ctx.progress("model", 1, 1, f"{model.name}: {model.num_vertices} vertices, {model.num_bones} bones")
    ctx.check_cancelled()

    # the new shape: the file's values where it names the model's parameters, then --shape
    shape = model.shape_default.numpy().astype(np.float64).copy()
    index = {name: i for i, name in enumerate(model.shape_names)}
    for name, value in zip(names_in, shape_in, strict=False):
        if name in index:
            shape[index[name]] = value
    for name, value in parse_shape(config.shape, list(model.shape_names)).items():
        shape[index[name]] = value
    lo, hi = model.shape_lo.numpy(), model.shape_hi.numpy()
    clamped = [name for name, v, a, b in zip(model.shape_names, shape, lo, hi, strict=True) if not a <= v <= b]
    if clamped:
        ctx.log("warning", f"shape values outside the model's range were clamped: {', '.join(clamped)}")
    shape = np.clip(shape, lo, hi)

    J = model.num_bones
    bone_names = [str(n) for n in body.get("bone_names", model.bone_names)]
    if sorted(bone_names) != sorted(model.bone_names) or len(bone_names) != J:
        raise InputError(f"The body's {len(bone_names)} bones are not the {model.name} ({model.rig}) model's {J}.",
                         "Give the body.npz of a body fitted with this model and rig.")
    row = {name: i for i, name in enumerate(bone_names)}
    order = [row[name] for name in model.bone_names]  # per-bone arrays into the model's bone order
    for key in ("pose_matrices", "bone_rest_matrices", "pose_rotvecs"):
        if key in body:
            body[key] = np.asarray(body[key])[order]
    if "vertex_count" in body and int(body["vertex_count"]) != model.num_vertices:
        raise InputError(f"The body's mesh has {int(body['vertex_count'])} vertices and the model "
                         f"{model.num_vertices}.", "Change the shape of an unedited body mesh.")

    shape_t = torch.as_tensor(shape, dtype=torch.float32)[None]
    rest, tails = rest_matrices(model, shape_t)
    frames = rest[:, :3, :3]

    # the pose in model axes: W = F_old @ basis @ F_old^T (per bone), kept under the new frames
    if "pose_matrices" in body:
        basis = np.asarray(body["pose_matrices"], np.float64).reshape(J, 4, 4)
        old = np.asarray(body["bone_rest_matrices"], np.float64).reshape(J, 4, 4)[:, :3, :3] \
            if "bone_rest_matrices" in body else frames
        old = _nearest_rotations(old)
        linear = old @ basis[:, :3, :3] @ old.transpose(0, 2, 1)
        moved = np.einsum("jab,jb->ja", old, basis[:, :3, 3])
        rotations = _nearest_rotations(linear)
        rigid = np.allclose(linear, rotations, atol=1e-5) and np.abs(moved).max() < 1e-7
    else:
        rotvecs_in = np.asarray(body.get("pose_rotvecs", np.zeros((J, 3))), np.float64).reshape(J, 3)
        linear = rotations = Rotation.from_rotvec(rotvecs_in).as_matrix()
        moved = np.zeros((J, 3))
        rigid = True
    pose = np.tile(np.eye(4), (J, 1, 1))
    pose[:, :3, :3] = frames.transpose(0, 2, 1) @ linear @ frames
    pose[:, :3, 3] = np.einsum("jba,jb->ja", frames, moved)
    rotvecs = matrix_to_rotvec(rotations)

    ctx.check_cancelled()
    with torch.no_grad():
        out = model(shape_t, torch.as_tensor(rotvecs, dtype=torch.float32)[None])
    M = np.asarray(body.get("model_to_world", np.eye(4)), np.float64).reshape(4, 4)
    offsets = out.pose_offsets[0].numpy() if out.pose_offsets is not None else np.zeros((model.num_vertices, 3))
    quat_xyzw = Rotation.from_matrix(_nearest_rotations(pose[:, :3, :3])).as_quat()
    arrays = {
        "model": np.array(model.name),
        "rig": np.array(model.rig),
        "model_file": np.array(model.model_file),
        "shape_names": np.array(model.shape_names),
        "shape": shape.astype(np.float32),
        "faces": model.faces.astype(np.int32),
        "rest_vertices": out.rest_vertices[0].numpy().astype(np.float32),
        "pose_offsets": offsets.astype(np.float32),
        "bone_names": np.array(model.bone_names),
        "bone_parents": model.parents.astype(np.int32),
        "bone_rest_matrices": rest.astype(np.float32),
        "bone_heads": rest[:, :3, 3].astype(np.float32),
        "bone_tails": tails.astype(np.float32),
        "skin_indices": model.skin_indices.numpy().astype(np.int32),
        "skin_weights": model.skin_weights.numpy().astype(np.float32),
        "pose_rotvecs": rotvecs.astype(np.float32),
        "pose_matrices": pose.astype(np.float32),
        "pose_quaternions": np.concatenate([quat_xyzw[:, 3:], quat_xyzw[:, :3]], 1).astype(np.float32),
        "model_to_world": M,
    }
    if rigid:  # the model's own forward pass: an independent check of what Blender shows
        vertices = out.vertices[0].numpy().astype(np.float64)
        joints = out.joints[0].numpy().astype(np.float64)
    else:  # bones moved or scaled in Blender: posed as Blender poses them
        vertices = pose_like_blender({**arrays, "model_to_world": np.eye(4)})
        joints = np.full((J, 3), np.nan)
    arrays["vertices"] = (vertices @ M[:3, :3].T + M[:3, 3]).astype(np.float32)
    arrays["joints"] = (joints @ M[:3, :3].T + M[:3, 3]).astype(np.float32)
    arrays.update({key: body[key] for key in PASSED_THROUGH if key in body})
    ctx.check_cancelled()
    write_npz(ctx.dir / "body.npz", **arrays)
    ctx.artifact("body", ctx.dir / "body.npz", "npz")
    write_mesh_ply(ctx.dir / "body.ply", arrays["vertices"], arrays["faces"])
    ctx.artifact("mesh", ctx.dir / "body.ply", "ply")
    height = float(np.ptp(arrays["rest_vertices"][:, 2])) * float(np.cbrt(abs(np.linalg.det(M[:3, :3]))))
    return {
        "model": model.name,
        "rig": model.rig,
        "shape": {name: round(float(v), 4) for name, v in zip(model.shape_names, shape, strict=True)},
        "clamped": clamped,
        "height_m": round(height, 3),
        "pose": "rotations" if rigid else "as in Blender (moved or scaled bones)",
        "vertices": model.num_vertices,
        "bones": J,
    }
