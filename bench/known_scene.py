# SPDX-License-Identifier: GPL-3.0-or-later
"""A scene of known geometry for the mesh and texture benchmark (issue 5), made with ``bpy``.

Suzanne (Catmull-Clark subdivided, smooth) with a procedural colourful UV texture, on a
box plinth with its own texture, lit by nothing: every surface is an emission shader of its
texture, so its appearance is the same from every direction (a baked texture can reproduce
it exactly). Rendered with Cycles (colour management "Standard": a pixel is the texture's
sRGB value) as RGBA on a transparent background from ``train_views`` cameras on a sphere
(a Fibonacci lattice, the plinth's bottom seen too) and ``test_views`` held-out cameras
between them, all at ``radius`` from the centre looking at it, ``resolution`` pixels square.

Written into ``out``:

- ``transforms.json`` (the training cameras, NeRF synthetic convention: ``file_path``,
  OpenGL camera-to-world ``transform_matrix`` = the Blender camera's ``matrix_world``,
  ``camera_angle_x``) with ``train/r_<i>.png``, and ``transforms_test.json`` with
  ``test/r_<i>.png``;
- ``truth.ply`` (binary: float32 x y z, int32 triangles) and ``truth.npz`` (``vertices``,
  ``faces``, ``part`` per face: 0 Suzanne, 1 plinth): the rendered triangles in the world
  frame, which is the frame of the cameras;
- ``suzanne_texture.png``, ``plinth_texture.png``: the textures.

``build_scene`` keeps Blender's data as it was (it works in its own scene and removes what
it made), so a test session that also runs the add-on can call it. ``render_textured``
renders a textured mesh (``textured.npz`` + ``texture.png`` of the ``texture`` job) from
cameras the same way, for comparing with the photos.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

SAMPLES = 16  # Cycles samples per pixel: anti-aliasing only (emission seen directly, no bounces)
CAMERA_ANGLE_X = 0.6911112  # as the NeRF synthetic scenes
RADIUS = 4.0


def _bpy():
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="recon-known-scene-"))
    import bpy

    return bpy


# ---------------------------------------------------------------------------------------
# Textures and cameras (numpy only)
# ---------------------------------------------------------------------------------------


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    return np.select([(i == k)[..., None] for k in range(6)], choices)


def suzanne_texture(size: int, seed: int = 0) -> np.ndarray:
    """Colourful detail at several scales: 12 x 12 cells of random hue over a smooth hue
    sweep, rings inside each cell, thin dark grid lines. uint8 [size, size, 3]."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size] / size
    cells = 12
    ci, cj = np.minimum((v * cells).astype(int), cells - 1), np.minimum((u * cells).astype(int), cells - 1)
    cell_hue = rng.random((cells, cells))
    hue = (cell_hue[ci, cj] * 0.6 + 0.4 * (u + 0.5 * v)) % 1.0
    fu, fv = u * cells - cj - 0.5, v * cells - ci - 0.5
    rings = 0.5 + 0.5 * np.cos(2 * math.pi * 2.0 * np.hypot(fu, fv))
    sat = 0.55 + 0.45 * rings
    val = 0.55 + 0.4 * (1 - rings) * rng.random((cells, cells))[ci, cj] + 0.05
    line = (np.abs(fu) > 0.46) | (np.abs(fv) > 0.46)
    val = np.where(line, 0.12, val)
    return (np.clip(_hsv_to_rgb(hue, sat, val), 0, 1) * 255 + 0.5).astype(np.uint8)


def plinth_texture(size: int) -> np.ndarray:
    """A warm/cool checker with diagonal stripes: uint8 [size, size, 3]."""
    v, u = np.mgrid[0:size, 0:size] / size
    checker = ((u * 8).astype(int) + (v * 8).astype(int)) % 2
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * 24 * (u + v))
    warm, cool = np.array([0.95, 0.55, 0.15]), np.array([0.15, 0.45, 0.8])
    base = np.where(checker[..., None] == 1, warm, cool)
    rgb = base * (0.6 + 0.4 * stripes[..., None])
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def look_at(position: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world 4x4 in Blender's (OpenGL) camera convention: looking down -Z, +Y up."""
    z = position - np.asarray(target, float)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, float), z)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, position
    return c2w


def camera_positions(train_views: int, test_views: int, radius: float = RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Training cameras on a Fibonacci sphere (every direction, poles nearly); held-out ones
    at elevations -15..45 degrees, at azimuths between the training cameras'."""
    k = np.arange(train_views) + 0.5
    z = 1 - 2 * k / train_views
    phi = k * math.pi * (3 - math.sqrt(5))
    r = np.sqrt(1 - z**2)
    train = radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
    j = np.arange(test_views)
    elevation = np.radians(np.array([20.0, -15.0, 45.0, 5.0, 30.0, -5.0])[j % 6])
    azimuth = np.radians(360.0 * j / max(test_views, 1) + 17.0)
    test = radius * np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)], 1)
    return train, test


