# SPDX-License-Identifier: GPL-3.0-or-later
"""Splat training and rendering through the entry points a user has: the ``splat`` and
``render-splats`` jobs on the command line, cancel and resume, and bad input, on a small
synthetic capture (Gaussians rendered into RGBA photos with a transforms.json)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend import protocol
from backend.errors import InputError
from backend.jobs.runner import run_job
from backend.sfm.scene import OPENGL_TO_OPENCV, load_scene, write_scene
from backend.splat.ply import read_splats
from backend.splat.rasterize import rasterize
from backend.splat.train import (
    Trainer,
    TrainSettings,
    initial_splats,
    load_views,
    psnr,
    random_points,
    ssim,
    torch_threads,
    undistort,
)
from tests.conftest import data_path, run_backend

WIDTH, HEIGHT, FOCAL = 64, 48, 60.0


def look_at(eye) -> np.ndarray:
    eye = np.asarray(eye, dtype=np.float64)
    z = -eye / np.linalg.norm(eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def ground_truth(seed: int = 0) -> dict:
    """A toy object: 300 coloured Gaussians in a squashed ball."""
    g = torch.Generator().manual_seed(seed)
    n = 300
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.5, 0.4, 0.3])
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 2.6),
        "opacities": 0.6 + 0.4 * torch.rand(n, generator=g),
        "colors": torch.stack([0.5 + 0.5 * torch.tanh(2 * means[:, 0]), torch.rand(n, generator=g),
                               0.5 + 0.5 * torch.tanh(-2 * means[:, 2])], 1),
    }


def write_capture(folder: Path, views: int = 12, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """RGBA photos of :func:`ground_truth` on a ring of cameras and their transforms.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir(exist_ok=True)
    gt = ground_truth()
    frames = []
    for i in range(views):
        angle = 2 * math.pi * i / views
        w2c = look_at((3.0 * math.cos(angle), 3.0 * math.sin(angle), 0.8 + 0.3 * math.sin(3 * angle)))
        K = torch.tensor([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1.0]])
        with torch.no_grad():
            rgb, alpha, _ = rasterize(**gt, viewmats=torch.tensor(w2c, dtype=torch.float32)[None], Ks=K[None],
                                      width=WIDTH, height=HEIGHT)
        # straight (not premultiplied) colour, as PNG stores it
        straight = torch.where(alpha > 1e-4, rgb / alpha.clamp_min(1e-4), torch.zeros_like(rgb)).clamp(0, 1)
        rgba = np.concatenate([straight[0].numpy(), alpha[0].numpy()], -1)
        image = Image.fromarray((rgba * 255 + 0.5).astype(np.uint8))
        if size != (WIDTH, HEIGHT):
            image = image.resize(size)
        image.save(folder / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": (np.linalg.inv(w2c) @ OPENGL_TO_OPENCV).tolist()})
    path = folder / "transforms_train.json"
    path.write_text(json.dumps({"camera_angle_x": 2 * math.atan(WIDTH / (2 * FOCAL)), "frames": frames}))
    return path


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return write_capture(tmp_path_factory.mktemp("capture"))


def test_ssim_and_psnr():
    a = torch.rand(32, 40, 3)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(a, torch.rand(32, 40, 3))) < 0.2
    assert psnr(a, a) > 100
    assert psnr(torch.zeros(8, 8, 3), torch.full((8, 8, 3), 0.1)) == pytest.approx(20.0)


def test_views_scale_intrinsics_and_hold_out(capture):
    views = load_views(load_scene(capture), resolution_scale=0.5, hold_out_every=4)
    assert (views.widths[0], views.heights[0]) == (32, 24)
    assert views.images[0].shape == (24, 32, 3) and views.alphas[0].shape == (24, 32, 1)
    assert float(views.Ks[0, 0, 0]) == pytest.approx(FOCAL / 2)
    assert views.held_out == [0, 4, 8] and len(views.train) == 9


def test_random_points_fall_inside_the_silhouettes(capture):
    views = load_views(load_scene(capture), hold_out_every=0)
    xyz, rgb = random_points(views, 2000, np.random.default_rng(0))
    assert xyz.shape == (2000, 3) and rgb.shape == (2000, 3)
    assert np.abs(xyz).max() < 2.0  # the toy fills about a 1.5-unit ball; the box around it is 3 across
    assert np.abs(xyz.mean(0)).max() < 0.3


