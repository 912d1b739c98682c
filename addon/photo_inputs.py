# SPDX-License-Identifier: GPL-3.0-or-later
"""The photos of a Structure-from-Motion job from Blender data: selected image datablocks,
or every n-th frame of a movie clip, written into a folder the backend reads like any photo
folder.

- Images: the files behind the datablocks are hard-linked (copied where links fail) into the
  folder under their own file names; packed images are written out byte for byte (their EXIF
  stays); images made in Blender (generated, render results) are refused with their names.
- Movie clips: a temporary scene with the clip as a sequencer strip renders the chosen frames
  as JPEGs (quality 95), headless and without a GPU: 25-45 ms a frame at 1920 x 1080 (H.264)
  when every frame is taken, 50-85 ms a frame at every 10th (each one a seek), with the
  sequencer's caches off so memory stays flat (+50 MB for 60 HD frames). The file names
  carry the frame numbers of the Movie Clip editor (``frame_000101.jpg`` is frame 101 there);
  :func:`frame_of` reads them back, so solved cameras can be keyed on the frames they belong to.

Operator properties for choosing the source are in :func:`source_properties`; the helpers
:func:`images_from_context` and :func:`clip_from_context` turn them and the context into data.
Errors are ``ValueError`` with a message for the artist, as in ``addon/sfm.py``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import bpy

SOURCE_ITEMS = [
    ("FOLDER", "Folder", "Every photo in a folder on disk"),
    ("IMAGES", "Images", "Image datablocks: the ones named, or those selected in the Outliner or File Browser, "
                         "or the selected image empties"),
    ("CLIP", "Movie Clip", "Every n-th frame of a movie clip"),
]
FRAME_PREFIX = "frame_"
FRAME_DIGITS = 6
FRAME_NAME = re.compile(rf"{FRAME_PREFIX}(-?\d+)\.(?:jpg|png)")
FRAME_QUALITY = 95  # JPEG quality of movie frames (PNG is 5 times slower to write, and the movie is lossy already)
SUFFIX_OF_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "OPEN_EXR": ".exr", "WEBP": ".webp"}

Progress = Callable[[int, int], None]  # (frames done, frames in all)


# Operator properties -------------------------------------------------------------------------


def source_properties() -> dict:
    """Properties of an operator that takes photos from a folder, images or a movie clip; merge
    them into its annotations like ``sfm.settings_properties()``. ``directory`` stays the
    folder of the FOLDER source. Scripts pass image names as
    ``images=[{"name": "IMG_0001.JPG"}, ...]`` and a clip as ``clip="shot.mp4"``."""
    P = bpy.props
    return {
        "source": P.EnumProperty(name="Photos From", items=SOURCE_ITEMS, default="FOLDER"),
        "images": P.CollectionProperty(
            type=bpy.types.PropertyGroup, name="Images",
            description="Names of the image datablocks to use (empty: the selected images)",
        ),
        "clip": P.StringProperty(
            name="Movie Clip", description="The movie clip (empty: the Movie Clip editor's clip, or the scene's active clip)",
            search=lambda self, context, edit_text: [clip.name for clip in bpy.data.movieclips],
        ),
        "frame_step": P.IntProperty(
            name="Every Nth Frame", description="Use every n-th frame of the movie clip (1: every frame)",
            default=10, min=1, soft_max=100,
        ),
    }


def images_from_context(context: bpy.types.Context, names: Iterable[str] = ()) -> list[bpy.types.Image]:
    """The images of an IMAGES source: those ``names`` name; without names, the images selected
    in the Outliner (Blender File view) or File Browser (``context.selected_ids``), else the
    images of the selected image empties in the viewport."""
    names = [name for name in names if name]
    if names:
        missing = [name for name in names if name not in bpy.data.images]
        if missing:
            raise ValueError(f"No image named {', '.join(repr(name) for name in missing)} in this file.")
        return [bpy.data.images[name] for name in names]
    selected = [block for block in getattr(context, "selected_ids", None) or () if isinstance(block, bpy.types.Image)]
    if not selected:
        objects = getattr(context, "selected_objects", None) or ()
        selected = [obj.data for obj in objects if obj.type == "EMPTY" and isinstance(obj.data, bpy.types.Image)]
    if not selected:
        raise ValueError(
            "No images selected. Select the photos' images in the Outliner (Blender File view) or the File Browser, "
            "or select image empties in the viewport."
        )
    return list(dict.fromkeys(selected))  # once each, in selection order


def clip_from_context(context: bpy.types.Context, name: str = "") -> bpy.types.MovieClip:
    """The movie clip of a CLIP source: the one named, else the Movie Clip editor's clip, else
    the scene's active clip, else the only clip in the file."""
    if name:
        clip = bpy.data.movieclips.get(name)
        if clip is None:
            raise ValueError(f"No movie clip named '{name}' in this file.")
        return clip
    scene = getattr(context, "scene", None)
    clip = getattr(context, "edit_movieclip", None) or (scene.active_clip if scene else None)
    if clip is None and len(bpy.data.movieclips) == 1:
        clip = bpy.data.movieclips[0]
    if clip is None:
        raise ValueError(
            "No movie clip chosen. Open the video in the Movie Clip editor (Clip > Open Clip), "
            "or make it the scene's active clip (Scene properties)."
        )
    return clip


