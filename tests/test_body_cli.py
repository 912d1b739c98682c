# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m backend body`` as a user runs it: a synthetic SMPL-layout model on
synthetic photos (fast), bad input, cancel; Anny on the real COCO photo (slow on a machine
where Anny's model data is not built yet: about 3 minutes, once)."""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib

import numpy as np
import pytest

from backend import protocol
from backend.body.export import pose_like_blender
from backend.jobs.body import _default_K
from tests.conftest import ROOT, data_path, run_backend
from tests.test_body_smpl import _camera, _project, posed_truth, synthetic_smpl

# Anny's built model data: once per checkout, inside the virtual environment
os.environ.setdefault("RECON_CACHE_DIR", str(ROOT / ".venv" / "recon-cache"))

BODY_KEYS = {
    "model", "rig", "model_file", "shape_names", "shape", "faces", "rest_vertices", "pose_offsets", "vertices",
    "bone_names", "bone_parents", "bone_rest_matrices", "bone_heads", "bone_tails", "skin_indices", "skin_weights",
    "pose_rotvecs", "pose_matrices", "pose_quaternions", "model_to_world", "scale", "world", "joints",
    "keypoint_names", "keypoints_3d", "keypoints_2d", "keypoints_input", "photo_names", "K", "w2c", "width",
    "height", "fit_error_px", "shape_lo", "shape_hi", "shape_deltas_vertices", "shape_deltas_heads",
    "shape_deltas_tails",
}
FAST = ("--iterations", "100", "--camera-iterations", "20")


def write_png(path, rgb: np.ndarray) -> None:
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].astype(np.uint8).tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "SMPL_SYNTHETIC.npz"
    np.savez(path, **synthetic_smpl())
    return path


def _coco(entries: dict[str, list[np.ndarray]]) -> dict:
    images, annotations = [], []
    for i, (name, people) in enumerate(entries.items()):
        images.append({"id": i + 1, "file_name": name})
        for uv in people:
            keypoints = np.concatenate([uv, np.full((17, 1), 2.0)], 1)
            keypoints[:5, 2] = 0  # the synthetic model has no face
            annotations.append({"image_id": i + 1, "category_id": 1, "keypoints": keypoints.ravel().tolist()})
    return {"images": images, "annotations": annotations}


