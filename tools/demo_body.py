# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's body step: a rigged human fitted to a photo of a person.

Without a photo it first makes one: the Anny body model (the backend's default, built from
its own data) in a walking, waving pose, dressed by its skin weights (a shirt over the
spine and upper arms, trousers over the legs, shoes, skin, hair over the top and back of
the head), standing on a floor in front of a wall under a sun and a soft fill light,
rendered with Cycles at 640 x 480 into ``out/body_photo.png`` (in a scene of its own, so
the caller's scene is left as it was). Then ``bpy.ops.recon.fit_body`` fits that photo
headless, with MediaPipe's keypoints (not the figure's true ones), and the fit's median
keypoint error against the detector is reported; for the rendered figure, the error of
the fitted keypoints against the figure's true ones too. ``out/demo_body.png`` shows the
photo beside the fitted body drawn over it, through the camera the fit placed.

    from tools.demo_body import fit_body
    armature = fit_body(bpy.context.scene, out)  # or fit_body(scene, out, Path("me.jpg"))

The backend reads ``RECON_CACHE_DIR`` (where Anny's built data is kept: this checkout's
``.venv/recon-cache``, which ``make test`` fills) when it starts: a caller that runs other
jobs first should set it before them, or the first body fit builds the data again (about
3 minutes) in the job folder's ``cache``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 640, 480

# The figure's pose: rotation vectors (radians) in the body model's axes (Z up, -Y front, +X
# the body's left) about each bone's head, keyed by the backend's joint names.
POSE = {
    "root": (0.0, 0.0, 0.45),  # turned a little to its left
    "spine_mid": (0.05, 0.0, -0.1),
    "head": (0.08, 0.0, -0.3),  # looking back towards the camera
    "shoulder_l": (0.0, -1.15, 0.25),  # the left arm raised, waving
    "elbow_l": (0.0, -1.0, -0.5),
    "shoulder_r": (0.1, -0.35, 0.0),  # the right arm down beside the body
    "elbow_r": (-0.35, 0.0, 0.0),
    "hip_l": (-0.4, 0.0, 0.05),  # a step forward
    "knee_l": (0.45, 0.0, 0.0),
    "hip_r": (0.2, 0.0, -0.05),
    "knee_r": (0.3, 0.0, 0.0),
}
SHAPE = {"gender": 0.3, "age": 0.7, "muscle": 0.55, "weight": 0.45, "height": 0.55}

# Clothes by the bone that moves a vertex most (prefixes of Anny's bone names).
CLOTHES = (  # (material, bone name prefixes)
    ("shoes", ("foot", "toe")),
    ("trousers", ("root", "pelvis", "upperleg", "lowerleg")),
    ("shirt", ("spine", "clavicle", "shoulder", "upperarm")),
    ("eyes", ("eye",)),
)
COLOURS = {  # linear RGB
    "skin": (0.62, 0.38, 0.27),
    "shirt": (0.55, 0.06, 0.05),
    "trousers": (0.05, 0.09, 0.22),
    "shoes": (0.03, 0.025, 0.02),
    "hair": (0.035, 0.02, 0.012),
    "eyes": (0.02, 0.02, 0.02),
}


# -- the figure --------------------------------------------------------------------------------