# Images --------------------------------------------------------------------------------------


def image_file_names(images: Iterable[bpy.types.Image]) -> dict[str, str]:
    """The file name each image gets in the photo folder, by image name: the name of its file,
    with ``_2``, ``_3`` ... before the extension where names clash (ignoring case). Images
    of one file share a name. Raises ValueError naming every image that is no photo file."""
    return {image.name: name for image, _, name in _plan(images)}


def photos_from_images(images: Iterable[bpy.types.Image], folder: Path) -> Path:
    """``folder`` (created, best a new one) holding the files behind ``images``, one each,
    named by :func:`image_file_names`: hard links where the file system allows them, copies
    otherwise; packed images are written out as packed. Images with unsaved changes count as
    their file on disk. Raises ValueError naming every image that is no photo file (made in
    Blender, a movie or sequence, a missing file); nothing is written then."""
    plan = _plan(images)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = set()
    for image, source, name in plan:
        if name in written:
            continue
        written.add(name)
        target = folder / name
        target.unlink(missing_ok=True)
        if source is None:
            target.write_bytes(image.packed_file.data)
        else:
            try:
                os.link(source, target)
            except OSError:  # another file system, FAT, no permission to link
                shutil.copy2(source, target)
    return folder


def _plan(images: Iterable[bpy.types.Image]) -> list[tuple[bpy.types.Image, Path | None, str]]:
    """(image, its file or None when packed, its file name in the photo folder) per image."""
    images = list(images)
    if not images:
        raise ValueError("No images given: choose the images of the photos.")
    problems, found = [], []
    for image in images:
        problem = _not_a_photo_file(image)
        if problem:
            problems.append(problem)
            continue
        packed = image.packed_file is not None
        source = None if packed else _file_of(image)
        if source is not None and not source.is_file():
            problems.append(f"'{image.name}' points to {source}, which does not exist (find it with "
                            "File > External Data > Find Missing Files, or leave it out)")
            continue
        base = Path(bpy.path.basename(image.filepath)).name if image.filepath else ""
        if not Path(base).suffix:
            base = _safe_name(base or image.name) + SUFFIX_OF_FORMAT.get(image.file_format, ".png")
        found.append((image, source, base))
    if problems:
        raise ValueError(f"Not every image can be a photo: {'; '.join(problems)}.")

    plan, taken, by_source = [], set(), {}
    for image, source, base in found:
        key = os.path.normcase(os.path.realpath(source)) if source is not None else None
        if key in by_source:  # two datablocks of one file: the file once
            plan.append((image, source, by_source[key]))
            continue
        name, stem, suffix, n = base, Path(base).stem, Path(base).suffix, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}_{n}{suffix}"
        taken.add(name.lower())
        if key is not None:
            by_source[key] = name
        plan.append((image, source, name))
    return plan


def _not_a_photo_file(image: bpy.types.Image) -> str | None:
    """Why ``image`` cannot be a photo, or None."""
    name = image.name
    if image.type == "RENDER_RESULT":
        return f"'{name}' is the render result, not a photo file (save it with Image > Save As and open the file)"
    if image.type == "COMPOSITING" or image.source == "VIEWER":
        return f"'{name}' is the compositor's viewer, not a photo file"
    if image.source == "GENERATED":
        return f"'{name}' is made in Blender, not loaded from a photo (save it with Image > Save As first, or leave it out)"
    if image.source == "MOVIE":
        return f"'{name}' is a movie: open it as a movie clip and use the Movie Clip source"
    if image.source == "SEQUENCE":
        return f"'{name}' is an image sequence: use its folder as the photo source"
    if image.source == "TILED":
        return f"'{name}' is a tiled (UDIM) texture, not a photo"
    if image.packed_file is None and not image.filepath:
        return f"'{name}' has no file"
    return None


def _file_of(image: bpy.types.Image) -> Path:
    """The absolute path of an image's file; ``//`` paths are relative to the .blend file
    (or its library)."""
    return Path(os.path.abspath(bpy.path.abspath(image.filepath, library=image.library)))


def _safe_name(name: str) -> str:
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip(". ") or "image"


# Movie clips ---------------------------------------------------------------------------------


def frame_of(file_name: str | os.PathLike) -> int:
    """The Movie Clip editor's frame number of a file that :func:`photos_from_clip` wrote
    (``frame_000101.jpg`` -> 101)."""
    match = FRAME_NAME.fullmatch(Path(file_name).name)
    if match is None:
        raise ValueError(f"{file_name} is not a movie frame written by Recon ({FRAME_PREFIX}<number>.jpg).")
    return int(match.group(1))


