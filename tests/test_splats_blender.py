# SPDX-License-Identifier: GPL-3.0-or-later
"""Gaussian splats in headless Blender, through the operators a user runs: import, export and
import again bit for bit; crop to a box and delete the selection with every attribute kept;
bad files refused with the scene untouched; and small Cycles renders checked pixel by pixel
against the 3DGS formula (centres projected with Blender's own camera)."""

from __future__ import annotations

import numpy as np
import pytest

from addon import splat_io
from tests.test_blender import ext, select_only
from tests.test_splat_io import random_splats

pytestmark = pytest.mark.blender

ATTRIBUTES = {"position": "vector", "rotation": "value", "log_scale": "vector", "logit_opacity": "value", "f_dc": "color"}


def extreme_splats(n: int = 300, degree: int = 3) -> dict[str, np.ndarray]:
    """Values that a lossy path would change: opacity logits far beyond float32's sigmoid,
    unnormalised quaternions, negative DC terms, tiny and huge scales."""
    splats = random_splats(n, degree, seed=7)
    splats["opacities"][:4] = [-30.0, 30.0, 1e-8, -1e-8]
    splats["quats"][:2] = [[0.0, 0.0, 0.0, 5.0], [1e-3, 2e-3, 0.0, 0.0]]
    splats["f_dc"][:2] = [[-3.0, 0.0, 7.5], [np.pi, -np.e, 1e-30]]
    splats["scales"][:2] = [[-20.0, 0.0, 5.0], [1.0, 1.0, 1.0]]
    return splats


def import_file(path):
    import bpy

    assert bpy.ops.recon.import_splats(filepath=str(path)) == {"FINISHED"}
    return bpy.context.active_object


def attribute_values(obj, name: str, count: int, width: int) -> np.ndarray:
    out = np.empty(count * width, np.float32)
    obj.data.attributes[name].data.foreach_get(ATTRIBUTES.get(name, "value"), out)
    return out.reshape(count, width) if width > 1 else out


def assert_object_holds(obj, splats: dict) -> None:
    """The object's attributes are the .ply's raw values, bit for bit."""
    n, k = splats["f_rest"].shape
    assert obj.type == "POINTCLOUD" and len(obj.data.points) == n
    np.testing.assert_array_equal(attribute_values(obj, "position", n, 3), splats["means"])
    np.testing.assert_array_equal(attribute_values(obj, "rotation", n, 4), splats["quats"])
    np.testing.assert_array_equal(attribute_values(obj, "log_scale", n, 3), splats["scales"])
    np.testing.assert_array_equal(attribute_values(obj, "logit_opacity", n, 1), splats["opacities"])
    np.testing.assert_array_equal(attribute_values(obj, "f_dc", n, 4)[:, :3], splats["f_dc"])
    for i in range(k):
        np.testing.assert_array_equal(attribute_values(obj, f"f_rest_{i}", n, 1), splats["f_rest"][:, i])
    assert f"f_rest_{k}" not in obj.data.attributes


def scene_state():
    import bpy

    return {kind: sorted(block.name for block in getattr(bpy.data, kind))
            for kind in ("objects", "meshes", "pointclouds", "materials", "node_groups", "collections")}


def test_import_export_import_keeps_every_attribute(empty_scene, blender, tmp_path):
    import bpy

    splats = extreme_splats()
    source = splat_io.write_splats(tmp_path / "garden.ply", splats)
    obj = import_file(source)
    assert obj.name == "garden" and bpy.context.view_layer.objects.active is obj
    assert_object_holds(obj, splats)
    modifier = obj.modifiers["Gaussian Splats"]
    assert modifier.type == "NODES" and modifier.node_group.name.startswith("Recon Gaussian Splats")
    assert empty_scene.view_settings.view_transform == "Standard"
    assert empty_scene.cycles.transparent_max_bounces >= 256
    # one ellipsoid per Gaussian once evaluated
    depsgraph = bpy.context.evaluated_depsgraph_get()
    instances = sum(1 for i in depsgraph.object_instances if i.is_instance and i.parent and i.parent.original == obj)
    assert instances == len(splats["means"])

    exported = tmp_path / "out" / "garden_again.ply"
    exported.parent.mkdir()
    assert bpy.ops.recon.export_splats(filepath=str(exported)) == {"FINISHED"}
    written = splat_io.read_splats(exported)
    for key in splat_io.KEYS:
        np.testing.assert_array_equal(written[key], splats[key], err_msg=key)
    again = import_file(exported)
    assert again is not obj and again.name == "garden_again"
    assert_object_holds(again, splats)
    assert len([g for g in bpy.data.node_groups if g.name.startswith("Recon Gaussian Splats")]) == 1  # shared


