# SPDX-License-Identifier: GPL-3.0-or-later
"""backend.sfm.photos: which files are photos, EXIF orientation, one size per shared camera,
and the folder COLMAP reads. Every image here is made by the test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from backend.errors import InputError
from backend.sfm import photos as photos_module
from backend.sfm.photos import prepare_photos
from tests.conftest import data_path

# A photo stored as S and shown with EXIF Orientation o looks like U, where S = STORED[o](U)
# (the EXIF 2.32 definitions, written with numpy rather than with Pillow's own table).
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # mirrored left-right
    3: lambda u: u[::-1, ::-1],  # upside down
    4: lambda u: u[::-1],  # mirrored top-bottom
    5: lambda u: u.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda u: np.rot90(u, 1),  # stored a quarter turn anticlockwise; shown turned clockwise
    7: lambda u: u[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda u: np.rot90(u, -1),  # stored a quarter turn clockwise
}


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture ``[height, width, 3] uint8`` with blobs SIFT finds."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((max(height // 12, 2), max(width // 12, 2), 3)) * 255).astype(np.uint8))
    return np.asarray(small.resize((width, height), Image.BICUBIC))


def blocks(width: int = 48, height: int = 64) -> np.ndarray:
    """An image ``[height, width, 3] uint8`` with no symmetry: every turn and mirror differs."""
    u = np.zeros((height, width, 3), np.uint8)
    u[: height // 2, : width // 2] = (220, 30, 30)
    u[: height // 2, width // 2 :] = (30, 220, 30)
    u[height // 2 :, : width // 4] = (30, 30, 220)
    u[height // 2 :, width // 4 :] = (230, 230, 40)
    return u


def exif(orientation: int, focal_mm: float = 4.5, focal_35mm: int = 28) -> Image.Exif:
    tags = Image.Exif()
    tags[ExifTags.Base.Orientation] = orientation
    tags[ExifTags.Base.Make] = "Recon"
    tags[ExifTags.Base.Model] = "Test Camera"
    sub = tags.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.FocalLength] = focal_mm
    sub[ExifTags.Base.FocalLengthIn35mmFilm] = focal_35mm
    return tags


def save_photo(path: Path, upright: np.ndarray, orientation: int = 1, **options) -> Path:
    """``upright`` written as a camera in ``orientation`` stores it, with that EXIF tag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = np.ascontiguousarray(STORED[orientation](upright))
    Image.fromarray(stored).save(path, exif=exif(orientation), quality=options.pop("quality", 100), **options)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_non_photos_and_damaged_files_are_skipped_with_a_reason(tmp_path):
    folder = tmp_path / "shoot"
    save_photo(folder / "a.jpg", texture(64, 48, 1))
    Image.fromarray(texture(64, 48, 2)).save(folder / "b.png")
    (folder / "notes.txt").write_text("taken at noon")
    (folder / "README").write_text("no extension")
    (folder / "text.jpg").write_text("this is not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    whole = save_photo(tmp_path / "whole.jpg", texture(64, 48, 3)).read_bytes()
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    png = folder / "cut.png"
    Image.fromarray(texture(64, 48, 4)).save(png)
    png.write_bytes(png.read_bytes()[:-300])
    Image.fromarray(texture(16, 16, 5)).save(folder / "anim.tif.gif", format="GIF")
    Image.fromarray(texture(16, 16, 6)).save(folder / "gif_named.png", format="GIF")
    (folder / ".hidden.jpg").write_text("ignored, like the sub-folder")
    (folder / "sub").mkdir()
    save_photo(folder / "sub" / "c.jpg", texture(64, 48, 7))

    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=True)

    assert prepared.names == ["a.jpg", "b.png"]
    assert prepared.image_dir == folder  # nothing to turn: COLMAP reads the folder itself
    assert not (tmp_path / "work").exists()
    reasons = {s.name: s.reason for s in prepared.skipped}
    assert list(reasons) == sorted(reasons)
    assert set(reasons) == {"notes.txt", "README", "text.jpg", "empty.png", "cut.jpg", "cut.png", "anim.tif.gif", "gif_named.png"}
    assert "not a photo" in reasons["notes.txt"] and "'.txt'" in reasons["notes.txt"]
    assert "without an extension" in reasons["README"]
    assert "not an image" in reasons["text.jpg"]
    assert reasons["empty.png"] == "empty file"
    assert "damaged or incomplete" in reasons["cut.jpg"] and "truncated" in reasons["cut.jpg"]
    assert "damaged or incomplete" in reasons["cut.png"]
    assert "GIF" in reasons["gif_named.png"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_reaches_colmap_upright(tmp_path, orientation):
    upright = blocks()
    folder = tmp_path / "shoot"
    save_photo(folder / "turned.jpg", upright, orientation)
    save_photo(folder / "plain.jpg", upright, 1)

    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=True)

    turned, plain = {p.name: p for p in prepared.photos}["turned.jpg"], {p.name: p for p in prepared.photos}["plain.jpg"]
    assert (turned.width, turned.height) == (48, 64) == (plain.width, plain.height)
    assert turned.orientation == orientation and turned.source == folder / "turned.jpg"
    assert np.abs(pixels(turned.path) - upright).mean() < 10.0  # JPEG noise at the colour edges; a wrong turn gives ~100
    if orientation == 1:
        assert prepared.image_dir == folder and turned.path == turned.source
        return
    assert prepared.image_dir == tmp_path / "work" / "photos"
    assert turned.path == prepared.image_dir / "turned.jpg"
    assert plain.path.samefile(plain.source)  # a hard link, not a copy
    with Image.open(turned.path) as image:  # the EXIF fields COLMAP's focal prior reads are kept
        tags = image.getexif()
        assert ExifTags.Base.Orientation not in tags
        assert tags[ExifTags.Base.Model] == "Test Camera"
        sub = tags.get_ifd(ExifTags.IFD.Exif)
        assert float(sub[ExifTags.Base.FocalLength]) == 4.5 and sub[ExifTags.Base.FocalLengthIn35mmFilm] == 28


