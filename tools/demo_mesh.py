# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo's mesh step: a textured mesh of the demo capture, from its solved cameras.

Three operators, as an artist presses them in the *Fields and Meshes* panel, each headless
and blocking (their ``execute``):

1. ``recon.train_field``: a hash-grid radiance field on the solved collection's cameras,
   photos and points, time-boxed to a few minutes of training on 2 CPU cores;
2. ``recon.extract_mesh``: the field's density level set, cleaned and simplified;
3. ``recon.bake_texture``: a UV atlas and a texture baked from the photos.

The textured mesh lands in the solved collection, lined up with its cameras; the untextured
one is hidden. Cycles renders the textured mesh alone from one of the solved cameras into
``out/demo_mesh.png``.

    from tools.demo_mesh import textured_mesh
    obj = textured_mesh(bpy.context.scene, solved_collection, out)
"""

from __future__ import annotations

import time
from pathlib import Path

from tools.demo_preview import render_alone


def _run(operator, what: str, **properties) -> None:
    started = time.perf_counter()
    result = operator(**properties)
    if result != {"FINISHED"}:
        raise RuntimeError(f"{what} failed; see the message above")
    print(f"demo: {what} in {time.perf_counter() - started:.1f} s")


def textured_mesh(scene, collection, out: Path, max_minutes: float = 3.0, resolution_scale: float = 0.5,
                  max_faces: int = 20000, texture_size: str = "1024"):
    """Train a field (at most ``max_minutes``), extract its mesh (``max_faces`` at most: a
    small toy needs few, and the atlas is quicker) and bake a texture onto it from
    ``collection``'s photos; render ``out/demo_mesh.png``; returns the textured object."""
    import bpy

    with bpy.context.temp_override(scene=scene):
        _run(bpy.ops.recon.train_field, "trained the radiance field", collection=collection.name,
             max_minutes=max_minutes, resolution_scale=resolution_scale, resume=False)
        _run(bpy.ops.recon.extract_mesh, "extracted the mesh", collection=collection.name, max_faces=max_faces)
        mesh = bpy.context.view_layer.objects.active
        print(f"demo: '{mesh.name}': {len(mesh.data.vertices):,} vertices, {len(mesh.data.polygons):,} faces")
        _run(bpy.ops.recon.bake_texture, "baked the texture", collection=collection.name, texture_size=texture_size)
    textured = bpy.context.view_layer.objects.active
    mesh.hide_set(True)
    mesh.hide_render = True
    camera = sorted((o for o in collection.objects if o.type == "CAMERA" and "recon_photo" in o), key=lambda o: o.name)[0]
    png = Path(out) / "demo_mesh.png"
    render_alone(textured, camera, png, background=1.0)  # a white sky: the photo colours, evenly lit
    print(f"demo: rendered '{textured.name}' from '{camera.name}' into {png}")
    return textured
