# SPDX-License-Identifier: GPL-3.0-or-later
"""``recon.run_sfm`` on photos that are not a folder: image datablocks already in the file
and the frames of a movie clip, end to end through the real backend."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import data_path
from tests.test_blender import manager
from tests.test_reconstruction import collection_of, recon_cameras

pytestmark = [pytest.mark.blender, pytest.mark.data]
pytest.importorskip("pycolmap")

VIEWS = [f"templeR{i:04d}.png" for i in range(20, 32)]  # twelve neighbouring views of the ring


def test_solve_from_image_datablocks_reuses_them_as_backgrounds(empty_scene, blender):
    import bpy

    folder = data_path("templering")
    images = [bpy.data.images.load(str(folder / name), check_existing=True) for name in VIEWS]
    images_before = len(bpy.data.images)
    result = bpy.ops.recon.run_sfm(source="IMAGES", images=[{"name": image.name} for image in images])
    assert result == {"FINISHED"}
    job = manager(blender).latest("sfm")
    collection = collection_of(job)
    assert collection.name == "Recon images"
    cameras = recon_cameras(collection)
    assert job.summary["registered"] == len(cameras) >= 11
    # the artist's own images behind the cameras: none loaded twice
    assert len(bpy.data.images) == images_before
    assert {c.data.background_images[0].image.name for c in cameras} <= {image.name for image in images}


def test_solve_from_a_movie_clip_gives_an_animated_camera(empty_scene, blender, tmp_path):
    import bpy

    if not bpy.app.ffmpeg.supported:
        pytest.skip("this Blender has no FFmpeg to write the test movie")
    folder = data_path("templering")
    scene = bpy.data.scenes.new("recon-test-encode")
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 480, 100
    scene.sequence_editor_create()
    strip = scene.sequence_editor.strips.new_image("frames", str(folder / VIEWS[0]), 1, 1)
    for name in VIEWS[1:]:
        strip.elements.append(name)
    scene.frame_start, scene.frame_end = 1, len(VIEWS)
    settings = scene.render.image_settings
    settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    scene.render.ffmpeg.format, scene.render.ffmpeg.codec = "MPEG4", "H264"
    scene.render.ffmpeg.constant_rate_factor = "PERC_LOSSLESS"
    scene.render.filepath = str(tmp_path / "turntable.mp4")
    scene.render.use_file_extension = False
    assert bpy.ops.render.render(animation=True, scene=scene.name) == {"FINISHED"}
    bpy.data.scenes.remove(scene)
    clip = bpy.data.movieclips.load(str(tmp_path / "turntable.mp4"))

    assert bpy.ops.recon.run_sfm(source="CLIP", clip=clip.name, frame_step=1) == {"FINISHED"}
    job = manager(blender).latest("sfm")
    assert job.config["matcher"] == "sequential"  # video frames: neighbours
    collection = collection_of(job)
    assert collection.name == f"Recon {clip.name}"
    cameras = recon_cameras(collection)
    assert job.summary["registered"] == len(cameras) >= 11
    animated = next(o for o in collection.objects if o.type == "CAMERA" and "recon_photo" not in o)
    for camera in cameras:  # frame_000004.jpg is the clip's frame 4: the moving camera is there then
        frame = int(camera["recon_photo"][len("frame_"):-len(".jpg")])
        empty_scene.frame_set(frame)
        np.testing.assert_allclose(np.array(animated.matrix_world), np.array(camera.matrix_world), atol=1e-5)