def test_orientation_of_png_and_tiff(tmp_path):
    upright = blocks()
    folder = tmp_path / "shoot"
    save_photo(folder / "a.png", upright, 6)
    save_photo(folder / "b.tif", upright, 8)
    save_photo(folder / "c.tiff", upright, 1)

    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=True)

    assert [(p.name, p.width, p.height) for p in prepared.photos] == [("a.png", 48, 64), ("b.tif", 48, 64), ("c.tiff", 48, 64)]
    for photo in prepared.photos:
        assert np.array_equal(pixels(photo.path), upright), photo.name
        with Image.open(photo.path) as image:
            assert image.size == (48, 64) and image.getexif().get(ExifTags.Base.Orientation, 1) == 1


def test_shared_camera_needs_one_size(tmp_path):
    folder = tmp_path / "shoot"
    for i in range(5):
        save_photo(folder / f"land{i}.jpg", texture(40, 30, i))
    for i in range(4):  # stored landscape like the others, but shown portrait
        save_photo(folder / f"port{i}.jpg", texture(30, 40, 10 + i), orientation=6)
    save_photo(folder / "square.jpg", texture(50, 50, 20))

    with pytest.raises(InputError) as caught:
        prepare_photos(folder, tmp_path / "work", shared_camera=True)

    error = caught.value
    assert "3 sizes" in error.message
    assert "40 x 30 (5 photos)" in error.message
    assert "30 x 40 (4 photos: port0.jpg, port1.jpg, port2.jpg and 1 more)" in error.message
    assert "50 x 50 (1 photo: square.jpg)" in error.message
    assert "Turn off the shared camera" in error.hint
    assert "remove the 5 photos that differ from 40 x 30: port0.jpg, port1.jpg, port2.jpg and 2 more" in error.hint
    assert not (tmp_path / "work").exists()  # nothing written when the checks fail

    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=False)
    assert sorted(prepared.sizes.items()) == [((30, 40), 4), ((40, 30), 5), ((50, 50), 1)]
    assert prepared.image_dir == tmp_path / "work" / "photos"


def test_too_few_photos_and_missing_folder(tmp_path):
    folder = tmp_path / "shoot"
    save_photo(folder / "only.jpg", texture(40, 30))
    (folder / "broken.jpg").write_text("no")
    with pytest.raises(InputError) as caught:
        prepare_photos(folder, tmp_path / "work", shared_camera=True)
    assert "1 usable photo(s)" in caught.value.message
    assert "broken.jpg: not an image" in caught.value.message
    with pytest.raises(InputError, match="does not exist"):
        prepare_photos(tmp_path / "nowhere", tmp_path / "work", shared_camera=True)


def test_unicode_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "Fotos Straße ü" / "día 1 ✓"
    save_photo(folder / "Müller Haus 1.jpg", texture(40, 30, 1), orientation=3)
    save_photo(folder / "Müller Haus 2.jpg", texture(40, 30, 2))
    work = tmp_path / "work ü"

    prepared = prepare_photos(folder, work, shared_camera=True)

    assert prepared.names == ["Müller Haus 1.jpg", "Müller Haus 2.jpg"]
    assert [p.path for p in prepared.photos] == [work / "photos" / name for name in prepared.names]
    assert all(p.path.is_file() for p in prepared.photos)