@pytest.mark.parametrize("degree", [0, 1])
def test_lower_sh_degrees(empty_scene, tmp_path, degree):
    import bpy

    splats = random_splats(20, degree)
    obj = import_file(splat_io.write_splats(tmp_path / f"d{degree}.ply", splats))
    assert_object_holds(obj, splats)
    assert bpy.ops.recon.export_splats(filepath=str(tmp_path / "back.ply")) == {"FINISHED"}
    assert splat_io.read_splats(tmp_path / "back.ply")["f_rest"].shape == (20, splat_io.REST_COUNTS[degree])


def test_crop_to_a_cube_and_to_an_empty(empty_scene, tmp_path):
    import bpy

    splats = random_splats(2000, 2, seed=1)
    obj = import_file(splat_io.write_splats(tmp_path / "room.ply", splats))
    obj.location, obj.rotation_euler, obj.scale = (0.5, 0.0, 0.0), (0.0, 0.0, 0.4), (2.0, 2.0, 2.0)
    # a cube, moved, turned and stretched
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(1.0, 0.5, 0.0), rotation=(0.3, 0.0, 0.2))
    cube = bpy.context.active_object
    cube.scale = (1.5, 2.0, 1.0)
    bpy.context.view_layer.update()
    world = splats["means"] @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    in_cube = np.linalg.inv(np.array(cube.matrix_world))
    local = world @ in_cube[:3, :3].T + in_cube[:3, 3]
    inside = np.all(np.abs(local) <= 1.0, axis=1)
    assert 100 < inside.sum() < 1900
    select_only(obj, cube)
    assert bpy.ops.recon.crop_splats() == {"FINISHED"}
    kept = {key: value[inside] for key, value in splats.items()}
    assert_object_holds(obj, kept)
    assert obj.modifiers["Gaussian Splats"].node_group is not None and obj.name == "room"

    # an empty, keeping what lies outside its display cube
    empty = bpy.data.objects.new("cut", None)
    empty_scene.collection.objects.link(empty)
    empty.empty_display_size, empty.location = 0.8, (0.9, 0.4, 0.0)
    bpy.context.view_layer.update()
    world = kept["means"] @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
    outside = np.any(np.abs(world - empty.location) > 0.8, axis=1)
    assert 0 < (~outside).sum() < len(outside)
    select_only(obj, empty)
    assert bpy.ops.recon.crop_splats(keep="OUTSIDE") == {"FINISHED"}
    assert_object_holds(obj, {key: value[outside] for key, value in kept.items()})


def test_crop_explains_itself(empty_scene, tmp_path):
    import bpy

    obj = import_file(splat_io.write_splats(tmp_path / "a.ply", random_splats(50, 0)))
    select_only(obj)
    with pytest.raises(RuntimeError, match="Also select the box"):
        bpy.ops.recon.crop_splats()
    far = bpy.data.objects.new("far", None)
    empty_scene.collection.objects.link(far)
    far.location = (100.0, 0.0, 0.0)
    select_only(obj, far)
    with pytest.raises(RuntimeError, match="No Gaussians of 'a' lie inside 'far'"):
        bpy.ops.recon.crop_splats()
    assert len(obj.data.points) == 50
    select_only()
    with pytest.raises(RuntimeError, match="Make a splat object the active object"):
        bpy.ops.recon.export_splats(filepath=str(tmp_path / "x.ply"))


