# SPDX-License-Identifier: GPL-3.0-or-later
"""Reconstructions in and out of headless Blender: ``recon.import_reconstruction`` on COLMAP
models and transforms.json (through the real backend), ``recon.export_cameras``, the round
trip import -> export -> import, alignment, the animated camera, and every imported
observation projected through Blender's own ``world_to_camera_view``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.scenes import make_colmap_text_model, make_transforms
from tests.test_blender import ext, manager, select_only

pytestmark = pytest.mark.blender
pytest.importorskip("pycolmap")


def collection_of(job):
    import bpy

    return next(c for c in bpy.data.collections if c.get("recon_job") == job.id)


def recon_cameras(collection):
    return sorted((o for o in collection.objects if o.type == "CAMERA" and "recon_photo" in o), key=lambda o: o.name)


def blender_pixels(scene, camera, points: np.ndarray) -> np.ndarray:
    """Pixels (COLMAP convention) of world points through a Blender camera, by Blender's own
    ``world_to_camera_view`` (normalised view-frame coordinates, y up)."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    scene.render.resolution_x, scene.render.resolution_y = camera["recon_width"], camera["recon_height"]
    ndc = np.array([world_to_camera_view(scene, camera, Vector(p))[:2] for p in points])  # a test: Blender's own per-point call
    return np.stack([ndc[:, 0] * camera["recon_width"], (1.0 - ndc[:, 1]) * camera["recon_height"]], axis=1)


def reprojection_errors(scene, collection, job) -> np.ndarray:
    """Every observation of the job's ``observations.npz`` against its point as imported
    into Blender (the point cloud's positions) seen through the imported camera."""
    obs = dict(np.load(job.artifact("observations")))
    cloud = next(o for o in collection.objects if o.type == "POINTCLOUD")
    xyz = np.empty(len(cloud.data.points) * 3, np.float32)
    cloud.data.attributes["position"].data.foreach_get("vector", xyz)
    xyz = xyz.reshape(-1, 3) @ np.array(cloud.matrix_world)[:3, :3].T + np.array(cloud.matrix_world)[:3, 3]
    names = list(np.load(job.artifact("cameras"))["names"])
    cameras = {o["recon_photo"]: o for o in recon_cameras(collection)}
    errors = []
    for row, name in enumerate(names):  # per camera
        sel = obs["image_index"] == row
        pixels = blender_pixels(scene, cameras[str(name)], xyz[obs["point_index"][sel]])
        errors.append(np.linalg.norm(pixels - obs["xy_undistorted"][sel], axis=1))
    return np.concatenate(errors)


def test_import_colmap_model_projects_like_the_model(empty_scene, blender, tmp_path):
    import bpy

    truth = make_colmap_text_model(tmp_path / "my capture é")
    assert bpy.ops.recon.import_reconstruction(filepath=str(truth["model_dir"] / "images.txt")) == {"FINISHED"}
    job = manager(blender).latest("import")
    collection = collection_of(job)
    assert collection.name == "Recon my capture é"  # named after the project, not sparse/0
    cameras = recon_cameras(collection)
    assert [o.name for o in cameras] == truth["names"]
    assert all(o.data.background_images[0].image is not None for o in cameras)  # found in ../../images
    assert cameras[0].data["recon_model"] == "SIMPLE_RADIAL" and list(cameras[0].data["recon_params"]) == list(truth["params"])
    errors = reprojection_errors(empty_scene, collection, job)
    # The photos' keypoints carry 0.3 px of noise; Blender's cameras see the points where COLMAP's do.
    import pycolmap

    model = pycolmap.Reconstruction(str(truth["model_dir"]))
    model.update_point_3d_errors()  # the text file holds made-up errors
    assert abs(errors.mean() - model.compute_mean_reprojection_error()) < 0.05


