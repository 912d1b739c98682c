# SPDX-License-Identifier: GPL-3.0-or-later
"""Textured meshes from Blender: the ``texture`` job on a mesh object and a reconstruction's
cameras with their photos, and the result back as a new object with a UV map and a
material holding the baked image.

Frames (see :mod:`.scene_export`): the mesh (its evaluated triangles in world
coordinates) and the cameras go to the backend moved by the reconstruction collection's
alignment ``S^-1``, so a trained field of that collection (its ``recon_field``) can colour
what no photo sees; the textured mesh comes back moved by ``S`` and is parented nowhere:
it gets the source object's transform, its vertices in that object's local frame, so it
lies exactly on the source mesh (and moves with it if both are moved together).

Cameras: the selected camera objects that show a photo, when there are any; else every
camera with a photo in the reconstruction collection (the active one, the source mesh's,
or the scene's only one). Shared by ``operators/textures.py`` and the Python API.
"""

from __future__ import annotations

import io

import bpy
import numpy as np

from ..backend.protocol import write_bytes_atomic
from . import converters, fields, scene_export
from .jobs import Job, manager

SIZE_ITEMS = [(str(s), f"{s} px", f"A {s} x {s} texture") for s in (512, 1024, 2048, 4096, 8192)]


def settings_properties() -> dict:
    """The bake settings as bpy properties (names as in ``backend/jobs/texture.py``'s Config)."""
    P = bpy.props
    return {
        "texture_size": P.EnumProperty(name="Texture Size", items=SIZE_ITEMS, default="2048",
                                       description="Width and height of the baked texture in pixels"),
        "max_faces": P.IntProperty(name="Face Budget", default=300000, min=1, soft_max=2000000,
                                   description="Meshes with more faces are refused (decimate them first): "
                                               "unwrapping takes longer the more faces there are"),
        "views": P.IntProperty(name="Views Blended", default=3, min=1, max=16,
                               description="How many photos are blended per texel: the best by viewing angle "
                                           "and distance (1: sharpest, more: smoother across photos)"),
        "use_field": P.BoolProperty(name="Field Fallback", default=True,
                                    description="Colour what no photo sees from the reconstruction's trained field, "
                                                "when it has one (else from the nearest colour the photos give)"),
    }


SETTING_NAMES = tuple(settings_properties())


def job_config(settings: dict) -> dict:
    """The job's config from the bpy settings (``use_field`` is an input, not a setting)."""
    return {"texture_size": int(settings["texture_size"]), "max_faces": int(settings["max_faces"]),
            "views": int(settings["views"])}


def source_mesh(context) -> bpy.types.Object | None:
    obj = context.active_object
    if obj is not None and obj.type == "MESH":
        return obj
    meshes = [o for o in context.selected_objects if o.type == "MESH"]
    return meshes[0] if len(meshes) == 1 else None


def gather_cameras(context, mesh_obj: bpy.types.Object | None, collection_name: str = ""
                   ) -> tuple[bpy.types.Collection | None, list[bpy.types.Object]]:
    """(The reconstruction collection giving the frame, the cameras with photos) for a bake:
    see the module's docstring."""
    selected = sorted((o for o in context.selected_objects if scene_export.has_photo(o)), key=lambda o: o.name)
    if selected and not collection_name:
        owners = [c for c in selected[0].users_collection if fields.is_reconstruction(c)]
        return (owners[0] if owners else None), selected
    collection = None
    if collection_name:
        collection = bpy.data.collections.get(collection_name)
        if collection is None:
            raise ValueError(f"There is no collection '{collection_name}'")
    if collection is None and mesh_obj is not None:
        collection = next((c for c in mesh_obj.users_collection if fields.is_reconstruction(c)), None)
    if collection is None:
        collection = fields.reconstruction_collection(context)
    if collection is None:
        raise ValueError("No cameras to bake from: select cameras that show their photos, or make a reconstruction's "
                         "collection active (Solve Cameras or Import a reconstruction first)")
    cameras, without = scene_export.collection_cameras(collection)
    if not cameras:
        what = f" ({len(without)} camera(s) without photos)" if without else ""
        raise ValueError(f"'{collection.name}' has no cameras with photos{what}: the texture is baked from the photos "
                         "behind the cameras")
    return collection, cameras