def test_one_photo_with_keypoints_and_an_smpl_file(tmp_path, smpl_file):
    from backend.body.smpl import load_smpl

    truth = posed_truth(load_smpl(smpl_file))
    K = _default_K(640, 480, 35.0)
    uv = _project(truth, K, _camera(0.4))
    photos = tmp_path / "photos"
    photos.mkdir()
    write_png(photos / "person.png", np.full((480, 640, 3), 128))
    small = (uv - uv.mean(0)) * 0.3 + [100, 100]  # a second, smaller person
    (tmp_path / "keypoints.json").write_text(json.dumps(_coco({"person.png": [small, uv]})))
    out = tmp_path / "out"
    proc = run_backend("body", "--images", str(photos / "person.png"), "--keypoints", str(tmp_path / "keypoints.json"),
                       "--model", str(smpl_file), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["model"] == "smpl" and summary["fit_error_px"]["person.png"] < 2.0
    assert len(summary["other_people"]["person.png"]) == 1  # the smaller person, named
    with np.load(out / "body.npz") as data:
        body = {key: data[key] for key in data.files}
    assert set(body) == BODY_KEYS
    assert body["keypoints_2d"].shape == (1, 17, 2) and str(body["world"]) == "level"
    height = np.ptp(body["rest_vertices"][:, 2])
    assert np.abs(pose_like_blender(body) - body["vertices"]).max() < 1e-4 * height
    for name in ("body.ply", "keypoints_person.png", "fit_person.png", "config.json"):
        assert (out / name).is_file(), name


def test_two_photos_with_cameras_are_fitted_jointly(tmp_path, smpl_file):
    from backend.body.smpl import load_smpl

    truth = posed_truth(load_smpl(smpl_file), seed=5) * 2.5 + [0.3, -0.2, 1.0]  # a world in other units
    K = np.array([[700.0, 0, 320], [0, 700.0, 240], [0, 0, 1]])
    names = ["a.png", "b.png"]
    w2c = np.stack([_camera(0.2, 7.5), _camera(1.6, 7.5)])
    w2c[:, :3, 3] -= np.einsum("nij,j->ni", w2c[:, :3, :3], [0.3, -0.2, 1.0])
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in names:
        write_png(photos / name, np.full((480, 640, 3), 90))
    np.savez(tmp_path / "cameras.npz", names=np.array(names), K=np.stack([K, K]), w2c=w2c,
             width=np.array([640, 640]), height=np.array([480, 480]))
    uv = {name: [_project(truth, K, w2c[i])] for i, name in enumerate(names)}
    (tmp_path / "keypoints.json").write_text(json.dumps(_coco(uv)))
    out = tmp_path / "out"
    proc = run_backend("body", "--images", str(photos), "--keypoints", str(tmp_path / "keypoints.json"),
                       "--cameras", str(tmp_path / "cameras.npz"), "--model", str(smpl_file), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out / "body.npz") as body:
        assert list(body["photo_names"]) == names and str(body["world"]) == "cameras"
        np.testing.assert_allclose(body["w2c"], w2c)
        assert abs(float(body["scale"]) - 2.5) < 0.25
        assert float(body["fit_error_px"].max()) < 2.0


def test_no_person_and_bad_model_files(tmp_path, smpl_file):
    write_png(tmp_path / "empty.png", np.full((240, 320, 3), 200))
    proc = run_backend("body", "--images", str(tmp_path / "empty.png"), "--model", str(smpl_file),
                       "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "No person was found in empty.png" in proc.stderr
    (tmp_path / "model.npz").write_bytes(b"not a model")
    proc = run_backend("body", "--images", str(tmp_path / "empty.png"), "--model", str(tmp_path / "model.npz"),
                       "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2 and "model.npz" in proc.stderr


def test_cancel_stops_the_fit(tmp_path, smpl_file):
    from backend.body.smpl import load_smpl
    from backend.jobs.runner import run_job

    truth = posed_truth(load_smpl(smpl_file))
    uv = _project(truth, _default_K(640, 480, 35.0), _camera(0.0))
    write_png(tmp_path / "p.png", np.full((480, 640, 3), 60))
    (tmp_path / "k.json").write_text(json.dumps(_coco({"p.png": [uv]})))
    cancel = threading.Event()
    stages = []

    def emit(type_, fields):
        if type_ == protocol.PROGRESS:
            stages.append(fields["stage"])
            if fields["stage"] == "body":
                cancel.set()

    outcome, _ = run_job("body", {"model": str(smpl_file)}, {"images": str(tmp_path / "p.png"),
                                                              "keypoints": str(tmp_path / "k.json")},
                         "cancel-test", tmp_path / "job", emit, cancel)
    assert outcome == protocol.CANCELLED and "body" in stages
    assert not (tmp_path / "job" / "body.npz").exists()


@pytest.mark.data
@pytest.mark.slow
def test_anny_on_the_real_photo_with_its_ground_truth_keypoints(tmp_path):
    photo = data_path("people", "000000000785.jpg")
    truth_file = data_path("people", "000000000785_keypoints.json")
    proc = run_backend("body", "--images", str(photo), "--keypoints", str(truth_file), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    truth = np.array(json.loads(truth_file.read_text())["annotations"][0]["keypoints"], float).reshape(17, 3)
    with np.load(tmp_path / "body.npz") as data:
        body = {key: data[key] for key in data.files}
    error = np.linalg.norm(body["keypoints_2d"][0] - truth[:, :2], axis=1)
    print(f"Anny fitted to the ground truth: median keypoint error {np.median(error):.2f} px")
    assert np.median(error) <= 8
    assert str(body["model"]) == "anny" and len(body["bone_names"]) == 104 and body["faces"].shape[1] == 3
    height = np.ptp(body["rest_vertices"][:, 2])
    assert np.abs(pose_like_blender(body) - body["vertices"]).max() < 1e-4 * height
    np.testing.assert_allclose(body["skin_weights"].sum(1), 1, atol=1e-5)
    assert (tmp_path / "fit_000000000785.png").is_file() and (tmp_path / "body.ply").is_file()


@pytest.mark.data
@pytest.mark.slow
def test_anny_with_mediapipe_and_the_mixamo_rig(tmp_path):
    photo = data_path("people", "000000000785.jpg")
    proc = run_backend("body", "--images", str(photo), "--rig", "mixamo", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "manifest.json").read_text())["summary"]
    assert summary["keypoint_source"] == "mediapipe" and summary["fit_error_px"]["000000000785.jpg"] < 8
    with np.load(tmp_path / "body.npz") as body:
        assert "mixamorig:Hips" in list(body["bone_names"]) and str(body["rig"]) == "mixamo"
    assert (tmp_path / "keypoints_000000000785.png").is_file()
