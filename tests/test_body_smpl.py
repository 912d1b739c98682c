# SPDX-License-Identifier: GPL-3.0-or-later
"""Body models without Anny: a small synthetic model file in the official SMPL layout
exercises the loaders (npz, and pkl through the restricted unpickler), the forward pass,
the fit, and the body.npz arrays Blender builds from. Fast: no model data to build."""

from __future__ import annotations

import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from backend.body import safe_pickle
from backend.body.export import body_arrays, pose_like_blender
from backend.body.fit import FitSettings, Rig, View, fit_body
from backend.body.model import chain_transforms, rotvec_to_matrix
from backend.body.smpl import BODY_PARENTS, load_smpl
from backend.errors import InputError

# SMPL's 24 joints, roughly where a standing person has them (SMPL axes: Y up, +Z front, +X left)
JOINTS = np.array([
    (0.0, 0.95, 0.0), (0.09, 0.87, 0.0), (-0.09, 0.87, 0.0), (0.0, 1.05, -0.01), (0.10, 0.50, 0.01),
    (-0.10, 0.50, 0.01), (0.0, 1.18, -0.01), (0.10, 0.08, -0.02), (-0.10, 0.08, -0.02), (0.0, 1.25, 0.0),
    (0.10, 0.02, 0.10), (-0.10, 0.02, 0.10), (0.0, 1.48, -0.01), (0.07, 1.40, 0.0), (-0.07, 1.40, 0.0),
    (0.0, 1.58, 0.02), (0.17, 1.42, -0.01), (-0.17, 1.42, -0.01), (0.43, 1.42, -0.02), (-0.43, 1.42, -0.02),
    (0.68, 1.42, -0.01), (-0.68, 1.42, -0.01), (0.76, 1.42, -0.01), (-0.76, 1.42, -0.01),
])
PARENTS = list(BODY_PARENTS) + [20, 21]


def synthetic_smpl(seed: int = 0) -> dict[str, np.ndarray]:
    """A 24-joint model in SMPL's file layout: a cube of 8 vertices around each joint, skinned
    to it and its parent, with small random shape and pose-corrective directions."""
    rng = np.random.default_rng(seed)
    corners = np.array([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * 0.03
    v_template = (JOINTS[:, None, :] + corners[None]).reshape(-1, 3)
    V, J = len(v_template), len(JOINTS)
    cube = np.array([(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
                     (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)])
    faces = (cube[None] + 8 * np.arange(J)[:, None, None]).reshape(-1, 3)
    weights = np.zeros((V, J))
    for j in range(J):
        rows = slice(8 * j, 8 * j + 8)
        weights[rows, j] = 0.8 if j else 1.0
        if j:
            weights[rows, PARENTS[j]] = 0.2
    regressor = np.zeros((J, V))
    for j in range(J):
        regressor[j, 8 * j:8 * j + 8] = 1 / 8
    kintree = np.array([[4294967295] + PARENTS[1:], list(range(J))], dtype=np.int64)
    return {
        "v_template": v_template,
        "shapedirs": rng.normal(size=(V, 3, 10)) * 0.01,
        "posedirs": rng.normal(size=(V, 3, 9 * (J - 1))) * 0.001,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
    }


@pytest.fixture(scope="module")
def smpl_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("smpl") / "SMPL_SYNTHETIC.npz"
    np.savez(path, **synthetic_smpl())
    return path


@pytest.fixture(scope="module")
def smpl_model(smpl_npz):
    return load_smpl(smpl_npz)


def test_npz_and_pkl_give_the_same_model(smpl_npz, tmp_path):
    arrays = synthetic_smpl()
    arrays["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])  # as SMPL's pkl files hold it
    arrays["bs_style"] = "lbs"
    pkl = tmp_path / "SMPL_SYNTHETIC.pkl"
    pkl.write_bytes(pickle.dumps(arrays, protocol=2))
    a, b = load_smpl(smpl_npz), load_smpl(pkl)
    assert a.name == b.name == "smpl" and a.num_bones == 24 and a.num_shape == 10
    assert torch.equal(a.template, b.template) and torch.allclose(a.joint_template, b.joint_template)
    # SMPL's Y-up axes turned into model space: Z up, -Y front
    assert torch.allclose(a.joint_template[15], torch.tensor([0.0, -0.02, 1.58]), atol=1e-6)
    assert not bool(a.keypoint_valid[:5].any()) and bool(a.keypoint_valid[5:].all())  # no face on this topology


def test_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "model.pkl"
    # arrays first, the payload after them: nothing at all may be unpickled
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "f": Evil()}, protocol=2))
    with pytest.raises(InputError) as info:
        load_smpl(path)
    assert "system" in info.value.message and "Nothing was unpickled" in info.value.message
    assert not marker.exists()
    # the same with the newest protocol (STACK_GLOBAL), and through the unpickler alone
    path.write_bytes(pickle.dumps([np.ones(2), Evil()], protocol=5))
    with pytest.raises(InputError):
        safe_pickle.load_restricted_pickle(path)
    with pytest.raises(pickle.UnpicklingError):
        safe_pickle._RestrictedUnpickler(open(path, "rb")).load()
    assert not marker.exists()


def test_chumpy_file_is_refused_with_the_conversion(tmp_path, monkeypatch):
    fake = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, r):
            self.r = r

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    fake.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", fake)
    arrays = synthetic_smpl()
    arrays["shapedirs"] = Ch(arrays["shapedirs"])
    path = tmp_path / "basicModel_neutral.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    with pytest.raises(InputError) as info:
        load_smpl(path)
    assert "chumpy" in info.value.message and ".npz" in info.value.hint


