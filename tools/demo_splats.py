# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's splat step: Gaussian splats trained on the demo capture's solved cameras.

``bpy.ops.recon.train_splats`` runs headless and blocking (the operator's ``execute``: the
job is submitted and waited for, as ``tools/demo.py`` runs ``recon.run_sfm``) with the
"fast" preset, time-boxed to a few minutes of training on 2 CPU cores; the splats come in
as one object in the solved collection, lined up with its cameras and points. Then Cycles
renders them alone (in a scene of its own, so the caller's scene is left as it was) from
one of the solved cameras into ``out/demo_splats.png``.

    from tools.demo_splats import train_splats
    splats = train_splats(bpy.context.scene, solved_collection, out)
"""

from __future__ import annotations

import time
from pathlib import Path

PREVIEW_SCALE = 0.5  # of the photos' size, for the preview render
PREVIEW_SAMPLES = 8


def train_splats(scene, collection, out: Path, max_minutes: float = 3.0, iterations: int = 0):
    """Train splats (fast preset, at most ``max_minutes`` of training) on ``collection``'s
    cameras and points, render ``out/demo_splats.png``; returns the splat object."""
    import bpy

    started = time.perf_counter()
    with bpy.context.temp_override(scene=scene):
        result = bpy.ops.recon.train_splats(collection=collection.name, preset="fast", max_minutes=max_minutes,
                                            iterations=iterations)
    if result != {"FINISHED"}:
        raise RuntimeError("training the splats failed; see the message above")
    obj = bpy.context.view_layer.objects.active  # the operator makes the new splats active
    print(f"demo: {len(obj.data.points):,} Gaussians in '{obj.name}' after {time.perf_counter() - started:.1f} s")
    camera = sorted((o for o in collection.objects if o.type == "CAMERA" and "recon_photo" in o), key=lambda o: o.name)[0]
    png = Path(out) / "demo_splats.png"
    render_preview(obj, camera, png)
    print(f"demo: rendered the splats from '{camera.name}' into {png}")
    return obj


def render_preview(obj, camera, png: Path) -> Path:
    """Cycles renders ``obj`` alone from ``camera`` into ``png`` (a temporary scene, removed after)."""
    import bpy
    from bl_ext.user_default.recon.addon import splats

    preview = bpy.data.scenes.new("splat preview")
    try:
        preview.collection.objects.link(obj)
        preview.camera = camera
        render = preview.render
        render.engine = "CYCLES"
        preview.cycles.device, preview.cycles.samples, preview.cycles.use_denoising = "CPU", PREVIEW_SAMPLES, True
        render.resolution_x = int(camera.get("recon_width", 640))
        render.resolution_y = int(camera.get("recon_height", 480))
        render.resolution_percentage = round(100 * PREVIEW_SCALE)
        render.film_transparent = False
        render.image_settings.file_format = "PNG"
        world = bpy.data.worlds.new("splat preview")
        preview.world = world
        world.use_nodes = True
        background = world.node_tree.nodes.get("Background")
        if background is not None:  # what the splats were trained in front of
            value = 1.0 if obj.get("recon_background") == "white" else 0.0
            background.inputs["Color"].default_value = (value, value, value, 1.0)
        splats.render_settings(preview, splats.display_blending(obj))
        render.filepath = str(png)
        with bpy.context.temp_override(scene=preview):
            bpy.ops.render.render(write_still=True, scene=preview.name)
    finally:
        world = preview.world
        bpy.data.scenes.remove(preview)
        if world is not None and world.users == 0:
            bpy.data.worlds.remove(world)
    return png
