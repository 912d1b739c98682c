# SPDX-License-Identifier: GPL-3.0-or-later
"""The body job through cameras with lens distortion (as the sfm job solves them): keypoints
seen through a distorted lens are fitted as accurately as through a pinhole, and what it
writes in pixels is in the photo's own, distorted pixels."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from backend import protocol
from backend.jobs.runner import run_job
from tests.test_body_cli import _coco, smpl_file, write_png  # noqa: F401 - smpl_file is a fixture
from tests.test_body_smpl import _camera, posed_truth

K = np.array([[620.0, 0.0, 322.0], [0.0, 620.0, 236.0], [0.0, 0.0, 1.0]])
NAMES = ["a.png", "b.png"]
LENSES = {
    "OPENCV": [-0.36, 0.09, 0.002, -0.0015],  # k1 k2 p1 p2: strong barrel, slight tangential
    "OPENCV_FISHEYE": [-0.05, 0.01, 0.002, 0.0],  # k1..k4 on theta
}
FAST = {"iterations": 100, "camera_iterations": 20}


def _project(world: np.ndarray, w2c: np.ndarray, model: str = "PINHOLE", k=()) -> np.ndarray:
    """COLMAP's lens models, written out here independently of the backend's."""
    cam = world @ w2c[:3, :3].T + w2c[:3, 3]
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    if model == "OPENCV":
        k1, k2, p1, p2 = k
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        x, y = (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + 2 * p2 * x * y + p1 * (r2 + 2 * y * y))
    elif model == "OPENCV_FISHEYE":
        r = np.hypot(x, y)
        theta = np.arctan(r)
        t2 = theta * theta
        scale = theta * (1 + k[0] * t2 + k[1] * t2 ** 2 + k[2] * t2 ** 3 + k[3] * t2 ** 4) / r
        x, y = x * scale, y * scale
    return np.stack([x * K[0, 0] + K[0, 2], y * K[1, 1] + K[1, 2]], 1)


def _fit(tmp_path, smpl_file, truth, w2c, model, k):  # noqa: F811 - the fixture's value
    folder = tmp_path / model
    photos = folder / "photos"
    photos.mkdir(parents=True)
    for name in NAMES:
        write_png(photos / name, np.full((480, 640, 3), 90))
    distortion = np.full((2, 4), np.nan)
    distortion[:, : len(k)] = k
    np.savez(folder / "cameras.npz", names=np.array(NAMES), K=np.stack([K, K]), w2c=w2c, width=np.array([640, 640]),
             height=np.array([480, 480]), model=np.array([model] * 2), distortion=distortion)
    uv = {name: [_project(truth, w2c[i], model, k)] for i, name in enumerate(NAMES)}
    (folder / "keypoints.json").write_text(json.dumps(_coco(uv)))
    outcome, _ = run_job("body", {"model": str(smpl_file), **FAST},
                         {"images": str(photos), "keypoints": str(folder / "keypoints.json"),
                          "cameras": str(folder / "cameras.npz")},
                         f"distortion-{model}", folder / "job", lambda *_: None, threading.Event())
    assert outcome == protocol.RESULT, (folder / "job").iterdir()
    with np.load(folder / "job" / "body.npz") as data:
        body = {key: data[key] for key in data.files}
    summary = json.loads((folder / "job" / "manifest.json").read_text())["summary"]
    return body, summary, np.stack([uv[name][0] for name in NAMES])


@pytest.mark.parametrize("model", sorted(LENSES))
def test_a_fit_through_a_distorted_lens_is_as_accurate_as_through_a_pinhole(tmp_path, smpl_file, model):  # noqa: F811
    from backend.body.smpl import load_smpl

    truth = posed_truth(load_smpl(smpl_file), seed=3)
    w2c = np.stack([_camera(0.3, 3.2), _camera(1.5, 3.2)])
    w2c[:, :3, 3] += [[0.55, 0.3, 0.0], [-0.5, -0.25, 0.0]]  # the person off-centre, where the lens bends most
    pinhole, _, uv_pinhole = _fit(tmp_path, smpl_file, truth, w2c, "PINHOLE", [])
    distorted, summary, uv_distorted = _fit(tmp_path, smpl_file, truth, w2c, model, LENSES[model])
    body = np.arange(5, 17)  # the synthetic model has no face
    shift = np.linalg.norm(uv_distorted - uv_pinhole, axis=-1)[:, body]
    assert np.median(shift) > 8.0  # the lens moves the keypoints: ignoring it would cost this much

    # the fitted keypoints land on the photo's (distorted) keypoints as closely as without a lens
    errors = np.linalg.norm(distorted["keypoints_2d"] - uv_distorted, axis=-1)[:, body]
    errors_pinhole = np.linalg.norm(pinhole["keypoints_2d"] - uv_pinhole, axis=-1)[:, body]
    assert np.median(errors) < 2.0 and np.median(errors) < np.median(errors_pinhole) + 0.5
    assert max(summary["fit_error_px"].values()) < 2.0
    np.testing.assert_allclose(distorted["keypoints_input"][..., :2], uv_distorted, atol=1e-3)
    # and in 3D: the same joints, to within a centimetre of the pinhole fit's accuracy
    joint_error = np.linalg.norm(distorted["keypoints_3d"][body] - truth[body], axis=-1).mean()
    joint_error_pinhole = np.linalg.norm(pinhole["keypoints_3d"][body] - truth[body], axis=-1).mean()
    assert joint_error < joint_error_pinhole + 0.01, (joint_error, joint_error_pinhole)


def test_the_person_mask_is_undistorted_with_the_keypoints():
    from backend.jobs.body import undistort_mask, undistort_pixels

    lens = ("OPENCV", np.array(LENSES["OPENCV"]))
    # a person-sized box as a pinhole sees it, off-centre; the photo shows it through the lens
    box = (380.0, 60.0, 600.0, 440.0)  # x0 y0 x1 y1, pinhole pixels
    ys, xs = np.meshgrid(np.arange(480) + 0.5, np.arange(640) + 0.5, indexing="ij")
    seen = undistort_pixels(np.stack([xs.ravel(), ys.ravel()], 1), K, lens).reshape(480, 640, 2)
    photo_mask = ((seen[..., 0] > box[0]) & (seen[..., 0] < box[2]) & (seen[..., 1] > box[1])
                  & (seen[..., 1] < box[3])).astype(np.float32)
    truth = (xs > box[0]) & (xs < box[2]) & (ys > box[1]) & (ys < box[3])
    raw_iou = (truth & (photo_mask > 0.5)).sum() / (truth | (photo_mask > 0.5)).sum()
    mask = undistort_mask(photo_mask, K, 640, 480, lens) > 0.5
    iou = (truth & mask).sum() / (truth | mask).sum()
    assert raw_iou < 0.9 and iou > 0.98, (raw_iou, iou)


@pytest.mark.blender
def test_selected_cameras_send_their_lens_distortion_to_the_fit(empty_scene, blender, tmp_path):
    """Cameras as Solve Cameras leaves them (the lens model and its distortion kept on the
    camera): the body job gets their distortion in its cameras.npz, so their photos'
    keypoints are undistorted."""
    import bpy

    from tests.test_blender import ext, select_only

    body_mod = ext(blender, "addon.body")
    converters = ext(blender, "addon.converters")
    names = ["front.png", "side.png"]
    for name in names:
        write_png(tmp_path / name, np.full((480, 640, 3), 90))
    k = LENSES["OPENCV"]
    params = np.full((2, 8), np.nan)
    params[0, :4] = [K[0, 0], K[0, 2], K[1, 2], -0.05]  # SIMPLE_RADIAL: f cx cy k
    params[1] = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *k]  # OPENCV: fx fy cx cy k1 k2 p1 p2
    w2c = np.stack([_camera(0.3, 3.2), _camera(1.5, 3.2)])
    cameras = {"names": np.array(names), "K": np.stack([K, K]), "w2c": w2c, "width": np.array([640, 640]),
               "height": np.array([480, 480]), "model": np.array(["SIMPLE_RADIAL", "OPENCV"]), "params": params}
    objects = converters.camera_objects(cameras, empty_scene.collection, empty_scene, str(tmp_path))
    select_only(*objects)
    job = body_mod.prepare(bpy.context, {"iterations": 8}, cameras=body_mod.selected_cameras(bpy.context))
    with np.load(job.inputs["cameras"]) as written:
        rows = [written["names"].tolist().index(name) for name in names]
        assert written["model"][rows].tolist() == ["SIMPLE_RADIAL", "OPENCV"]
        np.testing.assert_allclose(written["distortion"][rows[0], :1], [-0.05])
        np.testing.assert_allclose(written["distortion"][rows[1], :4], k)