def test_training_improves_the_held_out_views(capture):
    views = load_views(load_scene(capture), hold_out_every=4)
    settings = TrainSettings(iterations=300, sh_degree=1, random_points=2000, refine_start=50, refine_every=50,
                             reset_opacity_every=10_000)
    xyz, rgb = random_points(views, settings.random_points, np.random.default_rng(0))
    trainer = Trainer(views, settings, initial_splats(xyz, rgb, settings.sh_degree, settings.init_opacity))
    with torch_threads(1):
        before = trainer.evaluate()["psnr"]
        while not trainer.done():
            trainer.train_step()
        after = trainer.evaluate()["psnr"]
    assert trainer.step == 300
    assert len(trainer) != 2000  # densification cloned, split or pruned
    assert after > before + 3.5, (before, after)


def test_splat_job_cli_end_to_end_then_render(capture, tmp_path):
    out = tmp_path / "job"
    result = run_backend("splat", "--scene", str(capture), "--out", str(out), "--preset", "fast",
                         "--iterations", "150", "--random-points", "1500", "--hold-out-every", "4", timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["iterations"] == 150 and summary["held_out_views"] == 3
    assert summary["psnr_held_out"] > 18.0
    assert summary["rasterizer"] in ("numba", "torch")
    manifest = json.loads((out / "manifest.json").read_text())
    names = [a["name"] for a in manifest["artifacts"]]
    assert names.count("preview") == 1 and "splats" in names and "checkpoint" in names
    splats = read_splats(out / "splats.ply")
    assert len(splats) == summary["gaussians"] and splats.sh_degree == 1
    assert "no points" in (out / "job.log").read_text()  # random start, with a warning

    renders = tmp_path / "renders"
    result = run_backend("render-splats", "--splats", str(out / "splats.ply"), "--cameras", str(capture),
                         "--out", str(renders), "--width", "32")
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in renders.glob("*.png"))
    assert files == sorted(f"r_{i}.png" for i in range(12))
    with Image.open(renders / "r_0.png") as image:
        assert image.size == (32, 24)

    # the same cameras as a Recon job folder (cameras.npz), transparent background
    (tmp_path / "cams").mkdir()
    write_scene(tmp_path / "cams", load_scene(capture))
    result = run_backend("render-splats", "--splats", str(out / "splats.ply"), "--cameras", str(tmp_path / "cams"),
                         "--out", str(tmp_path / "renders2"), "--background", "transparent")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "renders2" / "r_3.png") as image:
        assert image.mode == "RGBA" and image.size == (WIDTH, HEIGHT)
        alpha = np.asarray(image)[..., 3]
    assert alpha.max() > 200 and alpha.min() == 0  # the object, and empty space around it


def run_in_process(kind: str, config: dict, inputs: dict, job_dir: Path, cancel_after: int | None = None):
    """Run a job in this process; with ``cancel_after``, cancel once that many progress events came."""
    cancel = threading.Event()
    seen = []

    def emit(type_, fields):
        seen.append((type_, fields))
        if type_ == protocol.PROGRESS and fields["stage"] == "train" and cancel_after is not None \
                and fields["metrics"].get("iteration", 0) >= cancel_after:
            cancel.set()

    outcome = run_job(kind, config, inputs, "test", job_dir, emit, cancel)
    return outcome, seen


def test_cancel_keeps_the_last_state_and_resume_continues(capture, tmp_path):
    # Far more iterations than run before the cancel lands (progress events come at most 5 a
    # second), so the job is still training when it does, however fast the machine.
    config = {"preset": "fast", "iterations": 1_000_000, "random_points": 1000, "hold_out_every": 4,
              "preview_seconds": 0.5}
    (type_, fields), _ = run_in_process("splat", config, {"scene": str(capture)}, tmp_path / "a", cancel_after=60)
    assert type_ == protocol.CANCELLED
    assert {a["name"] for a in fields["artifacts"]} >= {"splats", "checkpoint", "preview"}
    first = read_splats(tmp_path / "a" / "splats.ply")
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert 60 <= state["step"] < 1_000_000
    assert len(first) == len(state["params"]["means"])

    config["iterations"] = state["step"] + 40
    (type_, fields), _ = run_in_process("splat", config, {"scene": str(capture),
                                                          "resume": str(tmp_path / "a" / "checkpoint.pt")},
                                        tmp_path / "b")
    assert type_ == protocol.RESULT, fields
    assert fields["summary"]["iterations"] == state["step"] + 40


