# SPDX-License-Identifier: GPL-3.0-or-later
"""Recon's Python API for scripts inside Blender: plain functions that run a job, wait for it
(pumping its events, so they work in background mode and from the Python console), and
return the created objects. Errors raise :class:`ReconJobError` with the artist-facing
message; a failed or cancelled job leaves the scene as it was.

    from bl_ext.user_default.recon.addon import api
    obj = api.fit_mesh_to_points(bpy.data.objects["scan"], iterations=500)
    collection = api.solve_cameras("/photos/statue", camera_model="opencv")
    collection = api.import_reconstruction("/data/project/sparse/0")
    api.export_cameras(bpy.context.selected_objects, "/data/synthetic")
    splats = api.train_splats(collection, preset="fast", max_minutes=5)

For progress or cancel, submit without waiting::

    job, finish = api.submit_fit_mesh_to_points(cloud)
    job.wait(on_progress=lambda j: print(j.done, j.total))   # or job.cancel()
    obj = finish()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import bpy

from . import deform, reconstruction, sfm
from .jobs import Job, manager


class ReconJobError(RuntimeError):
    """A job failed or was cancelled; ``job`` holds its status, error and directory."""

    def __init__(self, message: str, job: Job | None = None) -> None:
        super().__init__(message)
        self.job = job


def submit_fit_mesh_to_points(
    points: bpy.types.Object | str,
    template: bpy.types.Object | None = None,
    **settings,
) -> tuple[Job, Callable[[], bpy.types.Object]]:
    """Start fitting a mesh to ``points`` (a mesh or point-cloud object, or a file path).

    ``settings``: any of ``iterations, subdivisions, lr, momentum, w_chamfer, w_edge,
    w_normal, w_laplacian, laplacian, samples, seed``. Returns the running job and a function
    that waits for it and imports the result (raising :class:`ReconJobError` on failure).
    """
    unknown = sorted(set(settings) - set(deform.SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {list(deform.SETTING_NAMES)}")
    defaults = {name: prop.keywords["default"] for name, prop in deform.settings_properties().items()}
    config = {**defaults, **settings}
    try:
        if isinstance(points, str):
            job, target = deform.prepare(bpy.context, filepath=points, template=template, config=config)
        else:
            job, target = deform.prepare(bpy.context, cloud=points, template=template, config=config)
    except ValueError as exc:
        raise ReconJobError(str(exc)) from exc
    manager().submit(job)
    return job, _finisher(job, lambda: deform.import_result(job, target))


def _finisher(job: Job, importer: Callable):
    """A function that waits for ``job`` and returns ``importer()``'s result, or raises."""

    def finish():
        job.wait()
        if job.status == "succeeded":
            return importer()
        if job.status == "cancelled":
            raise ReconJobError(f"The job was cancelled; the scene is unchanged (log: {job.log_path}).", job)
        raise ReconJobError(job.error_text(), job)

    return finish


def _submit(prepare: Callable[[], Job]) -> Job:
    try:
        job = prepare()
    except ValueError as exc:
        raise ReconJobError(str(exc)) from exc
    return manager().submit(job)


def fit_mesh_to_points(points: bpy.types.Object | str, template: bpy.types.Object | None = None, **settings) -> bpy.types.Object:
    """Fit a mesh to ``points`` and return the new object (in the cloud's frame and collection)."""
    _job, finish = submit_fit_mesh_to_points(points, template, **settings)
    return finish()


