# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's previews: one object rendered alone by Cycles from one camera."""

from __future__ import annotations

from pathlib import Path

PREVIEW_SCALE = 0.5  # of the photos' size
PREVIEW_SAMPLES = 8


def render_alone(obj, camera, png: Path, background: float = 1.0, configure=None) -> Path:
    """Cycles renders ``obj`` alone from ``camera`` at half the photos' size in front of a
    grey-level ``background`` world into ``png``, in a temporary scene removed after;
    ``configure(scene)`` may change that scene's settings first."""
    import bpy

    preview = bpy.data.scenes.new(f"{obj.name} preview")
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
        world = bpy.data.worlds.new(preview.name)
        preview.world = world
        world.use_nodes = True
        node = world.node_tree.nodes.get("Background")
        if node is not None:
            node.inputs["Color"].default_value = (background, background, background, 1.0)
        if configure is not None:
            configure(preview)
        render.filepath = str(png)
        with bpy.context.temp_override(scene=preview):
            bpy.ops.render.render(write_still=True, scene=preview.name)
    finally:
        world = preview.world
        bpy.data.scenes.remove(preview)
        if world is not None and world.users == 0:
            bpy.data.worlds.remove(world)
    return png