def test_files_that_are_not_body_models(tmp_path, smpl_npz):
    arrays = synthetic_smpl()
    del arrays["posedirs"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(InputError, match="posedirs"):
        load_smpl(tmp_path / "partial.npz")
    arrays = synthetic_smpl()
    arrays["kintree_table"] = arrays["kintree_table"][:, :20]
    np.savez(tmp_path / "joints.npz", **arrays)
    with pytest.raises(InputError, match="SMPL has 24"):
        load_smpl(tmp_path / "joints.npz")
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(InputError):
        load_smpl(tmp_path / "text.pkl")
    with pytest.raises(InputError, match="does not exist"):
        load_smpl(tmp_path / "missing.npz")


def test_chain_transforms_match_a_plain_loop():
    torch.manual_seed(0)
    parents = np.array(PARENTS)
    heads = torch.randn(2, 24, 3)
    rotations = rotvec_to_matrix(torch.randn(2, 24, 3))
    out = chain_transforms(parents, heads, rotations)
    for b in range(2):
        world = []
        for j, p in enumerate(parents):
            local = torch.eye(4)
            local[:3, :3] = rotations[b, j]
            local[:3, 3] = heads[b, j] - rotations[b, j] @ heads[b, j]
            world.append(local if p < 0 else world[p] @ local)
        assert torch.allclose(out[b], torch.stack(world)[:, :3], atol=1e-5)
    assert torch.allclose(rotvec_to_matrix(torch.zeros(3)), torch.eye(3))


def test_forward_zero_pose_is_the_rest_mesh_and_a_knee_moves_only_its_leg(smpl_model):
    m = smpl_model
    shape = torch.zeros(1, m.num_shape)
    rest = m(shape, torch.zeros(1, 24, 3))
    assert torch.allclose(rest.vertices, rest.rest_vertices, atol=1e-6)
    rotvecs = torch.zeros(1, 24, 3)
    rotvecs[0, 4] = torch.tensor([0.8, 0.0, 0.0])  # left knee
    posed = m(shape, rotvecs)
    moved = (posed.vertices - rest.vertices).norm(dim=-1)[0].reshape(24, 8).max(1).values
    assert moved[7] > 0.1 and moved[10] > 0.1  # left ankle and foot
    assert moved[[8, 11, 20, 21]].max() < 0.01  # right leg and the hands (pose correctives only)


def _project(world, K, w2c):
    cam = world @ w2c[:3, :3].T + w2c[:3, 3]
    return cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]


def _camera(angle: float, distance: float = 3.0) -> np.ndarray:
    centre = np.array([distance * math.sin(angle), -distance * math.cos(angle), 0.0])
    forward = -centre / np.linalg.norm(centre)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(forward, x), forward])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return w2c


def posed_truth(model, seed: int = 1):
    """A plausible pose and shape of ``model`` and its world keypoints [17, 3]."""
    rng = np.random.default_rng(seed)
    rig = Rig(model)
    coefs = rig.mean + torch.as_tensor(rng.normal(size=rig.mean.shape), dtype=torch.float32) * rig.sigma * 0.5
    coefs = torch.maximum(torch.minimum(coefs, rig.hi), rig.lo)
    shape = torch.as_tensor(rng.uniform(-1, 1, size=(1, model.num_shape)), dtype=torch.float32)
    with torch.no_grad():
        out = model(shape, rig.full_rotvecs(coefs)[None])
    return out.keypoints[0].numpy().astype(np.float64)


