# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m backend sfm`` on real photos and on bad input (groundwork of the SfM issue:
the backend job; the Blender import comes next)."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from backend.geometry.ply import read_ply
from tests.conftest import data_path, run_backend

pytest.importorskip("pycolmap")


def load_templering_truth(path):
    truth = {}
    for line in path.read_text().splitlines()[1:]:
        words = line.split()
        if len(words) == 22:
            values = np.array(words[1:], float)
            truth[words[0]] = (values[:9].reshape(3, 3), values[9:18].reshape(3, 3), values[18:])
    return truth


def similarity(src, dst):
    """Umeyama: (s, R, t) minimising |dst - (s R src + t)|."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xs**2).sum(1).mean()
    return s, R, mu_d - s * R @ mu_s


@pytest.mark.data
@pytest.mark.slow
def test_templering_all_registered_with_accurate_poses(tmp_path):
    images = data_path("templering")
    truth = load_templering_truth(images / "templeR_par.txt")
    proc = run_backend("sfm", "--images", str(images), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "manifest.json").read_text())["summary"]
    assert summary["registered"] == 47 and summary["unregistered"] == []
    assert set(summary["skipped_files"]) == {"README_upstream_middlebury.txt", "templeR_ang.txt", "templeR_par.txt"}
    assert summary["mean_reprojection_error_px"] < 0.5
    cameras = np.load(tmp_path / "cameras.npz")
    assert cameras["K"].shape == (47, 3, 3) and cameras["w2c"].shape == (47, 4, 4)
    assert set(cameras["width"]) == {640} and set(cameras["height"]) == {480}
    names = list(cameras["names"])
    R_est, t_est = cameras["w2c"][:, :3, :3], cameras["w2c"][:, :3, 3]
    R_gt = np.stack([truth[n][1] for n in names])
    t_gt = np.stack([truth[n][2] for n in names])
    centres_est = -np.einsum("nji,nj->ni", R_est, t_est)
    centres_gt = -np.einsum("nji,nj->ni", R_gt, t_gt)
    s, R_align, _ = similarity(centres_est, centres_gt)
    R_aligned = R_est @ R_align.T
    angles = np.degrees(np.arccos(np.clip((np.einsum("nij,nij->n", R_gt, R_aligned) - 1) / 2, -1, 1)))
    print(f"median rotation error {np.median(angles):.3f} deg, focal {cameras['K'][0, 0, 0]:.1f} px (truth 1520.4)")
    assert np.median(angles) <= 0.3
    # The principal point is refined: the truth is (302.3, 246.9), 18 px off the centre.
    assert np.abs(cameras["K"][0, :2, 2] - [302.32, 246.87]).max() < 5
    points = read_ply(tmp_path / "points.ply")["vertex"]
    assert {"x", "y", "z", "red", "green", "blue", "track_length", "error"} <= set(points)
    assert len(points["x"]) == summary["points"] > 1000 and (points["track_length"] >= 2).all()


def write_png(path, rgb: np.ndarray) -> None:
    """A minimal RGB PNG writer for test photos."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].astype(np.uint8).tobytes() for row in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_fewer_than_two_photos_is_refused(tmp_path):
    photos = tmp_path / "my photos é"  # unicode and spaces in the path
    photos.mkdir()
    write_png(photos / "only.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
    (photos / "notes.txt").write_text("not a photo")
    proc = run_backend("sfm", "--images", str(photos), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "holds 1 photo(s)" in proc.stderr and "at least 2" in proc.stderr and str(photos) in proc.stderr


def test_photos_that_do_not_overlap_say_could_not_register(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        write_png(tmp_path / f"noise_{i}.png", rng.integers(0, 255, (200, 240, 3)))
    proc = run_backend("sfm", "--images", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Could not register" in proc.stderr
