# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``nerf`` and ``render-nerf`` jobs as a user runs them: the command line end to end
on a small synthetic scene (train, resume, render), cancel, and bad input."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from backend import protocol
from backend.jobs.runner import run_job
from tests.conftest import data_path, run_backend
from tests.test_nerf_render import sphere_scene

TINY = ["--levels", "8", "--log2-table-size", "12", "--base-resolution", "4", "--finest-resolution", "64",
        "--grid-resolution", "32", "--rays", "256", "--samples", "16", "--preview-seconds", "1"]


def test_train_resume_and_render_from_the_command_line(tmp_path):
    transforms = sphere_scene(tmp_path / "scene", views=12, size=24)
    out = tmp_path / "field"
    proc = run_backend("nerf", "--scene", str(transforms), "--out", str(out), "--iterations", "40", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 40 and summary["train_views"] == 11 and summary["holdout_views"] == ["r_6.png"]
    assert np.isfinite(summary["holdout_psnr"]) and summary["holdout_psnr"] > 12
    assert "only 11 view(s) to train on" in proc.stderr  # too few views: a warning, not an error
    meta = json.loads((out / "field.json").read_text())
    assert meta["format"] == "recon-nerf" and meta["model"]["kind"] == "hashgrid"
    assert meta["frame"]["kind"] == "box" and meta["training"]["steps"] == 40
    assert (out / "field.npz").is_file() and (out / "optimizer.npz").is_file()
    with Image.open(out / "preview.png") as preview:
        assert preview.size == (24, 24)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert sorted(a["name"] for a in manifest["artifacts"]) == ["field", "preview"]

    # Running again into the same folder continues from the checkpoint.
    proc = run_backend("nerf", "--scene", str(transforms), "--out", str(out), "--iterations", "50", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 50 and summary["steps_this_run"] == 10

    renders = tmp_path / "renders"
    proc = run_backend("render-nerf", "--field", str(out), "--cameras", str(transforms), "--width", "16",
                       "--out", str(renders), "--background", "transparent")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = json.loads((renders / "renders.json").read_text())["renders"]
    assert [r["file"] for r in listed] == [f"r_{i}.png" for i in range(12)]
    with Image.open(renders / "r_6.png") as image:
        assert image.size == (16, 16) and image.mode == "RGBA"
        alpha = np.asarray(image)[..., 3]
    assert int(alpha[8, 8]) > int(alpha[0, 0]) + 60  # the sphere in the middle, (nearly) nothing in the corner


def test_cancel_keeps_a_checkpoint_to_resume_from(tmp_path):
    transforms = sphere_scene(tmp_path / "scene", views=8, size=16)
    cancel = threading.Event()
    events = []

    def emit(type_, fields):
        events.append((type_, fields))
        if type_ == protocol.PROGRESS and fields["stage"] == "train" and fields["metrics"]["step"] >= 5:
            cancel.set()

    # Far more steps than run before the first progress event (they are at most 5 a second),
    # so the cancel always lands while training, however fast the machine.
    config = {"iterations": 1_000_000, "levels": 8, "log2_table_size": 12, "base_resolution": 4,
              "finest_resolution": 64, "grid_resolution": 32, "rays": 128, "samples": 8}
    type_, _ = run_job("nerf", config, {"scene": str(transforms)}, "job-cancel", tmp_path / "job", emit, cancel)
    assert type_ == protocol.CANCELLED
    meta = json.loads((tmp_path / "job" / "field.json").read_text())
    assert 5 <= meta["training"]["steps"] < 1_000_000
    type_, fields = run_job("nerf", {**config, "iterations": meta["training"]["steps"] + 3},
                            {"scene": str(transforms), "resume_from": str(tmp_path / "job")}, "job-resume",
                            tmp_path / "resumed", lambda *a: None)
    assert type_ == protocol.RESULT, fields
    assert fields["summary"]["steps_this_run"] == 3


def test_cameras_without_photos_are_a_clear_input_error(tmp_path):
    transforms = sphere_scene(tmp_path / "scene", views=6, size=16)
    for photo in (tmp_path / "scene" / "train").glob("r_[0-2].png"):
        photo.unlink()
    meta = json.loads(transforms.read_text())
    meta.update(w=16, h=16)  # sizes given, so the cameras load without their photos
    transforms.write_text(json.dumps(meta))
    proc = run_backend("nerf", "--scene", str(transforms), "--out", str(tmp_path / "out"), "--iterations", "2")
    assert proc.returncode == 2
    assert "3 of the 6 cameras" in proc.stderr and "have no photo: r_0, r_1, r_2" in proc.stderr


def test_render_nerf_needs_a_trained_field(tmp_path):
    transforms = sphere_scene(tmp_path / "scene", views=2, size=8)
    proc = run_backend("render-nerf", "--field", str(tmp_path), "--cameras", str(transforms), "--out",
                       str(tmp_path / "out"))
    assert proc.returncode == 2 and "holds no trained field" in proc.stderr


@pytest.mark.data
@pytest.mark.slow
def test_lego_learns_in_a_few_steps(tmp_path):
    transforms = data_path("lego", "transforms_train.json")
    proc = run_backend("nerf", "--scene", str(transforms), "--out", str(tmp_path), "--resolution-scale", "0.05",
                       "--bound", "1.5", "--near", "2", "--far", "6", "--iterations", "40", "--holdout-views", "2",
                       *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["views"] == 100 and summary["resolution"] == [40, 40]
    assert summary["holdout_psnr"] > 10, summary  # an untrained field: about 7.7 dB
