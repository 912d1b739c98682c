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


@contextmanager
def rollback_on_error():
    """Collects the datablocks created inside the block and removes them if it raises, so a
    failed import leaves the scene as it was. Yields a list to append new IDs to."""
    created: list = []
    try:
        yield created
    except BaseException:
        for block in reversed(created):
            try:
                if isinstance(block, bpy.types.Object):
                    bpy.data.objects.remove(block)
                elif isinstance(block, bpy.types.Mesh):
                    bpy.data.meshes.remove(block)
                elif isinstance(block, bpy.types.Material):
                    bpy.data.materials.remove(block)
            except ReferenceError:  # already removed with its owner
                pass
        raise


def apply_intrinsics(camera: bpy.types.Camera, render: bpy.types.RenderSettings, intr) -> None:
    """Set a camera datablock and the render settings from
    :class:`~.camera_math.BlenderIntrinsics` (resolution at 100 %)."""
    camera.type = "PERSP"
    camera.lens_unit = "MILLIMETERS"
    camera.lens = intr.lens
    camera.sensor_width = intr.sensor_width
    camera.sensor_height = intr.sensor_height
    camera.sensor_fit = intr.sensor_fit
    camera.shift_x = intr.shift_x
    camera.shift_y = intr.shift_y
    render.resolution_x = intr.resolution_x
    render.resolution_y = intr.resolution_y
    render.resolution_percentage = 100
    render.pixel_aspect_x = intr.pixel_aspect_x
    render.pixel_aspect_y = intr.pixel_aspect_y