def test_copies_where_links_fail_and_a_second_run_replaces_the_first(tmp_path, monkeypatch):
    folder = tmp_path / "shoot"
    save_photo(folder / "a.jpg", texture(30, 40, 1), orientation=6)
    save_photo(folder / "b.jpg", texture(30, 40, 2))
    save_photo(folder / "c.jpg", texture(30, 40, 3))
    work = tmp_path / "work"
    prepare_photos(folder, work, shared_camera=True)
    assert (work / "photos" / "c.jpg").stat().st_nlink == 2

    def refuse(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(photos_module.os, "link", refuse)
    (folder / "c.jpg").unlink()
    calls = []
    prepared = prepare_photos(folder, work, shared_camera=True, progress=lambda *args: calls.append(args))

    assert sorted(os.listdir(work / "photos")) == ["a.jpg", "b.jpg"]  # c.jpg of the first run is gone
    b = prepared.photos[1]
    assert b.path.stat().st_nlink == 1 and b.path.read_bytes() == b.source.read_bytes()
    assert {stage for stage, *_ in calls} == {"photos"}
    assert calls[-1][1] == calls[-1][2] == 2


@pytest.mark.data
def test_real_camera_photos(tmp_path):
    folder = data_path("sceaux_castle", "images")
    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=True)
    assert len(prepared.photos) == 11 and prepared.image_dir == folder
    assert prepared.sizes == {(2832, 2128): 11}
    assert [s.name for s in prepared.skipped] == ["K.txt"]


def test_a_50_megapixel_photo(tmp_path):
    """Decoded at 1/8 scale for the check (about 0.1 s); the upright copy takes about 1.5 s
    and 400 MB. COLMAP scales it to max_image_size for features; the camera keeps 8660 x 5774."""
    folder = tmp_path / "shoot"
    big = np.asarray(Image.fromarray(texture(866, 577)).resize((8660, 5774), Image.BILINEAR))
    save_photo(folder / "big.jpg", big, orientation=8, quality=90)
    save_photo(folder / "small.jpg", texture(40, 30))

    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=False)

    photo = prepared.photos[0]
    assert (photo.name, photo.width, photo.height, photo.orientation) == ("big.jpg", 8660, 5774, 8)
    with Image.open(photo.path) as image:
        assert image.size == (8660, 5774)


def test_colmap_extracts_features_from_the_upright_photos(tmp_path):
    """The same view stored upright and stored sideways (Orientation 6): after prepare_photos,
    COLMAP sees one portrait camera and finds the same keypoints in both."""
    pycolmap = pytest.importorskip("pycolmap")
    upright = texture(240, 320, seed=3)
    folder = tmp_path / "photos ü ✓"
    save_photo(folder / "a upright.jpg", upright, 1)
    save_photo(folder / "b sideways.jpg", upright, 6)

    prepared = prepare_photos(folder, tmp_path / "work", shared_camera=True)
    database = tmp_path / "database.db"
    pycolmap.extract_features(
        database, prepared.image_dir, image_names=prepared.names,
        camera_mode=pycolmap.CameraMode.SINGLE, device=pycolmap.Device.cpu,
    )

    with pycolmap.Database.open(database) as db:
        images = {image.name: image for image in db.read_all_images()}
        assert sorted(images) == ["a upright.jpg", "b sideways.jpg"]
        camera = db.read_camera(images["a upright.jpg"].camera_id)
        assert (camera.width, camera.height) == (240, 320)
        assert camera.has_prior_focal_length  # from the EXIF 35 mm focal length, kept in the copy
        keypoints = {name: db.read_keypoints(image.image_id)[:, :2] for name, image in images.items()}
    a, b = keypoints["a upright.jpg"], keypoints["b sideways.jpg"]
    assert len(a) > 50 and abs(len(a) - len(b)) < 0.2 * len(a)
    nearest = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min(1))
    assert np.mean(nearest < 1.0) > 0.8


def test_never_writes_into_the_photo_folder(tmp_path):
    folder = tmp_path / "photos"  # what work_dir/photos would be for work_dir = tmp_path
    save_photo(folder / "a.jpg", texture(30, 40, 1), orientation=6)
    save_photo(folder / "b.jpg", texture(30, 40, 2))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match="choose another work folder"):
        prepare_photos(folder, tmp_path, shared_camera=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
