# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``splat``: train 3D Gaussian splats from posed photos (Kerbl et al. 2023).

Reads the cameras and photos with ``load_scene`` (a Recon ``sfm``/``import`` job folder, a
COLMAP model or a ``transforms.json``), starts from the scene's points (random points in
the cameras' bounds when it has none) and writes ``splats.ply`` (the standard 3DGS layout),
``checkpoint.pt`` (to resume from), ``preview.png`` (refreshed every few seconds while
training) and, in the summary, the held-out PSNR, the number of Gaussians and the seconds.
Cancelling keeps the last state: ``splats.ply`` and ``checkpoint.pt`` are written first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..config import option, path_input
from ..errors import Cancelled, InputError, OutOfMemory
from .runner import JobContext

KIND = "splat"

# Named compositions of settings; a setting left at 0 (-1 for the SH degree) takes the preset's.
PRESETS = {
    "fast": {"iterations": 2000, "resolution_scale": 0.5, "sh_degree": 1, "max_gaussians": 100_000},
    "default": {"iterations": 7000, "resolution_scale": 1.0, "sh_degree": 3, "max_gaussians": 300_000},
    "quality": {"iterations": 30000, "resolution_scale": 1.0, "sh_degree": 3, "max_gaussians": 1_000_000},
}
EVAL_EVERY = 0.1  # held-out PSNR at every tenth of the training, and at its end


@dataclass(frozen=True)
class Config:
    """Settings of splat training. Zero (or -1) means: the preset's value."""

    preset: str = option("default", "Named settings: fast (a quick look), default, quality (slow)",
                         tuple(PRESETS))
    iterations: int = option(0, "Training steps (0: the preset's: fast 2000, default 7000, quality 30000)",
                             minimum=0)
    resolution_scale: float = option(0.0, "Train on the photos scaled by this (0: the preset's: fast 0.5, else 1)",
                                     minimum=0.0)
    sh_degree: int = option(-1, "Spherical-harmonics degree for view-dependent colour, 0-3 (-1: the preset's)",
                            (-1, 0, 1, 2, 3))
    max_gaussians: int = option(0, "Stop adding Gaussians at this many (0: the preset's: 100k, 300k, 1M)",
                                minimum=0)
    max_minutes: float = option(0.0, "Finish within this many minutes of training, whatever the iterations "
                                "(0: no limit)", minimum=0.0)
    background: str = option("auto", "Background of the renders, behind photos with transparency (auto: white "
                             "for photos with alpha, else black; random: a new colour each step)",
                             ("auto", "white", "black", "random"))
    hold_out_every: int = option(10, "Every n-th photo is kept out of training to measure quality (0: none)",
                                 minimum=0)
    random_points: int = option(50_000, "Gaussians to start from when the scene has no points", minimum=100)
    preview_seconds: float = option(5.0, "Refresh preview.png this often while training (seconds)", minimum=0.5)
    rasterizer: str = option("auto", "Rasterizer: auto (gsplat on CUDA, else numba kernels, else PyTorch)",
                             ("auto", "numba", "torch", "gsplat"))
    seed: int = option(0, "Random seed")


@dataclass(frozen=True)
class Inputs:
    scene: str = path_input("posed photos: a Recon sfm/import job folder, a COLMAP model, or a transforms.json")
    resume: str = path_input("a checkpoint.pt of an earlier splat job on the same scene to continue", required=False)


