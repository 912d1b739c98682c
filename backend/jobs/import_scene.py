# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``import``: an existing reconstruction (a COLMAP model folder, text or binary, or a
NeRF/nerfstudio ``transforms.json``) read into the files an ``sfm`` job writes:
``cameras.npz``, ``points.npz``, ``points.ply`` and, for COLMAP models, ``observations.npz``.
Blender imports these exactly as it imports a solve; the ``splat`` and ``nerf`` jobs read
the same formats directly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import path_input
from ..errors import InputError
from .runner import JobContext

KIND = "import"


@dataclass(frozen=True)
class Config:
    """No settings: the reconstruction is read as it is."""


@dataclass(frozen=True)
class Inputs:
    source: str = path_input("a COLMAP model folder (text or binary) or a transforms.json")
    images: str = path_input("the folder of the photos, when they are not where the model says", required=False)


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..sfm.scene import load_scene, write_scene

    if not inputs.source:
        raise InputError("No reconstruction was given.", "Pass --source MODEL_FOLDER or --source transforms.json.")
    ctx.progress("read", 0, 1, f"reading {Path(inputs.source).name}")
    scene = load_scene(inputs.source)
    if inputs.images:
        folder = Path(inputs.images)
        if not folder.is_dir():
            raise InputError(f"The photo folder {folder} does not exist.", "Check the path or leave it empty.")
        scene.cameras["paths"] = np.array([str(folder / Path(str(n)).name) for n in scene.cameras["names"]])
    ctx.check_cancelled()
    for name, path, fmt in write_scene(ctx.dir, scene):
        ctx.artifact(name, path, fmt)
    missing = scene.missing_photos
    if missing:
        ctx.log("warning", f"{len(missing)} of {len(scene.cameras['names'])} photos not found, e.g. {missing[0]}")
    ctx.progress("read", 1, 1, "read")
    return {
        "format": scene.source,
        "cameras": len(scene.cameras["names"]),
        "points": int(len(scene.points["xyz"])),
        "missing_photos": missing,
        "focal_px": [float(v) for v in np.unique(np.round(scene.cameras["K"][:, 0, 0], 3))],
    }
