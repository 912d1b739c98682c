# SPDX-License-Identifier: GPL-3.0-or-later
"""Reconstructions in other tools' formats, without Blender: the backend reads COLMAP
models and transforms.json (``backend/sfm/scene.py``), the add-on's writers
(``addon/camera_export.py``) write them, and each reads what the other writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from addon import camera_export, camera_math
from backend.errors import InputError
from tests.conftest import run_backend
from tests.scenes import make_colmap_text_model, make_transforms

pycolmap = pytest.importorskip("pycolmap")
from backend.sfm.scene import load_scene  # noqa: E402 - needs pycolmap


def test_colmap_text_model_reads_with_observations_and_photos(tmp_path):
    truth = make_colmap_text_model(tmp_path / "my project é")  # unicode and spaces in the path
    scene = load_scene(tmp_path / "my project é")  # finds sparse/0 and the images folder
    assert scene.source == "colmap" and list(scene.cameras["names"]) == truth["names"]
    np.testing.assert_allclose(scene.cameras["w2c"], truth["w2c"], atol=1e-12)
    assert scene.cameras["model"][0] == "SIMPLE_RADIAL"
    np.testing.assert_array_equal(scene.cameras["params"][0, :4], truth["params"])
    assert scene.missing_photos == [] and all(p.endswith(".png") for p in scene.cameras["paths"])
    obs = scene.observations
    # Every observation projects (pinhole, after undistortion) to within the 0.3 px noise.
    err = []
    for i in range(len(truth["names"])):
        m = obs["image_index"] == i
        uv = camera_math.project_opencv(scene.cameras["K"][i], scene.cameras["w2c"][i], scene.points["xyz"][obs["point_index"][m]])
        err.append(np.linalg.norm(uv - obs["xy_undistorted"][m], axis=1))
    assert 0.2 < np.concatenate(err).mean() < 0.5
    assert len(scene.points["xyz"]) == 300 and scene.points["track_length"].min() >= 0


def test_colmap_binary_model_and_its_files(tmp_path):
    truth = make_colmap_text_model(tmp_path / "project")
    binary = tmp_path / "binary"
    binary.mkdir()
    pycolmap.Reconstruction(str(truth["model_dir"])).write_binary(str(binary))
    scene = load_scene(binary)
    np.testing.assert_allclose(scene.cameras["w2c"], truth["w2c"], atol=1e-12)
    assert scene.missing_photos == truth["names"]  # no images folder beside this one


def test_transforms_json_synthetic_layout(tmp_path):
    truth = make_transforms(tmp_path / "lego-like")
    scene = load_scene(truth["path"])
    assert list(scene.cameras["names"]) == truth["names"] and scene.missing_photos == []
    np.testing.assert_allclose(scene.cameras["K"], np.broadcast_to(truth["K"], (6, 3, 3)), rtol=1e-12)
    np.testing.assert_allclose(scene.cameras["w2c"], truth["w2c"], atol=1e-12)
    assert set(scene.cameras["model"]) == {"PINHOLE"} and len(scene.points["xyz"]) == 0


def test_transforms_json_nerfstudio_per_frame_intrinsics(tmp_path):
    frames = [
        {"file_path": "images/a.jpg", "transform_matrix": np.eye(4)[:3].tolist(), "fl_x": 500.0, "fl_y": 510.0, "cx": 321.0, "cy": 239.0},
        {"file_path": "images/b.jpg", "transform_matrix": np.eye(4).tolist(), "fl_x": 600.0},
    ]
    meta = {"w": 640, "h": 480, "fl_x": 400.0, "cx": 320.0, "cy": 240.0, "camera_model": "OPENCV", "k1": 0.01, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path)
    np.testing.assert_allclose(scene.cameras["K"][0], [[500, 0, 321], [0, 510, 239], [0, 0, 1]])
    np.testing.assert_allclose(scene.cameras["K"][1], [[600, 0, 320], [0, 600, 240], [0, 0, 1]])
    assert list(scene.cameras["model"]) == ["OPENCV", "OPENCV"] and scene.cameras["distortion"][0, 0] == 0.01
    # OpenGL camera axes: the identity camera looks down -z, so OpenCV's w2c flips y and z.
    np.testing.assert_allclose(scene.cameras["w2c"][1], np.diag([1.0, -1.0, -1.0, 1.0]))
    assert scene.missing_photos == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "Could not read"),
    ('{"frames": []}', "has no 'frames'"),
    ('{"frames": [{"file_path": "a.png"}]}', "lacks 'transform_matrix'"),
    ('{"w": 10, "h": 10, "frames": [{"file_path": "a.png", "transform_matrix": [[1, 2]]}]}', "not a finite 4x4"),
    ('{"w": 10, "h": 10, "frames": [{"file_path": "a.png", "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "no focal length"),
    ('{"camera_angle_x": 0.5, "frames": [{"file_path": "a.png", "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "gives no image size"),
])
def test_bad_transforms_json_names_the_problem(tmp_path, content, message):
    (tmp_path / "transforms.json").write_text(content)
    with pytest.raises(InputError, match=message):
        load_scene(tmp_path / "transforms.json")


def test_a_folder_without_a_reconstruction_is_named(tmp_path):
    with pytest.raises(InputError, match="holds no reconstruction"):
        load_scene(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_scene(tmp_path / "nowhere")


@pytest.mark.parametrize("maker", ["colmap", "transforms"])
def test_exported_files_read_back_exactly(tmp_path, maker):
    """The add-on's writers and the backend's readers agree: intrinsics and lens parameters
    exactly, poses to double precision."""
    source = make_colmap_text_model(tmp_path / "in")["model_dir"] if maker == "colmap" else make_transforms(tmp_path / "in")["path"]
    scene = load_scene(source)
    camera_export.write_colmap_text(tmp_path / "out" / "colmap", scene.cameras, scene.points)
    camera_export.write_transforms_json(tmp_path / "out" / "transforms.json", scene.cameras)
    for again in (load_scene(tmp_path / "out" / "colmap"), load_scene(tmp_path / "out" / "transforms.json")):
        np.testing.assert_array_equal(again.cameras["K"], scene.cameras["K"])
        np.testing.assert_allclose(again.cameras["w2c"], scene.cameras["w2c"], atol=1e-14)
        assert list(again.cameras["width"]) == list(scene.cameras["width"])
        assert [p for p in again.cameras["paths"]] == [p for p in scene.cameras["paths"]] or again.source == "colmap"
    colmap = load_scene(tmp_path / "out" / "colmap")
    assert list(colmap.cameras["model"]) == list(scene.cameras["model"])
    np.testing.assert_array_equal(colmap.cameras["params"], scene.cameras["params"])
    np.testing.assert_allclose(colmap.points["xyz"], scene.points["xyz"], atol=1e-15)
    np.testing.assert_array_equal(colmap.points["rgb"], scene.points["rgb"])


def test_import_cli_writes_what_blender_reads(tmp_path):
    make_colmap_text_model(tmp_path / "project")
    proc = run_backend("import", "--source", str(tmp_path / "project"), "--out", str(tmp_path / "job"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["format"] == "colmap" and summary["cameras"] == 8 and summary["points"] == 300
    assert {"cameras.npz", "points.npz", "points.ply", "observations.npz", "manifest.json", "job.log"} <= {p.name for p in (tmp_path / "job").iterdir()}
    proc = run_backend("import", "--source", str(tmp_path / "nothing here"), "--out", str(tmp_path / "job2"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_alignment_stands_the_scene_up_on_the_ground():
    rng = np.random.default_rng(3)
    w2c = make_ring(rng)
    c2w = camera_math.blender_c2w_from_w2c_opencv(w2c)
    # tilt and shift the whole scene arbitrarily
    tilt = np.eye(4)
    tilt[:3, :3] = camera_math.rotation_between([0, 0, 1.0], [0.3, -0.5, 0.8])
    tilt[:3, 3] = [5.0, -2.0, 1.0]
    points = np.concatenate([rng.uniform(-1, 1, (500, 2)), rng.uniform(0, 0.5, (500, 1))], axis=1)
    points[:, 2] -= 0.5  # ground at z = -0.5 before the tilt
    c2w_tilted = camera_math.apply_similarity_to_cameras(tilt, c2w)
    points_tilted = points @ tilt[:3, :3].T + tilt[:3, 3]
    S = camera_math.alignment(c2w_tilted, points_tilted, known_distance=2.0)
    c2w_aligned = camera_math.apply_similarity_to_cameras(S, c2w_tilted)
    points_aligned = points_tilted @ S[:3, :3].T + S[:3, 3]
    up = c2w_aligned[:, :3, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-9)
    assert abs(np.percentile(points_aligned[:, 2], 1.0)) < 1e-9
    assert np.linalg.norm(c2w_aligned[0, :3, 3] - c2w_aligned[1, :3, 3]) == pytest.approx(2.0)
    np.testing.assert_allclose(np.linalg.det(c2w_aligned[:, :3, :3]), 1.0)  # rotations stay rotations


def make_ring(rng):
    from tests.scenes import ring_of_cameras

    return ring_of_cameras(10, seed=int(rng.integers(100)))


def test_quaternions_match_scipy():
    from scipy.spatial.transform import Rotation

    R = Rotation.random(500, random_state=1)
    ref = R.as_quat(scalar_first=True)
    ref *= np.where(ref[:, :1] < 0, -1.0, 1.0)
    np.testing.assert_allclose(camera_math.quaternion_wxyz_from_matrix(R.as_matrix()), ref, atol=1e-12)
    for flip in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):  # half turns
        q = camera_math.quaternion_wxyz_from_matrix(flip)
        np.testing.assert_allclose(Rotation.from_quat(q, scalar_first=True).as_matrix(), flip, atol=1e-12)


def test_colmap_text_export_refuses_spaces_in_photo_names(tmp_path):
    cameras = {"names": np.array(["a b.png"]), "K": np.eye(3)[None], "w2c": np.eye(4)[None],
               "width": np.array([4]), "height": np.array([4])}
    with pytest.raises(ValueError, match="cannot hold spaces in photo names \\('a b.png'\\)"):
        camera_export.write_colmap_text(tmp_path, cameras)
