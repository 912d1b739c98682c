# SPDX-License-Identifier: GPL-3.0-or-later
"""addon/photo_inputs.py in headless Blender: image datablocks and movie-clip frames become
a photo folder. The test movie is made here: numbered frames encoded with Blender's FFmpeg."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.blender

W, H, N = 160, 120, 24  # the test movie: frame k shows a red bar at x = BAR * k
BAR = 6


def photo_inputs(blender):
    return importlib.import_module(f"{blender}.addon.photo_inputs")


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """``rgb [h, w, 3]`` floats in 0..1 written with Blender (top row first)."""
    import bpy

    height, width = rgb.shape[:2]
    image = bpy.data.images.new("recon-test-write", width, height)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = rgb[::-1]  # Blender's rows go bottom up
    image.pixels.foreach_set(rgba.ravel())
    image.filepath_raw = str(path)
    image.file_format = {".png": "PNG", ".jpg": "JPEG"}[path.suffix.lower()]
    image.save()
    bpy.data.images.remove(image)
    return path


def read_image(path: Path) -> np.ndarray:
    """``[h, w, 3]`` floats, top row first."""
    import bpy

    image = bpy.data.images.load(str(path), check_existing=False)
    width, height = image.size
    rgba = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(rgba)
    bpy.data.images.remove(image)
    return rgba.reshape(height, width, 4)[::-1, :, :3]


def frame_pixels(k: int) -> np.ndarray:
    rgb = np.full((H, W, 3), 0.2, np.float32)
    rgb[..., 1] = k / 30
    rgb[:, BAR * k : BAR * k + 4] = (1.0, 0.0, 0.0)
    return rgb


def bar_position(rgb: np.ndarray) -> float:
    redness = (rgb[H // 4 : 3 * H // 4, :, 0] - rgb[H // 4 : 3 * H // 4, :, 1]).mean(0)
    return float(np.argmax(np.convolve(redness, np.ones(4), mode="valid")))


def temporary_scene(name: str):
    import bpy

    scene = bpy.data.scenes.new(name)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.view_settings.view_transform = "Standard"
    scene.render.dither_intensity = 0.0
    scene.sequence_editor_create()
    return scene


@pytest.fixture(scope="module")
def movie(blender, tmp_path_factory) -> Path:
    """An H.264 movie of N frames (and its frames as PNGs beside it), made with Blender."""
    import bpy

    if not bpy.app.ffmpeg.supported:
        pytest.skip("this Blender has no FFmpeg to write the test movie")
    folder = tmp_path_factory.mktemp("movie")
    frames = [write_image(folder / "frames" / f"src_{k:04d}.png", frame_pixels(k)) for k in range(1, N + 1)]
    scene = temporary_scene("recon-test-encode")
    strip = scene.sequence_editor.strips.new_image("frames", str(frames[0]), 1, 1)
    for path in frames[1:]:
        strip.elements.append(path.name)
    scene.frame_start, scene.frame_end = 1, N
    settings = scene.render.image_settings
    settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    scene.render.ffmpeg.format, scene.render.ffmpeg.codec = "MPEG4", "H264"
    scene.render.ffmpeg.constant_rate_factor, scene.render.ffmpeg.gopsize = "HIGH", 12
    scene.render.filepath = str(folder / "shot ü.mp4")
    scene.render.use_file_extension = False
    assert bpy.ops.render.render(animation=True, scene=scene.name) == {"FINISHED"}
    bpy.data.scenes.remove(scene)
    path = folder / "shot ü.mp4"
    assert path.stat().st_size > 0
    return path


def render_result():
    """The render result image, made by rendering a red frame of a scene of its own (the
    scene's renderer holds the pixels; the image shows them)."""
    import bpy

    scene = temporary_scene("recon-test-render")
    strip = scene.sequence_editor.strips.new_effect("red", "COLOR", 1, 1, length=1)
    strip.color = (1.0, 0.0, 0.0)
    scene.frame_start = scene.frame_end = 1
    assert bpy.ops.render.render(scene=scene.name) == {"FINISHED"}
    return next(image for image in bpy.data.images if image.type == "RENDER_RESULT"), scene


def rendered_pixels(image, scene, path: Path) -> np.ndarray:
    image.save_render(str(path), scene=scene)
    return read_image(path)


def state():
    """What photos_from_clip must leave as it was."""
    import bpy

    result = next((image for image in bpy.data.images if image.type == "RENDER_RESULT"), None)
    slots = (len(result.render_slots), result.render_slots.active_index) if result else None
    return (
        sorted(scene.name for scene in bpy.data.scenes), sorted(image.name for image in bpy.data.images),
        sorted(clip.name for clip in bpy.data.movieclips), len(bpy.app.handlers.render_write),
        bpy.context.scene.name, bpy.context.scene.frame_current, slots,
    )


@pytest.mark.parametrize(("kind", "offset"), [("movie", 0), ("sequence", 0), ("movie", 2)])
def test_every_nth_frame_of_a_clip(blender, movie, tmp_path, kind, offset):
    import bpy

    inputs = photo_inputs(blender)
    source = movie if kind == "movie" else movie.parent / "frames" / "src_0001.png"
    clip = bpy.data.movieclips.load(str(source))
    clip.frame_start = 101  # the Movie Clip editor shows the movie's first frame at frame 101,
    clip.frame_offset = offset  # or its third at 101 with an offset of 2
    try:
        assert (clip.source, tuple(clip.size), clip.frame_duration) == (kind.upper(), (W, H), N)
        result, rendered = render_result()
        red = rendered_pixels(result, rendered, tmp_path / "red.png")
        assert red.shape == (H, W, 3) and np.allclose(red[..., 0], 1.0, atol=0.01)
        before = state()
        calls = []

        folder = inputs.photos_from_clip(clip, tmp_path / "frames ü", step=5, progress=lambda *a: calls.append(a))

        assert state() == before  # scene, data, render slots and handlers as they were
        assert np.array_equal(rendered_pixels(result, rendered, tmp_path / "red.png"), red)  # the artist's render
        bpy.data.scenes.remove(rendered)
        names = sorted(os.listdir(folder))
        assert names == [f"frame_{f:06d}.jpg" for f in (101, 106, 111, 116, 121)]
        assert [inputs.frame_of(name) for name in names] == list(inputs.clip_frames(clip, 5))
        assert calls == [(i, 5) for i in range(1, 6)]
        for name in names:
            k = inputs.frame_of(name) - 100 + offset  # the movie's own frame number, from 1
            rgb = read_image(folder / name)
            assert rgb.shape == (H, W, 3)
            assert abs(bar_position(rgb) - BAR * k) <= 2, (name, bar_position(rgb))  # the right frame
            assert abs(np.median(rgb[..., 2]) - 0.2) < 0.03  # colours as they are (no view transform)

        # Again into the same folder without a render result: old frames go, none is made.
        for image in [image for image in bpy.data.images if image.type == "RENDER_RESULT"]:
            bpy.data.images.remove(image)
        before = state()
        inputs.photos_from_clip(clip, folder, step=10)
        assert state() == before
        assert sorted(os.listdir(folder)) == ["frame_000101.jpg", "frame_000111.jpg", "frame_000121.jpg"]
    finally:
        bpy.data.movieclips.remove(clip)


def test_clip_errors_and_frame_names(blender, movie, tmp_path):
    import bpy

    inputs = photo_inputs(blender)
    clip = bpy.data.movieclips.load(str(movie))
    try:
        with pytest.raises(ValueError, match="step"):
            inputs.photos_from_clip(clip, tmp_path, step=0)
        clip.filepath = str(tmp_path / "gone.mp4")
        with pytest.raises(ValueError, match="does not exist"):
            inputs.photos_from_clip(clip, tmp_path, step=1)
    finally:
        bpy.data.movieclips.remove(clip)
    assert inputs.frame_of("frame_000042.jpg") == 42 and inputs.frame_of(Path("x") / "frame_-000003.jpg") == -3
    assert inputs.frame_file_name(-3) == "frame_-000003.jpg"
    with pytest.raises(ValueError):
        inputs.frame_of("IMG_0042.jpg")


def test_photos_from_images(blender, tmp_path):
    import bpy

    inputs = photo_inputs(blender)
    a1 = write_image(tmp_path / "one" / "a.jpg", frame_pixels(1))
    a2 = write_image(tmp_path / "two" / "A.JPG", frame_pixels(2))
    b = write_image(tmp_path / "rel" / "b ü.png", frame_pixels(3))
    p = write_image(tmp_path / "packed.png", frame_pixels(4))
    images = [bpy.data.images.load(str(path), check_existing=False) for path in (a1, a2, b, a1, p)]
    try:
        blend_dir = os.path.dirname(bpy.data.filepath) or os.getcwd()  # "//" is relative to the .blend
        images[2].filepath = "//" + os.path.relpath(b, blend_dir)
        packed = images[4]
        packed.pack()
        packed_bytes = p.read_bytes()
        p.unlink()

        names = inputs.image_file_names(images)
        folder = inputs.photos_from_images(images, tmp_path / "photos")

        assert names == {images[0].name: "a.jpg", images[1].name: "A_2.JPG", images[2].name: "b ü.png",
                         images[3].name: "a.jpg", packed.name: "packed.png"}
        assert sorted(os.listdir(folder)) == sorted(["a.jpg", "A_2.JPG", "b ü.png", "packed.png"])
        assert (folder / "a.jpg").samefile(a1) and (folder / "A_2.JPG").samefile(a2) and (folder / "b ü.png").samefile(b)
        assert (folder / "packed.png").read_bytes() == packed_bytes

        made = bpy.data.images.new("Painted", 8, 8)
        missing = bpy.data.images.load(str(a1), check_existing=False)
        missing.filepath = str(tmp_path / "nowhere.jpg")
        with pytest.raises(ValueError) as caught:
            result, rendered = render_result()
            bpy.data.scenes.remove(rendered)
            inputs.photos_from_images([images[0], made, result, missing], tmp_path / "refused")
        message = str(caught.value)
        assert "'Painted' is made in Blender" in message and "'Render Result' is the render result" in message
        assert f"'{missing.name}' points to {tmp_path / 'nowhere.jpg'}, which does not exist" in message
        assert not (tmp_path / "refused").exists()
        bpy.data.images.remove(made)
        bpy.data.images.remove(missing)
    finally:
        for image in images:
            bpy.data.images.remove(image)


def test_sources_from_context_and_operator_properties(blender, tmp_path):
    import bpy

    inputs = photo_inputs(blender)
    images = [bpy.data.images.load(str(write_image(tmp_path / f"{i}.png", frame_pixels(i))), check_existing=False)
              for i in range(3)]
    empty = bpy.data.objects.new("reference", None)
    bpy.context.scene.collection.objects.link(empty)
    empty.empty_display_type = "IMAGE"
    empty.data = images[2]
    bpy.context.view_layer.update()
    clip = None
    try:
        context = bpy.context
        assert inputs.images_from_context(context, [images[1].name, images[0].name]) == [images[1], images[0]]
        with pytest.raises(ValueError, match="No image named 'nope'"):
            inputs.images_from_context(context, ["nope"])
        with context.temp_override(selected_ids=[images[0], bpy.context.scene, images[1], images[0]]):
            assert inputs.images_from_context(bpy.context) == [images[0], images[1]]
        for obj in bpy.context.view_layer.objects:
            obj.select_set(obj == empty)
        assert empty.select_get()
        assert inputs.images_from_context(bpy.context) == [images[2]]
        empty.select_set(False)
        with pytest.raises(ValueError, match="No images selected"):
            inputs.images_from_context(bpy.context)

        for other in list(bpy.data.movieclips):
            bpy.data.movieclips.remove(other)
        with pytest.raises(ValueError, match="No movie clip chosen"):
            inputs.clip_from_context(bpy.context)
        clip = bpy.data.movieclips.load(str(tmp_path / "0.png"))
        assert inputs.clip_from_context(bpy.context) == clip  # the only one
        assert inputs.clip_from_context(bpy.context, clip.name) == clip
        with pytest.raises(ValueError, match="No movie clip named"):
            inputs.clip_from_context(bpy.context, "nope")

        seen = {}

        class RECON_OT_test_photo_source(bpy.types.Operator):
            bl_idname = "recon.test_photo_source"
            bl_label = "Test photo source"
            __annotations__ = inputs.source_properties()

            def execute(self, context):
                seen["images"] = inputs.images_from_context(context, [item.name for item in self.images])
                seen["clip"] = inputs.clip_from_context(context, self.clip)
                seen["step"] = self.frame_step
                seen["source"] = self.source
                return {"FINISHED"}

        bpy.utils.register_class(RECON_OT_test_photo_source)
        try:
            result = bpy.ops.recon.test_photo_source(
                source="IMAGES", images=[{"name": images[0].name}, {"name": images[1].name}], clip=clip.name, frame_step=3,
            )
        finally:
            bpy.utils.unregister_class(RECON_OT_test_photo_source)
        assert result == {"FINISHED"}
        assert seen == {"images": images[:2], "clip": clip, "step": 3, "source": "IMAGES"}
    finally:
        bpy.data.objects.remove(empty)
        for image in images:
            bpy.data.images.remove(image)
        if clip is not None:
            bpy.data.movieclips.remove(clip)
