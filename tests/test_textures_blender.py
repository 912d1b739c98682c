# SPDX-License-Identifier: GPL-3.0-or-later
"""Textures in headless Blender, through the real backend: ``recon.bake_texture`` on a mesh
lined up with an imported, aligned reconstruction (a sphere on a plinth with a known colour
pattern, photographed from a ring of cameras). The textured object must carry a UV map and
a material with the baked image, lie on the source mesh, and render in Cycles from one of
the cameras like that camera's photo; bad input is named and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.test_blender import ext
from tests.test_texture_job import SIZE, write_scene

pytestmark = pytest.mark.blender


def psnr(a, b) -> float:
    return float(10.0 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@pytest.fixture
def reconstruction(empty_scene, blender, tmp_path):
    """The aligned reconstruction and, in it, the true mesh placed where the aligned cameras
    see it (through a non-identity object transform)."""
    import bpy
    from mathutils import Matrix

    api = ext(blender, "addon.api")
    converters = ext(blender, "addon.converters")
    transforms, truth = write_scene(tmp_path / "scene", views=8)
    collection = api.import_reconstruction(transforms, align=True)
    S = np.array(collection["recon_alignment"], dtype=np.float64).reshape(4, 4)
    assert not np.allclose(S, np.eye(4))
    world = truth["vertices"] @ S[:3, :3].T + S[:3, 3]
    matrix = np.eye(4)
    matrix[:3, 3] = (0.3, -0.2, 0.5)
    matrix[:3, :3] *= 2.0
    local = (world - matrix[:3, 3]) / 2.0
    mesh = converters.mesh_from_arrays("statue", local, truth["faces"])
    obj = bpy.data.objects.new("statue", mesh)
    obj.matrix_world = Matrix(matrix.tolist())
    collection.objects.link(obj)
    return {"api": api, "collection": collection, "mesh": obj, "world": world, "scene": tmp_path / "scene"}


def test_bake_texture_imports_a_textured_object_that_renders_like_the_photo(reconstruction, tmp_path):
    import bpy

    api, collection, source = reconstruction["api"], reconstruction["collection"], reconstruction["mesh"]
    obj = api.bake_texture(source, collection, texture_size="256", use_field=False)
    assert obj.name == "statue textured" and obj.type == "MESH" and collection in obj.users_collection
    # lies on the source mesh: same world positions (vertex order kept)
    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world, dtype=np.float64)
    world = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    assert np.allclose(world, reconstruction["world"], atol=1e-4)
    # a UV map within [0, 1] and a material with the baked, packed image
    assert mesh.uv_layers.active is not None and mesh.uv_layers.active.name == "UVMap"
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.data.foreach_get("uv", uv)
    assert 0.0 <= uv.min() and uv.max() <= 1.0 and np.ptp(uv) > 0.5
    material = mesh.materials[0]
    node = material.node_tree.nodes["Baked Texture"]
    assert node.type == "TEX_IMAGE" and tuple(node.image.size) == (256, 256) and node.image.packed_file is not None
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Base Color"].links[0].from_node == node

    # Cycles, unlit (the texture as emission), from a camera whose photo has no lens distortion
    scene = bpy.context.scene
    tree = material.node_tree
    emission = tree.nodes.new("ShaderNodeEmission")
    tree.links.new(node.outputs["Color"], emission.inputs["Color"])
    output = next(n for n in tree.nodes if n.type == "OUTPUT_MATERIAL")
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    source.hide_render = True
    for other in collection.all_objects:
        if other.type == "POINTCLOUD":
            other.hide_render = True
    camera = next(o for o in collection.all_objects if o.type == "CAMERA" and o.name.startswith("view_02"))
    scene.camera = camera
    world = bpy.data.worlds.new("white")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (1, 1, 1, 1)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", 8, False
    scene.cycles.filter_width = 0.01  # pixel centres, as the photos were rendered
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.dither_intensity = 0.0
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.filepath = str(tmp_path / "render.png")
    assert bpy.ops.render.render(write_still=True, scene=scene.name) == {"FINISHED"}
    with Image.open(tmp_path / "render.png") as image:
        rendered = np.asarray(image.convert("RGB"), np.float64) / 255.0
    with Image.open(reconstruction["scene"] / "view_02.png") as image:
        photo = np.asarray(image.convert("RGB"), np.float64) / 255.0
    surface = (photo < 0.99).any(-1)
    assert surface.mean() > 0.2
    assert psnr(rendered[surface], photo[surface]) > 40.0
    assert psnr(rendered, photo) > 35.0  # silhouette edges included


def test_bad_input_is_named_and_changes_nothing(reconstruction):
    import bpy

    api, collection, source = reconstruction["api"], reconstruction["collection"], reconstruction["mesh"]
    before = {o.name for o in bpy.data.objects}
    with pytest.raises(api.ReconJobError, match="face budget"):
        api.bake_texture(source, collection, texture_size="512", max_faces=100)
    cameras = [o for o in collection.all_objects if o.type == "CAMERA"]
    cameras[0].data.background_images.clear()
    with pytest.raises(api.ReconJobError, match="shows no photo"):
        api.bake_texture(source, cameras=cameras)
    assert {o.name for o in bpy.data.objects} == before
    bpy.context.view_layer.objects.active = source
    assert bpy.ops.recon.bake_texture.poll()
