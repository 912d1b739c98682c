# SPDX-License-Identifier: GPL-3.0-or-later
"""Radiance fields in headless Blender, through the real backend: ``recon.train_field`` on an
imported (and aligned) reconstruction (stopped, then continued from its checkpoint), and
``recon.render_field`` from Blender cameras. The
field rendered through a Blender camera must match the backend's own render of the same
original camera (the camera conversion and the alignment are exact), for one frame and for
a frame range of an animated camera; bad input is named and changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_backend
from tests.test_blender import ext
from tests.test_nerf_render import sphere_scene

pytestmark = pytest.mark.blender

TINY = {"levels": 8, "log2_table_size": 12, "base_resolution": 4, "finest_resolution": 64, "grid_resolution": 32,
        "rays": 256, "samples": 16, "preview_seconds": 1.0, "max_minutes": 0.0, "iterations": 60}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def photo_on_white(path) -> np.ndarray:
    with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def image_rgb(image) -> np.ndarray:
    """An image datablock's pixels as stored (rows top-down, [h, w, 3])."""
    w, h = image.size
    flat = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(flat)
    return flat.reshape(h, w, 4)[::-1, :, :3].astype(np.float64)


@pytest.fixture(scope="module")
def trained(blender, tmp_path_factory):
    """A tiny field trained from Blender on an aligned import of 8 views of a sphere, and the
    backend's own renders of the original cameras."""
    import bpy

    api = ext(blender, "addon.api")
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for collection in list(bpy.data.collections):
        bpy.data.collections.remove(collection)
    tmp = tmp_path_factory.mktemp("field")
    transforms = sphere_scene(tmp / "scene", views=8, size=24)
    collection = api.import_reconstruction(transforms, align=True, known_distance=2.0)
    # Esc (a cancel) after a few steps keeps the checkpoint; the next training continues it
    stopped, finish = api.submit_train_field(collection, **{**TINY, "iterations": 1_000_000})
    stopped.wait(on_progress=lambda job: job.cancel() if (job.metrics.get("step") or 0) >= 5 else None)
    with pytest.raises(api.ReconJobError, match="cancelled"):
        finish()
    assert stopped.status == "cancelled" and "recon_field" not in collection
    job, finish = api.submit_train_field(collection, **TINY)
    folder = finish()
    reference = tmp / "reference"
    proc = run_backend("render-nerf", "--field", str(folder), "--cameras", str(transforms), "--out", str(reference))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"api": api, "collection": collection, "folder": folder, "scene": tmp / "scene", "reference": reference,
            "stopped": stopped, "job": job}


def camera_named(collection, stem: str):
    return next(o for o in collection.objects if o.type == "CAMERA" and o.name.startswith(stem))


def test_train_field_remembers_the_field_and_shows_its_preview(trained):
    import bpy

    collection, folder = trained["collection"], trained["folder"]
    assert not np.allclose(np.array(collection["recon_alignment"]).reshape(4, 4), np.eye(4))  # really aligned
    assert collection["recon_field"] == str(folder)
    meta = json.loads((folder / "field.json").read_text())
    assert meta["training"]["steps"] == TINY["iterations"]
    # it went on from the stopped training's checkpoint
    stopped, job = trained["stopped"], trained["job"]
    assert job.inputs["resume_from"] == str(stopped.dir)
    assert 5 <= TINY["iterations"] - job.summary["steps_this_run"] < TINY["iterations"]
    preview = bpy.data.images["Recon Field Preview"]  # the job's last preview.png, shown in the panel
    assert tuple(preview.size) == (24, 24)
    assert psnr(image_rgb(preview), png(folder / "preview.png")) > 50
    # the held-out photo is learned: closer to it than a blank (white) image is
    photo = photo_on_white(trained["scene"] / "train" / "r_4.png")
    assert meta["training"]["holdout_views"] == ["r_4.png"]
    assert meta["training"]["holdout_psnr"] > psnr(np.ones_like(photo), photo) + 2.0


def test_render_from_a_blender_camera_matches_the_backend_render(trained):
    import bpy

    api, collection = trained["api"], trained["collection"]
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 24
    scene.render.resolution_percentage = 100
    camera = camera_named(collection, "r_3")
    image = api.render_field(camera)
    assert image.name == "Recon Field Render" and tuple(image.size) == (24, 24) and image.source == "FILE"
    blender_view = image_rgb(image)
    backend_view = png(trained["reference"] / "r_3.png")
    assert psnr(blender_view, backend_view) > 40.0  # the same rays, up to float rounding
    photo = photo_on_white(trained["scene"] / "train" / "r_3.png")
    assert abs(psnr(blender_view, photo) - psnr(backend_view, photo)) < 0.5
    # transparent: the field's opacity as alpha, for compositing (the sphere in the middle, nothing in the corner)
    image = api.render_field(camera, transparent=True)
    w, h = image.size
    rgba = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(rgba)
    alpha = rgba.reshape(h, w, 4)[..., 3]
    assert alpha[h // 2, w // 2] > alpha[0, 0] + 0.25


def test_render_a_frame_range_of_an_animated_camera(trained):
    import bpy
    from mathutils import Matrix

    collection = trained["collection"]
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 48  # twice the photos' size: intrinsics scale with it
    source = [camera_named(collection, "r_2"), camera_named(collection, "r_5")]
    data = source[0].data.copy()
    mover = bpy.data.objects.new("mover", data)
    scene.collection.objects.link(mover)
    for frame, cam in zip((1, 2), source, strict=True):
        mover.matrix_world = Matrix(cam.matrix_world)
        mover.keyframe_insert("location", frame=frame)
        mover.keyframe_insert("rotation_euler", frame=frame)
    scene.camera = mover
    scene.frame_start, scene.frame_end = 1, 2
    scene.frame_set(1)
    # the camera sits in no reconstruction: the field is the scene's only one
    assert bpy.ops.recon.render_field(animation=True) == {"FINISHED"}
    image = bpy.data.images["Recon Field Render"]
    assert image.source == "SEQUENCE"
    folder = bpy.path.abspath(image.filepath).rsplit("/", 1)[0]
    reference = trained["scene"].parent / "reference-48"
    proc = run_backend("render-nerf", "--field", str(trained["folder"]), "--cameras",
                       str(trained["scene"] / "transforms.json"), "--width", "48", "--out", str(reference))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for frame, stem in ((1, "r_2"), (2, "r_5")):
        rendered = png(f"{folder}/frame_{frame:04d}.png")
        assert rendered.shape == (48, 48, 3)
        assert psnr(rendered, png(reference / f"{stem}.png")) > 40.0
    assert scene.frame_current == 1  # left where it was
    bpy.data.objects.remove(mover)


def test_bad_input_is_named_and_changes_nothing(trained, tmp_path):
    import bpy

    api = trained["api"]
    bare = bpy.data.collections.new("Recon bare")
    bpy.context.scene.collection.children.link(bare)
    bare["recon_alignment"] = np.eye(4).ravel().tolist()
    cam = bpy.data.objects.new("no photo", bpy.data.cameras.new("no photo"))
    bare.objects.link(cam)
    objects, images = len(bpy.data.objects), len(bpy.data.images)
    with pytest.raises(api.ReconJobError, match="no cameras with photos"):
        api.train_field(bare, **TINY)
    with pytest.raises(api.ReconJobError, match="No trained field"):
        api.render_field(cam, bare)
    assert "recon_field" not in bare and len(bpy.data.objects) == objects and len(bpy.data.images) == images
    bpy.data.objects.remove(cam)
    bpy.data.collections.remove(bare)
