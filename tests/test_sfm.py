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
from backend.sfm import pipeline
from tests.conftest import data_path, run_backend

pytest.importorskip("pycolmap")

TEMPLERING_FX = 1520.4  # templeR_par.txt: fx 1520.4, fy 1525.9


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


def median_rotation_error_deg(cameras, truth) -> float:
    """Median angle between estimated and true rotations after aligning the camera centres."""
    names = list(cameras["names"])
    R_est, t_est = cameras["w2c"][:, :3, :3], cameras["w2c"][:, :3, 3]
    R_gt = np.stack([truth[n][1] for n in names])
    t_gt = np.stack([truth[n][2] for n in names])
    centres_est = -np.einsum("nji,nj->ni", R_est, t_est)
    centres_gt = -np.einsum("nji,nj->ni", R_gt, t_gt)
    s, R_align, _ = similarity(centres_est, centres_gt)
    R_aligned = R_est @ R_align.T
    angles = np.degrees(np.arccos(np.clip((np.einsum("nij,nij->n", R_gt, R_aligned) - 1) / 2, -1, 1)))
    return float(np.median(angles))


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
    # Progress per stage, with counts: 47 photos, 47 * 46 / 2 pairs (auto: every pair), 47 registered.
    assert "features found in 47 of 47 photos" in proc.stderr and "matched 1081 pairs" in proc.stderr
    assert "registered 47 of 47 photos" in proc.stderr
    cameras = np.load(tmp_path / "cameras.npz")
    assert cameras["K"].shape == (47, 3, 3) and cameras["w2c"].shape == (47, 4, 4)
    assert set(cameras["width"]) == {640} and set(cameras["height"]) == {480}
    rotation_error = median_rotation_error_deg(cameras, truth)
    focal = cameras["K"][0, 0, 0]
    print(f"median rotation error {rotation_error:.3f} deg, focal {focal:.1f} px (truth {TEMPLERING_FX})")
    assert rotation_error <= 0.3
    assert abs(focal / TEMPLERING_FX - 1) <= 0.01
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
    assert "holds 1 usable photo(s)" in proc.stderr and "at least 2" in proc.stderr and str(photos) in proc.stderr