def set_selection(obj, selected: np.ndarray) -> None:
    attribute = obj.data.attributes.get(".selection") or obj.data.attributes.new(".selection", "BOOLEAN", "POINT")
    attribute.data.foreach_set("value", selected)


def test_delete_selected_in_edit_mode_and_object_mode(empty_scene, tmp_path):
    import bpy

    splats = random_splats(500, 3, seed=2)
    obj = import_file(splat_io.write_splats(tmp_path / "s.ply", splats))
    with pytest.raises(RuntimeError, match="No Gaussians of 's' are selected"):
        bpy.ops.recon.delete_splats()
    rng = np.random.default_rng(0)
    first = rng.random(500) < 0.3
    bpy.ops.object.mode_set(mode="EDIT")
    set_selection(obj, first)
    assert bpy.ops.recon.delete_splats() == {"FINISHED"}
    bpy.ops.object.mode_set(mode="OBJECT")
    kept = {key: value[~first] for key, value in splats.items()}
    assert_object_holds(obj, kept)
    # selected in edit mode earlier, deleted from object mode
    second = rng.random(len(kept["means"])) < 0.5
    set_selection(obj, second)
    assert bpy.ops.recon.delete_splats() == {"FINISHED"}
    kept = {key: value[~second] for key, value in kept.items()}
    assert_object_holds(obj, kept)
    assert bpy.ops.recon.export_splats(filepath=str(tmp_path / "left.ply")) == {"FINISHED"}
    left = splat_io.read_splats(tmp_path / "left.ply")
    for key in splat_io.KEYS:
        np.testing.assert_array_equal(left[key], kept[key])


def test_bad_files_are_refused_with_the_scene_untouched(empty_scene, tmp_path):
    import bpy
    from plyfile import PlyData, PlyElement

    import_file(splat_io.write_splats(tmp_path / "good.ply", random_splats(10, 0)))  # the shared node group exists
    before = scene_state()
    vertex = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    face = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")]).write(str(tmp_path / "mesh.ply"))
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "cloud.ply"))
    (tmp_path / "empty.ply").write_bytes(splat_io.write_splats(tmp_path / "e.ply", random_splats(0, 0)).read_bytes())
    cases = {"mesh.ply": r"'mesh.ply' is a mesh \(1 faces\)", "cloud.ply": "'cloud.ply' is a plain point cloud",
             "empty.ply": "'empty.ply' holds no Gaussians", "missing.ply": "Cannot open"}
    for name, message in cases.items():
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.recon.import_splats(filepath=str(tmp_path / name))
        assert scene_state() == before, name


def test_a_failed_build_leaves_nothing_behind(empty_scene, blender, monkeypatch):
    import bpy

    splats_module = ext(blender, "addon.splats")
    before = scene_state()

    def broken(*args, **kwargs):
        raise RuntimeError("no node groups today")

    monkeypatch.setattr(splats_module, "splat_node_group", broken)
    for block in [g for g in bpy.data.node_groups if g.name.startswith("Recon Gaussian Splats")]:
        bpy.data.node_groups.remove(block)
    for block in [m for m in bpy.data.materials if m.name.startswith("Recon Gaussian Splat")]:
        bpy.data.materials.remove(block)
    before = scene_state()
    with pytest.raises(RuntimeError, match="no node groups today"):
        splats_module.splat_object("x", random_splats(10, 1), bpy.context.scene.collection)
    assert scene_state() == before


# -- rendering -------------------------------------------------------------------------------
def srgb_to_linear(c):
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.maximum(c, 0.0) ** (1 / 2.4) - 0.055)