def effective(config: Config) -> dict:
    """The settings after the preset fills the ones left at 0 (or -1)."""
    preset = PRESETS[config.preset]
    return {
        "iterations": config.iterations or preset["iterations"],
        "resolution_scale": config.resolution_scale or preset["resolution_scale"],
        "sh_degree": config.sh_degree if config.sh_degree >= 0 else preset["sh_degree"],
        "max_gaussians": config.max_gaussians or preset["max_gaussians"],
    }


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..sfm.scene import load_scene
    from ..splat.ply import write_splats
    from ..splat.train import (
        Trainer,
        TrainSettings,
        initial_splats,
        load_checkpoint,
        load_views,
        random_points,
        save_checkpoint,
        torch_threads,
    )

    if not inputs.scene:
        raise InputError("No scene was given.", "Pass --scene with a job folder, a COLMAP model or a transforms.json.")
    chosen = effective(config)
    ctx.progress("load", 0, 1, "reading the cameras and photos")
    scene = load_scene(inputs.scene)
    views = load_views(scene, chosen["resolution_scale"], config.hold_out_every, ctx.check_cancelled)
    ctx.log("info", f"{len(views.names)} photos at {views.widths[0]}x{views.heights[0]}: {len(views.train)} to train on, "
                    f"{len(views.held_out)} held out")
    settings = TrainSettings(
        iterations=chosen["iterations"], max_seconds=60.0 * config.max_minutes, sh_degree=chosen["sh_degree"],
        max_gaussians=chosen["max_gaussians"], background=config.background, random_points=config.random_points,
        seed=config.seed, backend=config.rasterizer,
    )
    ctx.progress("load", 1, 1, "photos loaded")

    state = load_checkpoint(inputs.resume) if inputs.resume else None
    if state is not None:
        if list(state["views"]) != views.names:
            raise InputError(f"Checkpoint {inputs.resume} was trained on other photos than {inputs.scene}.",
                             "Resume with the scene it was trained on.")
        trainer = Trainer(views, settings, _checkpoint_splats(state))
        trainer.load_state_dict(state)
        ctx.log("info", f"resuming at iteration {trainer.step} with {len(trainer)} Gaussians")
    else:
        points = scene.points
        if len(points["xyz"]) == 0:
            ctx.log("warning", f"{inputs.scene} has no points: starting from {config.random_points} random points "
                               "in the cameras' bounds")
            xyz, rgb = random_points(views, config.random_points, np.random.default_rng(config.seed))
            source = "random"
        else:
            xyz, rgb = np.asarray(points["xyz"], np.float64), np.asarray(points["rgb"], np.float64) / 255.0
            source = "points"
        trainer = Trainer(views, settings, initial_splats(xyz, rgb, settings.sh_degree, settings.init_opacity))
        ctx.log("info", f"starting from {len(trainer)} Gaussians ({source}); rasterizer: {trainer.backend}")

    def write_state() -> None:
        write_splats(ctx.dir / "splats.ply", trainer.splats())
        ctx.artifact("splats", ctx.dir / "splats.ply", "ply")
        save_checkpoint(ctx.dir / "checkpoint.pt", trainer)
        ctx.artifact("checkpoint", ctx.dir / "checkpoint.pt", "pt")

    def write_preview() -> None:
        from ..protocol import write_bytes_atomic

        write_bytes_atomic(ctx.dir / "preview.png", trainer.preview_png())
        ctx.artifacts[:] = [a for a in ctx.artifacts if a["name"] != "preview"]  # one entry, refreshed
        ctx.artifact("preview", ctx.dir / "preview.png", "png")

    metrics: dict = {}
    history: list[dict] = []
    next_eval = EVAL_EVERY
    last_preview = time.monotonic()
    started = time.monotonic()
    def train_loop() -> None:
        nonlocal metrics, next_eval, last_preview
        while not trainer.done():
            ctx.check_cancelled()
            step = trainer.train_step()
            p = trainer.progress()
            if p >= next_eval or trainer.done():
                metrics = trainer.evaluate()
                history.append({"iteration": trainer.step, "train_seconds": round(trainer.seconds, 2),
                                "gaussians": len(trainer), "psnr": round(metrics["psnr"], 3)})
                next_eval = (math.floor(p / EVAL_EVERY) + 1) * EVAL_EVERY
            if time.monotonic() - last_preview >= config.preview_seconds:
                write_preview()
                last_preview = time.monotonic()
            psnr_text = f", held-out PSNR {metrics['psnr']:.2f} dB" if metrics else ""
            ctx.progress(
                "train", round(1000 * p), 1000,
                f"iteration {trainer.step}, loss {step['loss']:.4f}, {len(trainer)} Gaussians{psnr_text}",
                {"iteration": trainer.step, "loss": step["loss"], "gaussians": len(trainer),
                 **({"psnr": metrics["psnr"]} if metrics else {})},
            )

    try:
        with torch_threads(1):
            train_loop()
    except Cancelled:
        ctx.log("info", f"cancelled at iteration {trainer.step}: writing splats.ply and checkpoint.pt")
        write_state()
        write_preview()
        raise
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "memory" not in str(exc).lower():
            raise
        raise OutOfMemory(f"Ran out of memory with {len(trainer)} Gaussians: {exc}",
                          "Lower 'max_gaussians' or 'resolution_scale'.") from exc
    ctx.progress("write", 0, 1, "writing splats.ply")
    with torch_threads(1):
        write_state()
        write_preview()
        final = trainer.evaluate()
        train_metrics = trainer.evaluate(views.train[:: max(1, len(views.train) // 10)])
    ctx.progress("write", 1, 1, "done")
    return {
        "gaussians": len(trainer),
        "iterations": trainer.step,
        "train_seconds": round(trainer.seconds, 2),
        "wall_seconds": round(time.monotonic() - started, 2),
        "psnr_held_out": round(final["psnr"], 3) if views.held_out else None,
        "ssim_held_out": round(final["ssim"], 4) if views.held_out else None,
        "psnr_train": round(train_metrics["psnr"], 3),
        "held_out_views": len(views.held_out),
        "train_views": len(views.train),
        "resolution": [views.widths[0], views.heights[0]],
        "sh_degree": settings.sh_degree,
        "settings": {**chosen, "preset": config.preset, "max_minutes": config.max_minutes,
                     "background": trainer.settings.background},
        "rasterizer": trainer.backend,
        "history": history,
    }


def _checkpoint_splats(state: dict):
    from ..splat.ply import Splats

    p = state["params"]
    return Splats(p["means"].numpy(), p["quats"].numpy(), p["log_scales"].numpy(), p["logit_opacities"].numpy(),
                  np.concatenate([p["sh0"].numpy(), p["shN"].numpy()], 1))