FAST = FitSettings(camera_steps=15, body_steps=(10, 10, 10, 15))


def test_fit_recovers_a_synthetic_pose_in_one_and_in_two_views(smpl_model):
    truth = posed_truth(smpl_model)
    K = np.array([[900.0, 0, 320], [0, 900.0, 240], [0, 0, 1]])
    for cameras in ([_camera(0.3)], [_camera(0.3), _camera(1.9)]):
        views = []
        for i, w2c in enumerate(cameras):
            uv = _project(truth, K, w2c)
            keypoints = np.concatenate([uv, np.ones((17, 1))], 1)
            views.append(View(f"v{i}", K, w2c if len(cameras) > 1 else np.eye(4), 640, 480, keypoints))
        result = fit_body(smpl_model, views, FAST, cameras_known=len(cameras) > 1)
        valid = smpl_model.keypoint_valid.numpy()
        errors = [np.linalg.norm(result.keypoints_2d[p] - views[p].keypoints[:, :2], axis=1)[valid] for p in range(len(views))]
        assert np.median(np.concatenate(errors)) < 2.0, errors
        assert result.keypoints_2d.shape == (len(views), 17, 2) and np.isfinite(result.w2c).all()


def test_body_arrays_pose_in_blender_as_in_the_model(smpl_model):
    truth = posed_truth(smpl_model, seed=3)
    K = np.array([[900.0, 0, 320], [0, 900.0, 240], [0, 0, 1]])
    keypoints = np.concatenate([_project(truth, K, _camera(0.0)), np.ones((17, 1))], 1)
    views = [View("photo.jpg", K, np.eye(4), 640, 480, keypoints)]
    result = fit_body(smpl_model, views, FAST)
    body = body_arrays(smpl_model, result, views, "level")
    height = np.ptp(body["rest_vertices"][:, 2])
    assert np.abs(pose_like_blender(body) - body["vertices"]).max() < 1e-4 * height
    np.testing.assert_allclose(body["skin_weights"].sum(1), 1, atol=1e-5)
    rest = body["bone_rest_matrices"][:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rest @ rest.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rest.shape), atol=1e-5)
    assert np.abs(body["pose_offsets"]).max() > 0  # SMPL's correctives travel as a shape key
    # the level world: camera upright and level, looking along +Y, feet on the ground
    assert abs(float(body["vertices"][:, 2].min())) < 1e-4
    assert np.allclose(body["w2c"][0][:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-6)
    assert body["keypoints_2d"].shape == (1, 17, 2) and body["photo_names"][0] == "photo.jpg"
    # shape deltas: SMPL's betas are linear, so one unit of beta 2 moves the rest mesh by its delta
    shape = torch.as_tensor(body["shape"])[None].clone()
    shape[0, 2] += 1.0
    _, moved, heads = smpl_model.rest(shape)
    np.testing.assert_allclose(moved[0].numpy(), body["rest_vertices"] + body["shape_deltas_vertices"][2], atol=1e-4)
    np.testing.assert_allclose(heads[0].numpy(), body["bone_heads"] + body["shape_deltas_heads"][2], atol=1e-4)


def test_silhouette_term_pulls_vertices_into_the_mask(smpl_model):
    truth = posed_truth(smpl_model, seed=2)
    K = np.array([[900.0, 0, 320], [0, 900.0, 240], [0, 0, 1]])
    uv = _project(truth, K, _camera(0.0))
    keypoints = np.concatenate([uv, np.ones((17, 1))], 1)
    mask = np.zeros((480, 640), np.float32)
    x0, y0 = uv.min(0).astype(int)
    x1, y1 = uv.max(0).astype(int)
    mask[y0:y1, x0:x1] = 1.0  # the keypoints' box as the person's outline
    settings = FitSettings(camera_steps=15, body_steps=(10, 10, 10, 15), w_silhouette=10.0, silhouette_vertices=200)
    result = fit_body(smpl_model, [View("masked", K, np.eye(4), 640, 480, keypoints, mask)], settings)
    valid = smpl_model.keypoint_valid.numpy()
    assert np.median(np.linalg.norm(result.keypoints_2d[0] - uv, axis=1)[valid]) < 3.0
    assert "body4" in result.stage_losses and np.isfinite(result.loss)