def world_mesh(obj: bpy.types.Object, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated (modifiers applied) triangles of ``obj`` in world coordinates."""
    vertices, triangles = converters.mesh_triangles(obj, depsgraph)
    if not len(triangles):
        raise ValueError(f"'{obj.name}' has no faces: bake a texture onto a mesh with faces")
    return converters.transform_points(obj.matrix_world, vertices).astype(np.float64), triangles


_TARGETS: dict[str, dict] = {}  # job id -> what the import needs (source object, frame)


def prepare(context, mesh_obj: bpy.types.Object | None, settings: dict, collection_name: str = "",
            cameras: list[bpy.types.Object] | None = None) -> Job:
    """The ``texture`` job for ``mesh_obj`` and the cameras, inputs written into the job
    folder in the backend frame; raises ValueError with an artist-facing message."""
    if mesh_obj is None or mesh_obj.type != "MESH":
        raise ValueError("Select the mesh to texture (make it the active object)")
    if cameras is None:
        collection, cameras = gather_cameras(context, mesh_obj, collection_name)
    else:
        cameras = list(cameras)
        without = [c.name for c in cameras if not scene_export.has_photo(c)]
        if without:
            raise ValueError(f"Camera '{without[0]}' shows no photo: give it its photo as a background image")
        owners = [c for c in cameras[0].users_collection if fields.is_reconstruction(c)] if cameras else []
        collection = bpy.data.collections.get(collection_name) if collection_name else (owners[0] if owners else None)
    S = scene_export.alignment(collection)
    vertices, triangles = world_mesh(mesh_obj, context.evaluated_depsgraph_get())
    job = manager().new_job("texture", job_config(settings))
    job.title = mesh_obj.name
    inputs = job.dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    scene_export.write_scene(inputs / "scene", cameras, context.scene, S)
    buffer = io.BytesIO()
    np.savez(buffer, vertices=scene_export.points_to_backend(S, vertices).astype(np.float32),
             faces=triangles.astype(np.int32))
    write_bytes_atomic(inputs / "mesh.npz", buffer.getvalue())
    job.inputs["mesh"] = str(inputs / "mesh.npz")
    job.inputs["scene"] = str(inputs / "scene")
    folder = fields.field_folder(collection) if settings.get("use_field", True) and collection is not None else None
    if folder is not None and (folder / fields.FIELD_JSON).is_file():
        job.inputs["field"] = str(folder)
    _TARGETS[job.id] = {"source": mesh_obj.name, "S": S.tolist(), "matrix": [list(r) for r in mesh_obj.matrix_world]}
    return job


def import_result(job: Job, scene: bpy.types.Scene) -> bpy.types.Object:
    """The job's ``textured.npz`` and ``texture.png`` as a new object "<source> textured" next
    to the source mesh (same transform, same collections), with the UV map "UVMap" and a
    material whose Image Texture node holds the packed texture. Nothing is left if it raises."""
    from mathutils import Matrix

    target = _TARGETS.get(job.id, {})
    with np.load(job.artifact("textured")) as data:
        vertices, faces, uv = data["vertices"], data["faces"], data["uv"]
    S = np.asarray(target.get("S", np.eye(4)), dtype=np.float64)
    source = bpy.data.objects.get(target.get("source", ""))
    matrix = np.asarray(source.matrix_world if source is not None else target.get("matrix", np.eye(4)), np.float64)
    world = scene_export.points_to_blender(S, vertices)
    local = converters.transform_points(np.linalg.inv(matrix), world)
    name = f"{target.get('source', job.title or 'mesh')} textured"
    with converters.rollback_on_error() as created:
        mesh = converters.mesh_from_arrays(name, local, faces)
        created.append(mesh)
        if len(mesh.polygons) != len(faces):
            raise RuntimeError(f"the textured mesh lost faces in Blender ({len(mesh.polygons)} of {len(faces)})")
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", np.ascontiguousarray(uv, np.float32).ravel())
        image = bpy.data.images.load(str(job.artifact("texture")), check_existing=False)
        created.append(image)
        image.name = f"{name}.png"
        image.pack()
        image.filepath = ""  # packed: the .blend carries it; the job folder may go
        material = texture_material(name, image)
        created.append(material)
        mesh.materials.append(material)
        obj = bpy.data.objects.new(name, mesh)
        created.append(obj)
        obj.matrix_world = Matrix(matrix.tolist())  # rows
        collections = list(source.users_collection) if source is not None else []
        for collection in collections or [scene.collection]:
            collection.objects.link(obj)
        obj["recon_texture_job"] = job.id
    return obj


def texture_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """A material whose Principled BSDF takes its base colour from ``image`` through "UVMap"."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.8
    texture = nodes.new("ShaderNodeTexImage")
    texture.name = texture.label = "Baked Texture"
    texture.image = image
    texture.interpolation = "Linear"
    texture.location = (bsdf.location[0] - 400, bsdf.location[1])
    uvmap = nodes.new("ShaderNodeUVMap")
    uvmap.uv_map = "UVMap"
    uvmap.location = (texture.location[0] - 250, texture.location[1] - 100)
    links.new(uvmap.outputs["UV"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def summary_text(job: Job) -> str:
    """One line about a finished bake: faces, texture size, photos, how much they saw."""
    s = job.summary
    size = s.get("texture_size") or ["?", "?"]
    seen = s.get("seen_fraction")
    seen_text = f", {seen:.0%} of the surface in the photos" if isinstance(seen, (int, float)) else ""
    return f"{s.get('faces', '?')} faces, {size[0]} x {size[1]} texture from {s.get('cameras', '?')} photos{seen_text}"

