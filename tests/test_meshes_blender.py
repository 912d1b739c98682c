# SPDX-License-Identifier: GPL-3.0-or-later
"""``recon.extract_mesh`` in headless Blender, through the real backend: the mesh of an
aligned reconstruction's field lands where its cameras look (the alignment applied), the
mesh of moved splats lands on them, with vertex colours and a material; bad input is named
and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_blender import ext
from tests.test_mesh_job import BOTTOM_RGB, CENTER, TOP_RGB, fitted_sphere_field, sphere_splats
from tests.test_mesh_job import RADIUS as SPLAT_RADIUS
from tests.test_nerf_render import sphere_scene

pytestmark = pytest.mark.blender

RADIUS = 0.6  # sphere_scene's sphere, at the origin of the backend frame


def world_vertices(obj) -> np.ndarray:
    local = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", local)
    M = np.array(obj.matrix_world, np.float64)
    return local.reshape(-1, 3).astype(np.float64) @ M[:3, :3].T + M[:3, 3]


def surface_centroid(obj, vertices: np.ndarray) -> np.ndarray:
    """The area-weighted centre of the surface (a decimated mesh's vertices are not spread
    evenly over it, so their mean is not its centre)."""
    corners = np.empty(len(obj.data.polygons) * 3, np.int32)
    obj.data.polygons.foreach_get("vertices", corners)  # triangles only
    a, b, c = (vertices[corners.reshape(-1, 3)[:, i]] for i in range(3))
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return ((a + b + c) / 3 * area[:, None]).sum(0) / area.sum()


def vertex_colors(obj) -> np.ndarray:
    attribute = obj.data.color_attributes["Col"]
    rgba = np.empty(len(obj.data.vertices) * 4, np.float32)
    attribute.data.foreach_get("color_srgb", rgba)
    return rgba.reshape(-1, 4)[:, :3]


@pytest.fixture(scope="module")
def reconstruction(blender, tmp_path_factory):
    """An aligned import of cameras around a sphere, given a field fitted to that sphere."""
    import bpy

    api = ext(blender, "addon.api")
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for collection in list(bpy.data.collections):
        bpy.data.collections.remove(collection)
    tmp = tmp_path_factory.mktemp("mesh")
    transforms = sphere_scene(tmp / "scene", views=8, size=8, radius=RADIUS)
    collection = api.import_reconstruction(transforms, align=True, known_distance=2.0)
    folder = fitted_sphere_field(tmp / "field", center=np.zeros(3), radius=RADIUS)
    collection["recon_field"] = str(folder)
    return {"api": api, "collection": collection, "tmp": tmp}


def test_the_mesh_of_a_field_lands_where_the_cameras_look(reconstruction):
    import bpy

    collection = reconstruction["collection"]
    S = np.array(collection["recon_alignment"]).reshape(4, 4)
    assert not np.allclose(S, np.eye(4))  # really aligned: rotated, scaled and moved
    before = len(bpy.data.objects)
    result = bpy.ops.recon.extract_mesh(collection=collection.name, resolution=48, max_faces=3000)
    assert result == {"FINISHED"}
    assert len(bpy.data.objects) == before + 1
    obj = bpy.context.active_object
    assert obj.type == "MESH" and obj.name == f"{collection.name} mesh" and obj.name in collection.objects
    assert 0 < len(obj.data.polygons) <= 3000
    vertices = world_vertices(obj)
    center = S[:3, 3]  # the backend's origin, in Blender
    scale = np.cbrt(np.linalg.det(S[:3, :3]))
    distance = np.linalg.norm(vertices - center, axis=1)
    assert abs(distance.mean() - scale * RADIUS) < 0.03 * scale * RADIUS, (distance.mean(), scale * RADIUS)
    # every camera of the collection looks at the mesh's centre
    middle = surface_centroid(obj, vertices)
    for camera in (o for o in collection.objects if o.type == "CAMERA"):
        M = np.array(camera.matrix_world)
        eye, forward = M[:3, 3], -M[:3, 2] / np.linalg.norm(M[:3, 2])
        off_axis = np.linalg.norm(np.cross(middle - eye, forward))
        assert off_axis < 0.05 * scale * RADIUS, (camera.name, off_axis)
    # vertex colours from the field, shown by a material; "up" in the backend frame is S's +z
    up = S[:3, :3] @ [0, 0, 1.0]
    height = (vertices - center) @ up / np.linalg.norm(up)
    colors = vertex_colors(obj)
    assert np.abs(colors[height > 0.5 * scale * RADIUS].mean(0) - TOP_RGB).max() < 0.1
    assert np.abs(colors[height < -0.5 * scale * RADIUS].mean(0) - BOTTOM_RGB).max() < 0.1
    assert obj.data.materials[0].name == "Recon Point Colors"


def test_the_mesh_of_moved_splats_lands_on_them(reconstruction):
    import bpy

    api, tmp = reconstruction["api"], reconstruction["tmp"]
    splats = api.import_splats(sphere_splats(tmp / "sphere_splats.ply", n=1500))
    splats.location = (2.0, -1.0, 0.5)
    splats.rotation_euler = (0.3, 0.0, 1.0)
    splats.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    for other in bpy.context.selected_objects:
        other.select_set(False)
    bpy.context.view_layer.objects.active = splats
    assert bpy.ops.recon.extract_mesh(resolution=64, max_faces=0) == {"FINISHED"}
    obj = bpy.context.active_object
    assert obj.name == f"{splats.name} mesh" and obj.type == "MESH"
    np.testing.assert_allclose(np.array(obj.matrix_world), np.array(splats.matrix_world), atol=1e-6)
    M = np.array(splats.matrix_world)
    center = M[:3, :3] @ CENTER + M[:3, 3]
    vertices = world_vertices(obj)
    assert np.linalg.norm(vertices.mean(0) - center) < 0.01 * 2.0 * SPLAT_RADIUS
    distance = np.linalg.norm(vertices - center, axis=1)
    # a coarse grid (64 cells) draws the thin splats at least half a cell thick: the surface sits a little outside
    assert abs(distance.mean() - 2.0 * SPLAT_RADIUS) < 0.06 * 2.0 * SPLAT_RADIUS
    assert distance.max() < 2.0 * SPLAT_RADIUS * 1.1  # the floater beside the sphere was dropped
    assert "Col" in obj.data.color_attributes


def test_a_reconstruction_without_a_field_is_named_and_nothing_changes(reconstruction):
    import bpy

    api = reconstruction["api"]
    empty = bpy.data.collections.new("Recon nothing")
    bpy.context.scene.collection.children.link(empty)
    before = set(bpy.data.objects.keys())
    with pytest.raises(api.ReconJobError, match="not a reconstruction with a trained field"):
        api.extract_mesh(empty)
    # a field threshold that finds no surface: the job fails, the scene stays as it was
    with pytest.raises(api.ReconJobError, match="Lower the threshold"):
        api.extract_mesh(reconstruction["collection"], resolution=16, threshold=1e12)
    assert set(bpy.data.objects.keys()) == before