@pytest.mark.parametrize("maker", ["colmap", "transforms"])
def test_import_export_import_gives_the_same_cameras(empty_scene, blender, tmp_path, maker):
    import bpy

    if maker == "colmap":
        source = make_colmap_text_model(tmp_path / "in")["model_dir"]
        again_path = tmp_path / "out" / "colmap"
    else:
        source = make_transforms(tmp_path / "in")["path"]
        again_path = tmp_path / "out" / "transforms.json"
    assert bpy.ops.recon.import_reconstruction(filepath=str(source)) == {"FINISHED"}
    first = manager(blender).latest("import")
    collection = collection_of(first)
    cams = recon_cameras(collection)
    select_only(*cams, *[o for o in collection.objects if o.type == "POINTCLOUD"])
    assert bpy.ops.recon.export_cameras(directory=str(tmp_path / "out")) == {"FINISHED"}
    assert (tmp_path / "out" / "transforms.json").is_file() and (tmp_path / "out" / "colmap" / "images.txt").is_file()
    assert bpy.ops.recon.import_reconstruction(filepath=str(again_path)) == {"FINISHED"}
    second = manager(blender).latest("import")
    a, b = np.load(first.artifact("cameras")), np.load(second.artifact("cameras"))
    assert list(a["names"]) == list(b["names"])
    np.testing.assert_array_equal(a["K"], b["K"])  # intrinsics exact
    np.testing.assert_array_equal(a["width"], b["width"])
    centres = lambda w2c: -np.einsum("nji,nj->ni", w2c[:, :3, :3], w2c[:, :3, 3])  # noqa: E731
    size = np.ptp(centres(a["w2c"]), axis=0).max()
    assert np.abs(centres(a["w2c"]) - centres(b["w2c"])).max() < 1e-6 * size
    np.testing.assert_allclose(a["w2c"][:, :3, :3], b["w2c"][:, :3, :3], atol=1e-6)
    if maker == "colmap":
        np.testing.assert_array_equal(a["params"], b["params"])  # the lens distortion too
        pa, pb = np.load(first.artifact("points_arrays")), np.load(second.artifact("points_arrays"))
        np.testing.assert_allclose(pa["xyz"], pb["xyz"], atol=1e-6 * size)
        np.testing.assert_array_equal(pa["rgb"], pb["rgb"])


def test_export_from_cameras_made_in_blender(empty_scene, blender, tmp_path):
    """A synthetic capture set up by hand: the exported files describe exactly these cameras."""
    import bpy

    cm = ext(blender, "addon.camera_math")
    empty_scene.render.resolution_x, empty_scene.render.resolution_y, empty_scene.render.resolution_percentage = 400, 300, 50
    objects = []
    for i in range(3):
        data = bpy.data.cameras.new(f"cam{i}")
        data.lens, data.shift_x, data.shift_y = 35.0 + i, 0.01 * i, -0.02
        obj = bpy.data.objects.new(f"cam{i}", data)
        obj.location = (3.0 * np.cos(i), 3.0 * np.sin(i), 1.0)
        obj.rotation_euler = (1.2, 0.0, 1.57 + i)
        empty_scene.collection.objects.link(obj)
        objects.append(obj)
    bpy.context.view_layer.update()
    select_only(*objects)
    assert bpy.ops.recon.export_cameras(directory=str(tmp_path), formats={"TRANSFORMS"}) == {"FINISHED"}
    import json

    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert (meta["w"], meta["h"]) == (200, 150)  # the render size at its percentage
    shared = {key: value for key, value in meta.items() if key != "frames"}
    for obj, frame in zip(objects, meta["frames"], strict=True):
        frame = {**shared, **frame}  # per-frame keys override the shared ones
        assert frame["file_path"] == f"{obj.name}.png"
        np.testing.assert_allclose(frame["transform_matrix"], np.array(obj.matrix_world), atol=1e-6)
        intr = cm.BlenderIntrinsics(obj.data.lens, 36.0, 24.0, "AUTO", obj.data.shift_x, obj.data.shift_y, 200, 150)
        K = cm.K_from_blender_intrinsics(intr)
        assert (frame["fl_x"], frame["cx"], frame["cy"]) == pytest.approx((K[0, 0], K[0, 2], K[1, 2]), rel=1e-12)
    # the projection Blender uses agrees with those intrinsics
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    point = np.array([0.2, -0.1, 0.3])
    frame = {**shared, **meta["frames"][1]}
    w2c = cm.w2c_opencv_from_blender_c2w(np.array(frame["transform_matrix"]))
    K = np.array([[frame["fl_x"], 0, frame["cx"]], [0, frame["fl_y"], frame["cy"]], [0, 0, 1]])
    uv = cm.project_opencv(K, w2c, point[None])[0]
    ndc = world_to_camera_view(empty_scene, objects[1], Vector(point))
    np.testing.assert_allclose(uv, [ndc.x * 200, (1 - ndc.y) * 150], atol=1e-3)


