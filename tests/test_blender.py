# SPDX-License-Identifier: GPL-3.0-or-later
"""Headless Blender (the real ``bpy`` wheel) with the extension installed from its zip,
running ``bpy.ops.recon.*`` and the Python API against the real backend subprocess."""

from __future__ import annotations

import importlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import data_path

pytestmark = pytest.mark.blender

FIT = {"iterations": 300, "samples": 2000}  # enough to fit an ellipsoid, quick on 2 cores


def ext(blender, module: str):
    """A module of the installed extension (looked up anew: re-enabling reloads it)."""
    return importlib.import_module(f"{blender}.{module}")


def make_cloud(name="scan", n=600, pointcloud=False, seed=0):
    import bpy

    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    points = (p * [1.0, 2.0, 0.5]).astype(np.float32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(n)
    mesh.vertices.foreach_set("co", points.ravel())
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = (2.0, -1.0, 0.5)
    obj.rotation_euler = (0.3, 0.0, 1.2)
    obj.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    if pointcloud:
        select_only(obj)
        assert bpy.ops.object.convert(target="POINTCLOUD") == {"FINISHED"}
    select_only(obj)
    return obj, points


def select_only(*objects):
    import bpy

    for other in bpy.context.scene.objects:
        other.select_set(False)
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[0] if objects else None


def vertices_of(obj) -> np.ndarray:
    co = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def world(obj, local: np.ndarray) -> np.ndarray:
    m = np.array(obj.matrix_world)
    return local @ m[:3, :3].T + m[:3, 3]


def nearest_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min(1)


def scene_state():
    import bpy

    return sorted((o.name, o.type, len(o.data.vertices) if o.type == "MESH" else None) for o in bpy.data.objects), len(bpy.data.meshes)


def manager(blender):
    return ext(blender, "addon.jobs").manager()


# -- the extension ---------------------------------------------------------------------


def test_installed_zip_registers_operators_panels_and_preferences(blender):
    import bpy

    assert hasattr(bpy.types, "RECON_OT_fit_mesh_to_points")
    for panel in ("RECON_PT_fit_mesh", "RECON_PT_jobs"):
        assert getattr(bpy.types, panel).bl_category == "Recon"
    prefs = bpy.context.preferences.addons[blender].preferences
    assert prefs.device == "auto" and hasattr(prefs, "python_path")
    assert {"REGISTER", "UNDO"} <= bpy.types.RECON_OT_fit_mesh_to_points.bl_options


def test_operator_poll_explains_what_to_select(empty_scene):
    import bpy

    select_only()
    with pytest.raises(RuntimeError, match="Select a point cloud"):
        bpy.ops.recon.fit_mesh_to_points()


# -- the job end to end ----------------------------------------------------------------


def test_fit_operator_creates_a_mesh_in_the_clouds_frame(empty_scene, blender):
    import bpy

    cloud, points = make_cloud()
    assert bpy.ops.recon.fit_mesh_to_points(**FIT) == {"FINISHED"}
    fit = bpy.data.objects["scan_fit"]
    assert fit.type == "MESH" and bpy.context.view_layer.objects.active == fit
    verts = vertices_of(fit)
    assert verts.shape == (2562, 3) and len(fit.data.polygons) == 5120 and np.isfinite(verts).all()
    assert np.allclose(np.array(fit.matrix_world), np.array(cloud.matrix_world), atol=1e-6)
    assert fit.users_collection[0] == cloud.users_collection[0]
    # Close to the cloud in world space: RMS of nearest distances, both ways, < 6 % of the cloud's 4-unit length x 1.5.
    cloud_world, fit_world = world(cloud, points), world(fit, verts)
    rms = np.sqrt(0.5 * (nearest_sq(cloud_world, fit_world).mean() + nearest_sq(fit_world, cloud_world).mean()))
    assert rms < 0.06 * 6.0, rms
    assert np.array_equal(vertices_of(cloud), points), "the input cloud was modified"
    assert fit["recon_chamfer"] > 0 and fit["recon_job"].startswith("deform-")


def test_point_cloud_object_as_input(empty_scene):
    import bpy

    cloud, _points = make_cloud(pointcloud=True)
    assert cloud.type == "POINTCLOUD"
    assert bpy.ops.recon.fit_mesh_to_points(**FIT) == {"FINISHED"}
    assert len(bpy.data.objects["scan_fit"].data.vertices) == 2562


def test_selected_mesh_is_the_template(empty_scene):
    import bpy

    cloud, _ = make_cloud()
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(2.0, -1.0, 0.5))
    cube = bpy.context.active_object
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.subdivide(number_cuts=3)
    bpy.ops.object.mode_set(mode="OBJECT")
    select_only(cloud, cube)  # the cloud active, the template selected
    assert bpy.ops.recon.fit_mesh_to_points(**FIT) == {"FINISHED"}
    fit = bpy.data.objects["scan_fit"]
    assert len(fit.data.vertices) == len(cube.data.vertices)
    assert len(fit.data.polygons) == sum(len(p.vertices) - 2 for p in cube.data.polygons)


