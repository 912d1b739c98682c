# SPDX-License-Identifier: GPL-3.0-or-later
"""``make demo``: Recon's jobs, headless, on inputs made here (nothing downloaded).

Installs the extension from its zip into a private Blender profile (under ``out/``), then

1. photographs a textured toy duck on a patterned turntable: Blender renders 24 photos
   (``out/photos``, with alpha: the capture cut out from its backdrop) from a ring of cameras;
2. solves the cameras from those photos alone with ``bpy.ops.recon.run_sfm`` (pycolmap in
   the backend): one calibrated camera per photo, with the photo as its background, and the
   scene's points in colour, aligned upright and scaled by the known distance between the
   first two cameras; it reports the focal length and camera positions against the truth;
3. trains Gaussian splats on the solved cameras with ``bpy.ops.recon.train_splats`` (the
   "fast" preset, a few minutes), shown as splats and rendered into ``out/demo_splats.png``
   (``tools/demo_splats.py``);
4. trains a radiance field on them (``recon.train_field``), extracts its mesh
   (``recon.extract_mesh``) and bakes a texture onto it from the photos
   (``recon.bake_texture``), rendered into ``out/demo_mesh.png`` (``tools/demo_mesh.py``);
5. fits a mesh to a scan-like point cloud of the duck with ``bpy.ops.recon.fit_mesh_to_points``;
6. fits a rigged body to a photo of a person with ``bpy.ops.recon.fit_body``: a photo it
   renders of a dressed, posed figure, or ``--body-photo PATH`` (``make demo
   BODY_PHOTO=path``), previewed in ``out/demo_body.png`` (``tools/demo_body.py``);

and writes ``out/demo.blend`` and the preview ``out/demo.png``.

    python tools/demo.py --out out [--iterations 2000] [--views 24] [--train-minutes 3]
                         [--body-photo PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# -- the input: a toy duck as a noisy, unevenly sampled scan --------------------------------

# Ellipsoids (centre, radii) whose union is the duck: body, head, beak, tail.
DUCK = [
    ((0.0, 0.0, 0.0), (1.2, 0.8, 0.6)),
    ((0.75, 0.0, 0.75), (0.45, 0.42, 0.42)),
    ((1.25, 0.0, 0.68), (0.3, 0.16, 0.07)),
    ((-1.05, 0.0, 0.3), (0.35, 0.25, 0.18)),
]


def duck_cloud(n: int = 4000, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Points ``(n, 3)`` on the surface of the union of :data:`DUCK`'s ellipsoids."""
    rng = np.random.default_rng(seed)
    centres = np.array([c for c, _ in DUCK])
    radii = np.array([r for _, r in DUCK])
    # Candidate points on each ellipsoid, in proportion to its rough area.
    areas = (radii[:, 0] * radii[:, 1] + radii[:, 1] * radii[:, 2] + radii[:, 0] * radii[:, 2])
    counts = rng.multinomial(8 * n, areas / areas.sum())
    which = np.repeat(np.arange(len(DUCK)), counts)
    directions = rng.normal(size=(len(which), 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    candidates = centres[which] + directions * radii[which]
    # Keep the points on the union's outer surface: inside no other ellipsoid.
    inside = (((candidates[:, None, :] - centres[None]) / radii[None]) ** 2).sum(-1) < 0.999
    inside[np.arange(len(which)), which] = False
    surface = candidates[~inside.any(axis=1)]
    picked = surface[rng.choice(len(surface), size=n, replace=False)]
    return (picked + rng.normal(scale=noise, size=picked.shape)).astype(np.float32)


def pattern(size: int, seed: int, cells=(6, 24, 96), saturation: float = 0.8) -> np.ndarray:
    """An RGBA texture ``(size, size, 4)`` in [0, 1]: random colour cells at several scales,
    the kind of surface detail feature matching needs."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3))
    for weight, n in zip((0.5, 0.3, 0.2), cells, strict=True):
        grid = rng.uniform(0.0, 1.0, (n, n, 3))
        image += weight * np.repeat(np.repeat(grid, -(-size // n), axis=0), -(-size // n), axis=1)[:size, :size]
    grey = image.mean(axis=2, keepdims=True)
    image = grey + saturation * (image - grey)
    return np.concatenate([np.clip(image, 0.0, 1.0), np.ones((size, size, 1))], axis=2)


# -- Blender ---------------------------------------------------------------------------------


def install_extension(out: Path) -> str:
    """Install and enable the extension zip in a private profile; returns its module name."""
    import bpy

    sys.path.insert(0, str(ROOT))
    from tools.build_extension import build

    zip_path = build(out / "dist")
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    if result != {"FINISHED"}:
        raise RuntimeError(f"installing {zip_path} failed: {result}")
    return "bl_ext.user_default.recon"


def make_material(name: str, rgba) -> object:
    import bpy

    material = bpy.data.materials.new(name)
    material.diffuse_color = rgba
    if material.node_tree is None:  # Blender < 5 makes materials without nodes
        material.use_nodes = True
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = rgba
        bsdf.inputs["Roughness"].default_value = 0.5
    return material


def textured_material(name: str, seed: int, **kwargs):
    """A material showing a generated image texture (packed into the .blend)."""
    import bpy

    size = 512
    image = bpy.data.images.new(f"{name}_texture", size, size)
    image.pixels.foreach_set(pattern(size, seed, **kwargs).astype(np.float32).ravel())
    image.pack()
    material = make_material(name, (1.0, 1.0, 1.0, 1.0))
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    material.node_tree.links.new(texture.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    nodes.active = texture  # what Workbench's texture colour shows
    return material


def build_capture(scene, collection):
    """The textured duck (the union of :data:`DUCK`'s ellipsoids) on a patterned disc."""
    import bmesh
    import bpy

    duck = textured_material("duck", seed=1)
    for index, (centre, radii) in enumerate(DUCK):
        mesh = bpy.data.meshes.new(f"duck_part{index}")
        bm = bmesh.new()
        bm.loops.layers.uv.new()  # calc_uvs fills an existing layer
        bmesh.ops.create_uvsphere(bm, u_segments=48, v_segments=24, radius=1.0, calc_uvs=True)
        bm.to_mesh(mesh)
        bm.free()
        obj = bpy.data.objects.new(mesh.name, mesh)
        obj.location = np.array(centre) + (0.0, 0.0, 0.7)
        obj.scale = radii
        mesh.materials.append(duck)
        collection.objects.link(obj)
    mesh = bpy.data.meshes.new("turntable")
    bm = bmesh.new()
    bm.loops.layers.uv.new()
    bmesh.ops.create_circle(bm, cap_ends=True, segments=64, radius=2.6, calc_uvs=True)
    bm.to_mesh(mesh)
    bm.free()
    mesh.materials.append(textured_material("turntable", seed=2, cells=(8, 32, 128)))
    collection.objects.link(bpy.data.objects.new("turntable", mesh))


def photograph(scene, folder: Path, views: int, seed: int = 0) -> np.ndarray:
    """Render ``views`` photos (640x480) from a ring of cameras looking at the duck, into
    ``folder``; returns the true camera centres."""
    import bpy
    from mathutils import Vector

    folder.mkdir(parents=True, exist_ok=True)
    data = bpy.data.cameras.new("photographer")
    data.lens, data.sensor_width = 35.0, 36.0
    camera = bpy.data.objects.new("photographer", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "TEXTURE"
    scene.display.shading.show_shadows = False
    scene.display.shading.show_cavity = False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 480, 100
    scene.render.image_settings.file_format = "PNG"
    # photos with alpha, as a turntable capture cut out from its backdrop: the splats and the
    # radiance field learn the duck and its disc, not a grey wall around the cameras
    scene.render.film_transparent = True
    scene.render.image_settings.color_mode = "RGBA"
    rng = np.random.default_rng(seed)
    centres = []
    for i in range(views):  # one render per photo
        angle = 2.0 * np.pi * i / views + rng.uniform(-0.05, 0.05)
        height = 2.2 if i % 2 == 0 else 3.4
        centre = Vector((5.5 * np.cos(angle), 5.5 * np.sin(angle), height))
        camera.location = centre
        camera.rotation_euler = (Vector((0.0, 0.0, 0.6)) - centre).to_track_quat("-Z", "Y").to_euler()
        scene.render.filepath = str(folder / f"photo_{i:02d}.png")
        bpy.ops.render.render(write_still=True)
        centres.append(tuple(centre))
    bpy.data.objects.remove(camera)
    bpy.data.cameras.remove(data)
    return np.array(centres)


def solve_cameras(scene, photos: Path, truth: np.ndarray) -> object:
    """Run Structure-from-Motion on the photos and compare with the cameras that took them."""
    import bpy

    known = float(np.linalg.norm(truth[0] - truth[1]))
    started = time.perf_counter()
    result = bpy.ops.recon.run_sfm(directory=str(photos), align=True, known_distance=known)
    if result != {"FINISHED"}:
        raise RuntimeError("solving the cameras failed; see the message above")
    collection = bpy.data.collections[f"Recon {photos.name}"]
    cameras = sorted((o for o in collection.objects if o.type == "CAMERA"), key=lambda o: o.name)
    focal = cameras[0].data.lens / cameras[0].data.sensor_width * 640
    solved = np.array([o.matrix_world.translation for o in cameras])
    # the solved frame is upright and to scale but turned freely about z: compare distances
    d_true = np.linalg.norm(truth[:, None] - truth[None], axis=-1)
    d_solved = np.linalg.norm(solved[:, None] - solved[None], axis=-1)
    print(f"demo: solved {len(cameras)} of {len(truth)} cameras in {time.perf_counter() - started:.1f} s: focal "
          f"{focal:.1f} px (truth {35.0 / 36.0 * 640:.1f}), camera distances off by "
          f"{np.abs(d_true - d_solved).max() / d_true.max() * 100:.2f} % of the scene at most")
    return collection


def build_scene(points: np.ndarray):
    import bpy

    mesh = bpy.data.meshes.new("duck_scan")
    mesh.vertices.add(len(points))
    mesh.vertices.foreach_set("co", points.ravel())
    cloud = bpy.data.objects.new("duck_scan", mesh)
    bpy.context.scene.collection.objects.link(cloud)
    bpy.context.view_layer.objects.active = cloud
    cloud.select_set(True)
    bpy.ops.object.convert(target="POINTCLOUD")  # a real Point Cloud object, as a scanner import gives
    radius = cloud.data.attributes.get("radius") or cloud.data.attributes.new("radius", "FLOAT", "POINT")
    radius.data.foreach_set("value", np.full(len(points), 0.018, np.float32))
    cloud.data.materials.append(make_material("scan_points", (0.9, 0.35, 0.1, 1.0)))
    return cloud


def stage(scene, subjects, distance: float = 8.5) -> None:
    import bpy
    from mathutils import Vector

    camera_data = bpy.data.cameras.new("camera")
    camera_data.lens = 40
    camera = bpy.data.objects.new("camera", camera_data)
    scene.collection.objects.link(camera)
    bpy.context.view_layer.update()  # matrix_world follows the locations set above
    target = sum((s.matrix_world.translation for s in subjects), Vector()) / len(subjects)
    camera.location = target + Vector((0.0, -distance, 0.4 * distance))
    camera.rotation_euler = (target + Vector((0.0, 0.0, 0.2)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.7, 0.2, 0.6)
    scene.collection.objects.link(sun)
    # Cycles on the CPU (few samples): the points show their photo colours through their material.
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 960, 540
    scene.render.film_transparent = False
    scene.world = scene.world or bpy.data.worlds.new("world")
    scene.world.color = (0.8, 0.82, 0.85)
    if scene.world.node_tree is None:  # a new world before Blender 5 has no nodes
        scene.world.use_nodes = True
    background = scene.world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Color"].default_value = (0.8, 0.82, 0.85, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--iterations", type=int, default=2000, help="fit iterations (default: the job's 2000)")
    parser.add_argument("--views", type=int, default=24, help="photos of the capture (default: 24)")
    parser.add_argument("--train-minutes", type=float, default=3.0,
                        help="training minutes of the splats and of the radiance field, each (default: 3)")
    parser.add_argument("--body-photo", type=Path, default=None,
                        help="a photo of a person to fit a body to (default: a rendered figure)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.body_photo is not None and not args.body_photo.is_file():
        parser.error(f"--body-photo {args.body_photo}: there is no such file; give the path of a JPEG or PNG photo")
    os.environ["BLENDER_USER_RESOURCES"] = str(out / "blender-user")  # never the user's own profile
    os.environ.setdefault("RECON_JOB_DIR", str(out / "jobs"))
    # the body model's data, built once (about 3 minutes) and kept beside the environment;
    # the backend reads this when it starts, so it is set before the first job
    os.environ.setdefault("RECON_CACHE_DIR", str(ROOT / ".venv" / "recon-cache"))

    import bpy

    install_extension(out)
    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)

    capture = bpy.data.collections.new("capture")
    scene.collection.children.link(capture)
    build_capture(scene, capture)
    print(f"demo: photographing the capture from {args.views} views into {out / 'photos'}")
    truth = photograph(scene, out / "photos", args.views)
    solved = solve_cameras(scene, out / "photos", truth)
    capture.hide_render = True  # the source scene stays in the file, out of the preview
    capture.hide_viewport = True

    from tools.demo_body import fit_body
    from tools.demo_mesh import textured_mesh
    from tools.demo_splats import train_splats

    print(f"demo: training splats on the solved cameras ({args.train_minutes:g} minutes at most)")
    splat_object = train_splats(scene, solved, out, max_minutes=args.train_minutes)
    splat_object.hide_render = True  # in its own preview, out/demo_splats.png
    print(f"demo: a textured mesh from a radiance field ({args.train_minutes:g} minutes of training at most)")
    textured = textured_mesh(scene, solved, out, max_minutes=args.train_minutes)

    cloud = build_scene(duck_cloud())
    print(f"demo: fitting a mesh to {len(cloud.data.points)} scanned points (the job log is under {out / 'jobs'})")
    started = time.perf_counter()
    result = bpy.ops.recon.fit_mesh_to_points(iterations=args.iterations)
    if result != {"FINISHED"}:
        print("demo: the fit failed; see the message above", file=sys.stderr)
        return 1
    fit = bpy.context.active_object
    fit.data.materials.append(make_material("fitted_mesh", (0.85, 0.85, 0.8, 1.0)))
    fit.location.x += 1.6  # beside the scan, for the preview
    print(f"demo: '{fit.name}' ({len(fit.data.vertices)} vertices) in {time.perf_counter() - started:.1f} s, "
          f"chamfer {fit['recon_chamfer']:.3g}")
    cloud.location.x -= 1.6
    points = next(o for o in solved.objects if o.type == "POINTCLOUD")
    for obj in solved.objects:  # the solve to the left of the scan and the fit, for the preview
        obj.location.x -= 5.5
    points.hide_render = True  # the textured mesh shows the solve in the preview
    stage(scene, [textured, cloud, fit], distance=15.0)
    blend, png = out / "demo.blend", out / "demo.png"
    scene.render.filepath = str(png)
    bpy.ops.render.render(write_still=True)
    print("demo: fitting a rigged body to " + (str(args.body_photo) if args.body_photo else "a rendered photo of a person"))
    fit_body(scene, out, args.body_photo)  # after the preview: the body has its own, out/demo_body.png
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"demo: wrote {blend} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