def write_ply_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Binary little-endian PLY: float32 x y z (uchar red green blue), int32 triangles."""
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int32)
    vdtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        vdtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(len(vertices), vdtype)
    vert["x"], vert["y"], vert["z"] = vertices.T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        vert["red"], vert["green"], vert["blue"] = np.asarray(colors, np.uint8).T
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    face = np.empty(len(faces), [("n", "u1"), ("v", "<i4", (3,))])
    face["n"], face["v"] = 3, faces
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    path.write_bytes(("\n".join(header) + "\n").encode() + vert.tobytes() + face.tobytes())


# ---------------------------------------------------------------------------------------
# Blender
# ---------------------------------------------------------------------------------------


class _Made:
    """Datablocks made here, removed on exit (Blender's data is left as it was)."""

    def __init__(self, bpy):
        self.bpy, self.blocks = bpy, []

    def add(self, collection: str, block):
        self.blocks.append((collection, block))
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for collection, block in reversed(self.blocks):
            try:
                getattr(self.bpy.data, collection).remove(block)
            except (ReferenceError, RuntimeError):
                pass


def _render_scene(bpy, made: _Made, name: str, resolution: int):
    scene = made.add("scenes", bpy.data.scenes.new(name))
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = SAMPLES
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 0
    scene.cycles.seed = 0
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    world = made.add("worlds", bpy.data.worlds.new(name))
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Strength"].default_value = 0.0
    scene.world = world
    return scene


def _emission_material(bpy, made: _Made, name: str, image) -> object:
    material = made.add("materials", bpy.data.materials.new(name))
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def _load_image(bpy, made: _Made, path: Path):
    image = made.add("images", bpy.data.images.load(str(path), check_existing=False))
    image.colorspace_settings.name = "sRGB"
    return image


def _triangles(mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices [V, 3], triangles [F, 3] and material index per triangle of a mesh."""
    mesh.calc_loop_triangles()
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    faces = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", faces)
    material = np.empty(len(mesh.loop_triangles), np.int32)
    mesh.loop_triangles.foreach_get("material_index", material)
    return vertices.reshape(-1, 3), faces.reshape(-1, 3), material


def _truth_mesh(bpy, made: _Made, scene, subdivisions: int):
    """Suzanne on a plinth as one triangulated mesh (material 0 Suzanne, 1 plinth), scaled
    and centred so it fits in a sphere of radius about 1.2 around the origin."""
    import bmesh

    # Suzanne, subdivided (Catmull-Clark, UVs smoothed with it) through a modifier, applied.
    monkey_mesh = made.add("meshes", bpy.data.meshes.new("known-suzanne"))
    bm = bmesh.new()
    bm.loops.layers.uv.new("UVMap")  # create_monkey's calc_uvs fills an existing layer
    bmesh.ops.create_monkey(bm, calc_uvs=True)
    bm.to_mesh(monkey_mesh)
    bm.free()
    monkey = made.add("objects", bpy.data.objects.new("known-suzanne", monkey_mesh))
    scene.collection.objects.link(monkey)
    if subdivisions > 0:
        modifier = monkey.modifiers.new("subdivision", "SUBSURF")
        modifier.levels = modifier.render_levels = subdivisions
    depsgraph = scene.view_layers[0].depsgraph
    depsgraph.update()
    mesh = made.add("meshes", bpy.data.meshes.new_from_object(monkey.evaluated_get(depsgraph)))
    scene.collection.objects.unlink(monkey)

    bm = bmesh.new()
    bm.from_mesh(mesh)
    coords = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", coords)
    coords = coords.reshape(-1, 3)
    lo, hi = coords.min(0), coords.max(0)
    # The plinth: a box under Suzanne's chin, a little wider than her head, its own UVs.
    width_x, width_y, height = 0.6 * (hi[0] - lo[0]), 1.0 * (hi[1] - lo[1]), 0.25 * (hi[2] - lo[2])
    centre_x, centre_y = 0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])
    cube = bmesh.ops.create_cube(bm, size=1.0, calc_uvs=True)
    box_verts = cube["verts"]
    bmesh.ops.scale(bm, vec=(width_x, width_y, height), verts=box_verts)
    bmesh.ops.translate(bm, vec=(centre_x, centre_y, lo[2] + 0.05 * (hi[2] - lo[2]) - 0.5 * height),
                        verts=box_verts)
    box_faces = {f for v in box_verts for f in v.link_faces}
    for face in box_faces:
        face.material_index = 1
    bmesh.ops.triangulate(bm, faces=bm.faces[:])
    bm.to_mesh(mesh)
    bm.free()
    vertices, faces, _ = _triangles(mesh)
    lo, hi = vertices.min(0), vertices.max(0)
    scale = 1.2 / (0.5 * np.linalg.norm(hi - lo))
    vertices = (vertices - 0.5 * (lo + hi)) * scale
    mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))
    mesh.update()
    return mesh


def _camera(bpy, made: _Made, scene, name: str, c2w: np.ndarray):
    data = made.add("cameras", bpy.data.cameras.new(name))
    data.sensor_fit = "HORIZONTAL"
    data.angle_x = CAMERA_ANGLE_X
    data.clip_start, data.clip_end = 0.1, 100.0
    obj = made.add("objects", bpy.data.objects.new(name, data))
    from mathutils import Matrix

    obj.matrix_world = Matrix(np.asarray(c2w, float).tolist())  # rows
    scene.collection.objects.link(obj)
    return obj


def _render_views(bpy, scene, cameras: list, paths: list[Path]) -> None:
    for camera, path in zip(cameras, paths, strict=True):
        scene.camera = camera
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True, scene=scene.name)


def build_scene(out: str | Path, *, train_views: int = 40, test_views: int = 5, resolution: int = 200,
                texture_size: int = 512, subdivisions: int = 2, seed: int = 0) -> dict:
    """Make the scene's photos, cameras and true mesh in ``out`` (see the module's
    docstring); returns the paths and figures (``transforms``, ``transforms_test``,
    ``truth_ply``, ``truth_npz``, ``faces``, ``size`` = the bounding box's diagonal)."""
    bpy = _bpy()
    out = Path(out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(suzanne_texture(texture_size, seed)).save(out / "suzanne_texture.png")
    Image.fromarray(plinth_texture(texture_size)).save(out / "plinth_texture.png")

    with _Made(bpy) as made:
        scene = _render_scene(bpy, made, "recon-known-scene", resolution)
        mesh = _truth_mesh(bpy, made, scene, subdivisions)
        for name in ("suzanne", "plinth"):
            image = _load_image(bpy, made, out / f"{name}_texture.png")
            mesh.materials.append(_emission_material(bpy, made, f"known-{name}", image))
        obj = made.add("objects", bpy.data.objects.new("known-scene", mesh))
        scene.collection.objects.link(obj)
        vertices, faces, part = _triangles(mesh)

        train, test = camera_positions(train_views, test_views)
        for split, positions, json_name in (("train", train, "transforms.json"), ("test", test, "transforms_test.json")):
            c2ws = [look_at(p) for p in positions]
            cams = [_camera(bpy, made, scene, f"known-{split}-{i}", c2w) for i, c2w in enumerate(c2ws)]
            files = [out / split / f"r_{i}.png" for i in range(len(cams))]
            _render_views(bpy, scene, cams, files)
            meta = {"camera_angle_x": CAMERA_ANGLE_X, "w": resolution, "h": resolution, "frames": [
                {"file_path": f"./{split}/r_{i}.png", "transform_matrix": c2w.tolist()} for i, c2w in enumerate(c2ws)
            ]}
            (out / json_name).write_text(json.dumps(meta, indent=1))

    write_ply_mesh(out / "truth.ply", vertices, faces)
    np.savez(out / "truth.npz", vertices=vertices, faces=faces, part=part.astype(np.int8))
    lo, hi = vertices.min(0), vertices.max(0)
    return {
        "transforms": out / "transforms.json", "transforms_test": out / "transforms_test.json",
        "truth_ply": out / "truth.ply", "truth_npz": out / "truth.npz",
        "vertices": len(vertices), "faces": len(faces), "size": float(np.linalg.norm(hi - lo)),
    }


def render_textured(npz: str | Path, texture: str | Path, transforms: str | Path, out: str | Path,
                    resolution: int | None = None) -> list[Path]:
    """Render a textured mesh (``vertices``, ``faces``, ``uv`` per face corner, as the
    ``texture`` job's ``textured.npz``) with its texture as an emission shader, exactly as
    the photos were rendered, from the cameras of a transforms.json written by
    ``build_scene``. Returns the RGBA PNGs (one per frame, in order)."""
    bpy = _bpy()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(Path(transforms).read_text())
    resolution = resolution or int(meta["w"])
    with np.load(npz) as data:
        vertices = np.ascontiguousarray(data["vertices"], np.float32)
        faces = np.ascontiguousarray(data["faces"], np.int32)
        uv = np.ascontiguousarray(data["uv"], np.float32).reshape(-1, 2)
    with _Made(bpy) as made:
        scene = _render_scene(bpy, made, "recon-known-render", resolution)
        mesh = made.add("meshes", bpy.data.meshes.new("known-textured"))
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", vertices.ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", uv.ravel())
        mesh.materials.append(_emission_material(bpy, made, "known-textured", _load_image(bpy, made, Path(texture))))
        obj = made.add("objects", bpy.data.objects.new("known-textured", mesh))
        scene.collection.objects.link(obj)
        cams = [_camera(bpy, made, scene, f"known-render-{i}", np.asarray(f["transform_matrix"], float))
                for i, f in enumerate(meta["frames"])]
        files = [out / f"r_{i}.png" for i in range(len(cams))]
        _render_views(bpy, scene, cams, files)
    return files
