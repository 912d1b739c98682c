# SPDX-License-Identifier: GPL-3.0-or-later
"""The photos of a Structure-from-Motion run: which files in a folder are usable photos, their
upright sizes, and a folder that COLMAP can read with every photo upright.

COLMAP (pycolmap 4.2.1) ignores the EXIF Orientation tag: a phone photo stored landscape
with ``Orientation = 6`` reaches feature extraction sideways, with width and height swapped
(measured: the camera is 708 x 532 for a photo that shows 532 x 708; Blender ignores the tag
too). So :func:`prepare_photos` writes an upright copy of each such photo (keeping its other
EXIF fields, so COLMAP's focal-length prior still works) and gives COLMAP a folder in which
the other photos are hard links to the originals. When no photo needs turning, COLMAP reads
the user's folder itself.

COLMAP also reads damaged files without complaint (a JPEG cut in half gives a grey lower half
and features along the cut), so every photo is decoded once here; JPEGs at 1/8 scale, which
reads the whole file at a fraction of the cost (0.1 s and 20 MB for 50 megapixels).
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, require

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
PHOTO_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "TIFF": "TIFF", "BMP": "BMP"}  # Pillow's -> saved as
UPRIGHT = 1  # EXIF Orientation of a photo stored the way it is seen
ORIENTATION_TAG = 0x0112
SWAPS_SIDES = {5, 6, 7, 8}  # orientations stored with width and height exchanged
PREPARED_DIR = "photos"  # under work_dir: the folder COLMAP reads when photos had to be turned
JPEG_QUALITY = 95  # upright copies of JPEGs
LISTED = 3  # photo names an error message lists before "and N more"

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message), as in pipeline.py

# What Pillow raises for a file it cannot read: unidentified or truncated (OSError), broken
# chunks or tags (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, EOFError),
# over its size limit (DecompressionBombError).
_UNREADABLE = (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError, struct.error)


@dataclass(frozen=True)
class Photo:
    """One usable photo."""

    name: str  # its file name; COLMAP and cameras.npz name it so
    source: Path  # the user's file
    path: Path  # the file COLMAP reads: the source itself, a hard link or copy of it, or an upright copy
    width: int  # upright, in pixels
    height: int
    orientation: int  # EXIF Orientation of the source: 1 stored upright, 2-8 turned or mirrored here

    @property
    def turned(self) -> bool:
        return self.orientation != UPRIGHT


@dataclass(frozen=True)
class Skipped:
    """A file in the photo folder that is not used, and why, in words for the user."""

    name: str
    reason: str


@dataclass(frozen=True)
class PreparedPhotos:
    image_dir: Path  # the folder COLMAP reads (pass ``names`` as its image_names: other files may be there)
    photos: tuple[Photo, ...]  # sorted by name
    skipped: tuple[Skipped, ...]  # sorted by name

    @property
    def names(self) -> list[str]:
        return [photo.name for photo in self.photos]

    @property
    def sizes(self) -> Counter:
        """Photos per upright size ``(width, height)``."""
        return Counter((photo.width, photo.height) for photo in self.photos)


def prepare_photos(
    folder: Path,
    work_dir: Path,
    shared_camera: bool,
    progress: Progress | None = None,
    check_cancelled: Callable[[], None] | None = None,
    min_photos: int = 2,
) -> PreparedPhotos:
    """The usable photos in ``folder`` (sub-folders and hidden files are ignored), and a
    folder in which COLMAP sees each of them upright.

    Files that are not photos, or that Pillow cannot decode to the end, are skipped with a
    reason. Photos whose EXIF Orientation is not 1 get an upright copy in
    ``work_dir/photos``, next to hard links (copies where links fail) of the others;
    ``image_dir`` is then that folder, otherwise ``folder`` itself. Nothing is written when
    the checks fail.

    Raises :class:`InputError` when the folder does not exist, when fewer than
    ``min_photos`` photos are usable, and when ``shared_camera`` is on but the photos
    differ in upright size (one COLMAP camera has one size).
    """
    require("PIL.Image", "Reading photos")  # MissingDependency before any work
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"The photo folder {folder} does not exist.", "Check the path.")
    report = progress or (lambda stage, done, total, message: None)
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())

    photos: list[Photo] = []
    skipped: list[Skipped] = []
    report("photos", 0, len(files), f"reading {len(files)} files")
    for done, path in enumerate(files, 1):
        if check_cancelled:
            check_cancelled()
        reason = _not_a_photo(path)
        if reason is None:
            try:
                width, height, orientation = read_photo(path)
            except UnreadablePhoto as exc:
                reason = str(exc)
            else:
                photos.append(Photo(path.name, path, path, width, height, orientation))
        if reason is not None:
            skipped.append(Skipped(path.name, reason))
        report("photos", done, len(files), f"read {path.name}")

    if len(photos) < min_photos:
        raise InputError(
            f"{folder} holds {len(photos)} usable photo(s); Structure-from-Motion needs at least {min_photos} "
            f"overlapping photos.{_skipped_text(skipped)}",
            f"Add photos ({', '.join(PHOTO_SUFFIXES)}) taken from different positions around the subject.",
        )
    if shared_camera:
        check_one_size(photos)
    if not any(photo.turned for photo in photos):
        return PreparedPhotos(folder, tuple(photos), tuple(skipped))
    return _upright_folder(photos, skipped, Path(work_dir) / PREPARED_DIR, report, check_cancelled)


class UnreadablePhoto(Exception):
    """A file with a photo's name that cannot be used; the message is the reason."""


