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
