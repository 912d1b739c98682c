# SPDX-License-Identifier: GPL-3.0-or-later
"""Between numpy arrays and Blender data, in bulk (``foreach_get``/``foreach_set``, no
per-element Python loops). Arrays: points and vertices ``(n, 3) float32``, triangles
``(m, 3) int32``. Coordinates are in the object's local frame unless a name says otherwise."""

from __future__ import annotations

from contextlib import contextmanager

import bpy
import numpy as np


class EmptyGeometry(ValueError):
    """The object holds no points; the message names it."""


def object_points_local(obj: bpy.types.Object, depsgraph=None) -> np.ndarray:
    """Points ``(n, 3) float32`` of a mesh's vertices or a point cloud's points, in the
    object's local frame, after modifiers when ``depsgraph`` is given."""
    source = obj.evaluated_get(depsgraph) if depsgraph is not None else obj
    data = source.data
    if obj.type == "MESH":
        out = np.empty(len(data.vertices) * 3, dtype=np.float32)
        data.vertices.foreach_get("co", out)
    elif obj.type == "POINTCLOUD":
        position = data.attributes.get("position")
        out = np.empty(len(data.points) * 3, dtype=np.float32)
        if position is not None and len(out):
            position.data.foreach_get("vector", out)
    else:
        raise TypeError(f"'{obj.name}' is a {obj.type.lower()}, not a mesh or point cloud")
    if out.size == 0:
        raise EmptyGeometry(f"'{obj.name}' has no points.")
    return out.reshape(-1, 3)