@pytest.mark.data
def test_ply_file_from_the_panel_setting(empty_scene):
    import bpy

    path = data_path("pedestrian", "pedestrian.ply")
    select_only()
    bpy.context.scene.recon_deform.points_file = str(path)
    try:
        assert bpy.ops.recon.fit_mesh_to_points(**FIT) == {"FINISHED"}
    finally:
        bpy.context.scene.recon_deform.points_file = ""
    fit = bpy.data.objects["pedestrian_fit"]
    assert np.allclose(np.array(fit.matrix_world), np.eye(4))
    # In the file's frame: the pedestrian stands around y = 6.3.
    assert abs(vertices_of(fit)[:, 1].mean() - 6.3) < 0.3


def test_api_returns_the_object(empty_scene, blender):
    cloud, _ = make_cloud()
    api = ext(blender, "addon.api")
    obj = api.fit_mesh_to_points(cloud, **FIT)
    assert obj.name == "scan_fit" and len(obj.data.vertices) == 2562
    with pytest.raises(TypeError, match="unknown setting"):
        api.fit_mesh_to_points(cloud, speed=3)


# -- bad input and failures: a clear message, the scene as it was -----------------------


def test_empty_cloud_is_refused_and_nothing_changes(empty_scene):
    import bpy

    mesh = bpy.data.meshes.new("nothing")
    obj = bpy.data.objects.new("nothing", mesh)
    bpy.context.scene.collection.objects.link(obj)
    select_only(obj)
    before = scene_state()
    with pytest.raises(RuntimeError, match="'nothing' has no points"):
        bpy.ops.recon.fit_mesh_to_points(**FIT)
    assert scene_state() == before


def test_nan_points_are_named_and_nothing_changes(empty_scene, blender):
    import bpy

    cloud, points = make_cloud()
    points[5] = np.nan
    cloud.data.vertices.foreach_set("co", points.ravel())
    before = scene_state()
    with pytest.raises(RuntimeError, match="NaN or infinite") as error:
        bpy.ops.recon.fit_mesh_to_points(**FIT)
    assert "index 5" in str(error.value) and "log:" in str(error.value)
    assert scene_state() == before
    job = manager(blender).latest("deform")
    assert job.status == "failed" and job.log_path.is_file()


def test_missing_backend_interpreter_says_where_to_set_it(empty_scene, blender):
    import bpy

    make_cloud()
    mgr = manager(blender)
    mgr.stop_backend()
    prefs = bpy.context.preferences.addons[blender].preferences
    prefs.python_path = "/nonexistent/python3"
    before = scene_state()
    try:
        with pytest.raises(RuntimeError, match=r"'/nonexistent/python3' does not exist.*Preferences"):
            bpy.ops.recon.fit_mesh_to_points(**FIT)
    finally:
        prefs.python_path = ""
    assert scene_state() == before
    assert bpy.ops.recon.fit_mesh_to_points(**FIT) == {"FINISHED"}  # works again once set right