def rotation_matrices(quats: np.ndarray) -> np.ndarray:
    w, x, y, z = (quats / np.linalg.norm(quats, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def reference_render(splats, c2w, focal_px, size, mode):
    """The 3DGS image formula per pixel ray, back to front by centre depth. ``mode``: "ray"
    (each Gaussian's peak density along the ray, blended in linear light: what the Blender
    material computes) or "ewa" (the rasteriser's projected 2D Gaussian with its 0.3 px
    dilation, blending sRGB values: what a 3DGS renderer shows)."""
    h = w = size
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([(u - w / 2) / focal_px, -(v - h / 2) / focal_px, -np.ones_like(u)], -1) @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    rgb = np.clip(splat_io.dc_to_rgb(splats["f_dc"]), 0.0, 1.0).astype(np.float64)
    opacity = 1.0 / (1.0 + np.exp(-splats["opacities"].astype(np.float64)))
    R = rotation_matrices(splats["quats"].astype(np.float64))
    sigma = np.exp(splats["scales"].astype(np.float64))
    w2c = np.linalg.inv(c2w)
    to_opencv = np.diag([1.0, -1.0, -1.0]) @ w2c[:3, :3]
    color, transmittance = np.zeros((h, w, 3)), np.ones((h, w))
    for i in np.argsort((splats["means"] - origin) @ -c2w[:3, 2]):  # a handful of Gaussians
        if mode == "ray":
            whiten = np.diag(1.0 / sigma[i]) @ R[i].T
            p, d = whiten @ (origin - splats["means"][i]), rays @ whiten.T
            along = -(d @ p) / np.sum(d * d, -1)
            closest = p + along[..., None] * d
            power = -0.5 * np.sum(closest * closest, -1)
        else:
            x, y, z = to_opencv @ (splats["means"][i] - origin)
            J = np.array([[focal_px / z, 0, -focal_px * x / z**2], [0, focal_px / z, -focal_px * y / z**2]])
            cov = J @ to_opencv @ R[i] @ np.diag(sigma[i] ** 2) @ R[i].T @ to_opencv.T @ J.T + 0.3 * np.eye(2)
            dx = np.stack([u - focal_px * x / z - w / 2, v - focal_px * y / z - h / 2], -1)
            power = -0.5 * np.einsum("hwi,ij,hwj->hw", dx, np.linalg.inv(cov), dx)
        alpha = np.minimum(0.99, opacity[i] * np.exp(power))
        alpha[alpha < 1 / 255] = 0.0
        color += (transmittance * alpha)[..., None] * (srgb_to_linear(rgb[i]) if mode == "ray" else rgb[i])
        transmittance *= 1.0 - alpha
    return linear_to_srgb(color) if mode == "ray" else np.clip(color, 0.0, 1.0)


def six_splats():
    """Six Gaussians in front of a camera: four opaque round ones in the corners (red, green,
    blue, white), and two soft, turned, stretched, semi-transparent ones over the middle."""
    def quat(axis, angle):
        axis = np.asarray(axis, float) / np.linalg.norm(axis)
        return np.r_[np.cos(angle / 2), np.sin(angle / 2) * axis]

    rgb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, 0.5, 0], [0.2, 0.4, 1.0]], np.float32)
    return {
        "means": np.array([[-1, 0, -1], [1, 0, -1], [-1, 0, 1], [1, 0, 1], [0, 0.5, 0], [0.3, -0.5, 0.2]], np.float32),
        "f_dc": splat_io.rgb_to_dc(rgb),
        "f_rest": np.zeros((6, 9), np.float32),
        "opacities": np.array([8, 8, 8, 8, 0.5, -0.5], np.float32),
        "scales": np.log(np.array([[.2, .2, .2]] * 4 + [[.5, .2, .3], [.15, .35, .1]], np.float32)),
        "quats": np.array([[1, 0, 0, 0]] * 4 + [quat([1, 0, 1], 0.7) * 0.5, quat([0, 1, 1], 2.0)], np.float32),
    }


CAMERA_LOCATION, CAMERA_ROTATION = (0.2, -6.0, 0.3), (np.pi / 2, 0.0, 0.0)  # looking along +y


def render(scene, path):
    import bpy

    scene.render.filepath = str(path)
    assert bpy.ops.render.render(write_still=True, scene=scene.name) == {"FINISHED"}
    return render_file(path)


