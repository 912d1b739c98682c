# SPDX-License-Identifier: GPL-3.0-or-later
"""Photos to cameras and points with pycolmap: features, matches, incremental mapping, and a
final bundle adjustment that can refine the principal point (off-centre on real lenses).

Outputs, in OpenCV/COLMAP conventions (pixel centres at half-integers, ``w2c`` maps world
to camera with x right, y down, z forward):

- ``model/``: the COLMAP model, binary;
- ``cameras.npz``: per registered image ``names [n]``, ``K [n, 3, 3]``, ``params [n, p]``
  (the camera model's parameters, NaN-padded), ``distortion [n, p]`` (the model's extra
  parameters, NaN-padded), ``model`` (name), ``w2c [n, 4, 4]``, ``width [n]``, ``height [n]``;
- ``points.ply``: ``x y z`` (float), ``red green blue`` (uchar), ``track_length`` (int),
  ``error`` (float, pixels).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, require

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

CAMERA_MODELS = {  # our names -> COLMAP's
    "simple_pinhole": "SIMPLE_PINHOLE",
    "pinhole": "PINHOLE",
    "simple_radial": "SIMPLE_RADIAL",
    "opencv": "OPENCV",
    "fisheye": "OPENCV_FISHEYE",
}

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message)


@dataclass(frozen=True)
class SfmSettings:
    camera_model: str = "simple_radial"
    shared_camera: bool = True
    matcher: str = "exhaustive"  # or "sequential" (video frames)
    max_image_size: int = 1600
    max_features: int = 8192
    refine_principal_point: bool = True
    refine_distortion: bool = True


@dataclass
class SfmResult:
    reconstruction: object  # pycolmap.Reconstruction
    images: list[str]
    registered: list[str]
    unregistered: list[str]
    skipped: list[str]  # files in the folder that are not photos
    seconds: dict[str, float] = field(default_factory=dict)


def list_photos(folder: Path) -> tuple[list[str], list[str]]:
    """(photo names, other file names) in ``folder``, sorted; sub-folders are ignored."""
    if not folder.is_dir():
        raise InputError(f"The photo folder {folder} does not exist.", "Check the path.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    photos = [p.name for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    return photos, others


@contextmanager
def cancellation(pycolmap, is_cancelled: Callable[[], bool]):
    """A pycolmap CancellationToken that a watcher thread trips when ``is_cancelled()``."""
    token = pycolmap.CancellationToken()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if is_cancelled():
                token.cancel()
                return

    watcher = threading.Thread(target=watch, name="recon-sfm-cancel", daemon=True)
    watcher.start()
    try:
        yield token
    finally:
        done.set()
        watcher.join()


def reconstruct(
    image_dir: Path,
    work_dir: Path,
    settings: SfmSettings,
    progress: Progress,
    is_cancelled: Callable[[], bool],
    check_cancelled: Callable[[], None],
) -> SfmResult:
    pycolmap = require("pycolmap", "Structure-from-Motion")
    image_dir = Path(image_dir)
    photos, others = list_photos(image_dir)
    if len(photos) < 2:
        raise InputError(
            f"{image_dir} holds {len(photos)} photo(s); Structure-from-Motion needs at least 2 overlapping photos.",
            f"Add photos ({', '.join(IMAGE_SUFFIXES)}) taken from different positions around the subject.",
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    database = work_dir / "database.db"
    database.unlink(missing_ok=True)
    seconds: dict[str, float] = {}
    device = pycolmap.Device.cpu

    with cancellation(pycolmap, is_cancelled) as token:
        started = time.perf_counter()
        progress("extract", 0, len(photos), f"finding features in {len(photos)} photos")
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.max_image_size = settings.max_image_size
        extraction.sift.max_num_features = settings.max_features
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = CAMERA_MODELS[settings.camera_model]
        pycolmap.extract_features(
            database, image_dir, image_names=photos,
            camera_mode=pycolmap.CameraMode.SINGLE if settings.shared_camera else pycolmap.CameraMode.PER_IMAGE,
            reader_options=reader, extraction_options=extraction, device=device, cancellation_token=token,
        )
        check_cancelled()
        seconds["extract"] = time.perf_counter() - started
        progress("extract", len(photos), len(photos), "features found")

        started = time.perf_counter()
        progress("match", 0, 1, f"matching ({settings.matcher})")
        if settings.matcher == "sequential":
            pycolmap.match_sequential(database, device=device, cancellation_token=token)
        else:
            pycolmap.match_exhaustive(database, device=device, cancellation_token=token)
        check_cancelled()
        seconds["match"] = time.perf_counter() - started
        progress("match", 1, 1, "matched")

        started = time.perf_counter()
        registered_count = [0]

        def next_image() -> None:
            registered_count[0] += 1
            progress("map", min(registered_count[0] + 1, len(photos)), len(photos), "registering photos")

        options = pycolmap.IncrementalPipelineOptions()
        options.ba_refine_principal_point = False  # refined once at the end, with all views
        maps = pycolmap.incremental_mapping(
            database, image_dir, work_dir / "mapping", options=options,
            next_image_callback=next_image, cancellation_token=token,
        )
        check_cancelled()
        seconds["map"] = time.perf_counter() - started
        if not maps:
            raise InputError(
                f"Could not register the photos in {image_dir}: no two of the {len(photos)} photos overlap enough.",
                "Take photos with about 60 % overlap between neighbours, from positions around the subject.",
            )
        reconstruction = max(maps.values(), key=lambda rec: rec.num_reg_images())

        started = time.perf_counter()
        progress("refine", 0, 1, "final bundle adjustment")
        ba = pycolmap.BundleAdjustmentOptions()
        ba.refine_principal_point = settings.refine_principal_point
        ba.refine_extra_params = settings.refine_distortion
        pycolmap.bundle_adjustment(reconstruction, ba, cancellation_token=token)
        check_cancelled()
        seconds["refine"] = time.perf_counter() - started
        progress("refine", 1, 1, "refined")

    registered = sorted(image.name for image in reconstruction.images.values())
    return SfmResult(
        reconstruction=reconstruction,
        images=photos,
        registered=registered,
        unregistered=sorted(set(photos) - set(registered)),
        skipped=others,
        seconds=seconds,
    )


def cameras_arrays(reconstruction) -> dict[str, np.ndarray]:
    """The ``cameras.npz`` arrays of a reconstruction (one row per registered image, by name)."""
    images = sorted(reconstruction.images.values(), key=lambda image: image.name)
    cameras = [reconstruction.cameras[image.camera_id] for image in images]
    width = max(len(camera.params) for camera in cameras)
    params = np.full((len(images), width), np.nan)
    distortion = np.full((len(images), width), np.nan)
    for row, camera in enumerate(cameras):  # one row per photo (tens to thousands), not per point
        params[row, : len(camera.params)] = camera.params
        extra = np.asarray(camera.params)[list(camera.extra_params_idxs())]
        distortion[row, : len(extra)] = extra
    w2c = np.tile(np.eye(4), (len(images), 1, 1))
    w2c[:, :3, :] = np.stack([image.cam_from_world().matrix() for image in images])
    return {
        "names": np.array([image.name for image in images]),
        "K": np.stack([camera.calibration_matrix() for camera in cameras]),
        "params": params,
        "distortion": distortion,
        "model": np.array([camera.model_name for camera in cameras]),
        "w2c": w2c,
        "width": np.array([camera.width for camera in cameras], dtype=np.int32),
        "height": np.array([camera.height for camera in cameras], dtype=np.int32),
    }


def points_arrays(reconstruction) -> dict[str, np.ndarray]:
    """Sparse points: ``xyz [m, 3]``, ``rgb [m, 3] uint8``, ``track_length [m]``, ``error [m]``.

    pycolmap exposes points one at a time (no bulk accessor), so this reads each once."""
    points = list(reconstruction.points3D.values())
    if not points:
        empty = np.zeros((0, 3))
        return {"xyz": empty, "rgb": empty.astype(np.uint8), "track_length": np.zeros(0, np.int32), "error": np.zeros(0)}
    return {
        "xyz": np.array([p.xyz for p in points], dtype=np.float64),
        "rgb": np.array([p.color for p in points], dtype=np.uint8),
        "track_length": np.array([p.track.length() for p in points], dtype=np.int32),
        "error": np.array([p.error for p in points], dtype=np.float64),
    }