def test_cancel_half_way_leaves_the_scene_and_keeps_the_log(empty_scene, blender):
    import bpy

    cloud, _ = make_cloud()
    api = ext(blender, "addon.api")
    before = scene_state()
    job, finish = api.submit_fit_mesh_to_points(cloud, iterations=1_000_000)

    def cancel_once_running(j):
        if j.done > 0 and j.stage == "fit" and j.cancel_requested is None:
            assert bpy.ops.recon.cancel_job(job=j.id) == {"FINISHED"}  # the panel's cancel button

    job.wait(timeout=120, on_progress=cancel_once_running)
    assert job.status == "cancelled"
    with pytest.raises(api.ReconJobError, match="cancelled"):
        finish()
    assert scene_state() == before
    assert job.log_path.is_file() and "cancelled" in job.log_path.read_text()
    assert json.loads((job.dir / "manifest.json").read_text())["status"] == "cancelled"


def test_a_killed_backend_fails_the_job_and_the_next_job_works(empty_scene, blender):
    import bpy

    cloud, _ = make_cloud()
    api = ext(blender, "addon.api")
    mgr = manager(blender)
    before = scene_state()
    job, finish = api.submit_fit_mesh_to_points(cloud, iterations=1_000_000)
    job.wait(timeout=120, on_progress=lambda j: j.active and j.done > 0 and os.killpg(mgr.backend.pid, signal.SIGKILL))
    assert job.status == "failed" and job.error["code"] == "backend_died"
    with pytest.raises(api.ReconJobError, match="stopped unexpectedly.*Run it again"):
        finish()
    assert scene_state() == before
    assert Path(job.error["log"]).is_file()
    select_only(cloud)
    assert bpy.ops.recon.fit_mesh_to_points(**FIT) == {"FINISHED"}


def test_disable_and_enable_twice(empty_scene, blender):
    import addon_utils
    import bpy

    for _ in range(2):
        addon_utils.disable(blender, default_set=True)
        assert not hasattr(bpy.types, "RECON_OT_fit_mesh_to_points")
        assert not hasattr(bpy.types.Scene, "recon_deform")
        addon_utils.enable(blender, default_set=True)
        assert hasattr(bpy.types, "RECON_OT_fit_mesh_to_points")
    make_cloud()
    assert bpy.ops.recon.fit_mesh_to_points(iterations=50, samples=1000) == {"FINISHED"}


def test_loading_a_file_stops_the_backend_and_cancels_its_job(empty_scene, blender, tmp_path):
    import bpy

    cloud, _ = make_cloud()
    mgr = manager(blender)
    saved = tmp_path / "other.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved), copy=True)
    job, _finish = ext(blender, "addon.api").submit_fit_mesh_to_points(cloud, iterations=1_000_000)
    job.wait(timeout=120, on_progress=lambda j: j.done > 0 and j.cancel_requested is None and bpy.ops.wm.open_mainfile(filepath=str(saved)))
    assert job.status == "cancelled"
    assert mgr.backend is None
    assert blender in bpy.context.preferences.addons  # still enabled in the new file


@pytest.mark.parametrize("case", range(5))
def test_blender_cameras_project_exactly_like_K(empty_scene, blender, case):
    """A camera set from K and an OpenCV pose projects points where K does, through
    Blender's own world_to_camera_view (the conversion the SfM import will use)."""
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Matrix, Vector

    from tests.test_camera_math import CASES, random_w2c

    cm = ext(blender, "addon.camera_math")
    converters = ext(blender, "addon.converters")
    fx, fy, cx, cy, width, height = CASES[case]
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    rng = np.random.default_rng(case)
    w2c = random_w2c(rng)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(camera)
    converters.apply_intrinsics(camera.data, scene.render, cm.blender_intrinsics_from_K(K, width, height))
    camera.matrix_world = Matrix(cm.blender_c2w_from_w2c_opencv(w2c).tolist())
    bpy.context.view_layer.update()
    # Points in front of the camera, spread over (and beyond) the image.
    cam_points = np.column_stack([rng.uniform(-1.5, 1.5, 50), rng.uniform(-1.5, 1.5, 50), rng.uniform(2, 9, 50)])
    world = (cam_points - w2c[:3, 3]) @ w2c[:3, :3]
    expected = cm.project_opencv(K, w2c, world)
    ndc = np.array([tuple(world_to_camera_view(scene, camera, Vector(p))) for p in world])  # test-side check only
    pixels = np.column_stack([ndc[:, 0] * width, (1.0 - ndc[:, 1]) * height])
    error = np.abs(pixels - expected).max()
    print(f"max reprojection difference {error:.2e} px")
    assert error < 2e-3  # pixels; Blender keeps matrix_world in float32


