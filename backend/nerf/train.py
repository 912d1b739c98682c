# SPDX-License-Identifier: GPL-3.0-or-later
"""Training a radiance field from posed photos.

:func:`scene_setup` picks the field's frame (a box around an object, or a contracted
unbounded scene) and near/far from the sparse points or the cameras; :class:`Trainer`
owns the field, its optimisers and the photos and takes one step at a time;
:meth:`Trainer.run` trains for a number of steps or seconds of training (time spent in
callbacks, such as previews, is not counted) and calls back at fixed intervals.

Hash-grid field (Instant-NGP): Adam (lr 1e-2, betas 0.9/0.99, eps 1e-15; the MLPs with
weight decay 1e-6, the hash table with sparse updates: entries that got no gradient are
left alone), a 20-step warm-up, then the rate divided by 3 at 50 %, 75 % and 90 % of the
run; the occupancy grid refreshed every 16 steps (every 4 for the first 256).
Photos with alpha are composited on a random colour per ray while training, which makes
empty space transparent, and on ``background`` for evaluation.

Original NeRF: Adam (lr 5e-4, decaying tenfold over 250,000 steps), 1024 rays, 64 coarse
and 128 fine samples, the coarse and fine colours both in the loss, as nerf-pytorch.

Schedules run on *progress*, the larger of the step fraction and the time fraction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..sfm.scene import Scene
from . import fused
from .cpu import choose_threads, keep_freed_memory
from .field import Field, FieldConfig, NGPField, PENeRF, SceneFrame, build_model
from .hashgrid import HashGridConfig, sparse_adam_step
from .rays import Views, composite_target, focus_point
from .render import OccupancyGrid, reference_step, render_image, render_rays

log = logging.getLogger("recon.nerf")

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
MIN_VIEWS = 20  # fewer training views than this: warn


@dataclass
class TrainSettings:
    """How to train (the job's ``Config`` fills it)."""

    kind: str = "hashgrid"  # "hashgrid" or "mlp"
    iterations: int = 20000
    max_seconds: float = 0.0  # 0: no time limit
    rays: int = 1024  # rays per step
    samples: int = 0  # per ray (hashgrid: in occupied space; mlp: coarse); 0: 32 (hashgrid), 64 (mlp)
    fine_samples: int = 128  # mlp
    lr: float = 0.0  # 0: 1e-2 (hashgrid), 5e-4 (mlp)
    grid_resolution: int = 128
    grid_every: int = 16
    grid_warmup: int = 256  # steps during which the grid is refreshed every 4 steps
    grid_cells: int = 1 << 16  # cells refreshed per update (and half as many occupied ones)
    hashgrid: HashGridConfig = field(default_factory=HashGridConfig)
    background: str = "white"  # evaluation background (and training, for photos without alpha)
    random_background: bool = True  # photos with alpha: a random colour per ray while training
    bf16: bool = False  # mlp: bfloat16 autocast for the networks
    threads: int = 0  # CPU threads; 0: the cores the load average leaves idle, checked every minute
    seed: int = 0

    @property
    def batch_rays(self) -> int:
        return self.rays or 1024

    @property
    def ray_samples(self) -> int:
        return self.samples or (32 if self.kind == "hashgrid" else 64)

    @property
    def learning_rate(self) -> float:
        return self.lr or (1e-2 if self.kind == "hashgrid" else 5e-4)

    def field_config(self) -> FieldConfig:
        return FieldConfig(kind=self.kind, hashgrid=self.hashgrid)


# -- the frame -----------------------------------------------------------------------------
def scene_setup(scene: Scene, views: Views, scene_type: str = "auto", bound: float = 0.0, near: float = 0.0,
                far: float = 0.0) -> tuple[SceneFrame, float, float, str]:
    """The field's frame and near/far, and a sentence on how they were chosen.

    ``object`` (the box): centred on the sparse points (their 2nd to 98th percentiles, 10 %
    margin, a cube) or, without points, on the point the cameras look at, ``bound`` (half the
    side) 0.4 of the median camera distance to it. ``unbounded`` (contracted): the inner
    cube centred on the point the cameras look at, reaching the farthest camera. ``auto``:
    an object when the photos have alpha or every camera is outside the points' box.
    """
    cameras = views.cameras
    centers = cameras.centers()
    xyz = np.asarray(scene.points.get("xyz", np.zeros((0, 3))), np.float64).reshape(-1, 3)
    have_points = len(xyz) >= 8
    lo = hi = None
    if have_points:
        lo, hi = np.percentile(xyz, 2, axis=0), np.percentile(xyz, 98, axis=0)
    if scene_type == "auto":
        outside = have_points and bool(np.all(np.any((centers < lo) | (centers > hi), axis=1)))
        scene_type = "object" if views.has_alpha or outside or not have_points else "unbounded"
    focus = focus_point(cameras)
    if scene_type == "object":
        if have_points and not views.has_alpha:
            center = 0.5 * (lo + hi)
            half = 0.55 * float(np.max(hi - lo))
            how = "a box around the sparse points"
        else:
            center = focus
            half = 0.4 * float(np.median(np.linalg.norm(centers - focus, axis=1)))
            how = "a box around the point the cameras look at"
        if bound > 0:
            half, how = bound, how + f" (half-size {bound:g} as set)"
        frame = SceneFrame("box", tuple(map(float, center)), (half, half, half))
        distances = np.linalg.norm(centers - center, axis=1)
        auto_near = max(1e-3, float(distances.min()) - half * math.sqrt(3))
        auto_far = float(distances.max()) + half * math.sqrt(3)
    else:
        center = focus
        radius = float(np.max(np.linalg.norm(centers - focus, axis=1))) * 1.1 or 1.0
        if bound > 0:
            radius = bound
        frame = SceneFrame("contracted", tuple(map(float, center)), (radius, radius, radius))
        auto_near, auto_far = 0.01 * radius, 1000.0 * radius
        how = "an unbounded scene, contracted beyond the cameras' reach"
    near = near if near > 0 else auto_near
    far = far if far > 0 else auto_far
    if far <= near:
        raise InputError(f"far ({far:g}) must be beyond near ({near:g}).", "Fix 'near' and 'far', or set both to 0.")
    return frame, float(near), float(far), how


# -- training ------------------------------------------------------------------------------
def psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-12))