def test_bad_inputs_are_named(tmp_path, monkeypatch):
    capture = write_capture(tmp_path / "ok", views=4)
    # cameras without photos
    meta = json.loads(capture.read_text())
    meta["frames"][1]["file_path"] = "./train/missing"
    meta["frames"][1]["w"], meta["frames"][1]["h"] = WIDTH, HEIGHT
    (tmp_path / "ok" / "broken.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="have no photo: missing"):
        load_views(load_scene(tmp_path / "ok" / "broken.json"))
    # photos of another shape than their cameras
    odd = write_capture(tmp_path / "odd", views=4)
    Image.new("RGB", (50, 50)).save(tmp_path / "odd" / "train" / "r_2.png")
    meta = json.loads(odd.read_text())
    for frame in meta["frames"]:
        frame["w"], frame["h"] = WIDTH, HEIGHT
    odd.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="r_2.png is 50x50, its camera 64x48"):
        load_views(load_scene(odd))
    # too large for memory: the message names the setting to lower
    monkeypatch.setattr("backend.splat.train.available_memory", lambda: 100_000)
    with pytest.raises(InputError, match="resolution_scale"):
        load_views(load_scene(capture))


def test_splat_job_reports_bad_input_on_the_command_line(tmp_path):
    result = run_backend("splat", "--scene", str(tmp_path / "nowhere"), "--out", str(tmp_path / "job"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_lower_resolution_photos_of_the_same_frame_are_accepted(tmp_path):
    """Photos stored at half the cameras' resolution (an images_2 folder) train at that size."""
    capture = write_capture(tmp_path / "half", views=4, size=(WIDTH // 2, HEIGHT // 2))
    meta = json.loads(capture.read_text())
    for frame in meta["frames"]:
        frame["w"], frame["h"] = WIDTH, HEIGHT
    capture.write_text(json.dumps(meta))
    views = load_views(load_scene(capture), resolution_scale=0.5)
    assert views.images[0].shape == (HEIGHT // 2, WIDTH // 2, 3)


@pytest.mark.data
def test_lego_loads_with_alpha_and_white_background():
    path = data_path("lego", "transforms_train.json")
    views = load_views(load_scene(path), resolution_scale=0.125, hold_out_every=10)
    assert len(views.train) == 90 and len(views.held_out) == 10
    assert views.widths[0] == 100 and views.has_alpha


def test_undistort_looks_up_where_the_lens_model_puts_each_pixel():
    """A photo of a lens with k1 = -0.2: the pinhole view samples it at COLMAP's distorted points."""
    h, w = 60, 80
    K = torch.tensor([[70.0, 0, 40.0], [0, 70.0, 30.0], [0, 0, 1]])
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    photo = torch.stack([xs / w, ys / h, torch.zeros_like(xs)], -1)  # colour = where the pixel is
    assert torch.allclose(undistort(photo, K, "SIMPLE_RADIAL", np.array([0.0])), photo, atol=1e-5)
    out = undistort(photo, K, "SIMPLE_RADIAL", np.array([-0.2]))
    y, x = 5, 70  # near a corner: the pinhole pixel (70.5, 5.5) sees the distorted point
    u, v = (70.5 - 40) / 70, (5.5 - 30) / 70
    r = 1 - 0.2 * (u * u + v * v)
    expected = torch.tensor([(70 * u * r + 40) / w, (70 * v * r + 30) / h])
    assert torch.allclose(out[y, x, :2], expected, atol=2e-3)


def test_capabilities_name_the_splat_rasterizer():
    from backend.capabilities import capabilities
    from backend.splat.rasterize import resolve_backend

    caps = capabilities(deep=False)
    expected = resolve_backend("auto", torch.device("cuda" if caps["splat_rasterizer"] == "gsplat" else "cpu"))
    assert caps["splat_rasterizer"] == expected