def test_point_clouds_are_written_in_bulk_with_their_attributes(empty_scene, blender):
    import bpy

    converters = ext(blender, "addon.converters")
    rng = np.random.default_rng(0)
    n = 20_000
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    error = rng.random(n).astype(np.float32)
    obj = converters.point_cloud_object("sparse", xyz, empty_scene.collection, rgb, {"error": error}, radius=0.02)
    assert obj.type == "POINTCLOUD" and len(obj.data.points) == n and obj.name in empty_scene.collection.objects
    got = np.empty(n * 3, np.float32)
    obj.data.attributes["position"].data.foreach_get("vector", got)
    assert np.array_equal(got.reshape(-1, 3), xyz)
    srgb = np.empty(n * 4, np.float32)
    obj.data.attributes["Col"].data.foreach_get("color_srgb", srgb)
    assert np.abs(srgb.reshape(-1, 4)[:, :3] * 255.0 - rgb).max() < 0.5
    values = np.empty(n, np.float32)
    obj.data.attributes["error"].data.foreach_get("value", values)
    assert np.array_equal(values, error)
    assert not [m for m in bpy.data.meshes if m.name.startswith("sparse")], "the temporary mesh was left behind"
    before = scene_state()
    with pytest.raises(ValueError, match="has 3 values for 20000 points"):
        converters.point_cloud_object("bad", xyz, empty_scene.collection, attributes={"error": error[:3]})
    assert scene_state() == before and "bad" not in bpy.data.pointclouds


