# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``deform`` job from Blender: gather the cloud (and template) into the job directory,
and turn the backend's ``mesh.npz`` into a new object beside the cloud.

Shared by the operator (``recon.fit_mesh_to_points``) and the Python API (``api.py``)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from ..backend.protocol import write_bytes_atomic
from . import converters, settings
from .jobs import Job, manager

# Settings of the fit, as bpy properties; the same names and defaults as backend/jobs/deform.py's Config.
LAPLACIAN_ITEMS = [
    ("uniform", "Uniform", "Every neighbour counts the same (as in the book)"),
    ("cot", "Cotangent", "Cotangent weights: follows the surface's shape"),
    ("cotcurv", "Curvature", "Cotangent weights over vertex area: mean-curvature flow"),
]


def settings_properties() -> dict:
    P = bpy.props
    return {
        "subdivisions": P.IntProperty(name="Subdivisions", description="Ico-sphere level (4: 2562 vertices)", default=4, min=0, max=7),
        "iterations": P.IntProperty(name="Iterations", description="Optimisation steps", default=2000, min=1, soft_max=20000),
        "lr": P.FloatProperty(name="Learning Rate", description="SGD learning rate", default=1.0, min=0.0, soft_max=5.0),
        "momentum": P.FloatProperty(name="Momentum", description="SGD momentum", default=0.9, min=0.0, max=0.999),
        "w_chamfer": P.FloatProperty(name="Chamfer", description="Weight of the distance to the points", default=1.0, min=0.0),
        "w_edge": P.FloatProperty(name="Edge Length", description="Weight of the edge-length regulariser", default=1.0, min=0.0),
        "w_normal": P.FloatProperty(name="Normal Consistency", description="Weight of the normal-consistency regulariser", default=0.01, min=0.0),
        "w_laplacian": P.FloatProperty(name="Laplacian", description="Weight of the smoothing regulariser", default=0.1, min=0.0),
        "laplacian": P.EnumProperty(name="Laplacian Weights", items=LAPLACIAN_ITEMS, default="uniform"),
        "samples": P.IntProperty(name="Samples", description="Surface samples per step; 0 uses as many as the cloud has points", default=5000, min=0),
        "seed": P.IntProperty(name="Seed", description="Random seed of the surface sampling", default=0, min=0),
    }


SETTING_NAMES = tuple(settings_properties())


@dataclass
class Target:
    """Where the result goes: the cloud's name, frame and collection."""

    name: str
    matrix_world: object  # mathutils.Matrix, or None for the world frame
    collection: bpy.types.Collection


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def prepare(
    context,
    *,
    cloud: bpy.types.Object | None = None,
    filepath: str = "",
    template: bpy.types.Object | None = None,
    config: dict,
) -> tuple[Job, Target]:
    """Create the job and write its inputs; raises ValueError with an artist-facing message."""
    depsgraph = context.evaluated_depsgraph_get()
    job = manager().new_job("deform", {**config, "device": settings.device()})
    if filepath:
        path = Path(bpy.path.abspath(filepath))
        if not path.is_file():
            raise ValueError(f"The point cloud file '{path}' does not exist. Check the path.")
        job.inputs["points"] = str(path)
        target = Target(path.stem, None, context.scene.collection)
    else:
        if cloud is None or cloud.type not in {"MESH", "POINTCLOUD"}:
            raise ValueError("Select a point cloud (a mesh with vertices or a Point Cloud object) as the active object.")
        try:
            points = converters.object_points_local(cloud, depsgraph)
        except converters.EmptyGeometry:
            raise ValueError(f"The point cloud '{cloud.name}' has no points. Select an object with vertices or points.") from None
        _write_npz(job.dir / "inputs" / "points.npz", points=points)
        job.inputs["points"] = str(job.dir / "inputs" / "points.npz")
        collection = cloud.users_collection[0] if cloud.users_collection else context.scene.collection
        target = Target(cloud.name, cloud.matrix_world.copy(), collection)
    if template is not None:
        vertices, triangles = converters.mesh_triangles(template, depsgraph)
        if len(triangles) == 0:
            raise ValueError(f"The template '{template.name}' has no faces. Select a mesh with faces as the template.")
        # Into the cloud's frame: cloud_local = inverse(cloud world) @ template world @ template_local.
        to_cloud = template.matrix_world if target.matrix_world is None else target.matrix_world.inverted() @ template.matrix_world
        _write_npz(job.dir / "inputs" / "template.npz", vertices=converters.transform_points(to_cloud, vertices), faces=triangles)
        job.inputs["template_mesh"] = str(job.dir / "inputs" / "template.npz")
        job.config["template"] = "mesh"
    else:
        job.config["template"] = "icosphere"
    return job, target


def import_result(job: Job, target: Target) -> bpy.types.Object:
    """The fitted mesh as a new object in the cloud's frame and collection; nothing is left
    behind if this fails."""
    with np.load(job.artifact("mesh_arrays")) as data:
        vertices, faces = data["vertices"], data["faces"]
    with converters.rollback_on_error() as created:
        mesh = converters.mesh_from_arrays(f"{target.name}_fit", vertices, faces)
        created.append(mesh)
        mesh.shade_smooth()
        obj = bpy.data.objects.new(f"{target.name}_fit", mesh)
        created.append(obj)
        if target.matrix_world is not None:
            obj.matrix_world = target.matrix_world
        obj["recon_job"] = job.id
        obj["recon_chamfer"] = float(job.summary.get("chamfer", float("nan")))
        target.collection.objects.link(obj)
    return obj