def mesh_triangles(obj: bpy.types.Object, depsgraph=None) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(n, 3)`` (local frame) and triangles ``(m, 3)`` of a mesh object."""
    source = obj.evaluated_get(depsgraph) if depsgraph is not None else obj
    mesh = source.data
    mesh.calc_loop_triangles()
    vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", vertices)
    triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    return vertices.reshape(-1, 3), triangles.reshape(-1, 3)


def transform_points(matrix, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix (a ``mathutils.Matrix`` or array) to points ``(n, 3)``."""
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    return (points @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def mesh_from_arrays(name: str, vertices: np.ndarray, triangles: np.ndarray) -> bpy.types.Mesh:
    """A new mesh datablock from vertices ``(n, 3)`` and triangles ``(m, 3)``, written in bulk."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    triangles = np.ascontiguousarray(triangles, dtype=np.int32).reshape(-1, 3)
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", vertices.ravel())
        mesh.loops.add(triangles.size)
        mesh.loops.foreach_set("vertex_index", triangles.ravel())
        mesh.polygons.add(len(triangles))
        mesh.polygons.foreach_set("loop_start", np.arange(0, triangles.size, 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        mesh.validate(verbose=False)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


_REMOVERS = (
    (bpy.types.Object, "objects"),
    (bpy.types.Mesh, "meshes"),
    (bpy.types.PointCloud, "pointclouds"),
    (bpy.types.Camera, "cameras"),
    (bpy.types.Material, "materials"),
    (bpy.types.Collection, "collections"),
    (bpy.types.Image, "images"),
)


def _remove(block) -> None:
    for kind, collection_name in _REMOVERS:
        if isinstance(block, kind):
            getattr(bpy.data, collection_name).remove(block)
            return


@contextmanager
def rollback_on_error():
    """Collects the datablocks created inside the block and removes them if it raises, so a
    failed import leaves the scene as it was. Yields a list to append new IDs to; an
    object's data goes with it when nothing else uses it."""
    created: list = []
    try:
        yield created
    except BaseException:
        for block in reversed(created):
            try:
                data = block.data if isinstance(block, bpy.types.Object) else None
                _remove(block)
                if data is not None and data.users == 0:
                    _remove(data)
            except ReferenceError:  # already removed with its owner
                pass
        raise


def apply_intrinsics(camera: bpy.types.Camera, render: bpy.types.RenderSettings | None, intr) -> None:
    """Set a camera datablock from :class:`~.camera_math.BlenderIntrinsics`, and the render's
    resolution (at 100 %) and pixel aspect when ``render`` is given: those are per scene in
    Blender, so an import sets them from its first camera only."""
    camera.type = "PERSP"
    camera.lens_unit = "MILLIMETERS"
    camera.lens = intr.lens
    camera.sensor_width = intr.sensor_width
    camera.sensor_height = intr.sensor_height
    camera.sensor_fit = intr.sensor_fit
    camera.shift_x = intr.shift_x
    camera.shift_y = intr.shift_y
    if render is not None:
        render.resolution_x = intr.resolution_x
        render.resolution_y = intr.resolution_y
        render.resolution_percentage = 100
        render.pixel_aspect_x = intr.pixel_aspect_x
        render.pixel_aspect_y = intr.pixel_aspect_y


def _exact_params(cameras: dict[str, np.ndarray], row: int) -> tuple[str, list[float]] | None:
    if "model" not in cameras or "params" not in cameras:
        return None
    params = np.asarray(cameras["params"][row], dtype=np.float64)
    return str(cameras["model"][row]), [float(v) for v in params[~np.isnan(params)]]


def camera_objects(
    cameras: dict[str, np.ndarray],  # cameras.npz: names, K [n,3,3], w2c [n,4,4] (OpenCV), width, height, paths?
    collection: bpy.types.Collection,
    scene: bpy.types.Scene,
    image_dir: str | None = None,
    backgrounds: dict[str, bpy.types.Image] | None = None,  # photo name -> an image already in the file
) -> list[bpy.types.Object]:
    """One camera object per row, named after its photo, posed and calibrated exactly, with
    the photo (``paths[row]``, else ``image_dir/name``) as its background image. The scene's
    resolution and pixel aspect come from the first camera (Blender has one of each per
    scene); each camera keeps its own size as custom properties, and its exact lens model
    and parameters (``recon_model``, ``recon_params``, in double precision, with the
    distortion Blender cannot show) on its camera data. A camera whose ``fx / fy`` differs
    from the first camera's is therefore exact only in x. Nothing is left behind if this raises."""
    from pathlib import Path

    from mathutils import Matrix

    from . import camera_math

    c2w = camera_math.blender_c2w_from_w2c_opencv(cameras["w2c"])
    paths = cameras.get("paths")
    objects = []
    with rollback_on_error() as created:
        for row, name in enumerate(cameras["names"]):  # one object per photo: a loop over cameras, not points
            name = str(name)
            intr = camera_math.blender_intrinsics_from_K(cameras["K"][row], int(cameras["width"][row]), int(cameras["height"][row]))
            data = bpy.data.cameras.new(name)
            created.append(data)
            apply_intrinsics(data, scene.render if row == 0 else None, intr)
            exact = _exact_params(cameras, row)
            if exact is not None:
                data["recon_model"], data["recon_params"] = exact
            obj = bpy.data.objects.new(name, data)
            created.append(obj)
            obj.matrix_world = Matrix(c2w[row].tolist())  # rows
            obj["recon_width"], obj["recon_height"] = intr.resolution_x, intr.resolution_y
            obj["recon_photo"] = name
            photo = Path(str(paths[row])) if paths is not None and str(paths[row]) else (Path(image_dir, name) if image_dir else None)
            if backgrounds and name in backgrounds:
                set_background(data, backgrounds[name])
            elif photo is not None and photo.is_file():
                created += set_background(data, photo)
            collection.objects.link(obj)
            objects.append(obj)
    return objects


def set_background(camera: bpy.types.Camera, photo) -> list:
    """Show ``photo`` (a file, or an image datablock) behind the camera's view; returns the
    image when this loaded it."""
    known = set(bpy.data.images.keys())
    image = photo if isinstance(photo, bpy.types.Image) else bpy.data.images.load(str(photo), check_existing=True)
    camera.show_background_images = True
    background = camera.background_images.new()
    background.image = image
    return [image] if image.name not in known else []  # loaded here: goes again if the import fails


def animated_camera_object(
    name: str, cameras: dict[str, np.ndarray], frames: np.ndarray, collection: bpy.types.Collection
) -> bpy.types.Object:
    """One camera that moves through the solved cameras, keyed at ``frames`` (one per row),
    with the first camera's intrinsics (video frames share one lens)."""
    from mathutils import Matrix

    from . import camera_math

    c2w = camera_math.blender_c2w_from_w2c_opencv(cameras["w2c"])
    intr = camera_math.blender_intrinsics_from_K(cameras["K"][0], int(cameras["width"][0]), int(cameras["height"][0]))
    with rollback_on_error() as created:
        data = bpy.data.cameras.new(name)
        created.append(data)
        apply_intrinsics(data, None, intr)
        exact = _exact_params(cameras, 0)
        if exact is not None:
            data["recon_model"], data["recon_params"] = exact
        obj = bpy.data.objects.new(name, data)
        created.append(obj)
        obj.rotation_mode = "QUATERNION"
        obj["recon_width"], obj["recon_height"] = intr.resolution_x, intr.resolution_y
        for row, frame in enumerate(frames):  # one key per video frame
            obj.matrix_world = Matrix(c2w[row].tolist())
            obj.keyframe_insert("location", frame=int(frame))
            obj.keyframe_insert("rotation_quaternion", frame=int(frame))
        collection.objects.link(obj)
    return obj


def camera_arrays_from_objects(objects: list[bpy.types.Object], scene: bpy.types.Scene) -> dict[str, np.ndarray]:
    """The ``cameras.npz`` layout of Blender camera objects, read back exactly: ``K`` from
    lens, sensor, shift and the resolution (the camera's own ``recon_width``/``recon_height``
    when it has them, else the scene's at its percentage), ``w2c`` from the world matrix
    (scale removed). A camera still holding the lens parameters it was imported with
    (unchanged since: its ``K`` agrees) keeps them, distortion included; others are ``PINHOLE``."""
    from . import camera_math

    render = scene.render
    rows = []
    for obj in objects:  # per camera
        if obj.type != "CAMERA":
            raise TypeError(f"'{obj.name}' is not a camera")
        cam = obj.data
        if cam.type != "PERSP":
            raise ValueError(f"'{obj.name}' is a {cam.type.lower()} camera; only perspective cameras can be exported")
        width = int(obj.get("recon_width", round(render.resolution_x * render.resolution_percentage / 100)))
        height = int(obj.get("recon_height", round(render.resolution_y * render.resolution_percentage / 100)))
        intr = camera_math.BlenderIntrinsics(
            lens=cam.lens, sensor_width=cam.sensor_width, sensor_height=cam.sensor_height, sensor_fit=cam.sensor_fit,
            shift_x=cam.shift_x, shift_y=cam.shift_y, resolution_x=width, resolution_y=height,
            pixel_aspect_x=render.pixel_aspect_x, pixel_aspect_y=render.pixel_aspect_y,
        )
        K = camera_math.K_from_blender_intrinsics(intr)
        model, params = "PINHOLE", [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
        if "recon_model" in cam and "recon_params" in cam:
            stored = camera_math.K_from_colmap_params(str(cam["recon_model"]), list(cam["recon_params"]))
            if stored is not None and np.allclose(stored, K, rtol=1e-5, atol=1e-4 * max(width, height)):  # float32 lens
                model, params, K = str(cam["recon_model"]), list(cam["recon_params"]), stored
        matrix = np.array(obj.matrix_world, dtype=np.float64)
        matrix[:3, :3] /= np.linalg.norm(matrix[:3, :3], axis=0)
        photo = ""
        for background in cam.background_images:
            if background.image is not None and background.image.filepath:
                photo = bpy.path.abspath(background.image.filepath)
                break
        name = str(obj.get("recon_photo", "")) or (bpy.path.basename(photo) if photo else f"{obj.name}.png")
        rows.append((name, K, model, params, camera_math.w2c_opencv_from_blender_c2w(matrix), width, height, photo))
    if not rows:
        raise ValueError("No cameras to export: select camera objects")
    width = max(len(r[3]) for r in rows)
    params = np.full((len(rows), width), np.nan)
    for row, r in enumerate(rows):
        params[row, : len(r[3])] = r[3]
    return {
        "names": np.array([r[0] for r in rows]),
        "K": np.stack([r[1] for r in rows]),
        "model": np.array([r[2] for r in rows]),
        "params": params,
        "w2c": np.stack([r[4] for r in rows]),
        "width": np.array([r[5] for r in rows], dtype=np.int32),
        "height": np.array([r[6] for r in rows], dtype=np.int32),
        "paths": np.array([r[7] for r in rows]),
    }


def point_cloud_object(
    name: str,
    points: np.ndarray,  # (n, 3) local coordinates
    collection: bpy.types.Collection,
    colors_srgb: np.ndarray | None = None,  # (n, 3) uint8, or float in [0, 1]
    attributes: dict[str, np.ndarray] | None = None,  # name -> (n,) float per point
    radius: float = 0.01,
) -> bpy.types.Object:
    """A Point Cloud object, written in bulk (a 1,000,000-point cloud in about 0.2 s).

    Colours (photo colours are sRGB) go into a ``Col`` colour attribute (shown in renders by
    the shared material "Recon Point Colors"), extra per-point values
    (reprojection error, track length, ...) into float attributes of their own name, and
    ``radius`` sets the points' size for display and rendering. Nothing is left behind if
    this raises."""
    points = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(points)
    columns = {key: np.ascontiguousarray(values, dtype=np.float32).reshape(-1) for key, values in (attributes or {}).items()}
    for key, values in columns.items():
        if len(values) != n:
            raise ValueError(f"attribute '{key}' has {len(values)} values for {n} points")
    if colors_srgb is not None and len(colors_srgb) != n:
        raise ValueError(f"{len(colors_srgb)} colours for {n} points")
    with rollback_on_error() as created:
        # A mesh of loose vertices converted to a Point Cloud: PointCloud has no bulk resize in Python.
        mesh = bpy.data.meshes.new(name)
        created.append(mesh)
        mesh.vertices.add(n)
        mesh.vertices.foreach_set("co", points.ravel())
        if colors_srgb is not None:
            colors = np.asarray(colors_srgb)
            colors = colors / 255.0 if colors.dtype == np.uint8 else colors
            rgba = np.ones((n, 4), dtype=np.float32)
            rgba[:, :3] = colors
            mesh.attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT").data.foreach_set("color_srgb", rgba.ravel())
        for key, values in columns.items():
            mesh.attributes.new(key, "FLOAT", "POINT").data.foreach_set("value", values)
        mesh.attributes.new("radius", "FLOAT", "POINT").data.foreach_set("value", np.full(n, radius, np.float32))
        obj = bpy.data.objects.new(name, mesh)
        created.append(obj)
        collection.objects.link(obj)
        with bpy.context.temp_override(
            active_object=obj, object=obj, selected_objects=[obj], selected_editable_objects=[obj]
        ):
            result = bpy.ops.object.convert(target="POINTCLOUD")
        if result != {"FINISHED"} or obj.type != "POINTCLOUD":
            raise RuntimeError(f"could not turn '{name}' into a point cloud ({result})")
        if mesh.users == 0:
            bpy.data.meshes.remove(mesh)
        if colors_srgb is not None:
            material = bpy.data.materials.get(POINT_COLORS_MATERIAL)
            if material is None:
                material = point_colors_material()
                created.append(material)
            obj.data.materials.append(material)
    return obj


POINT_COLORS_MATERIAL = "Recon Point Colors"
# The name Blender's own PLY importer gives colours; Cycles reads no attribute called "color".
COLOR_ATTRIBUTE = "Col"


def point_colors_material() -> bpy.types.Material:
    """A material that shows each point's ``color`` attribute in Cycles and EEVEE."""
    material = bpy.data.materials.new(POINT_COLORS_MATERIAL)
    if material.node_tree is None:  # Blender < 5 makes materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = nodes.get("Principled BSDF")
    attribute = nodes.new("ShaderNodeAttribute")
    attribute.attribute_type = "GEOMETRY"
    attribute.attribute_name = COLOR_ATTRIBUTE
    attribute.location = (-300, 300)
    links.new(attribute.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = 0.8
    return material


def object_colors_srgb(obj: bpy.types.Object, count: int) -> np.ndarray:
    """Per-point colours ``(count, 3) uint8`` (sRGB) from the object's ``color`` attribute on
    points/vertices, or a light grey when it has none."""
    attributes = getattr(obj.data, "attributes", None)
    attribute = next((attributes[name] for name in (COLOR_ATTRIBUTE, "color") if attributes and name in attributes), None)
    if attribute is None or attribute.domain != "POINT" or attribute.data_type not in ("FLOAT_COLOR", "BYTE_COLOR") or count == 0:
        return np.full((count, 3), 200, np.uint8)
    rgba = np.empty(count * 4, dtype=np.float32)
    attribute.data.foreach_get("color_srgb", rgba)
    return np.clip(np.round(rgba.reshape(-1, 4)[:, :3] * 255.0), 0, 255).astype(np.uint8)