def test_photos_that_do_not_overlap_say_could_not_register(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        write_png(tmp_path / f"noise_{i}.png", rng.integers(0, 255, (200, 240, 3)))
    proc = run_backend("sfm", "--images", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Could not register" in proc.stderr


@pytest.mark.data
@pytest.mark.slow
def test_templering_with_retrieval_pairs(tmp_path):
    """The large-set matcher (VLAD of the photos' own SIFT, no vocabulary file) on a small set:
    fewer pairs than exhaustive, still every photo and accurate poses."""
    images = data_path("templering")
    proc = run_backend("sfm", "--images", str(images), "--out", str(tmp_path), "--matcher", "retrieval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "manifest.json").read_text())["summary"]
    assert summary["registered"] == 47
    assert "matched 1081 pairs" not in proc.stderr and "pairs of similar photos" in proc.stderr
    cameras = np.load(tmp_path / "cameras.npz")
    assert median_rotation_error_deg(cameras, load_templering_truth(images / "templeR_par.txt")) <= 0.3


@pytest.mark.data
def test_focal_prior_from_exif_or_given(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    photos = data_path("sceaux_castle", "images")
    names = sorted(p.name for p in photos.glob("*.JPG"))[:2]
    settings = pipeline.SfmSettings(max_image_size=320, max_features=256)
    no_progress = lambda *args: None  # noqa: E731

    def extracted(name: str):
        database = tmp_path / name
        pipeline.extract(pycolmap, database, photos, names, settings, no_progress, None, lambda: None)
        return database

    # EXIF: 5.85 mm, 35 mm equivalent 35 mm -> about 2865 px (K.txt says 2905.88).
    focal, source = pipeline.focal_prior_of(pycolmap, extracted("exif.db"), 0.0)
    assert source == "exif" and abs(focal - 2865) < 30
    database = extracted("given.db")
    assert pipeline.focal_prior_of(pycolmap, database, 2900.0) == (2900.0, "given")
    db = pycolmap.Database.open(database)
    cameras = db.read_all_cameras()
    db.close()
    assert len(cameras) == 1 and cameras[0].has_prior_focal_length and cameras[0].params[0] == 2900.0


def test_pair_selection_keeps_similar_photos_and_name_neighbours():
    similarity = np.eye(6)
    similarity[0, 5] = similarity[5, 0] = 0.9  # photo 0 looks like photo 5
    similarity[1, 4] = similarity[4, 1] = 0.8
    pairs = pipeline.select_pairs(similarity, neighbours=1, window=1)
    assert pairs == sorted(set(pairs)) and all(i < j for i, j in pairs)
    assert {(0, 5), (1, 4)} <= set(pairs)  # most similar
    assert {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)} <= set(pairs)  # name order
    assert len(pipeline.select_pairs(np.ones((30, 30)), neighbours=100, window=100)) == 30 * 29 // 2
    assert pipeline.select_pairs(np.ones((1, 1)), 5, 5) == []


def test_vlad_similarity_finds_photos_of_the_same_thing():
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 255, (400, 128)) for _ in range(3)]
    # Two photos of each scene: the same descriptors, jittered, with some of the other's missing.
    photos = [np.clip(scene[rng.permutation(400)[:300]] + rng.integers(-8, 9, (300, 128)), 0, 255).astype(np.uint8)
              for scene in scenes for _ in range(2)]
    similarity = pipeline.vlad_similarity(photos, words=16)
    assert similarity.shape == (6, 6) and np.allclose(np.diag(similarity), 1)
    np.fill_diagonal(similarity, -1)
    assert list(similarity.argmax(1)) == [1, 0, 3, 2, 5, 4]
    assert not pipeline.vlad_similarity([np.zeros((0, 128), np.uint8)] * 3).any()  # no features: no similarity


def test_matcher_and_octave_choices():
    small = [f"frame_{i:04d}.png" for i in range(pipeline.AUTO_EXHAUSTIVE_MAX_PHOTOS)]
    large = [f"frame_{i:04d}.png" for i in range(pipeline.AUTO_EXHAUSTIVE_MAX_PHOTOS + 1)]
    assert pipeline.resolve_matcher("auto", small) == "exhaustive"
    assert pipeline.resolve_matcher("auto", large) == "retrieval"
    assert pipeline.resolve_matcher("sequential", large) == "sequential"
    assert pipeline.resolve_matcher("retrieval", ["a b.jpg", "c.jpg"]) == "exhaustive"  # COLMAP's pair list splits at spaces
    assert pipeline.first_octave(640, 1600) == -1  # small photos: SIFT on the doubled image
    assert pipeline.first_octave(2832, 1600) == 0
    assert pipeline.first_octave(6000, 800) == -1
    assert pipeline.sequential_pair_count(3, 10) == 3


@pytest.mark.data
def test_turned_and_damaged_photos_through_the_cli(tmp_path):
    """A photo stored sideways with an EXIF orientation is solved upright, a damaged file is
    skipped and named, and the camera of the turned photo has the upright size."""
    from PIL import Image

    source = data_path("templering")
    photos = tmp_path / "turned photos é"
    photos.mkdir()
    names = [f"templeR{i:04d}.png" for i in range(20, 32)]
    for name in names[1:]:
        (photos / name).symlink_to(source / name)
    with Image.open(source / names[0]) as image:  # stored turned a quarter left, shown upright by EXIF 6
        exif = Image.Exif()
        exif[0x0112] = 6
        image.convert("RGB").rotate(90, expand=True).save(photos / "templeR0020.jpg", quality=95, exif=exif)
    (photos / "broken.jpg").write_bytes((photos / "templeR0020.jpg").read_bytes()[:2000])
    proc = run_backend("sfm", "--images", str(photos), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "manifest.json").read_text())["summary"]
    assert summary["skipped_files"] == ["broken.jpg"] and "damaged" in summary["skip_reasons"]["broken.jpg"]
    assert summary["registered"] == 12
    cameras = np.load(tmp_path / "out" / "cameras.npz")
    assert set(cameras["width"]) == {640} and set(cameras["height"]) == {480}


def test_photos_of_different_sizes_with_one_shared_camera_are_named(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        write_png(tmp_path / f"a_{i}.png", rng.integers(0, 255, (60, 80, 3)))
    write_png(tmp_path / "odd.png", rng.integers(0, 255, (80, 60, 3)))
    proc = run_backend("sfm", "--images", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "odd.png" in proc.stderr and "shared" in proc.stderr.lower()