def read_photo(path: Path) -> tuple[int, int, int]:
    """``(width, height, orientation)`` of a photo, width and height upright, after decoding
    it to the end (JPEGs at 1/8 scale). Raises :class:`UnreadablePhoto` with the reason."""
    Image = require("PIL.Image", "Reading photos")
    if path.stat().st_size == 0:
        raise UnreadablePhoto("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # photos of 90-180 megapixels are fine
            with Image.open(path) as image:
                if image.format not in PHOTO_FORMATS:
                    raise UnreadablePhoto(f"a {image.format} image, not a photo format (JPEG, PNG, TIFF or BMP)")
                fmt, (width, height) = image.format, image.size
                orientation = image.getexif().get(ORIENTATION_TAG, UPRIGHT)
                if fmt in ("JPEG", "MPO"):
                    image.draft(None, (max(width // 8, 1), max(height // 8, 1)))
                image.load()
    except Image.DecompressionBombError as exc:
        raise UnreadablePhoto(f"too large to read safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise UnreadablePhoto("not an image: its content is in no image format (damaged, or another kind of file)") from exc
    except PermissionError as exc:
        raise UnreadablePhoto("no permission to read it") from exc
    except _UNREADABLE as exc:
        raise UnreadablePhoto(f"damaged or incomplete image ({exc})") from exc
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = UPRIGHT  # a malformed tag: COLMAP and most viewers show it as stored
    if orientation in SWAPS_SIDES and fmt != "TIFF":  # Pillow opens TIFFs upright already
        width, height = height, width
    return width, height, orientation


def check_one_size(photos: list[Photo]) -> None:
    """Raise :class:`InputError` unless all photos have one upright size (a shared camera
    has one width and height)."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for photo in photos:
        by_size.setdefault((photo.width, photo.height), []).append(photo.name)
    if len(by_size) < 2:
        return
    ranked = sorted(by_size.items(), key=lambda item: (-len(item[1]), item[0]))
    (common_w, common_h), _ = ranked[0]
    groups = "; ".join(
        f"{w} x {h} ({len(names)} photo{'s' if len(names) > 1 else ''}"
        + (f": {_some(names)})" if rank else ")")
        for rank, ((w, h), names) in enumerate(ranked)
    )
    differ = sorted(name for _, names in ranked[1:] for name in names)
    raise InputError(
        f"'Shared camera' needs photos of one size, but these have {len(by_size)} sizes (upright, in pixels): {groups}.",
        f"Turn off the shared camera (--no-shared-camera) to calibrate each photo on its own, or remove the "
        f"{len(differ)} photo{'s that differ' if len(differ) > 1 else ' that differs'} from {common_w} x {common_h}: {_some(differ)}. "
        "Portrait and landscape photos from one camera count as different sizes.",
    )


def _not_a_photo(path: Path) -> str | None:
    if path.suffix.lower() in PHOTO_SUFFIXES:
        return None
    kind = f"'{path.suffix}' file" if path.suffix else "file without an extension"
    return f"not a photo: a {kind} (photos are {', '.join(PHOTO_SUFFIXES)})"


def _upright_folder(photos, skipped, prepared: Path, report, check_cancelled) -> PreparedPhotos:
    """``prepared`` holding an upright copy of each turned photo and a link to each other one."""
    if prepared.resolve() == photos[0].source.parent.resolve():
        raise ValueError(f"The work folder's {PREPARED_DIR}/ is the photo folder {prepared} itself; choose another work folder.")
    prepared.mkdir(parents=True, exist_ok=True)
    for stale in prepared.iterdir():
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
    turned = sum(photo.turned for photo in photos)
    report("photos", 0, len(photos), f"turning {turned} photo(s) upright")
    result = []
    for done, photo in enumerate(photos, 1):
        if check_cancelled:
            check_cancelled()
        target = prepared / photo.name
        if photo.turned:
            write_upright(photo.source, target)
        else:
            link_or_copy(photo.source, target)
        result.append(Photo(photo.name, photo.source, target, photo.width, photo.height, photo.orientation))
        report("photos", done, len(photos), f"{'turned' if photo.turned else 'linked'} {photo.name}")
    return PreparedPhotos(prepared, tuple(result), tuple(skipped))


def write_upright(source: Path, target: Path) -> None:
    """An upright copy of ``source`` at ``target``, in the same format, with the same EXIF
    fields (focal length, camera make and model) less the Orientation tag, and the same
    colour profile. Written to a temporary name and renamed into place."""
    Image = require("PIL.Image", "Reading photos")
    ImageOps = require("PIL.ImageOps", "Reading photos")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(source) as image:
            fmt = PHOTO_FORMATS[image.format]
            upright = ImageOps.exif_transpose(image)  # drops the Orientation tag from its EXIF
    options = {}
    if fmt != "BMP":
        options["exif"] = upright.getexif()
    if upright.info.get("icc_profile"):
        options["icc_profile"] = upright.info["icc_profile"]
    if fmt == "JPEG":
        options["quality"] = JPEG_QUALITY
    partial = target.with_name(f".{target.name}.partial")
    upright.save(partial, format=fmt, **options)
    os.replace(partial, target)


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source``, or a copy where the file system refuses links."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, FAT, no permission to link
        shutil.copy2(source, target)


def _some(names: list[str], listed: int = LISTED) -> str:
    """A few names, then "and N more"."""
    shown = ", ".join(names[:listed])
    return f"{shown} and {len(names) - listed} more" if len(names) > listed else shown


def _skipped_text(skipped: list[Skipped]) -> str:
    if not skipped:
        return ""
    listed = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:LISTED])
    more = f"; and {len(skipped) - LISTED} more" if len(skipped) > LISTED else ""
    return f" Skipped {len(skipped)} file(s): {listed}{more}."