def submit_solve_cameras(
    photos: str | Path, align: bool = True, known_distance: float = 0.0, animated_camera: bool = False, **settings
) -> tuple[Job, Callable[[], bpy.types.Collection]]:
    """Start Structure-from-Motion on a folder of photos. ``settings``: any of the job's
    (``camera_model``, ``shared_camera``, ``matcher``, ``max_image_size``, ...). The finish
    function returns the new collection of cameras and points."""
    unknown = sorted(set(settings) - set(sfm.SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {list(sfm.SETTING_NAMES)}")
    defaults = {name: prop.keywords["default"] for name, prop in sfm.settings_properties().items()}
    job = _submit(lambda: sfm.prepare(str(photos), {**defaults, **settings}))
    options = {"align": align, "known_distance": known_distance, "animated_camera": animated_camera}
    return job, _finisher(job, lambda: sfm.import_result(job, bpy.context.scene, **options))


def solve_cameras(photos: str | Path, **options) -> bpy.types.Collection:
    """Solve the cameras of a folder of photos; returns the collection of cameras and points."""
    _job, finish = submit_solve_cameras(photos, **options)
    return finish()


def import_reconstruction(source: str | Path, images: str | Path = "", align: bool = False, known_distance: float = 0.0,
                          animated_camera: bool = False) -> bpy.types.Collection:
    """Import a COLMAP model folder (text or binary) or a ``transforms.json``; returns the
    collection of cameras and points."""
    job = _submit(lambda: reconstruction.prepare_import(str(source), str(images) if images else ""))
    options = {"align": align, "known_distance": known_distance, "animated_camera": animated_camera}
    return _finisher(job, lambda: reconstruction.import_job_result(job, bpy.context.scene, **options))()


def export_cameras(objects: Iterable[bpy.types.Object], folder: str | Path, formats: Iterable[str] = ("COLMAP", "TRANSFORMS"),
                   points: Iterable[bpy.types.Object] = ()) -> list[Path]:
    """Write the camera objects among ``objects`` (and the points of ``points``) as a COLMAP
    text model (``folder/colmap``) and/or ``folder/transforms.json``; returns what was written."""
    cameras = [o for o in objects if o.type == "CAMERA"]
    return reconstruction.export_cameras(cameras, bpy.context.scene, str(folder), set(formats), list(points))


def import_splats(path: str | Path, collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """Import a standard 3DGS ``.ply`` as one splat object (into ``collection``, else the
    scene's); raises ValueError naming the file when it is not splats."""
    from . import splats

    return splats.import_splats(Path(path), collection or bpy.context.scene.collection)


def export_splats(obj: bpy.types.Object, path: str | Path, apply_transform: bool = True) -> Path:
    """Write a splat object as a standard 3DGS ``.ply`` (where it stands in the scene, unless
    ``apply_transform`` is False)."""
    from . import splats

    return splats.export_splats(obj, Path(path), apply_transform)


def submit_fit_body(
    photos: Iterable[bpy.types.Image] | str | Path | None = None,
    cameras: Iterable[bpy.types.Object] | None = None,
    keypoints: str | Path = "",
    model: str | Path = "anny",
    **settings,
) -> tuple[Job, Callable[[], tuple[bpy.types.Object, bpy.types.Object, list[bpy.types.Object]]]]:
    """Start fitting a rigged human body to ``photos`` (image datablocks, or a photo file or
    folder) or to ``cameras`` (camera objects with background photos, fitted jointly in their
    world). ``keypoints``: a COCO or OpenPose JSON instead of detecting; ``model``: "anny" or
    the path of an SMPL-family file; ``settings``: any of ``rig, num_betas, focal_35mm,
    iterations, camera_iterations, fit_shape, flip, metric_cameras, min_confidence,
    max_people``. The finish function returns (armature, mesh, cameras made for the photo)."""
    from . import body

    unknown = sorted(set(settings) - set(body.CONFIG_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {list(body.CONFIG_NAMES)}")
    defaults = {name: prop.keywords["default"] for name, prop in body.settings_properties().items()
                if name in body.CONFIG_NAMES}
    config = {**defaults, **settings}
    images = photo_path = None
    if isinstance(photos, (str, Path)):
        photo_path = str(photos)
    elif photos is not None:
        images = list(photos)
    kind, model_file = ("ANNY", "") if str(model) == "anny" else ("FILE", str(model))
    job = _submit(lambda: body.prepare(bpy.context, config, images=images, cameras=list(cameras or []),
                                       photo_path=photo_path or "", keypoints=str(keypoints or ""), model=kind,
                                       model_file=model_file))
    return job, _finisher(job, lambda: body.import_result(job, bpy.context.scene))


def fit_body(photos=None, cameras=None, keypoints: str | Path = "", model: str | Path = "anny", **settings):
    """Fit a rigged human body to photos or cameras (see :func:`submit_fit_body`); returns
    (armature, mesh, cameras)."""
    _job, finish = submit_fit_body(photos, cameras, keypoints, model, **settings)
    return finish()


def submit_set_body_shape(body_object: bpy.types.Object, **values: float) -> tuple[Job, Callable[[], bpy.types.Object]]:
    """Start giving a fitted body (its rig or its mesh) new shape parameters, by name (Anny:
    ``gender, age, muscle, weight, height, proportions`` in 0..1; SMPL: ``beta0``...); the
    others keep their slider values. The finish function returns the armature."""
    from . import body

    armature = body.body_armature(body_object)
    if armature is None:
        raise ReconJobError(f"'{body_object.name}' is not a body fitted by Recon.")
    job = _submit(lambda: body.prepare_shape(armature, values))
    return job, _finisher(job, lambda: body.import_shape_result(job))


def set_body_shape(body_object: bpy.types.Object, **values: float) -> bpy.types.Object:
    """Give a fitted body new shape parameters in place, keeping its pose; returns the armature."""
    _job, finish = submit_set_body_shape(body_object, **values)
    return finish()


def submit_train_splats(
    collection: bpy.types.Collection | None = None,
    cameras: Iterable[bpy.types.Object] | None = None,
    **settings,
) -> tuple[Job, Callable[[], bpy.types.Object]]:
    """Start training Gaussian splats on ``cameras`` (camera objects with their photos as
    background images), else on the cameras and points of ``collection`` (a 'Recon ...'
    collection; default: the active one). ``settings``: any of ``preset`` ("fast",
    "default", "quality"), ``max_minutes, iterations, resolution_scale, sh_degree,
    max_gaussians, background, hold_out_every``. The finish function returns the splat
    object, in the collection, lined up with the cameras; on cancel it raises
    :class:`ReconJobError`, and :func:`import_job_splats` imports the last state."""
    from . import splat_train

    unknown = sorted(set(settings) - set(splat_train.SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {list(splat_train.SETTING_NAMES)}")
    defaults = {name: prop.keywords["default"] for name, prop in splat_train.settings_properties().items()}
    source = "COLLECTION" if collection is not None and cameras is None else "AUTO"
    job = _submit(lambda: splat_train.prepare(bpy.context, {**defaults, **settings}, collection=collection,
                                              cameras=list(cameras) if cameras is not None else None, source=source))
    refresh = splat_train.preview_refresher()

    def finish():
        job.wait(on_progress=refresh)
        if job.status == "succeeded":
            return splat_train.import_job_splats(job, bpy.context.scene)
        if job.status == "cancelled":
            kept = splat_train.splats_path(job)
            also = f"; its last state is kept in {kept} (api.import_job_splats(job) imports it)" if kept else ""
            raise ReconJobError(f"The job was cancelled; the scene is unchanged{also} (log: {job.log_path}).", job)
        raise ReconJobError(job.error_text(), job)

    return job, finish


def train_splats(collection: bpy.types.Collection | None = None, cameras: Iterable[bpy.types.Object] | None = None,
                 **settings) -> bpy.types.Object:
    """Train Gaussian splats on a reconstruction's cameras (see :func:`submit_train_splats`)
    and return the splat object."""
    _job, finish = submit_train_splats(collection, cameras, **settings)
    return finish()


def import_job_splats(job: Job) -> bpy.types.Object:
    """Import the splats a splat job wrote (the last state of a cancelled one) into the
    collection it trained on; raises ValueError when it wrote none."""
    from . import splat_train

    return splat_train.import_job_splats(job, bpy.context.scene)


def submit_train_field(collection: bpy.types.Collection | None = None, resume: bool = True,
                       **settings) -> tuple[Job, Callable[[], Path]]:
    """Start training a radiance field on the cameras, photos and points of ``collection`` (a
    reconstruction; default: the active one). ``settings``: ``field`` ("hashgrid", "mlp"),
    ``max_minutes``, ``resolution_scale``, or any other setting of the ``nerf`` job
    (``iterations``, ``rays``, ``levels``, ...). ``resume``: continue a training of this
    collection stopped by a cancel. The finish function sets the collection's
    ``recon_field`` and returns the field's folder."""
    from . import fields

    defaults = {name: prop.keywords["default"] for name, prop in fields.settings_properties().items()}
    target = collection if collection is not None else fields.reconstruction_collection(bpy.context)
    job = _submit(lambda: fields.prepare_train(bpy.context, target, {**defaults, **settings}, resume))
    return job, _finisher(job, lambda: fields.finish_train(job, target))


def train_field(collection: bpy.types.Collection | None = None, **settings) -> Path:
    """Train a radiance field on a reconstruction (see :func:`submit_train_field`); returns its folder."""
    _job, finish = submit_train_field(collection, **settings)
    return finish()


def submit_render_field(camera: bpy.types.Object | None = None, collection: bpy.types.Collection | None = None,
                        frame_start: int | None = None, frame_end: int | None = None,
                        transparent: bool = False) -> tuple[Job, Callable[[], bpy.types.Image]]:
    """Start rendering the field of ``collection`` (default: the camera's or the active
    reconstruction's) through ``camera`` (default: the scene's) at the scene's resolution:
    the current frame, or ``frame_start``..``frame_end`` as an image sequence. The finish
    function returns the image "Recon Field Render"."""
    from . import fields

    scene = bpy.context.scene
    camera = camera if camera is not None else scene.camera
    if collection is None:
        collection = fields.field_collection(bpy.context, camera=camera)
    if frame_start is None and frame_end is None:
        frames = [scene.frame_current]
    else:
        first = scene.frame_current if frame_start is None else int(frame_start)
        frames = list(range(first, (first if frame_end is None else int(frame_end)) + 1))
    job = _submit(lambda: fields.prepare_render(bpy.context, collection, camera, frames, transparent))
    return job, _finisher(job, lambda: fields.finish_render(job, frames))


def render_field(camera: bpy.types.Object | None = None, collection: bpy.types.Collection | None = None,
                 frame_start: int | None = None, frame_end: int | None = None,
                 transparent: bool = False) -> bpy.types.Image:
    """Render a trained field through a Blender camera (see :func:`submit_render_field`)."""
    _job, finish = submit_render_field(camera, collection, frame_start, frame_end, transparent)
    return finish()


def submit_bake_texture(mesh: bpy.types.Object, collection: bpy.types.Collection | None = None,
                        cameras: Iterable[bpy.types.Object] | None = None,
                        **settings) -> tuple[Job, Callable[[], bpy.types.Object]]:
    """Start baking a texture onto ``mesh`` from the photos of ``cameras`` (camera objects
    showing their photos), else of ``collection``'s cameras (default: the selected cameras
    with photos, or the mesh's or the active reconstruction). ``settings``: any of
    ``texture_size`` (512 ... 8192), ``max_faces``, ``views``, ``use_field`` (colour what no
    photo sees from the collection's trained field). The finish function returns the new
    textured object, lined up with ``mesh``."""
    from . import textures

    unknown = sorted(set(settings) - set(textures.SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {list(textures.SETTING_NAMES)}")
    defaults = {name: prop.keywords["default"] for name, prop in textures.settings_properties().items()}
    values = {**defaults, **settings}
    job = _submit(lambda: textures.prepare(bpy.context, mesh, values, collection.name if collection is not None else "",
                                           list(cameras) if cameras is not None else None))
    return job, _finisher(job, lambda: textures.import_result(job, bpy.context.scene))


def bake_texture(mesh: bpy.types.Object, collection: bpy.types.Collection | None = None,
                 cameras: Iterable[bpy.types.Object] | None = None, **settings) -> bpy.types.Object:
    """Bake a texture onto ``mesh`` from the reconstruction's photos (see
    :func:`submit_bake_texture`) and return the textured object."""
    _job, finish = submit_bake_texture(mesh, collection, cameras, **settings)
    return finish()


def submit_extract_mesh(source: bpy.types.Object | bpy.types.Collection | None = None,
                        **settings) -> tuple[Job, Callable[[], bpy.types.Object]]:
    """Start extracting a mesh from ``source``: a splat object, or a reconstruction collection
    with a trained field (default: the active splat object, else the reconstruction in
    context). ``settings``: any of ``mode`` (``"density"`` or ``"sdf"``: a smoother surface
    from a signed distance field fitted to a field's density; fields only), ``sdf_steps``,
    ``resolution, threshold, max_faces, min_component, visible_only, colors``. The finish
    function returns the new mesh object, placed on the splats or in the reconstruction's
    Blender frame."""
    from . import meshes

    unknown = sorted(set(settings) - set(meshes.SETTING_NAMES))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {list(meshes.SETTING_NAMES)}")
    defaults = {name: prop.keywords["default"] for name, prop in meshes.settings_properties().items()}
    config = {**defaults, **settings}
    if source is None:
        source = meshes.source_splats(bpy.context)
    splat_object = source if isinstance(source, bpy.types.Object) else None
    name = source.name if isinstance(source, bpy.types.Collection) else ""
    try:
        job, target = meshes.prepare(bpy.context, config, name, splat_object)
    except ValueError as exc:
        raise ReconJobError(str(exc)) from exc
    manager().submit(job)
    return job, _finisher(job, lambda: meshes.import_result(job, target, bpy.context.scene))


def extract_mesh(source: bpy.types.Object | bpy.types.Collection | None = None, **settings) -> bpy.types.Object:
    """Extract a mesh with vertex colours from splats or a trained field (see
    :func:`submit_extract_mesh`) and return the new object."""
    _job, finish = submit_extract_mesh(source, **settings)
    return finish()
