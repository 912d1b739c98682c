# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``render-splats``: render 3D Gaussian splats (any 3DGS ``.ply``) from cameras.

The cameras come from a ``transforms.json``, a COLMAP model or a Recon ``cameras.npz`` /
job folder (read with ``load_scene``; the photos are not needed). Writes one PNG per camera,
named after its frame (``r_0.png`` for a frame ``./train/r_0``), at the camera's size or
``--width``/``--height`` (intrinsics scaled to match), with the splats' alpha over the
background colour (or kept as the PNG's alpha with ``--background transparent``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from ..config import option, path_input
from ..errors import InputError
from .runner import JobContext

KIND = "render-splats"
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "transparent": (0.0, 0.0, 0.0)}


@dataclass(frozen=True)
class Config:
    """Settings of splat rendering."""

    width: int = option(0, "Image width in pixels (0: each camera's own; with only one of width and height the "
                        "other keeps the camera's aspect)", minimum=0)
    height: int = option(0, "Image height in pixels (0: each camera's own)", minimum=0)
    background: str = option("white", "Colour behind the splats", tuple(BACKGROUNDS))
    sh_degree: int = option(-1, "Spherical-harmonics degree to render with (-1: all the file has)", (-1, 0, 1, 2, 3))
    rasterizer: str = option("auto", "Rasterizer: auto (gsplat on CUDA, else numba kernels, else PyTorch)",
                             ("auto", "numba", "torch", "gsplat"))


@dataclass(frozen=True)
class Inputs:
    splats: str = path_input("a 3D Gaussian splatting .ply")
    cameras: str = path_input("the cameras: a transforms.json, a COLMAP model, or a cameras.npz / job folder")


def frame_file_names(names: list[str]) -> list[str]:
    """``<stem>.png`` per frame; frames of the same stem in different folders keep the folders."""
    stems = [PurePosixPath(str(n).replace("\\", "/")).stem or "frame" for n in names]
    if len(set(stems)) == len(stems):
        return [f"{s}.png" for s in stems]
    return [str(PurePosixPath(str(n).replace("\\", "/")).with_suffix("")).strip("./").replace("/", "_") + ".png"
            for n in names]


def output_size(width: int, height: int, config: Config) -> tuple[int, int]:
    if config.width and config.height:
        return config.width, config.height
    if config.width:
        return config.width, max(1, round(height * config.width / width))
    if config.height:
        return max(1, round(width * config.height / height)), config.height
    return width, height


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    import torch
    from PIL import Image

    from ..protocol import write_bytes_atomic
    from ..sfm.scene import load_scene
    from ..splat.ply import read_splats
    from ..splat.rasterize import rasterize, resolve_backend

    if not inputs.splats or not inputs.cameras:
        raise InputError("Both --splats and --cameras are needed.", "Give a 3DGS .ply and a cameras file.")
    splats = read_splats(inputs.splats)
    scene = load_scene(inputs.cameras)
    cams = scene.cameras
    degree = splats.sh_degree if config.sh_degree < 0 else min(config.sh_degree, splats.sh_degree)
    try:
        backend = resolve_backend(config.rasterizer, torch.device("cpu"))
    except ValueError as exc:
        raise InputError(f"Rasterizer '{config.rasterizer}' cannot run here: {exc}.", "Choose 'auto'.") from exc
    means = torch.from_numpy(splats.means)
    quats = torch.from_numpy(splats.quats)
    scales = torch.exp(torch.from_numpy(splats.log_scales))
    opacities = torch.sigmoid(torch.from_numpy(splats.logit_opacities))
    coeffs = torch.from_numpy(np.ascontiguousarray(splats.sh[:, : (degree + 1) ** 2]))
    background = torch.tensor(BACKGROUNDS[config.background], dtype=torch.float32)
    names = [str(n) for n in cams["names"]]
    files = frame_file_names(names)
    ctx.log("info", f"rendering {len(splats)} Gaussians (SH degree {degree}) from {len(names)} cameras with {backend}")
    for i, (name, file) in enumerate(zip(names, files, strict=True)):
        ctx.check_cancelled()
        w0, h0 = int(cams["width"][i]), int(cams["height"][i])
        w, h = output_size(w0, h0, config)
        K = torch.tensor(cams["K"][i], dtype=torch.float32).clone()
        K[0] *= w / w0
        K[1] *= h / h0
        with torch.no_grad():
            rgb, alpha, _ = rasterize(means, quats, scales, opacities, coeffs,
                                      torch.tensor(cams["w2c"][i], dtype=torch.float32)[None], K[None], w, h,
                                      sh_degree=degree, backgrounds=background[None], backend=backend)
        pixels = (rgb[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        if config.background == "transparent":
            pixels = np.concatenate([pixels, (alpha[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)], -1)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        write_bytes_atomic(ctx.dir / file, buffer.getvalue())
        ctx.artifact(f"render:{name}", ctx.dir / file, "png")
        ctx.progress("render", i + 1, len(names), f"{file} ({w}x{h})")
    return {"images": len(names), "gaussians": len(splats), "sh_degree": degree, "rasterizer": backend,
            "files": files}
