# SPDX-License-Identifier: GPL-3.0-or-later
"""Radiance fields from Blender: the ``nerf`` job on a reconstruction collection's cameras,
photos and points, and the ``render-nerf`` job from a Blender camera into an image.

A trained field belongs to its reconstruction collection: the collection's custom property
``recon_field`` holds the absolute path of the field's folder (the ``nerf`` job folder).
The field lives in the reconstruction's backend frame (see :mod:`.scene_export`): the
cameras sent to train it and to render it are moved there from Blender's world by the
collection's alignment, so an aligned collection trains and renders exactly as an unaligned
one.

Images: while training, the job's ``preview.png`` (a held-out view) is shown as the image
"Recon Field Preview", reloaded whenever the job writes it. A render of one frame becomes
the image "Recon Field Render" (its PNG in the render job's folder); a frame range is
rendered as one PNG per frame (``frame_0001.png``... named by frame number, in the job
folder) and loaded as one image sequence "Recon Field Render" that follows the scene's
frame in the Image Editor. Shared by the operators (``operators/fields.py``) and the
Python API.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy

from . import previews, scene_export
from .jobs import Job, manager

FIELD_PROPERTY = "recon_field"
PREVIEW_IMAGE = "Recon Field Preview"
RENDER_IMAGE = "Recon Field Render"
FIELD_JSON = "field.json"
FEW_VIEWS = 20  # fewer training views than this: warn (the nerf job's MIN_VIEWS)

FIELD_ITEMS = [
    ("hashgrid", "Hash Grid", "Instant-NGP's multiresolution hash grid with small MLPs: minutes on a CPU"),
    ("mlp", "NeRF MLP", "The original NeRF's positional-encoding MLP: far slower, for comparison"),
]


def settings_properties() -> dict:
    """The training settings as bpy properties: the same names and defaults as
    ``backend/jobs/nerf.py``'s Config."""
    P = bpy.props
    return {
        "field": P.EnumProperty(name="Field", items=FIELD_ITEMS, default="hashgrid",
                               description="What represents the radiance field"),
        "max_minutes": P.FloatProperty(name="Max Minutes", default=10.0, min=0.0, soft_max=120.0,
                                       description="Stop training after this many minutes (0: no limit; "
                                                   "Esc stops earlier and keeps the last checkpoint)"),
        "resolution_scale": P.FloatProperty(name="Resolution Scale", default=1.0, min=0.01, max=1.0,
                                            description="Train on the photos scaled by this factor "
                                                        "(0.25: a quarter of the width; faster, blurrier)"),
    }


SETTING_NAMES = tuple(settings_properties())


def render_properties() -> dict:
    P = bpy.props
    return {
        "animation": P.BoolProperty(name="Frame Range", default=False,
                                    description="Render every frame of the scene's frame range (an animated camera), "
                                                "not only the current frame"),
        "transparent": P.BoolProperty(name="Transparent", default=False,
                                      description="Leave the background transparent: the field's opacity as alpha, "
                                                  "for compositing over other renders"),
    }


RENDER_NAMES = tuple(render_properties())


# -- which collection ---------------------------------------------------------------------
def is_reconstruction(collection: bpy.types.Collection | None) -> bool:
    """A collection made by Recon (solved or imported cameras), or one that holds a field."""
    return collection is not None and any(
        key in collection for key in (scene_export.ALIGNMENT_PROPERTY, "recon_job", FIELD_PROPERTY))


def _candidates(context, obj) -> list[bpy.types.Collection]:
    found = []
    if obj is not None:
        found += list(obj.users_collection)
    layer = getattr(context, "view_layer", None)
    if layer is not None and layer.active_layer_collection is not None:
        found.append(layer.active_layer_collection.collection)
    return found


def reconstruction_collection(context, name: str = "") -> bpy.types.Collection | None:
    """The reconstruction to train on: ``name`` when given, else the collection of the active
    object or the active collection when it is a reconstruction, else the scene's only one."""
    if name:
        return bpy.data.collections.get(name)
    for collection in _candidates(context, context.active_object):
        if is_reconstruction(collection):
            return collection
    scene_collections = [c for c in context.scene.collection.children_recursive if is_reconstruction(c)]
    return scene_collections[0] if len(scene_collections) == 1 else None


def field_collection(context, name: str = "", camera: bpy.types.Object | None = None) -> bpy.types.Collection | None:
    """The reconstruction whose field renders: ``name`` when given, else the first with a
    field among the camera's collections, the active object's, the active collection, and
    else the scene's only reconstruction with a field."""
    if name:
        collection = bpy.data.collections.get(name)
        return collection if collection is not None and FIELD_PROPERTY in collection else None
    for collection in _candidates(context, camera) + _candidates(context, context.active_object):
        if FIELD_PROPERTY in collection:
            return collection
    with_field = [c for c in context.scene.collection.children_recursive if FIELD_PROPERTY in c]
    return with_field[0] if len(with_field) == 1 else None


def field_folder(collection: bpy.types.Collection | None) -> Path | None:
    value = collection.get(FIELD_PROPERTY) if collection is not None else None
    return Path(str(value)) if value else None


_INFO_CACHE: dict[str, tuple[float, dict]] = {}


def field_info(folder: Path | None) -> dict:
    """What ``field.json`` says (``{}`` when unreadable), read again only when it changes."""
    if folder is None:
        return {}
    path = Path(folder) / FIELD_JSON
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}
    cached = _INFO_CACHE.get(str(path))
    if cached is None or cached[0] != mtime:
        try:
            cached = (mtime, json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}
        _INFO_CACHE[str(path)] = cached
    return cached[1]


