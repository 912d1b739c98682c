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
    """Cycles renders the splats alone from ``camera`` into ``png``, in front of the
    background they were trained with."""
    from bl_ext.user_default.recon.addon import splats

    from tools.demo_preview import render_alone

    background = 1.0 if obj.get("recon_background") == "white" else 0.0
    return render_alone(obj, camera, png, background,
                        configure=lambda scene: splats.render_settings(scene, splats.display_blending(obj)))
