# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``nerf``: a radiance field trained from posed photos.

The scene is anything ``load_scene`` reads: a Recon ``sfm``/``import`` job folder, a
COLMAP model (photos in an ``images`` folder beside or above it) or a ``transforms.json``.
The output folder is the field: ``field.json`` (what it is, its frame, near/far,
background, how it was trained), ``field.npz`` (parameters and occupancy grid),
``optimizer.npz`` (to resume) and ``preview.png`` (a held-out view, refreshed every few
seconds while training). Progress reports the held-out PSNR. Cancelling saves a
checkpoint first; running again into the same folder (or with ``--resume-from``)
continues from it, with the settings it was trained with.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import option, path_input
from ..errors import Cancelled, InputError
from .runner import JobContext

KIND = "nerf"


@dataclass(frozen=True)
class Config:
    """Settings of the radiance field and its training."""

    field: str = option("hashgrid", "Field: Instant-NGP's hash grid, or the original NeRF's positional-encoding MLP "
                        "(slow on the CPU; the benchmark's baseline)", ("hashgrid", "mlp"))
    resolution_scale: float = option(1.0, "Train on the photos scaled by this factor (0.25: a quarter of the width)",
                                     minimum=0.01)
    max_minutes: float = option(10.0, "Stop after this many minutes of training (0: no limit)", minimum=0.0)
    iterations: int = option(0, "Stop after this many steps (0: 20000 for hashgrid, 200000 for mlp)", minimum=0)
    rays: int = option(1024, "Rays per step", minimum=1)
    samples: int = option(0, "Samples per ray (hashgrid: spread over the occupied cells; mlp: the coarse ones); "
                          "0: 32 for hashgrid, 64 for mlp", minimum=0)
    fine_samples: int = option(128, "mlp: importance samples per ray for the fine network", minimum=0)
    lr: float = option(0.0, "Learning rate (0: 1e-2 for hashgrid, 5e-4 for mlp)", minimum=0.0)
    levels: int = option(16, "hashgrid: resolution levels", minimum=1)
    features_per_level: int = option(2, "hashgrid: features per level", minimum=1)
    log2_table_size: int = option(19, "hashgrid: log2 of the hash table's entries per level", minimum=4)
    base_resolution: int = option(16, "hashgrid: grid resolution of the coarsest level", minimum=2)
    finest_resolution: int = option(2048, "hashgrid: grid resolution of the finest level (across the field's box)",
                                    minimum=2)
    grid_resolution: int = option(128, "hashgrid: occupancy grid cells per axis", minimum=8)
    scene_type: str = option("auto", "object: a box around the subject; unbounded: everything, distant parts "
                             "contracted; auto: object for photos with alpha or cameras all around the points",
                             ("auto", "object", "unbounded"))
    bound: float = option(0.0, "Half-size of the object's box, or the unbounded scene's inner radius, in scene "
                          "units (0: from the points or cameras)", minimum=0.0)
    near: float = option(0.0, "Nearest distance along a ray, scene units (0: from the cameras and the box)",
                         minimum=0.0)
    far: float = option(0.0, "Farthest distance along a ray (0: from the cameras and the box)", minimum=0.0)
    background: str = option("white", "Background behind the field (photos with alpha are composited on it)",
                             ("white", "black"))
    holdout_views: int = option(1, "Photos held out of training to report PSNR on (0: none)", minimum=0)
    preview_seconds: float = option(10.0, "Refresh preview.png and the held-out PSNR this often (training seconds)",
                                    minimum=1.0)
    checkpoint_seconds: float = option(60.0, "Save a checkpoint this often (training seconds)", minimum=1.0)
    resume: bool = option(True, "Continue from the checkpoint in the output folder when there is one")
    seed: int = option(0, "Random seed")
    threads: int = option(0, "CPU threads (0: the cores other processes leave idle, checked every minute)",
                          minimum=0)
    device: str = option("auto", "Compute device", ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class Inputs:
    scene: str = path_input("posed photos: a Recon sfm/import job folder, a COLMAP model or a transforms.json")
    resume_from: str = path_input("a field folder to continue training (its checkpoint and settings)", required=False)


def settings_from_config(config: Config):
    from ..nerf.hashgrid import HashGridConfig
    from ..nerf.train import TrainSettings

    iterations = config.iterations or (20000 if config.field == "hashgrid" else 200000)
    return TrainSettings(
        kind=config.field, iterations=iterations, max_seconds=60.0 * config.max_minutes, rays=config.rays,
        samples=config.samples, fine_samples=config.fine_samples, lr=config.lr,
        grid_resolution=config.grid_resolution, background=config.background, seed=config.seed,
        threads=config.threads, hashgrid=HashGridConfig(levels=config.levels, features=config.features_per_level,
                                log2_table_size=config.log2_table_size, base_resolution=config.base_resolution,
                                finest_resolution=config.finest_resolution),
    )


def _resume_folder(ctx: JobContext, config: Config, inputs: Inputs) -> Path | None:
    from ..nerf.field import FIELD_JSON, FIELD_NPZ

    if inputs.resume_from:
        folder = Path(inputs.resume_from)
        if not (folder / FIELD_JSON).is_file() or not (folder / FIELD_NPZ).is_file():
            raise InputError(f"{folder} holds no field checkpoint ({FIELD_JSON} and {FIELD_NPZ}).",
                             "Give the output folder of an earlier 'nerf' job, or leave --resume-from out.")
        return folder
    if config.resume and (ctx.dir / FIELD_JSON).is_file() and (ctx.dir / FIELD_NPZ).is_file():
        return ctx.dir
    return None


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    import torch

    from ..nerf.field import OPTIMIZER_NPZ, load_field, read_field_json, save_field
    from ..nerf.train import Trainer, TrainSettings, check_views, holdout_indices, scene_setup
    from ..sfm.scene import load_scene
    from .deform import resolve_device

    if not inputs.scene:
        raise InputError("No posed photos were given.", "Pass --scene with a Recon job folder, a COLMAP model or a "
                         "transforms.json.")
    device = resolve_device(config.device)
    resume_dir = _resume_folder(ctx, config, inputs)
    settings = settings_from_config(config)
    resume_field = optimizer_state = None
    if resume_dir is not None:
        meta = read_field_json(resume_dir)
        saved = meta.get("training", {}).get("settings", {})
        known = {k: v for k, v in saved.items() if k in TrainSettings.__dataclass_fields__ and k != "hashgrid"}
        # the run continues as it was set up; only its length may change
        settings = TrainSettings(**{**known, "hashgrid": settings.hashgrid, "iterations": settings.iterations,
                                    "max_seconds": settings.max_seconds, "kind": meta["model"]["kind"]})

    ctx.progress("load", 0, 1, "reading the photos")
    scene = load_scene(inputs.scene)
    from ..nerf.rays import load_views

    views = load_views(scene, config.resolution_scale, ctx.check_cancelled)
    n_views = len(views.cameras)
    holdout = holdout_indices(n_views, config.holdout_views)
    train = [i for i in range(n_views) if i not in holdout]
    check_views(len(train), lambda message: ctx.log("warning", message))
    if resume_dir is not None:
        resume_field = load_field(resume_dir, device)
        if (resume_dir / OPTIMIZER_NPZ).is_file():
            with np.load(resume_dir / OPTIMIZER_NPZ) as data:
                optimizer_state = {k: data[k] for k in data.files}
        frame, near, far = resume_field.frame, resume_field.near, resume_field.far
        how = f"resumed from {resume_dir} at step {resume_field.info.get('steps', 0)}"
        ctx.log("info", how)
    else:
        frame, near, far, how = scene_setup(scene, views, config.scene_type, config.bound, config.near, config.far)
        ctx.log("info", f"field frame: {how}; near {near:.4g}, far {far:.4g}")
    ctx.progress("load", 1, 1, f"{n_views} photos, {len(train)} to train on")

    trainer = Trainer(views, settings, frame, near, far, train, holdout, resume_field, optimizer_state, device)
    trainer.field.info = {**trainer.field.info, "scene": str(Path(inputs.scene).resolve()), "frame_choice": how}
    preview_view = holdout[0] if holdout else train[0]
    state = {"psnr": math.nan, "psnr_view": views.cameras.names[preview_view], "started": time.perf_counter()}

    def checkpoint(t: Trainer) -> None:
        t.field.info.update(t.snapshot_info())
        t.field.info["holdout_psnr"] = None if math.isnan(state["psnr"]) else round(state["psnr"], 3)
        save_field(ctx.dir, t.field, t.optimizer_state())
        announce(ctx, "field", ctx.dir / "field.json", "json")

    def preview(t: Trainer) -> None:
        state["psnr"] = write_preview(ctx, t, preview_view, bool(holdout))

    def on_step(t: Trainer, metrics: dict) -> None:
        held = f", held-out PSNR {state['psnr']:.2f} dB" if not math.isnan(state["psnr"]) else ""
        ctx.progress("train", int(1000 * t.progress()), 1000,
                     f"step {t.step_count}, {t.train_seconds / 60:.1f} min, batch PSNR {metrics['psnr']:.2f} dB{held}",
                     {"loss": metrics["loss"], "psnr_batch": metrics["psnr"],
                      "psnr_holdout": None if math.isnan(state["psnr"]) else state["psnr"],  # JSON has no NaN
                      "step": t.step_count, "samples": metrics["samples"]})

    started_at = trainer.step_count
    try:
        if resume_field is not None:
            preview(trainer)
        trainer.run(callbacks=[(config.preview_seconds, preview), (config.checkpoint_seconds, checkpoint)],
                    check_cancelled=ctx.check_cancelled, on_step=on_step)
    except Cancelled:
        ctx.log("info", f"cancelled at step {trainer.step_count}: saving a checkpoint to resume from")
        checkpoint(trainer)
        raise
    except FloatingPointError as exc:
        raise InputError(f"Training diverged: {exc}.", "Lower 'lr' (for example to half its default).") from exc

    ctx.progress("evaluate", 0, max(1, len(holdout)), "rendering the held-out views")
    holdout_psnr = []
    for k, view in enumerate(holdout):
        value, _ = trainer.view_psnr(view, ctx.check_cancelled)
        holdout_psnr.append(value)
        ctx.progress("evaluate", k + 1, len(holdout), f"{views.cameras.names[view]}: {value:.2f} dB")
    if holdout_psnr:
        state["psnr"] = float(np.mean(holdout_psnr))
    write_preview(ctx, trainer, preview_view, bool(holdout), compute_psnr=False)
    checkpoint(trainer)
    summary = {
        "field": settings.kind,
        "steps": trainer.step_count,
        "steps_this_run": trainer.step_count - started_at,
        "train_seconds": round(trainer.train_seconds, 2),
        "views": n_views,
        "train_views": len(train),
        "holdout_views": [views.cameras.names[i] for i in holdout],
        "holdout_psnr": round(float(np.mean(holdout_psnr)), 3) if holdout_psnr else None,
        "holdout_psnr_per_view": [round(v, 3) for v in holdout_psnr],
        "resolution": [views.cameras.widths[0], views.cameras.heights[0]],
        "frame": trainer.field.frame.to_dict(),
        "near": near, "far": far,
        "occupied_fraction": (round(trainer.field.occupancy.occupied_fraction, 4)
                              if trainer.field.occupancy is not None else None),
        "device": str(device),
        "compute_path": compute_path(trainer),
        "torch_threads": torch.get_num_threads(),
    }
    return summary


def announce(ctx: JobContext, name: str, path: Path, fmt: str) -> None:
    """An artifact event for a file written again (a preview, a checkpoint); the manifest lists it once."""
    ctx.artifacts[:] = [a for a in ctx.artifacts if a["name"] != name]
    ctx.artifact(name, path, fmt)


def compute_path(trainer) -> str:
    from ..nerf import _kernels, fused
    from ..nerf.field import NGPField, TcnnNGP

    model = trainer.field.model
    if isinstance(model, TcnnNGP):
        return "tiny-cuda-nn"
    if isinstance(model, NGPField):
        return fused.path_name() if _kernels.AVAILABLE and model.encoding.table.device.type == "cpu" else "PyTorch"
    return "PyTorch (positional-encoding MLP)"


def write_preview(ctx: JobContext, trainer, view: int, held_out: bool, compute_psnr: bool = True) -> float:
    """Render ``view`` (at most 400 pixels wide) into ``preview.png``; return its PSNR (full
    size views only, else the PSNR over 4096 of its pixels)."""
    import io

    import torch
    from PIL import Image

    from ..protocol import write_bytes_atomic

    cams = trainer.views.cameras
    value = math.nan
    if compute_psnr:
        value = trainer.pixels_psnr([view], 4096)
    width = min(cams.widths[view], 400)
    if width == cams.widths[view]:
        image = trainer.render_view(view, ctx.check_cancelled)["rgb"]
    else:
        from ..nerf.render import render_image

        small = cams.resized(width, None)
        origins, dirs = small.rays(view)
        image = render_image(trainer.field, origins, dirs, small.heights[view], small.widths[view],
                             trainer.background, trainer.settings.ray_samples, trainer.settings.fine_samples,
                             check_cancelled=ctx.check_cancelled)["rgb"]
    pixels = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    write_bytes_atomic(ctx.dir / "preview.png", buffer.getvalue())
    announce(ctx, "preview", ctx.dir / "preview.png", "png")
    label = "held-out" if held_out else "training"
    if compute_psnr:
        ctx.log("info", f"step {trainer.step_count}: {label} view {cams.names[view]} PSNR {value:.2f} dB")
    return value