class Trainer:
    """One field being trained on ``views`` (``train`` and ``holdout``: view indices)."""

    def __init__(self, views: Views, settings: TrainSettings, frame: SceneFrame, near: float, far: float,
                 train: list[int], holdout: list[int], resume: Field | None = None,
                 optimizer_state: dict[str, np.ndarray] | None = None, device: str | torch.device = "cpu") -> None:
        if not train:
            raise InputError("No views are left to train on.", "Hold out fewer views.")
        self.views = views
        self.settings = settings
        self.train_views = torch.tensor(train, dtype=torch.long)
        self.holdout = list(holdout)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.background = torch.tensor(BACKGROUNDS.get(settings.background, (1.0, 1.0, 1.0)))
        self.step_count = 0
        self.train_seconds = 0.0
        self.threads = torch.get_num_threads()
        self._threads_checked = -math.inf
        if resume is not None:
            self.field = resume
            self.step_count = int(resume.info.get("steps", 0))
            self.train_seconds = float(resume.info.get("train_seconds", 0.0))
        else:
            config = settings.field_config()
            model = build_model(config, seed=settings.seed, device=self.device)
            occupancy = None
            if config.kind == "hashgrid":
                occupancy = OccupancyGrid(settings.grid_resolution, cells_per_update=settings.grid_cells,
                                          seed=settings.seed)
                cams = views.cameras
                occupancy.mark_invisible(frame, cams.Ks[train], cams.w2c[train],
                                         [(cams.widths[i], cams.heights[i]) for i in train], near)
            self.field = Field(config, model, frame, near, far, tuple(self.background.tolist()), occupancy)
        self._setup_optimizers(optimizer_state)

    # -- optimisers --
    @property
    def is_ngp(self) -> bool:
        return self.field.config.kind == "hashgrid"

    def _sparse_table(self) -> bool:
        model = self.field.model
        return isinstance(model, NGPField) and model.encoding.table.device.type == "cpu"

    def _setup_optimizers(self, state: dict[str, np.ndarray] | None) -> None:
        model = self.field.model
        lr = self.settings.learning_rate
        if self.is_ngp:
            if self._sparse_table():
                table = model.encoding.table
                mlp = [p for n, p in model.named_parameters() if not n.startswith("encoding.")]
                self.table_moments = [torch.zeros_like(table), torch.zeros_like(table)]
            else:
                mlp = list(model.parameters())
                self.table_moments = None
            self.optimizer = torch.optim.Adam(mlp, lr=lr, betas=(0.9, 0.99), eps=1e-15, weight_decay=1e-6)
        else:
            self.table_moments = None
            self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
        if state:
            self._load_optimizer_state(state)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"step": np.array(self.step_count)}
        for i, group_state in enumerate(self.optimizer.state.values()):
            for key, value in group_state.items():
                arrays[f"adam.{i}.{key}"] = torch.as_tensor(value).detach().cpu().numpy()
        if self.table_moments is not None:
            arrays["table.exp_avg"] = self.table_moments[0].numpy()
            arrays["table.exp_avg_sq"] = self.table_moments[1].numpy()
        return arrays

    def _load_optimizer_state(self, arrays: dict[str, np.ndarray]) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            keys = {k.split(".", 2)[2]: v for k, v in arrays.items() if k.startswith(f"adam.{i}.")}
            if keys:
                self.optimizer.state[p] = {k: torch.from_numpy(np.array(v)).to(p.device if v.ndim else "cpu")
                                           for k, v in keys.items()}
        if self.table_moments is not None and "table.exp_avg" in arrays:
            self.table_moments[0].copy_(torch.from_numpy(arrays["table.exp_avg"]))
            self.table_moments[1].copy_(torch.from_numpy(arrays["table.exp_avg_sq"]))

    def progress(self) -> float:
        s = self.settings
        fraction = self.step_count / max(1, s.iterations)
        if s.max_seconds > 0:
            fraction = max(fraction, self.train_seconds / s.max_seconds)
        return min(1.0, fraction)

    def current_lr(self) -> float:
        base = self.settings.learning_rate
        if self.is_ngp:
            warm = min(1.0, 0.01 + 0.99 * self.step_count / 20)
            p = self.progress()
            return base * warm * (0.33 ** sum(p >= m for m in (0.5, 0.75, 0.9)))
        return base * 0.1 ** (self.step_count / 250_000)

    # -- one step --
    def step(self) -> dict[str, float]:
        """One optimisation step; returns ``loss``, ``psnr`` (of the batch) and ``samples``."""
        started = time.perf_counter()
        s = self.settings
        fld = self.field
        if self.is_ngp and self.step_count % (s.grid_every if self.step_count >= s.grid_warmup else 4) == 0:
            self.update_grid()
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        origins, dirs, pixels, _ = self.views.sample(self.train_views, s.batch_rays, self.generator)
        if self.views.has_alpha and s.random_background:
            background = torch.rand(origins.shape[0], 3, generator=self.generator)
        else:
            background = self.background.expand(origins.shape[0], 3)
        target = composite_target(pixels, background).to(self.device)
        origins, dirs, background = origins.to(self.device), dirs.to(self.device), background.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if fused.available(fld):  # the CPU step with its backward written out (same gradients, faster)
            jitter = torch.rand(origins.shape[0], s.ray_samples, generator=self.generator)
            out = fused.loss_and_grads(fld, origins, dirs, background, target, s.ray_samples, jitter,
                                       threads=self.threads)
            value = out["loss"]
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16 and not self.is_ngp
                                and self.device.type == "cpu"):
                out = render_rays(fld, origins, dirs, background, s.ray_samples, s.fine_samples, self.generator)
            loss = F.mse_loss(out["rgb"].float(), target)
            total = loss + (F.mse_loss(out["rgb_coarse"].float(), target) if "rgb_coarse" in out else 0.0)
            total.backward()
            value = float(loss.detach())
        self.optimizer.step()
        if self.table_moments is not None:
            table = fld.model.encoding.table
            if table.grad is not None:
                sparse_adam_step(table, table.grad, *self.table_moments, self.step_count + 1, lr)
        self.step_count += 1
        self.train_seconds += time.perf_counter() - started
        return {"loss": value, "psnr": psnr(value), "samples": float(out["samples"]), "lr": lr}

    def update_grid(self) -> None:
        grid = self.field.occupancy
        model = self.field.model

        def density(u: Tensor) -> Tensor:
            return model.density(u.to(self.device))

        grid.update(density, reference_step(self.field.frame, grid.resolution), self.generator)

    # -- evaluation --
    @torch.no_grad()
    def render_view(self, view: int, check_cancelled: Callable[[], None] | None = None) -> dict[str, Tensor]:
        cams = self.views.cameras
        origins, dirs = cams.rays(view)
        s = self.settings
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16 and not self.is_ngp
                            and self.device.type == "cpu"):
            return render_image(self.field, origins.to(self.device), dirs.to(self.device), cams.heights[view],
                                cams.widths[view], self.background, s.ray_samples, s.fine_samples,
                                check_cancelled=check_cancelled)

    def view_psnr(self, view: int, check_cancelled: Callable[[], None] | None = None) -> tuple[float, Tensor]:
        """PSNR of view ``view`` rendered whole over the evaluation background, and the image ``[H, W, 3]``."""
        image = self.render_view(view, check_cancelled)["rgb"].clamp(0, 1)
        truth = self.views.image(view, self.background)
        return psnr(float(F.mse_loss(image, truth))), image

    @torch.no_grad()
    def pixels_psnr(self, views: list[int], pixels_per_view: int, seed: int = 1234) -> float:
        """The mean over ``views`` of each one's PSNR over the same ``pixels_per_view`` random
        pixels of it (a fraction of a full render's cost; the mean squared error of a
        subset is an unbiased estimate of the image's)."""
        generator = torch.Generator().manual_seed(seed)
        cams = self.views.cameras
        values = []
        s = self.settings
        for v in views:
            n = cams.widths[v] * cams.heights[v]
            local = torch.randperm(n, generator=generator)[:pixels_per_view]
            xy = torch.stack([(local % cams.widths[v]).double() + 0.5, (local // cams.widths[v]).double() + 0.5], -1)
            origins, dirs = cams.rays(v, xy)
            truth = composite_target(self.views.pixels[self.views.offsets[v] + local], self.background)
            errors = 0.0
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16 and not self.is_ngp):
                for start in range(0, len(local), 1 << 14):
                    sl = slice(start, start + (1 << 14))
                    out = render_rays(self.field, origins[sl].to(self.device), dirs[sl].to(self.device),
                                      self.background, s.ray_samples, s.fine_samples)
                    errors += float(((out["rgb"].float().cpu().clamp(0, 1) - truth[sl]) ** 2).sum())
            values.append(psnr(errors / max(truth.numel(), 1)))
        return float(np.mean(values)) if values else math.nan

    # -- the loop --
    def run(
        self,
        max_steps: int | None = None,
        max_seconds: float | None = None,
        callbacks: list[tuple[float, Callable[[Trainer], None]]] = (),
        check_cancelled: Callable[[], None] | None = None,
        on_step: Callable[[Trainer, dict], None] | None = None,
    ) -> None:
        """Train until ``max_steps`` (default: the settings' iterations) or ``max_seconds`` of
        training time (default: the settings' limit). ``callbacks``: ``(every_seconds, fn)``
        called when that much training time has passed since its last call."""
        max_steps = self.settings.iterations if max_steps is None else max_steps
        max_seconds = self.settings.max_seconds if max_seconds is None else max_seconds
        last = [self.train_seconds for _ in callbacks]
        with keep_freed_memory(self.device.type == "cpu"):
            while self.step_count < max_steps and (max_seconds <= 0 or self.train_seconds < max_seconds):
                if check_cancelled is not None:
                    check_cancelled()
                if self.device.type == "cpu" and time.monotonic() - self._threads_checked > 60:
                    self._threads_checked = time.monotonic()
                    # once training, this process's own threads are in the load average too
                    self.threads = choose_threads(self.settings.threads, busy=self.step_count > 0)
                metrics = self.step()
                if not math.isfinite(metrics["loss"]):
                    raise FloatingPointError(f"the loss became {metrics['loss']} at step {self.step_count}")
                if on_step is not None:
                    on_step(self, metrics)
                for i, (every, fn) in enumerate(callbacks):
                    if self.train_seconds - last[i] >= every:
                        last[i] = self.train_seconds
                        fn(self)

    def snapshot_info(self) -> dict:
        return {"steps": self.step_count, "train_seconds": round(self.train_seconds, 3),
                "views": len(self.views.cameras), "train_views": int(self.train_views.numel()),
                "holdout_views": [self.views.cameras.names[i] for i in self.holdout], "threads": self.threads,
                "settings": {k: v for k, v in vars(self.settings).items() if k != "hashgrid"}}


def holdout_indices(n_views: int, count: int) -> list[int]:
    """``count`` views spread evenly over ``n_views`` (none when it would leave fewer than 2 to train on)."""
    if count <= 0 or n_views - count < 2:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, n_views - 1, count + 2)[1:-1]})[:count]


def check_views(n_train: int, warn: Callable[[str], None]) -> None:
    if n_train < MIN_VIEWS:
        warn(f"only {n_train} view(s) to train on: a radiance field needs many views around the subject "
             f"(50 to 100 is typical; fewer than {MIN_VIEWS} gives floaters and blur where no photo looks)")


def is_pe(fld: Field) -> bool:
    return isinstance(fld.model, PENeRF)
