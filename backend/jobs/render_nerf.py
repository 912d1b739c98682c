# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``render-nerf``: a trained radiance field rendered from cameras.

The cameras are anything ``load_scene`` reads (a ``transforms.json``, a COLMAP model or a
Recon ``cameras.npz`` folder; no photos needed), each with its exact intrinsics and lens
distortion, at its own size or at ``width`` x ``height`` (intrinsics scaled to match).
Writes one PNG per camera, named after its frame as ``render-splats`` names them
(``r_0.png`` for a frame ``./train/r_0``; frames of the same stem in different folders keep
the folders, joined by ``_``), composited on the background (by default the one the field
was trained with) or, with ``--background transparent``, as RGBA with the field's opacity
as (straight) alpha; and ``renders.json`` listing them (name, file, size).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..config import option, path_input
from ..errors import InputError
from .runner import JobContext

KIND = "render-nerf"


@dataclass(frozen=True)
class Config:
    """How to render."""

    width: int = option(0, "Image width in pixels (0: each camera's own, or from the height keeping its aspect)",
                        minimum=0)
    height: int = option(0, "Image height in pixels (0: each camera's own, or from the width)", minimum=0)
    samples: int = option(0, "Samples per ray (0: as the field was trained)", minimum=0)
    background: str = option("field", "Colour behind the field (field: the one it was trained with)",
                             ("field", "white", "black", "transparent"))
    device: str = option("auto", "Compute device", ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class Inputs:
    field: str = path_input("a trained field: the output folder of a 'nerf' job")
    cameras: str = path_input("cameras: a transforms.json, a COLMAP model or a folder with cameras.npz")


def frame_file_names(names: list[str]) -> list[str]:
    """``<stem>.png`` per frame; frames of the same stem in different folders keep the folders."""
    stems = [PurePosixPath(str(n).replace("\\", "/")).stem or "frame" for n in names]
    if len(set(stems)) == len(stems):
        return [f"{s}.png" for s in stems]
    return [str(PurePosixPath(str(n).replace("\\", "/")).with_suffix("")).strip("./").replace("/", "_") + ".png"
            for n in names]


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from ..nerf.cpu import keep_freed_memory
    from ..nerf.field import load_field
    from ..nerf.rays import cameras_from_scene
    from ..nerf.render import render_image
    from ..nerf.train import MIN_VIEWS
    from ..protocol import write_bytes_atomic, write_json_atomic
    from ..sfm.scene import load_scene
    from .deform import resolve_device

    if not inputs.field:
        raise InputError("No field was given.", "Pass --field with the output folder of a 'nerf' job.")
    if not inputs.cameras:
        raise InputError("No cameras were given.", "Pass --cameras with a transforms.json, COLMAP model or cameras.npz.")
    device = resolve_device(config.device)
    ctx.progress("load", 0, 1, "reading the field and the cameras")
    fld = load_field(inputs.field, device)
    trained_views = int(fld.info.get("train_views", 0) or 0)
    if 0 < trained_views < MIN_VIEWS:
        ctx.log("warning", f"this field was trained on only {trained_views} view(s): expect blur and floaters away "
                           "from the photos' viewpoints")
    cameras = cameras_from_scene(load_scene(inputs.cameras))
    if config.width or config.height:
        cameras = cameras.resized(config.width or None, config.height or None)
    trained = fld.info.get("settings", {})
    samples = config.samples or int(trained.get("samples") or (32 if fld.config.kind == "hashgrid" else 64))
    fine = int(trained.get("fine_samples", 128))
    transparent = config.background == "transparent"
    colors = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
    background = torch.tensor(colors.get(config.background, fld.background), dtype=torch.float32)
    names = frame_file_names(cameras.names)
    ctx.progress("load", 1, 1, f"{len(cameras)} camera(s)")
    listed = []
    with keep_freed_memory(device.type == "cpu"):
        for i in range(len(cameras)):
            ctx.check_cancelled()
            ctx.progress("render", i, len(cameras), f"rendering {cameras.names[i]}")
            origins, dirs = cameras.rays(i)
            out = render_image(fld, origins.to(device), dirs.to(device), cameras.heights[i], cameras.widths[i],
                               background, samples, fine, check_cancelled=ctx.check_cancelled)
            rgb = out["rgb"].clamp(0, 1)
            if transparent:  # un-composite: the colour of what is there, its opacity as alpha
                alpha = out["opacity"].clamp(0, 1)[..., None]
                color = ((rgb - (1 - alpha) * background) / alpha.clamp_min(1e-6)).clamp(0, 1)
                pixels = torch.cat([color, alpha], -1)
            else:
                pixels = rgb
            array = (pixels * 255 + 0.5).to(torch.uint8).numpy()
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
            path = ctx.dir / names[i]
            write_bytes_atomic(path, buffer.getvalue())
            ctx.artifact(f"render:{cameras.names[i]}", path, "png")
            listed.append({"name": cameras.names[i], "file": names[i], "width": cameras.widths[i],
                           "height": cameras.heights[i]})
    ctx.progress("render", len(cameras), len(cameras), "done")
    write_json_atomic(ctx.dir / "renders.json", {"field": str(Path(inputs.field).resolve()), "renders": listed})
    ctx.artifact("renders", ctx.dir / "renders.json", "json")
    return {"images": len(listed), "field": fld.config.kind, "samples": samples, "device": str(device),
            "files": [r["file"] for r in listed]}