def posed_figure() -> dict[str, np.ndarray]:
    """The posed Anny figure from the backend's body model: ``vertices [V, 3]`` (metres, Z
    up, feet on z = 0), ``faces [F, 3]``, ``part [F]`` (index into :data:`COLOURS`) and the
    true COCO-17 ``keypoints [17, 3]``."""
    import torch

    from backend.body.smpl import load_model

    model = load_model("anny", "default", 10)
    shape = model.shape_default.clone()
    for name, value in SHAPE.items():
        shape[model.shape_names.index(name)] = value
    rotvecs = torch.zeros(1, model.num_bones, 3)
    for joint, rotvec in POSE.items():
        rotvecs[0, model.joint_map[joint]] = torch.tensor(rotvec)
    with torch.no_grad():
        out = model(shape[None], rotvecs)
    vertices = out.vertices[0].numpy().astype(np.float64)
    rest = out.rest_vertices[0].numpy()
    heads = out.rest_joints[0].numpy()
    names = list(COLOURS)
    # each vertex dressed by the bone that moves it most
    strongest = model.skin_indices.numpy()[np.arange(model.num_vertices), model.skin_weights.numpy().argmax(1)]
    bone_part = np.full(model.num_bones, names.index("skin"))
    for part, prefixes in CLOTHES:
        bone_part[[i for i, n in enumerate(model.bone_names) if n.startswith(prefixes)]] = names.index(part)
    vertex_part = bone_part[strongest]
    hips = heads[[model.joint_map["hip_l"], model.joint_map["hip_r"]], 2].mean()
    vertex_part[(vertex_part == names.index("shirt")) & (rest[:, 2] < hips + 0.1)] = names.index("trousers")
    head = heads[model.joint_map["head"]]
    on_head = np.isin(strongest, [model.joint_map["head"], *[i for i, n in enumerate(model.bone_names)
                                                              if n.startswith("neck")]])
    top = rest[:, 2] > head[2] + 0.05
    back = (rest[:, 1] > head[1] + 0.02) & (rest[:, 2] > head[2] - 0.08)
    vertex_part[on_head & (top | back)] = names.index("hair")
    faces = model.faces
    # a face takes the most common part of its corners (the first on a tie)
    corners = vertex_part[faces]
    part = np.where(corners[:, 1] == corners[:, 2], corners[:, 1], corners[:, 0])
    clothes = np.isin(part, [names.index("shirt"), names.index("trousers")])  # a straight hem
    below = rest[faces].mean(1)[:, 2] < hips + 0.1
    part[clothes] = np.where(below[clothes], names.index("trousers"), names.index("shirt"))
    lift = -vertices[:, 2].min()
    vertices[:, 2] += lift
    keypoints = out.keypoints[0].numpy().astype(np.float64)
    keypoints[:, 2] += lift
    return {"vertices": vertices, "faces": faces, "part": part, "keypoints": keypoints}


def _material(name: str, rgb, roughness: float = 0.6):
    import bpy

    material = bpy.data.materials.new(name)
    material.diffuse_color = (*rgb, 1.0)
    if material.node_tree is None:  # Blender < 5 makes materials without nodes
        material.use_nodes = True
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
        bsdf.inputs["Roughness"].default_value = roughness
        if name == "skin" and "Subsurface Weight" in bsdf.inputs:
            bsdf.inputs["Subsurface Weight"].default_value = 0.15
    return material


def _plane(name: str, size: float, location, rotation, rgb):
    import bpy

    mesh = bpy.data.meshes.new(name)
    half = size / 2
    mesh.from_pydata([(-half, -half, 0), (half, -half, 0), (half, half, 0), (-half, half, 0)], [], [(0, 1, 2, 3)])
    obj = bpy.data.objects.new(name, mesh)
    obj.location, obj.rotation_euler = location, rotation
    mesh.materials.append(_material(name, rgb, 0.8))
    return obj