def field_summary(folder: Path | None) -> str:
    """One line about a field: kind, steps, held-out PSNR."""
    meta = field_info(folder)
    if not meta:
        return ""
    info = meta.get("info", {}) or {}
    training = meta.get("training", {}) or {}
    kind = (meta.get("model", {}) or {}).get("kind", "field")
    steps = training.get("steps", info.get("steps"))
    psnr = info.get("holdout_psnr", training.get("holdout_psnr"))
    parts = [kind]
    if steps:
        parts.append(f"{steps} steps")
    if isinstance(psnr, (int, float)) and math.isfinite(psnr):
        parts.append(f"held-out {psnr:.2f} dB")
    return ", ".join(parts)


# -- training -----------------------------------------------------------------------------
def stopped_checkpoint(collection: bpy.types.Collection) -> Path | None:
    """The folder of this session's latest training of ``collection`` when it was stopped
    (Esc) after saving a checkpoint and nothing finished since: the next training continues it."""
    for job in reversed(list(manager().jobs.values())):
        if job.kind != "nerf" or job.title != collection.name or job.active:
            continue
        if job.status == "succeeded":
            return None
        if job.status == "cancelled" and (job.dir / FIELD_JSON).is_file():
            return job.dir
    return None


def prepare_train(context, collection: bpy.types.Collection | None, config: dict, resume: bool = True) -> Job:
    """The ``nerf`` job on ``collection``'s cameras with photos and its points, written into
    the job folder in the backend frame; raises ValueError with an artist-facing message."""
    if collection is None:
        raise ValueError("No reconstruction to train on: make its collection active in the Outliner "
                         "(Solve Cameras or Import a reconstruction first)")
    cameras, without = scene_export.collection_cameras(collection)
    if not cameras:
        what = f" ({len(without)} camera(s) without photos)" if without else ""
        raise ValueError(f"'{collection.name}' has no cameras with photos{what}: a field learns from the photos "
                         "behind the cameras. Solve Cameras from photos, or give the cameras background photos")
    S = scene_export.alignment(collection)
    job = manager().new_job("nerf", config)
    job.title = collection.name
    scene_export.write_scene(job.dir / "inputs" / "scene", cameras, context.scene, S,
                             scene_export.collection_point_objects(collection))
    job.inputs["scene"] = str(job.dir / "inputs" / "scene")
    checkpoint = stopped_checkpoint(collection) if resume else None
    if checkpoint is not None:
        job.inputs["resume_from"] = str(checkpoint)
    return job


def finish_train(job: Job, collection: bpy.types.Collection) -> Path:
    """Remember the trained field on its collection; returns the field's folder."""
    folder = job.dir.resolve()
    collection[FIELD_PROPERTY] = str(folder)
    update_preview(job)
    return folder


def update_preview(job: Job) -> bpy.types.Image | None:
    """Show the job's ``preview.png`` as the image "Recon Field Preview" when it changed since
    last shown; returns the image (None before the first preview)."""
    return previews.show_preview(PREVIEW_IMAGE, job.dir / "preview.png")


# -- rendering ----------------------------------------------------------------------------
def render_frames(scene: bpy.types.Scene, animation: bool) -> list[int]:
    if not animation:
        return [scene.frame_current]
    if scene.frame_start < 0:
        raise ValueError(f"The frame range starts at {scene.frame_start}: render frames from 0 on "
                         "(set the scene's Frame Start to 0 or more)")
    return list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))


def prepare_render(context, collection: bpy.types.Collection | None, camera: bpy.types.Object | None,
                   frames: list[int], transparent: bool = False) -> Job:
    """The ``render-nerf`` job: the field of ``collection`` seen through ``camera`` at each
    of ``frames``; raises ValueError with an artist-facing message."""
    if camera is None:
        raise ValueError("The scene has no active camera: add one, or make one active (Ctrl+Numpad 0)")
    if collection is None:
        raise ValueError("No trained field to render: train one with Train Field on the reconstruction "
                         "(or make its collection active when there are several)")
    folder = field_folder(collection)
    if folder is None:
        raise ValueError(f"No trained field on '{collection.name}': train one with Train Field first")
    if not (folder / FIELD_JSON).is_file():
        raise ValueError(f"The field of '{collection.name}' is gone from {folder}: train it again")
    if not frames:
        raise ValueError("The frame range is empty: set Frame Start and End")
    arrays = scene_export.render_camera_arrays(camera, context.scene, frames, scene_export.alignment(collection))
    job = manager().new_job("render-nerf", {"background": "transparent" if transparent else "field"})
    job.title = camera.name
    job.inputs["field"] = str(folder)
    job.inputs["cameras"] = str(scene_export.write_cameras(job.dir / "inputs" / "cameras", arrays))
    return job


def finish_render(job: Job, frames: list[int]) -> bpy.types.Image:
    """The rendered frame(s) as the image "Recon Field Render": one image for one frame, an
    image sequence for several; shown in every Image Editor."""
    files = [job.dir / f"{scene_export.frame_name(f)}.png" for f in frames]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise RuntimeError(f"the render job wrote no {missing[0]}")
    sequence = len(frames) > 1
    image = previews.show_file(RENDER_IMAGE, files[0], sequence)
    for window in bpy.context.window_manager.windows if bpy.context.window_manager else ():
        for area in window.screen.areas:
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            if getattr(space, "image", None) is not None and space.image.name not in (RENDER_IMAGE, PREVIEW_IMAGE):
                continue  # an editor showing something else keeps it
            space.image = image
            if sequence:
                space.image_user.frame_start = 1
                space.image_user.frame_offset = 0
                space.image_user.frame_duration = max(frames)
                space.image_user.use_auto_refresh = True
            area.tag_redraw()
    return image