def test_align_known_distance_and_animated_camera(empty_scene, blender, tmp_path):
    import bpy

    truth = make_colmap_text_model(tmp_path / "clip")
    assert bpy.ops.recon.import_reconstruction(
        filepath=str(truth["model_dir"]), align=True, known_distance=2.5, animated_camera=True) == {"FINISHED"}
    collection = collection_of(manager(blender).latest("import"))
    cams = recon_cameras(collection)
    up = np.mean([np.array(o.matrix_world)[:3, 1] for o in cams], axis=0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-5)
    assert np.linalg.norm(cams[0].matrix_world.translation - cams[1].matrix_world.translation) == pytest.approx(2.5, rel=1e-5)
    cloud = next(o for o in collection.objects if o.type == "POINTCLOUD")
    z = np.empty(len(cloud.data.points) * 3, np.float32)
    cloud.data.attributes["position"].data.foreach_get("vector", z)
    assert abs(np.percentile(z.reshape(-1, 3)[:, 2], 1.0)) < 1e-4
    animated = next(o for o in collection.objects if o.type == "CAMERA" and "recon_photo" not in o)
    for frame, cam in zip((0, 3, 7), (cams[0], cams[3], cams[7]), strict=True):  # photo_00 .. photo_07 -> frames 0..7
        empty_scene.frame_set(frame)
        np.testing.assert_allclose(np.array(animated.matrix_world), np.array(cam.matrix_world), atol=1e-5)


def test_bad_reconstruction_files_are_named_and_change_nothing(empty_scene, blender, tmp_path):
    import bpy

    before = len(bpy.data.objects), len(bpy.data.collections)
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.recon.import_reconstruction(filepath=str(tmp_path / "missing.json"))
    (tmp_path / "transforms.json").write_text('{"frames": []}')
    with pytest.raises(RuntimeError, match="has no 'frames'"):
        bpy.ops.recon.import_reconstruction(filepath=str(tmp_path / "transforms.json"))
    (tmp_path / "notes.ply").write_text("ply")
    with pytest.raises(RuntimeError, match="neither a transforms.json nor a COLMAP model file"):
        bpy.ops.recon.import_reconstruction(filepath=str(tmp_path / "notes.ply"))
    assert (len(bpy.data.objects), len(bpy.data.collections)) == before
    select_only()
    with pytest.raises(RuntimeError, match="No cameras to export"):
        bpy.ops.recon.export_cameras(directory=str(tmp_path / "out"))


def test_python_api_imports_and_exports(empty_scene, blender, tmp_path):
    api = ext(blender, "addon.api")
    truth = make_transforms(tmp_path / "in")
    collection = api.import_reconstruction(truth["path"])
    cams = recon_cameras(collection)
    assert len(cams) == 6
    written = api.export_cameras(cams, tmp_path / "out", formats=["TRANSFORMS"])
    assert [p.name for p in written] == ["transforms.json"]
    with pytest.raises(api.ReconJobError, match="does not exist"):
        api.import_reconstruction(tmp_path / "nowhere.json")
