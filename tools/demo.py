# SPDX-License-Identifier: GPL-3.0-or-later
"""``make demo``: Recon's main job, headless, on a bundled default input.

Installs the extension from its zip into a private Blender profile (under ``out/``), makes
a scan-like point cloud of a toy duck (generated here, nothing downloaded), fits a mesh to
it with ``bpy.ops.recon.fit_mesh_to_points`` through the real backend, and writes
``out/demo.blend`` and the preview ``out/demo.png``.

    python tools/demo.py --out out [--iterations 2000]
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
    if not material.use_nodes:  # Blender < 5 makes materials without nodes
        material.use_nodes = True
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = rgba
        bsdf.inputs["Roughness"].default_value = 0.5
    return material


def build_scene(points: np.ndarray):
    import bpy

    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
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


def stage(scene, subjects) -> None:
    import bpy
    from mathutils import Vector

    camera_data = bpy.data.cameras.new("camera")
    camera_data.lens = 40
    camera = bpy.data.objects.new("camera", camera_data)
    scene.collection.objects.link(camera)
    bpy.context.view_layer.update()  # matrix_world follows the locations set above
    target = sum((s.matrix_world.translation for s in subjects), Vector()) / len(subjects)
    camera.location = target + Vector((0.0, -8.5, 3.5))
    camera.rotation_euler = (target + Vector((0.0, 0.0, 0.2)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.7, 0.2, 0.6)
    scene.collection.objects.link(sun)
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.display.shading.show_shadows = True
    scene.display.shading.show_cavity = True
    scene.render.resolution_x, scene.render.resolution_y = 960, 540
    scene.render.film_transparent = False
    scene.world = scene.world or bpy.data.worlds.new("world")
    scene.world.color = (0.8, 0.82, 0.85)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--iterations", type=int, default=2000, help="fit iterations (default: the job's 2000)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["BLENDER_USER_RESOURCES"] = str(out / "blender-user")  # never the user's own profile
    os.environ.setdefault("RECON_JOB_DIR", str(out / "jobs"))

    import bpy

    install_extension(out)
    scene = bpy.context.scene
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
    stage(scene, [cloud, fit])
    blend, png = out / "demo.blend", out / "demo.png"
    scene.render.filepath = str(png)
    bpy.ops.render.render(write_still=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    print(f"demo: wrote {blend} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