def clip_frames(clip: bpy.types.MovieClip, step: int) -> range:
    """The frames (numbered as in the Movie Clip editor) that :func:`photos_from_clip` writes:
    every ``step``-th from the first that shows a frame of the file. The editor's frame F shows
    the file's frame ``F - clip.frame_start + clip.frame_offset`` (from 0); frames that fall
    outside the file (a Frame Offset shifts them) are left out."""
    first = clip.frame_start + max(0, -clip.frame_offset)
    stop = clip.frame_start + clip.frame_duration - max(0, clip.frame_offset)
    return range(first, stop, max(int(step), 1))


def photos_from_clip(clip: bpy.types.MovieClip, folder: Path, step: int, progress: Progress | None = None) -> Path:
    """``folder`` (created) holding every ``step``-th frame of ``clip`` as
    ``frame_<frame>.jpg``, from the clip's first frame, with the frame numbers of the Movie
    Clip editor (:func:`frame_of`); earlier frame files in the folder are removed first.
    Frames are the clip's pixels as they are (no undistortion, no stabilisation, sRGB).

    A temporary scene renders the clip through the sequencer and is removed afterwards. The
    artist's render result stays as it was: it belongs to their scene's renderer, not to the
    temporary scene's (and a render result image made by this render is removed).
    ``progress(done, total)`` is called after each frame."""
    if step < 1:
        raise ValueError(f"The frame step must be 1 or more, not {step}.")
    if clip.source == "MOVIE":
        path = _file_of(clip)
        if not path.is_file():
            raise ValueError(f"The movie clip '{clip.name}' points to {path}, which does not exist.")
    if clip.frame_offset and clip.is_editable:
        clip.filepath = clip.filepath  # reload, as Clip > Reload does: frames read before the offset was set stay cached
    width, height = clip.size
    frames = clip_frames(clip, step)
    if not width or not height or not frames:
        raise ValueError(f"Blender cannot read the frames of the movie clip '{clip.name}' ({clip.filepath}).")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if FRAME_NAME.fullmatch(old.name):
            old.unlink()

    scene = bpy.data.scenes.new(f"Recon frames of {clip.name}")
    scene_name = scene.name
    done = [0]

    def frame_written(rendered_scene, *args) -> None:
        if rendered_scene.name == scene_name:
            done[0] += 1
            if progress:
                progress(done[0], len(frames))

    bpy.app.handlers.render_write.append(frame_written)
    had_render_result = bool(_render_results())
    try:
        editor = scene.sequence_editor_create()
        editor.use_cache_raw = editor.use_cache_final = False  # else every frame stays in memory
        strip = editor.strips.new_clip("frames", clip, 1, clip.frame_start)  # scene frame = clip editor frame
        strip.undistort = strip.stabilize2d = False
        scene.frame_start, scene.frame_end, scene.frame_step = frames.start, frames[-1], frames.step
        _frame_render_settings(scene, width, height, folder)
        result = bpy.ops.render.render(animation=True, scene=scene_name)
        if result != {"FINISHED"}:
            raise ValueError(f"Blender could not render the frames of the movie clip '{clip.name}' ({result}).")
    except RuntimeError as exc:  # bpy.ops errors: another render running, the output not writable
        raise ValueError(f"Blender could not write the frames of the movie clip '{clip.name}': {exc}") from exc
    finally:
        bpy.app.handlers.render_write.remove(frame_written)
        if scene.sequence_editor is not None:  # strips first: removing the scene with them miscounts the clip's users
            for strip in list(scene.sequence_editor.strips):
                scene.sequence_editor.strips.remove(strip)
        bpy.data.scenes.remove(scene)
        if not had_render_result:
            for image in _render_results():
                bpy.data.images.remove(image)
    missing = [frame for frame in frames if not (folder / frame_file_name(frame)).is_file()]
    if missing:
        raise ValueError(f"Blender wrote no image for {len(missing)} frame(s) of '{clip.name}', e.g. frame {missing[0]}.")
    return folder


def frame_file_name(frame: int) -> str:
    """``frame_000101.jpg``: how Blender's ``frame_######`` output path names frame 101 (C's
    ``%.6d``: the sign comes before the six digits)."""
    return f"{FRAME_PREFIX}{'-' if frame < 0 else ''}{abs(frame):0{FRAME_DIGITS}d}.jpg"


def _frame_render_settings(scene: bpy.types.Scene, width: int, height: int, folder: Path) -> None:
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.use_border = False
    render.use_sequencer = True
    render.use_compositing = False
    render.use_stamp = False
    render.dither_intensity = 0.0  # no noise added to the pixels
    render.use_file_extension = True
    render.use_overwrite = True
    render.use_placeholder = False
    view = scene.view_settings  # pixels out as they came in
    view.view_transform, view.look, view.exposure, view.gamma = "Standard", "None", 0.0, 1.0
    view.use_curve_mapping = False
    settings = render.image_settings
    settings.file_format = "JPEG"
    settings.color_mode = "RGB"
    settings.quality = FRAME_QUALITY
    render.filepath = str(folder / (FRAME_PREFIX + "#" * FRAME_DIGITS))


def _render_results() -> list[bpy.types.Image]:
    return [image for image in bpy.data.images if image.type == "RENDER_RESULT"]