def render_file(path):
    """A rendered PNG as ``[h, w, 3]`` display values, top row first."""
    import bpy

    image = bpy.data.images.load(str(path))
    try:
        size = tuple(image.size)
        pixels = np.empty(size[0] * size[1] * 4, np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(size[1], size[0], 4)[::-1, :, :3]  # top row first


def psnr(a, b):
    return 10.0 * np.log10(1.0 / np.mean((np.asarray(a, float) - b) ** 2))


@pytest.mark.parametrize("display_blending", [False, True])
def test_cycles_render_matches_the_3dgs_formula(empty_scene, blender, tmp_path, display_blending):
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    splats = six_splats()
    splats_module = ext(blender, "addon.splats")
    scene = bpy.data.scenes.new("splat render")  # its own render settings, removed afterwards
    try:
        size = 64
        obj = import_file(splat_io.write_splats(tmp_path / "six.ply", splats))
        scene.collection.objects.link(obj)
        if display_blending:
            splats_module.set_display_blending(obj, True)
        camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        scene.collection.objects.link(camera)
        camera.location, camera.rotation_euler = CAMERA_LOCATION, CAMERA_ROTATION
        scene.camera = camera
        scene.world = None  # black
        scene.render.engine = "CYCLES"
        scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 16, False
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene.render.dither_intensity = 0.0
        splats_module.render_settings(scene, display_blending)
        assert scene.view_settings.view_transform == ("Raw" if display_blending else "Standard")
        image = render(scene, tmp_path / "six.png")

        # the opaque corners: their colour at their projected centres, black between them
        scene.view_layers[0].update()  # the camera's matrix_world
        for centre, rgb in zip(splats["means"][:4], splat_io.dc_to_rgb(splats["f_dc"][:4]), strict=True):
            x, y, _ = world_to_camera_view(scene, camera, Vector(centre.tolist()))
            pixel = image[int((1.0 - y) * size), int(x * size)]
            expected = 0.99 * rgb if display_blending else linear_to_srgb(0.99 * srgb_to_linear(rgb))
            np.testing.assert_allclose(pixel, expected, atol=0.02)
        np.testing.assert_allclose(image[:3, :3], 0.0, atol=1e-3)

        # every pixel: the material's formula exactly, the rasteriser's closely
        focal_px = camera.data.lens / camera.data.sensor_width * size
        c2w = np.array(camera.matrix_world, dtype=np.float64)
        if display_blending:
            assert psnr(image, reference_render(splats, c2w, focal_px, size, "ewa")) > 38.0
        else:
            assert psnr(image, reference_render(splats, c2w, focal_px, size, "ray")) > 40.0
            assert psnr(image, reference_render(splats, c2w, focal_px, size, "ewa")) > 15.0  # linear blending
    finally:
        bpy.data.scenes.remove(scene)


def test_cycles_renders_a_gaussian_around_the_camera(empty_scene, blender, tmp_path):
    """A large Gaussian that encloses the camera (as background Gaussians of a trained scene
    often do) shows through its back faces, by the same formula."""
    import bpy

    splats = {
        "means": np.array([[0.2, -5.0, 0.5]], np.float32),  # 1 unit ahead of the camera, a little above
        "f_dc": splat_io.rgb_to_dc(np.array([[0.8, 0.6, 0.4]], np.float32)),
        "f_rest": np.zeros((1, 9), np.float32),
        "opacities": np.array([1.0], np.float32),
        "scales": np.log(np.array([[2.0, 1.0, 1.5]], np.float32)),
        "quats": np.array([[1, 0, 0, 0]], np.float32),
    }
    splats_module = ext(blender, "addon.splats")
    scene = bpy.data.scenes.new("splat render")
    try:
        size = 32
        obj = import_file(splat_io.write_splats(tmp_path / "around.ply", splats))
        scene.collection.objects.link(obj)
        camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        scene.collection.objects.link(camera)
        camera.location, camera.rotation_euler = CAMERA_LOCATION, CAMERA_ROTATION
        scene.camera, scene.world = camera, None
        scene.render.engine = "CYCLES"
        scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 4, False
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.resolution_percentage, scene.render.dither_intensity = 100, 0.0
        splats_module.render_settings(scene, False)
        image = render(scene, tmp_path / "around.png")
        scene.view_layers[0].update()
        focal_px = camera.data.lens / camera.data.sensor_width * size
        reference = reference_render(splats, np.array(camera.matrix_world, dtype=np.float64), focal_px, size, "ray")
        assert reference.min() > 0.2  # the Gaussian fills the view
        assert psnr(image, reference) > 35.0
    finally:
        bpy.data.scenes.remove(scene)


EEVEE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import bpy
import numpy as np
from addon import splats
scene = bpy.context.scene
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
splats.import_splats({ply!r}, scene.collection)
camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
scene.collection.objects.link(camera)
camera.location, camera.rotation_euler = {location!r}, {rotation!r}
scene.camera, scene.world = camera, None
scene.render.engine = "BLENDER_EEVEE"
scene.eevee.taa_render_samples = 8
scene.render.resolution_x = scene.render.resolution_y = {size}
scene.render.resolution_percentage, scene.render.dither_intensity = 100, 0.0
splats.render_settings(scene)
scene.render.filepath = {png!r}
bpy.ops.render.render(write_still=True)
"""


@pytest.mark.slow
def test_eevee_render_matches_the_3dgs_formula(empty_scene, tmp_path):
    """EEVEE needs a GPU context (an OpenGL or Vulkan driver, software ones too): rendered in a
    child process, skipped where none can be made."""
    import os
    import subprocess
    import sys

    from mathutils import Euler, Matrix, Vector

    from tests.conftest import ROOT

    splats, size = six_splats(), 64
    ply, png = splat_io.write_splats(tmp_path / "six.ply", splats), tmp_path / "eevee.png"
    script = EEVEE_SCRIPT.format(root=str(ROOT), ply=str(ply), png=str(png), size=size,
                                 location=CAMERA_LOCATION, rotation=CAMERA_ROTATION)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    if run.returncode != 0 or not png.is_file():
        pytest.skip(f"EEVEE cannot render here (exit {run.returncode}): {run.stderr.strip()[-300:]}")
    image = render_file(png)
    c2w = np.array(Matrix.LocRotScale(Vector(CAMERA_LOCATION), Euler(CAMERA_ROTATION), None), dtype=np.float64)
    focal_px = 50.0 / 36.0 * size  # the default camera: 50 mm lens, 36 mm sensor
    assert psnr(image, reference_render(splats, c2w, focal_px, size, "ray")) > 35.0


def test_export_applies_the_objects_transform(empty_scene, tmp_path):
    import bpy

    splats = random_splats(100, 3, seed=4)
    obj = import_file(splat_io.write_splats(tmp_path / "turned.ply", splats))
    obj.location, obj.rotation_euler, obj.scale = (1.0, 2.0, -0.5), (0.4, -0.2, 1.1), (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    assert bpy.ops.recon.export_splats(filepath=str(tmp_path / "placed.ply")) == {"FINISHED"}
    placed = splat_io.read_splats(tmp_path / "placed.ply")
    expected = splat_io.transform_splats(splats, np.array(obj.matrix_world))
    for key in splat_io.KEYS:
        np.testing.assert_allclose(placed[key], expected[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert bpy.ops.recon.export_splats(filepath=str(tmp_path / "own.ply"), apply_transform=False) == {"FINISHED"}
    own = splat_io.read_splats(tmp_path / "own.ply")
    for key in splat_io.KEYS:
        np.testing.assert_array_equal(own[key], splats[key], err_msg=key)
    obj.scale = (1.0, 2.0, 1.0)
    with pytest.raises(RuntimeError, match="Cannot apply the transform of 'turned'.*non-uniform scale.*untick Apply"):
        bpy.ops.recon.export_splats(filepath=str(tmp_path / "stretched.ply"))
    assert not (tmp_path / "stretched.ply").exists()
