# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``mesh`` job from Blender: a mesh extracted from a reconstruction's trained field (its
``recon_field``) or from a splat object, imported as a new object with vertex colours.

A field lives in its reconstruction's backend frame (see :mod:`.scene_export`), so the mesh
it gives is moved by the collection's alignment ``S`` into Blender's world, where the
collection's cameras and points are. A splat object is written in its own frame (its
transform not applied) and the mesh gets the splat object's transform, so it lands on the
splats however they were moved. Vertex colours go into the ``Col`` colour attribute, shown by
the shared "Recon Point Colors" material.

Shared by the operator (``recon.extract_mesh``) and the Python API (``api.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np

from . import converters, fields, scene_export, settings, splats
from .jobs import Job, manager


def settings_properties() -> dict:
    """The extraction's settings as bpy properties; the same names and defaults as
    ``backend/jobs/mesh.py``'s Config."""
    P = bpy.props
    return {
        "mode": P.EnumProperty(
            name="Mode", default="density",
            items=[("density", "Density", "The surface where the density crosses the threshold: fast, follows the "
                    "field's noise"),
                   ("sdf", "SDF (smoother)", "A signed distance field fitted to the field's density, kept smooth by "
                    "eikonal and curvature terms: smoother surfaces, a few minutes more. Fields only, not splats")],
            description="What the surface is taken from"),
        "sdf_steps": P.IntProperty(
            name="SDF Steps", default=3000, min=1, soft_max=10000,
            description="SDF mode: steps fitting the distance field to the field's density; more follows its "
                        "details more closely and takes longer (3,000: about 4 minutes on two CPU cores)"),
        "resolution": P.IntProperty(
            name="Resolution", default=256, min=8, soft_max=1024,
            description="Grid cells along the longest side of the surface's region (for a field, found first on "
                        "a coarse grid): finer shows smaller details, costs the cube of it in time and memory"),
        "threshold": P.FloatProperty(
            name="Threshold", default=0.0, min=0.0, soft_max=1000.0,
            description="Density of the surface (0: automatic: for a field, about where it turns opaque seen from "
                        "outside; for splats, half the typical density at their centres). Lower it for a "
                        "fuller mesh, raise it to peel off haze"),
        "max_faces": P.IntProperty(
            name="Max Faces", default=100_000, min=0,
            description="Simplify to at most this many faces (0: keep every face). 100,000 by default: Bake "
                        "Texture takes up to its Face Budget (300,000 by default), and unwraps 100,000 faces "
                        "in minutes on a CPU"),
        "min_component": P.FloatProperty(
            name="Min Piece", default=0.05, min=0.0, max=1.0, subtype="FACTOR",
            description="Drop pieces smaller (in area) than this fraction of the largest piece: floaters"),
        "visible_only": P.BoolProperty(
            name="Visible Only", default=True,
            description="Drop the faces none of the field's training cameras sees (surfaces left inside the "
                        "object). Splats carry no cameras: for them every face is kept"),
        "colors": P.BoolProperty(
            name="Vertex Colors", default=True,
            description="Colour the vertices from the field or the splats (the 'Col' attribute)"),
    }


SETTING_NAMES = tuple(settings_properties())


@dataclass
class Target:
    """Where the mesh goes, remembered when the job starts."""

    name: str
    collection_name: str  # where the object is linked ("" : the scene's collection)
    matrix: list = field(default_factory=lambda: np.eye(4).tolist())  # the object's matrix_world (rows)
    S: list = field(default_factory=lambda: np.eye(4).tolist())  # backend frame -> Blender world, baked in


def source_splats(context) -> bpy.types.Object | None:
    obj = context.active_object
    return obj if splats.is_splat_object(obj) else None


def source_collection(context, name: str = "") -> bpy.types.Collection | None:
    """The reconstruction whose field to mesh (see :func:`.fields.field_collection`)."""
    return fields.field_collection(context, name)


def prepare(context, config: dict, collection_name: str = "", splat_object: bpy.types.Object | None = None
            ) -> tuple[Job, Target]:
    """Create the job and write its inputs: the splat object's ``.ply`` when given, else the
    field of the reconstruction ``collection_name`` (or the one in context). Raises
    ValueError with an artist-facing message."""
    config = {**config, "device": settings.device()}
    if splat_object is not None:
        if not splats.is_splat_object(splat_object):
            raise ValueError(f"'{splat_object.name}' is not a splat object. Make splats (or a reconstruction with a "
                             "trained field) active.")
        if len(splat_object.data.points) == 0:
            raise ValueError(f"'{splat_object.name}' has no Gaussians.")
        job = manager().new_job("mesh", config)
        path = splats.export_splats(splat_object, job.dir / "inputs" / "splats.ply", apply_transform=False)
        job.inputs["field"] = str(path)
        users = splat_object.users_collection
        target = Target(f"{splat_object.name} mesh", users[0].name if users else "",
                        [list(row) for row in splat_object.matrix_world])
        return job, target
    collection = source_collection(context, collection_name)
    if collection is None:
        if collection_name:
            raise ValueError(f"'{collection_name}' is not a reconstruction with a trained field. Train one first "
                             "(Fields and Meshes > Train Field).")
        raise ValueError("No trained field here: make a reconstruction with a trained field (or a splat object) "
                         "active, or train one (Fields and Meshes > Train Field).")
    folder = fields.field_folder(collection)
    if folder is None or not (folder / "field.json").is_file():
        raise ValueError(f"The field of '{collection.name}' is missing ({folder}): train it again.")
    job = manager().new_job("mesh", config)
    job.inputs["field"] = str(folder)
    target = Target(f"{collection.name} mesh", collection.name, np.eye(4).tolist(),
                    scene_export.alignment(collection).tolist())
    return job, target


def import_result(job: Job, target: Target, scene: bpy.types.Scene) -> bpy.types.Object:
    """The job's ``mesh.npz`` as a new object (see the module's docstring); nothing is left
    behind if this raises."""
    from mathutils import Matrix

    with np.load(job.artifact("mesh_arrays")) as data:
        vertices, faces = data["vertices"], data["faces"]
        colors = data["colors"] if "colors" in data.files else None
    vertices = scene_export.points_to_blender(np.asarray(target.S, np.float64), vertices)
    collection = bpy.data.collections.get(target.collection_name) if target.collection_name else None
    with converters.rollback_on_error() as created:
        mesh = converters.mesh_from_arrays(target.name, vertices, faces)
        created.append(mesh)
        if len(mesh.polygons) != len(faces):
            raise RuntimeError(f"the mesh lost faces in Blender ({len(mesh.polygons)} of {len(faces)})")
        mesh.shade_smooth()
        if colors is not None:
            rgba = np.ones((len(colors), 4), np.float32)
            rgba[:, :3] = colors / 255.0
            attribute = mesh.color_attributes.new(converters.COLOR_ATTRIBUTE, "BYTE_COLOR", "POINT")
            attribute.data.foreach_set("color_srgb", rgba.ravel())
            mesh.color_attributes.active_color = attribute
            material = bpy.data.materials.get(converters.POINT_COLORS_MATERIAL)
            if material is None:
                material = converters.point_colors_material()
                created.append(material)
            mesh.materials.append(material)
        obj = bpy.data.objects.new(target.name, mesh)
        created.append(obj)
        obj.matrix_world = Matrix(target.matrix)
        (collection or scene.collection).objects.link(obj)
        obj["recon_mesh_job"] = job.id
    return obj


def summary_text(job: Job) -> str:
    s = job.summary
    dropped = int(s.get("components", 0)) - int(s.get("kept_components", 0))
    text = f"{s.get('faces', 0):,} faces, {s.get('vertices', 0):,} vertices at density {s.get('threshold', 0):.3g}"
    return text + (f"; {dropped} floater(s) dropped" if dropped > 0 else "")