def test_cameras_from_arrays_read_back_exactly(empty_scene, blender, tmp_path):
    """cameras.npz rows become camera objects whose Blender settings give back the same K
    and pose; the photo is the camera's background; the scene takes the first resolution."""
    import bpy

    from tests.test_camera_math import CASES, random_w2c
    from tests.test_sfm import write_png

    cm = ext(blender, "addon.camera_math")
    converters = ext(blender, "addon.converters")
    rng = np.random.default_rng(7)
    rows = [CASES[1], CASES[1], CASES[2]]  # two photos of one size, one portrait (square pixels: aspect is per scene)
    names = ["a.png", "b.png", "c.png"]
    for name, (*_, width, height) in zip(names, rows, strict=True):
        write_png(tmp_path / name, rng.integers(0, 255, (height // 8, width // 8, 3)))
    cameras = {
        "names": np.array(names),
        "K": np.array([[[fx, 0, cx], [0, fy, cy], [0, 0, 1]] for fx, fy, cx, cy, _, _ in rows]),
        "w2c": np.stack([random_w2c(rng) for _ in rows]),
        "width": np.array([r[4] for r in rows]),
        "height": np.array([r[5] for r in rows]),
    }
    objects = converters.camera_objects(cameras, empty_scene.collection, empty_scene, str(tmp_path))
    assert [o.name for o in objects] == names
    render = empty_scene.render
    assert (render.resolution_x, render.resolution_y) == (rows[0][4], rows[0][5])
    for obj, K, w2c in zip(objects, cameras["K"], cameras["w2c"], strict=True):
        data = obj.data
        intr = cm.BlenderIntrinsics(data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, data.shift_x,
                                    data.shift_y, obj["recon_width"], obj["recon_height"],
                                    render.pixel_aspect_x, render.pixel_aspect_y)
        np.testing.assert_allclose(cm.K_from_blender_intrinsics(intr), K, rtol=1e-5)
        np.testing.assert_allclose(cm.w2c_opencv_from_blender_c2w(np.array(obj.matrix_world)), w2c, atol=1e-5)
        assert data.show_background_images and data.background_images[0].image.filepath.endswith(obj.name)
    before, cameras_before = scene_state(), len(bpy.data.cameras)
    broken = {**cameras, "K": cameras["K"].copy()}
    broken["K"][2, 0, 1] = 50.0  # skew: Blender cannot represent it
    with pytest.raises(ValueError, match="skew"):
        converters.camera_objects(broken, empty_scene.collection, empty_scene)
    assert scene_state() == before and len(bpy.data.cameras) == cameras_before
    # With photos not yet loaded: the images loaded before the failure go too.
    for image in [i for i in bpy.data.images if i.name in names]:
        bpy.data.images.remove(image)
    images_before = len(bpy.data.images)
    with pytest.raises(ValueError, match="skew"):
        converters.camera_objects(broken, empty_scene.collection, empty_scene, str(tmp_path))
    assert len(bpy.data.images) == images_before and len(bpy.data.cameras) == cameras_before


@pytest.mark.data
@pytest.mark.slow
def test_run_sfm_makes_calibrated_cameras_and_coloured_points(empty_scene, blender):
    import bpy

    from tests.test_reconstruction import reprojection_errors

    pytest.importorskip("pycolmap")
    folder = data_path("templering")
    cm = ext(blender, "addon.camera_math")
    assert bpy.ops.recon.run_sfm(directory=str(folder)) == {"FINISHED"}
    job = manager(blender).latest("sfm")
    collection = bpy.data.collections[f"Recon {folder.name}"]
    cameras = sorted((o for o in collection.objects if o.type == "CAMERA"), key=lambda o: o.name)
    assert len(cameras) == 47 == job.summary["registered"]
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (640, 480)
    solved = np.load(job.artifact("cameras"))
    for obj, name, K in zip(cameras, solved["names"], solved["K"], strict=True):
        assert obj.name == name and obj.data.background_images[0].image is not None
        data = obj.data
        intr = cm.BlenderIntrinsics(data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, data.shift_x,
                                    data.shift_y, 640, 480, empty_scene.render.pixel_aspect_x, empty_scene.render.pixel_aspect_y)
        np.testing.assert_allclose(cm.K_from_blender_intrinsics(intr), K, rtol=1e-5)
    points = next(o for o in collection.objects if o.type == "POINTCLOUD")
    assert len(points.data.points) == job.summary["points"] > 1000
    assert {"Col", "error", "track_length", "radius"} <= set(points.data.attributes.keys())
    assert points.data.materials[0].name == "Recon Point Colors"  # colours show in Cycles and EEVEE
    # Aligned by default: the cameras' average up is +Z (the temple stands upright).
    up = np.mean([np.array(o.matrix_world)[:3, 1] for o in cameras], axis=0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-5)
    # Every SfM observation seen through the Blender cameras (world_to_camera_view) lands
    # where the SfM put it: the same mean reprojection error within 0.05 px.
    errors = reprojection_errors(empty_scene, collection, job)
    assert len(errors) == job.summary["observations"]
    print(f"Blender {errors.mean():.4f} px, SfM {job.summary['mean_reprojection_error_px']:.4f} px")
    assert abs(errors.mean() - job.summary["mean_reprojection_error_px"]) < 0.05


def test_run_sfm_bad_folders_are_named_and_change_nothing(empty_scene, blender, tmp_path):
    import bpy

    pytest.importorskip("pycolmap")
    from tests.test_sfm import write_png

    before = scene_state()
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.recon.run_sfm(directory=str(tmp_path / "nowhere"))
    write_png(tmp_path / "one.png", np.zeros((32, 32, 3)))
    with pytest.raises(RuntimeError, match=r"holds 1 usable photo\(s\).*at least 2"):
        bpy.ops.recon.run_sfm(directory=str(tmp_path))
    assert scene_state() == before and not [c for c in bpy.data.collections if c.name.startswith("Recon")]