def photo_set(figure: dict[str, np.ndarray]):
    """A new scene holding the dressed figure on a floor before a wall, lit and framed."""
    import bpy
    from mathutils import Vector

    scene = bpy.data.scenes.new("Body Photo Set")
    mesh = bpy.data.meshes.new("person")
    vertices, faces = figure["vertices"], figure["faces"]
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.astype(np.float32).ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update()
    for name, rgb in COLOURS.items():
        mesh.materials.append(_material(name, rgb, 0.45 if name == "skin" else 0.75))
    mesh.polygons.foreach_set("material_index", figure["part"].astype(np.int32))
    mesh.shade_smooth()
    person = bpy.data.objects.new("person", mesh)
    scene.collection.objects.link(person)
    scene.collection.objects.link(_plane("floor", 30.0, (0, 0, 0), (0, 0, 0), (0.32, 0.3, 0.27)))
    scene.collection.objects.link(_plane("wall", 30.0, (0, 3.0, 0), (np.pi / 2, 0, 0), (0.42, 0.45, 0.43)))

    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy, sun.data.angle = 2.2, 0.15
    sun.rotation_euler = (0.75, 0.0, -0.6)
    scene.collection.objects.link(sun)
    fill = bpy.data.objects.new("fill", bpy.data.lights.new("fill", "AREA"))
    fill.data.energy, fill.data.size = 250.0, 3.0
    fill.location = (2.5, -4.0, 2.5)
    fill.rotation_euler = (Vector((0, 0, 1.0)) - fill.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(fill)
    scene.world = bpy.data.worlds.new("sky")
    scene.world.color = (0.35, 0.38, 0.42)
    if scene.world.node_tree is None:
        scene.world.use_nodes = True
    background = scene.world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Color"].default_value = (0.35, 0.38, 0.42, 1.0)
        background.inputs["Strength"].default_value = 0.6

    data = bpy.data.cameras.new("photographer")
    # 35 mm-equivalent 35 mm (on the diagonal): what the fit assumes of a photo without EXIF
    data.lens, data.sensor_width = 35.0, 43.27 * WIDTH / np.hypot(WIDTH, HEIGHT)
    camera = bpy.data.objects.new("photographer", data)
    camera.location = (0.45, -3.3, 1.1)
    camera.rotation_euler = (Vector((0.05, 0.0, 0.9)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 12
    scene.cycles.max_bounces = 4
    scene.cycles.use_denoising = True
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = WIDTH, HEIGHT, 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard" if "AgX" not in _transforms(scene) else "AgX"
    return scene


def _transforms(scene) -> set[str]:
    return {item.identifier for item in scene.view_settings.bl_rna.properties["view_transform"].enum_items}


def photograph_person(out: Path) -> tuple[Path, np.ndarray]:
    """Render the figure into ``out/body_photo.png``; returns it and the figure's true
    COCO-17 keypoints in its pixels [17, 2]."""
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    figure = posed_figure()
    scene = photo_set(figure)
    photo = out / "body_photo.png"
    scene.render.filepath = str(photo)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    scene.view_layers[0].update()  # the camera's matrix_world from its location and rotation
    truth = np.array([tuple(world_to_camera_view(scene, scene.camera, Vector(p)))[:2] for p in figure["keypoints"]])
    truth = np.stack([truth[:, 0] * WIDTH, (1.0 - truth[:, 1]) * HEIGHT], 1)  # pixels, y down
    for obj in list(scene.objects):
        bpy.data.objects.remove(obj)
    bpy.data.scenes.remove(scene)
    return photo, truth


# -- the fit and its preview -------------------------------------------------------------------


def _read_rgba(path: Path) -> np.ndarray:
    """[H, W, 4] float32 in 0..1, top row first."""
    import bpy

    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        image.colorspace_settings.name = "Non-Color"  # the file's own values, untouched
        pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(image.size[1], image.size[0], 4)[::-1]
    finally:
        bpy.data.images.remove(image)


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    import bpy

    height, width = rgb.shape[:2]
    image = bpy.data.images.new("demo_body_preview", width, height)
    try:
        image.colorspace_settings.name = "Non-Color"
        rgba = np.concatenate([rgb, np.ones((height, width, 1), np.float32)], 2)[::-1]
        image.pixels.foreach_set(np.ascontiguousarray(rgba, np.float32).ravel())
        image.filepath_raw = str(path)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)


def preview(armature, photo: Path, out: Path) -> Path:
    """``out/demo_body.png``: the photo, and beside it the fitted body drawn over the photo
    through the camera the fit placed (at most 640 pixels wide each)."""
    import bpy

    collection = armature.users_collection[0]
    camera = next((o for o in collection.objects if o.type == "CAMERA"), None)
    source = _read_rgba(photo)[..., :3]
    height, width = source.shape[:2]
    scene = bpy.data.scenes.new("Body Preview")
    try:
        scene.collection.children.link(collection)
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "SINGLE"
        scene.display.shading.single_color = (0.25, 0.55, 1.0)
        scene.display.shading.show_cavity = False
        scene.render.film_transparent = True
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = max(1, min(100, round(100 * 640 / width)))
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        scene.view_settings.view_transform = "Standard"
        drawn = out / "demo_body_overlay.png"
        scene.render.filepath = str(drawn)
        armature_shown = armature.hide_render
        armature.hide_render = True
        if camera is not None:
            scene.camera = camera
            bpy.ops.render.render(write_still=True, scene=scene.name)
        armature.hide_render = armature_shown
    finally:
        bpy.data.scenes.remove(scene)
    if camera is None or not drawn.is_file():  # a fit into given cameras: show the photo alone
        overlay = source
    else:
        layer = _read_rgba(drawn)
        drawn.unlink()
        h, w = layer.shape[:2]
        rows = (np.arange(h) * height // h)[:, None]
        cols = (np.arange(w) * width // w)[None, :]
        small = source[rows, cols]
        alpha = 0.7 * layer[..., 3:]
        overlay = (1 - alpha) * small + alpha * layer[..., :3]
        source = small
    gap = np.ones((source.shape[0], 8, 3), np.float32)
    path = out / "demo_body.png"
    _write_rgb(path, np.concatenate([source, gap, overlay], 1))
    return path


def fit_body(scene, out: Path, photo: Path | None = None):
    """Fit a rigged body to ``photo`` (default: a rendered photo of a dressed, posed figure,
    made here) with ``bpy.ops.recon.fit_body`` into ``scene`` (the context's scene), report
    the fit, write ``out/demo_body.png``; returns the body's armature object."""
    import bpy

    os.environ.setdefault("RECON_CACHE_DIR", str(ROOT / ".venv" / "recon-cache"))  # Anny's built data
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    truth = None
    if photo is None:
        started = time.perf_counter()
        photo, truth = photograph_person(out)
        print(f"demo: rendered a photo of a dressed, posed figure to {photo} in {time.perf_counter() - started:.1f} s")
    photo = Path(photo).resolve()
    if not photo.is_file():
        raise FileNotFoundError(f"{photo} does not exist: give BODY_PHOTO a photo of a person")
    if scene != bpy.context.scene:
        raise ValueError("fit_body fits into the context's scene; pass bpy.context.scene")
    started = time.perf_counter()
    result = bpy.ops.recon.fit_body(filepath=str(photo))
    if result != {"FINISHED"}:
        raise RuntimeError(f"fitting a body to {photo.name} failed; see the message above")
    armature = bpy.context.active_object
    error = float(armature.get("recon_fit_error_px", float("nan")))
    message = (f"demo: fitted '{armature.name}' ({len(armature.data.bones)} bones, "
               f"{armature.get('recon_body_model', 'body')}) to {photo.name} in {time.perf_counter() - started:.1f} s: "
               f"median keypoint error {error:.1f} px against MediaPipe's keypoints")
    if truth is not None:
        fitted = _fitted_keypoints()
        if fitted is not None:
            message += f", {np.median(np.linalg.norm(fitted - truth, axis=1)):.1f} px against the figure's true ones"
    print(message)
    path = preview(armature, photo, out)
    print(f"demo: wrote {path}")
    return armature


def _fitted_keypoints() -> np.ndarray | None:
    """The fitted model's keypoints in the photo [17, 2], from the latest body job's body.npz
    (through the installed extension's job registry)."""
    jobs = next((m for n, m in sys.modules.items() if n.startswith("bl_ext.") and n.endswith(".recon.addon.jobs")),
                None)
    job = jobs.manager().latest("body") if jobs is not None else None
    if job is None:
        return None
    with np.load(job.artifact("body"), allow_pickle=False) as body:
        return np.asarray(body["keypoints_2d"][0], np.float64)
