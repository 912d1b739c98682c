# SPDX-License-Identifier: GPL-3.0-or-later
"""Rays, frames, the occupancy grid, sampling and volume rendering of the radiance field,
and a few training steps on a small synthetic scene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.nerf import _kernels
from backend.nerf.field import Field, FieldConfig, NGPField, SceneFrame, load_field, save_field
from backend.nerf.hashgrid import HashGridConfig
from backend.nerf.rays import camera_rays, cameras_from_scene, distort, load_views, undistort
from backend.nerf.reference import volume_render_reference
from backend.nerf.render import (
    OccupancyGrid,
    composite,
    ray_spans,
    render_rays_ngp,
    sample_occupied,
    unit_to_world,
)
from backend.nerf.train import Trainer, TrainSettings, holdout_indices, scene_setup
from backend.sfm.scene import OPENGL_TO_OPENCV, load_scene

needs_numba = pytest.mark.skipif(not _kernels.AVAILABLE, reason="numba is not installed")
TINY_GRID = HashGridConfig(levels=8, log2_table_size=12, base_resolution=4, finest_resolution=64)


# -- a synthetic scene: a coloured sphere seen from all around -------------------------------
def look_at_c2w(eye: np.ndarray) -> np.ndarray:
    """Camera-to-world in Blender/OpenGL axes (looking down -z, +y up) looking at the origin."""
    forward = -eye / np.linalg.norm(eye)
    up = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.99 else np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def sphere_scene(folder: Path, views: int = 24, size: int = 32, radius: float = 0.6, distance: float = 3.0,
                 angle_x: float = 0.7, write_photos: bool = True) -> Path:
    """``transforms.json`` and RGBA photos of a sphere at the origin coloured by its normal."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir(exist_ok=True)
    from PIL import Image

    golden = math.pi * (3 - math.sqrt(5))
    frames = []
    focal = 0.5 * size / math.tan(0.5 * angle_x)
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]], dtype=torch.float64)
    for i in range(views):
        z = 0.9 - 1.6 * (i + 0.5) / views
        r = math.sqrt(1 - z * z)
        eye = distance * np.array([r * math.cos(golden * i), r * math.sin(golden * i), z])
        c2w = look_at_c2w(eye)
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
        if not write_photos:
            continue
        ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        xy = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).double()
        origins, dirs = camera_rays(K, torch.from_numpy(c2w @ OPENGL_TO_OPENCV), xy)
        o, d = origins.double(), dirs.double()
        b = (o * d).sum(-1)
        c = (o * o).sum(-1) - radius**2
        disc = b * b - c
        hit = disc > 0
        t = -b - torch.sqrt(disc.clamp_min(0))
        normal = (o + t[:, None] * d) / radius
        rgb = torch.where(hit[:, None], 0.5 + 0.45 * normal, torch.zeros(1, 3, dtype=torch.float64))
        rgba = torch.cat([rgb, hit[:, None].double()], -1).view(size, size, 4)
        Image.fromarray((rgba.numpy() * 255 + 0.5).astype(np.uint8)).save(folder / "train" / f"r_{i}.png")
    (folder / "transforms.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    return folder / "transforms.json"


def tiny_settings(**overrides) -> TrainSettings:
    values = dict(iterations=60, rays=256, samples=16, grid_resolution=32, grid_cells=1 << 12, hashgrid=TINY_GRID,
                  seed=0)
    values.update(overrides)
    return TrainSettings(**values)


# -- rays ----------------------------------------------------------------------------------
def test_camera_rays_go_through_their_pixels():
    K = torch.tensor([[300.0, 0.0, 64.5], [0.0, 310.0, 40.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    c2w = torch.from_numpy(look_at_c2w(np.array([1.0, -2.0, 0.5])) @ OPENGL_TO_OPENCV)
    xy = torch.tensor([[0.5, 0.5], [64.5, 40.0], [127.5, 79.5]], dtype=torch.float64)
    origins, dirs = camera_rays(K, c2w, xy)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(3))
    points = (origins + 2.5 * dirs).double()
    w2c = torch.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    pixels = (cam[:, :2] / cam[:, 2:]) @ K[:2, :2].T + K[:2, 2]
    torch.testing.assert_close(pixels, xy, atol=1e-4, rtol=0)


@pytest.mark.parametrize("model, coefficients", [
    ("SIMPLE_RADIAL", [0.08]), ("RADIAL", [-0.1, 0.02]), ("OPENCV", [0.1, -0.03, 0.002, -0.001]),
    ("OPENCV_FISHEYE", [0.05, -0.01, 0.002, 0.0]),
])
def test_undistort_inverts_the_lens_model(model, coefficients):
    xy = torch.rand(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    k = np.array(coefficients)
    torch.testing.assert_close(undistort(distort(xy, model, k), model, k), xy, atol=1e-9, rtol=0)


# -- frames --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["box", "contracted"])
def test_the_frame_maps_into_the_unit_cube_and_back(kind):
    frame = SceneFrame(kind, (0.5, -1.0, 2.0), (2.0, 2.0, 2.0))
    points = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3 + 1
    u = frame.to_unit(points)
    if kind == "contracted":
        assert bool(frame.inside(u).all())
    torch.testing.assert_close(unit_to_world(u, frame), points, atol=1e-6, rtol=1e-6)


# -- volume rendering ----------------------------------------------------------------------
def test_composite_matches_the_one_sample_at_a_time_reference():
    g = torch.Generator().manual_seed(2)
    sigmas = torch.rand(50, 24, generator=g) * 5
    rgbs = torch.rand(50, 24, 3, generator=g)
    dts = torch.rand(50, 24, generator=g) * 0.2
    background = torch.tensor([1.0, 0.5, 0.0])
    out = composite(sigmas, rgbs, dts, background)
    rgb, opacity = volume_render_reference(sigmas, rgbs, dts, background)
    torch.testing.assert_close(out["rgb"], rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["opacity"], opacity, rtol=1e-5, atol=1e-6)


# -- sampling ------------------------------------------------------------------------------
def _grid_with_ball(resolution: int, radius: float) -> OccupancyGrid:
    grid = OccupancyGrid(resolution)
    centers = grid.cell_centers() - 0.5
    grid.bits = centers.norm(dim=-1) < radius
    return grid


def _rays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=g)
    origins = origins / origins.norm(dim=-1, keepdim=True) * 4
    dirs = -origins / 4 + 0.3 * torch.randn(n, 3, generator=g)
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


@needs_numba
@pytest.mark.parametrize("kind", ["box", "contracted"])
def test_sampler_kernel_matches_the_pytorch_path(kind):
    frame = SceneFrame(kind, (0.0, 0.0, 0.0), (1.5, 1.5, 1.5))
    grid = _grid_with_ball(32, 0.2 if kind == "contracted" else 0.35)
    origins, dirs = _rays(300, 3)
    spans = ray_spans(origins, dirs, frame, 0.5, 6.0 if kind == "box" else 100.0)
    jitter = torch.rand(300, 16, generator=torch.Generator().manual_seed(4))
    t1, dt1, n1 = sample_occupied(origins, dirs, spans, frame, grid, jitter, n_outer=64, backend="numba")
    t2, dt2, n2 = sample_occupied(origins, dirs, spans, frame, grid, jitter, n_outer=64, backend="torch")
    assert torch.equal(n1, n2) and 0 < int((n1 > 0).sum()) < 300
    torch.testing.assert_close(t1, t2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dt1, dt2, rtol=1e-4, atol=1e-6)


def test_samples_lie_in_occupied_cells_only():
    frame = SceneFrame("box", (0.0, 0.0, 0.0), (1.5, 1.5, 1.5))
    grid = _grid_with_ball(32, 0.3)
    origins, dirs = _rays(400, 5)
    spans = ray_spans(origins, dirs, frame, 0.1, 10.0)
    t, dt, count = sample_occupied(origins, dirs, spans, frame, grid, torch.rand(400, 32))
    hit = count > 0
    points = origins[hit][:, None] + t[hit][..., None] * dirs[hit][:, None]
    u = frame.to_unit(points.reshape(-1, 3))
    cells = (u * 32).long().clamp(0, 31)
    # occupancy is tested at the middle of each fine step (half a cell), so a sample near a
    # cell face may sit just across it
    assert float(grid.bits[(cells[:, 0] * 32 + cells[:, 1]) * 32 + cells[:, 2]].float().mean()) > 0.9
    # each ray's samples cover its occupied length: sum(dt) = occupied fine steps x their length
    assert bool((dt[hit] > 0).all()) and bool((t[hit][:, 1:] >= t[hit][:, :-1]).all())
    assert not bool(dt[~hit].any())


def test_the_grid_empties_where_the_field_has_no_density():
    frame = SceneFrame("box", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    grid = OccupancyGrid(16, cells_per_update=16**3)

    def density(u: torch.Tensor) -> torch.Tensor:  # a ball of radius 0.25 in the unit cube
        return torch.where((u - 0.5).norm(dim=-1) < 0.25, 50.0, 0.0)

    grid.update(density, 0.05, torch.Generator().manual_seed(0))
    inside = (grid.cell_centers() - 0.5).norm(dim=-1) < 0.15
    outside = (grid.cell_centers() - 0.5).norm(dim=-1) > 0.35
    assert bool(grid.bits[inside].all()) and not bool(grid.bits[outside].any())
    # cells no camera sees stay empty
    K = torch.tensor([[[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]]], dtype=torch.float64)
    w2c = torch.linalg.inv(torch.from_numpy(look_at_c2w(np.array([0.0, 0.0, 3.0])) @ OPENGL_TO_OPENCV))[None]
    grid.bits[:] = True
    grid.mark_invisible(frame, K, w2c, [(32, 32)], 0.5)
    assert 0.05 < grid.occupied_fraction < 0.9


def test_pruning_behind_opaque_samples_changes_nothing_visible():
    torch.manual_seed(0)
    config = FieldConfig(hashgrid=TINY_GRID)
    model = NGPField(config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.encoding.table.uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(1))
        model.density_net[-1].weight[0] = model.density_net[-1].weight[0].abs() * 4  # dense: rays saturate
    frame = SceneFrame("box", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    fld = Field(config, model, frame, 0.5, 8.0, (1.0, 1.0, 1.0), OccupancyGrid(16))
    origins, dirs = _rays(200, 6)
    full = render_rays_ngp(fld, origins, dirs, torch.ones(3), 32, min_transmittance=0.0)
    pruned = render_rays_ngp(fld, origins, dirs, torch.ones(3), 32)
    assert int(pruned["samples"]) < int(full["samples"])
    torch.testing.assert_close(pruned["rgb"], full["rgb"], atol=2e-4, rtol=0)


# -- fields on disk, and training ----------------------------------------------------------
def test_a_few_steps_learn_the_sphere_and_the_field_round_trips(tmp_path):
    transforms = sphere_scene(tmp_path / "scene", views=16, size=24)
    scene = load_scene(transforms)
    views = load_views(scene)
    assert views.has_alpha and views.pixels.shape == (16 * 24 * 24, 4)
    frame, near, far, _ = scene_setup(scene, views)
    assert frame.kind == "box" and 0.9 < frame.half_size[0] < 1.5 and near < 2.4 and far > 3.6
    holdout = holdout_indices(16, 1)
    train = [i for i in range(16) if i not in holdout]
    trainer = Trainer(views, tiny_settings(iterations=80), frame, near, far, train, holdout)
    before = trainer.pixels_psnr(holdout, 256)
    trainer.run()
    after = trainer.pixels_psnr(holdout, 256)
    assert trainer.step_count == 80 and after > before + 3, (before, after)
    assert trainer.field.occupancy.occupied_fraction < 0.9
    save_field(tmp_path / "field", trainer.field, trainer.optimizer_state())
    loaded = load_field(tmp_path / "field")
    points = torch.rand(500, 3) * 2.4 - 1.2
    torch.testing.assert_close(loaded.density(points), trainer.field.density(points))
    assert torch.equal(loaded.occupancy.bits, trainer.field.occupancy.bits)
    assert loaded.frame == frame and (loaded.near, loaded.far) == (near, far)
    assert float(loaded.density(torch.tensor([[5.0, 0.0, 0.0]]))[0]) == 0.0  # outside the box


def test_the_original_nerf_trains_too(tmp_path):
    transforms = sphere_scene(tmp_path / "scene", views=8, size=16)
    scene = load_scene(transforms)
    views = load_views(scene)
    frame, near, far, _ = scene_setup(scene, views)
    settings = TrainSettings(kind="mlp", iterations=10, rays=32, samples=8, fine_samples=8, seed=0)
    trainer = Trainer(views, settings, frame, near, far, list(range(8)), [])
    losses = []
    trainer.run(on_step=lambda t, m: losses.append(m["loss"]))
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3])
    cams = cameras_from_scene(scene)
    assert len(cams) == 8
