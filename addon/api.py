# SPDX-License-Identifier: GPL-3.0-or-later
"""Recon's Python API for scripts inside Blender: plain functions that run a job, wait for it
(pumping its events, so they work in background mode and from the Python console), and
return the created objects. Errors raise :class:`ReconJobError` with the artist-facing
message; a failed or cancelled job leaves the scene as it was.

    from bl_ext.user_default.recon.addon import api
    obj = api.fit_mesh_to_points(bpy.data.objects["scan"], iterations=500)

For progress or cancel, submit without waiting::

    job, finish = api.submit_fit_mesh_to_points(cloud)
    job.wait(on_progress=lambda j: print(j.done, j.total))   # or job.cancel()
    obj = finish()
"""

from __future__ import annotations

from collections.abc import Callable

import bpy

from . import deform
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

    def finish() -> bpy.types.Object:
        job.wait()
        if job.status == "succeeded":
            return deform.import_result(job, target)
        if job.status == "cancelled":
            raise ReconJobError(f"The job was cancelled; the scene is unchanged (log: {job.log_path}).", job)
        raise ReconJobError(job.error_text(), job)

    return job, finish


def fit_mesh_to_points(points: bpy.types.Object | str, template: bpy.types.Object | None = None, **settings) -> bpy.types.Object:
    """Fit a mesh to ``points`` and return the new object (in the cloud's frame and collection)."""
    _job, finish = submit_fit_mesh_to_points(points, template, **settings)
    return finish()
