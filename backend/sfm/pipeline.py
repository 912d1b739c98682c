# SPDX-License-Identifier: GPL-3.0-or-later
"""Photos to cameras and points with pycolmap: features, matches, incremental mapping, and a
final robust bundle adjustment that refines the principal point (off-centre on real lenses).

Outputs, in OpenCV/COLMAP conventions (pixel centres at half-integers, ``w2c`` maps world
to camera with x right, y down, z forward):

- ``model/``: the COLMAP model, binary;
- ``cameras.npz``: per registered image ``names [n]``, ``K [n, 3, 3]``, ``params [n, p]``
  (the camera model's parameters, NaN-padded), ``distortion [n, p]`` (the model's extra
  parameters, NaN-padded), ``model`` (name), ``w2c [n, 4, 4]``, ``width [n]``, ``height [n]``;
- ``points.ply``: ``x y z`` (float), ``red green blue`` (uchar), ``track_length`` (int),
  ``error`` (float, pixels).

Defaults, measured with ``bench/sfm.py`` and pycolmap directly on 2 CPU cores (templeRing:
47 photos of 640 x 480 with ground-truth poses; Sceaux castle: 11 photos of 6 MP):

- SIFT upsamples small photos (COLMAP's ``first_octave = -1``) but not large ones: on
  templeRing the finer features halve the rotation error (0.27-0.31 deg without); on 6 MP
  photos scaled to 1600 px they take 2.7x the extraction time for the same registrations
  and focal length.
- One orientation per keypoint and a ratio test of 0.75 (COLMAP: 2 and 0.8): an eighth
  fewer descriptors and fewer chance matches to verify; matching takes half the CPU time
  (templeRing 31 -> 15 CPU s) with the same poses.
- Fewer, shorter global bundle adjustments while mapping (ratio 1.3, 2 refinements, local
  1): a third less mapping time (templeRing 8.2 -> 5.3 CPU s), the same poses after the
  final adjustment.
- The final bundle adjustment uses a Cauchy loss (0.5 px): the mapper's own adjustments use
  a squared loss, and the matches they keep (up to its 4 px filter) pull the focal length
  and distortion. templeRing: median rotation error 0.21 -> 0.13 deg, focal error
  1.05 -> 0.5 %. Repeating it (or filtering and adjusting again) changes nothing more.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, require

CAMERA_MODELS = {  # our names -> COLMAP's
    "simple_pinhole": "SIMPLE_PINHOLE",
    "pinhole": "PINHOLE",
    "simple_radial": "SIMPLE_RADIAL",
    "opencv": "OPENCV",
    "fisheye": "OPENCV_FISHEYE",
}
MATCHERS = ("auto", "exhaustive", "sequential", "retrieval")

# Feature extraction.
UPSAMPLE_MAX_SIDE = 1024  # SIFT doubles photos whose longer side (after max_image_size) is at most this
SIFT_ORIENTATIONS = 1  # orientations per keypoint (COLMAP: 2)
EXTRACT_PROGRESS_STEPS = 10  # photos are extracted in about this many batches, to report progress

# Matching.
MATCH_MAX_RATIO = 0.75  # Lowe's ratio test (COLMAP: 0.8)
AUTO_EXHAUSTIVE_MAX_PHOTOS = 100  # "auto": every pair up to this many photos, retrieval above
RETRIEVAL_NEIGHBOURS = 20  # "retrieval": each photo is matched with its most similar photos ...
RETRIEVAL_NAME_WINDOW = 10  # ... and with this many photos before and after it in name order
RETRIEVAL_WORDS = 64  # VLAD centres of the global descriptor
RETRIEVAL_DESCRIPTORS_PER_PHOTO = 1000  # SIFT descriptors per photo that go into it
RETRIEVAL_SAMPLE = 50_000  # descriptors the centres are fitted to
MATCH_PAIRS_PER_BATCH = 500  # "retrieval": pairs per pycolmap call (one progress step each)
# pycolmap checks its cancellation token between blocks: exhaustive matching of 47 photos in
# one block (COLMAP: 50 photos) answers a cancel only at its end; blocks of 16 photos answer
# within a sixth of it, for 4 % more CPU time.
EXHAUSTIVE_BLOCK_PHOTOS = 16
IMPORTED_BLOCK_PAIRS = 100  # the same for a list of pairs (COLMAP: 1225)

# Mapping and the final adjustment.
BA_GLOBAL_RATIO = 1.3  # global adjustment after the model grew by 30 % (COLMAP: 10 %)
BA_GLOBAL_MAX_REFINEMENTS = 2  # (COLMAP: 5)
BA_LOCAL_MAX_REFINEMENTS = 1  # (COLMAP: 2)
FINAL_LOSS_SCALE_PX = 0.5  # Cauchy loss of the final bundle adjustment
FINAL_MAX_ITERATIONS = 30  # 100 gives the same poses (templeRing) in 3.5x the time
FILTER_MAX_ERROR_PX = 4.0  # after it, observations off by more are dropped (the mapper's threshold)

Progress = Callable[[str, int, int, str], None]  # (stage, done, total, message)


@dataclass(frozen=True)
class SfmSettings:
    camera_model: str = "simple_radial"
    shared_camera: bool = True
    matcher: str = "auto"  # one of MATCHERS
    max_image_size: int = 1600
    max_features: int = 8192
    refine_principal_point: bool = True
    refine_distortion: bool = True
    focal_length_px: float = 0.0  # start value of the focal length; 0: from EXIF where present


@dataclass
class SfmResult:
    reconstruction: object  # pycolmap.Reconstruction
    images: list[str]
    registered: list[str]
    unregistered: list[str]
    skipped: list[str]  # files in the folder that are not usable photos
    skip_reasons: dict[str, str] = field(default_factory=dict)  # file name -> why, in words for the user
    image_dir: Path | None = None  # where COLMAP read the photos (upright copies of turned ones)
    seconds: dict[str, float] = field(default_factory=dict)
    matcher: str = ""  # the matcher that ran ("auto" resolved)
    pairs: int = 0  # photo pairs matched (sequential: an estimate)
    focal_prior_px: float | None = None  # the start value of the focal length, where one was known
    focal_prior_source: str = "none"  # "given" (focal_length_px), "exif", or "none" (COLMAP's 1.2 x longer side)


def cpu_count() -> int:
    """CPU cores this process may use (pycolmap's ``num_threads = -1`` uses them all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


@contextmanager
def cancelled_as(check_cancelled: Callable[[], None]):
    """A pycolmap call stopped by its CancellationToken raises InterruptedError; this turns it
    into the job's own cancellation (``check_cancelled()`` raises Cancelled)."""
    try:
        yield
    except InterruptedError:
        check_cancelled()
        raise


def reconstruct(
    image_dir: Path,
    work_dir: Path,
    settings: SfmSettings,
    progress: Progress,
    is_cancelled: Callable[[], bool],
    check_cancelled: Callable[[], None],
) -> SfmResult:
    from .photos import prepare_photos

    pycolmap = require("pycolmap", "Structure-from-Motion")
    if settings.matcher not in MATCHERS:
        raise InputError(f"Unknown matcher '{settings.matcher}'.", f"Use one of: {', '.join(MATCHERS)}.")
    # Unreadable files skipped, turned photos made upright, one size checked for a shared camera.
    prepared = prepare_photos(Path(image_dir), work_dir, settings.shared_camera, progress, check_cancelled)
    image_dir, photos = prepared.image_dir, prepared.names
    work_dir.mkdir(parents=True, exist_ok=True)
    database = work_dir / "database.db"
    database.unlink(missing_ok=True)
    seconds: dict[str, float] = {}

    with cancellation(pycolmap, is_cancelled) as token, cancelled_as(check_cancelled):
        started = time.perf_counter()
        extract(pycolmap, database, image_dir, photos, settings, progress, token, check_cancelled)
        focal_prior, focal_source = focal_prior_of(pycolmap, database, settings.focal_length_px)
        seconds["extract"] = time.perf_counter() - started

        started = time.perf_counter()
        matcher = resolve_matcher(settings.matcher, photos)
        pairs = match(pycolmap, database, work_dir, photos, matcher, progress, token, check_cancelled)
        seconds["match"] = time.perf_counter() - started

        started = time.perf_counter()
        reconstruction = incremental_map(pycolmap, database, image_dir, work_dir, photos, progress, token, check_cancelled)
        seconds["map"] = time.perf_counter() - started

        started = time.perf_counter()
        progress("refine", 0, 1, "final bundle adjustment")
        refine(pycolmap, reconstruction, settings, token)
        check_cancelled()
        seconds["refine"] = time.perf_counter() - started
        progress("refine", 1, 1, "refined")

    registered = sorted(image.name for image in reconstruction.images.values())
    return SfmResult(
        reconstruction=reconstruction,
        images=photos,
        registered=registered,
        unregistered=sorted(set(photos) - set(registered)),
        skipped=[skip.name for skip in prepared.skipped],
        skip_reasons={skip.name: skip.reason for skip in prepared.skipped},
        image_dir=image_dir,
        seconds=seconds,
        matcher=matcher,
        pairs=pairs,
        focal_prior_px=focal_prior,
        focal_prior_source=focal_source,
    )


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------


def longest_side(image_dir: Path, names: list[str]) -> int:
    """The longest side in pixels among the photos (read from their headers; 0 if none reads)."""
    Image = require("PIL.Image", "Reading photos")
    longest = 0
    for name in names:
        try:
            with Image.open(image_dir / name) as image:
                longest = max(longest, *image.size)
        except (OSError, ValueError, SyntaxError):  # unreadable: COLMAP reports it, and it adds no size
            continue
    return longest


def first_octave(longest: int, max_image_size: int) -> int:
    """SIFT's first octave: -1 (the photo doubled) when the photo SIFT sees is small."""
    seen = min(longest, max_image_size) if longest else max_image_size
    return -1 if seen <= UPSAMPLE_MAX_SIDE else 0


def extraction_options(pycolmap, settings: SfmSettings, longest: int):
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = -1  # every core
    options.max_image_size = settings.max_image_size
    options.sift.max_num_features = settings.max_features
    options.sift.max_num_orientations = SIFT_ORIENTATIONS
    options.sift.first_octave = first_octave(longest, settings.max_image_size)
    return options


def extract(pycolmap, database: Path, image_dir: Path, photos: list[str], settings: SfmSettings, progress: Progress,
            token, check_cancelled: Callable[[], None]) -> None:
    """SIFT features of every photo into ``database``, in batches (one progress step each);
    with a shared camera, the first batch's camera is reused by the others."""
    options = extraction_options(pycolmap, settings, longest_side(image_dir, photos))
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = CAMERA_MODELS[settings.camera_model]
    mode = pycolmap.CameraMode.SINGLE if settings.shared_camera else pycolmap.CameraMode.PER_IMAGE
    # Batches of a multiple of the core count (one photo per core at a time).
    cores = cpu_count()
    batch = cores * max(1, math.ceil(len(photos) / EXTRACT_PROGRESS_STEPS / cores))
    progress("extract", 0, len(photos), f"finding features in {len(photos)} photos")
    for start in range(0, len(photos), batch):
        names = photos[start:start + batch]
        pycolmap.extract_features(
            database, image_dir, image_names=names, camera_mode=mode, reader_options=reader,
            extraction_options=options, device=pycolmap.Device.cpu, cancellation_token=token,
        )
        check_cancelled()
        if settings.shared_camera and reader.existing_camera_id < 0:
            db = pycolmap.Database.open(database)
            try:
                cameras = db.read_all_cameras()
            finally:
                db.close()
            if cameras:
                reader.existing_camera_id = cameras[0].camera_id
        done = min(start + batch, len(photos))
        progress("extract", done, len(photos), f"features found in {done} of {len(photos)} photos")


def focal_prior_of(pycolmap, database: Path, focal_length_px: float) -> tuple[float | None, str]:
    """Set ``focal_length_px`` (> 0) as every camera's focal length prior; otherwise report the
    prior COLMAP read from EXIF (focal length with its sensor database, or the 35 mm
    equivalent). Returns ``(focal in pixels or None, "given" | "exif" | "none")``; without a
    prior COLMAP starts from 1.2 x the longer side. Bundle adjustment refines it either way."""
    db = pycolmap.Database.open(database)
    try:
        cameras = db.read_all_cameras()
        if focal_length_px > 0:
            for camera in cameras:
                params = np.array(camera.params, dtype=np.float64)
                params[list(camera.focal_length_idxs())] = focal_length_px
                camera.params = params
                camera.has_prior_focal_length = True
                db.update_camera(camera)
            return float(focal_length_px), "given"
        priors = [camera.mean_focal_length() for camera in cameras if camera.has_prior_focal_length]
    finally:
        db.close()
    if priors:
        return float(np.median(priors)), "exif"
    return None, "none"


# ---------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------


def resolve_matcher(matcher: str, photos: list[str]) -> str:
    """``auto``: every pair for small sets, retrieval (plus name-order neighbours) above.
    Retrieval hands COLMAP a pair list, which cannot name photos with white space in their
    names: such sets match every pair."""
    if matcher == "auto":
        matcher = "exhaustive" if len(photos) <= AUTO_EXHAUSTIVE_MAX_PHOTOS else "retrieval"
    if matcher == "retrieval" and any(len(name.split()) != 1 for name in photos):
        return "exhaustive"
    return matcher


def matching_options(pycolmap):
    options = pycolmap.FeatureMatchingOptions()
    options.num_threads = -1  # every core
    options.sift.max_ratio = MATCH_MAX_RATIO
    return options


def sequential_pair_count(photos: int, overlap: int) -> int:
    """Pairs COLMAP's sequential matcher visits with quadratic overlap (before de-duplication)."""
    count = 0
    for i in range(photos):
        partners = {i + d for d in range(1, overlap + 1)} | {i + 2**k for k in range(overlap)}
        count += sum(1 for j in partners if j < photos)
    return count


def match(pycolmap, database: Path, work_dir: Path, photos: list[str], matcher: str, progress: Progress, token,
          check_cancelled: Callable[[], None]) -> int:
    """Match the photo pairs ``matcher`` selects (with geometric verification); returns the pair count."""
    options = matching_options(pycolmap)
    device = pycolmap.Device.cpu
    if matcher == "exhaustive":
        pairs = len(photos) * (len(photos) - 1) // 2
        progress("match", 0, pairs, f"matching all {pairs} pairs of photos")
        pairing = pycolmap.ExhaustivePairingOptions()
        pairing.block_size = EXHAUSTIVE_BLOCK_PHOTOS
        pycolmap.match_exhaustive(database, matching_options=options, pairing_options=pairing, device=device,
                                  cancellation_token=token)
        check_cancelled()
        progress("match", pairs, pairs, f"matched {pairs} pairs")
        return pairs
    if matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairs = sequential_pair_count(len(photos), pairing.overlap)
        progress("match", 0, pairs, f"matching each photo with its neighbours in name order (about {pairs} pairs)")
        pycolmap.match_sequential(database, matching_options=options, pairing_options=pairing, device=device,
                                  cancellation_token=token)
        check_cancelled()
        progress("match", pairs, pairs, f"matched about {pairs} pairs")
        return pairs
    progress("match", 0, 0, "choosing similar photos to match")
    selected = retrieval_pairs(pycolmap, database, photos)
    check_cancelled()
    pair_file = work_dir / "pairs.txt"
    progress("match", 0, len(selected), f"matching {len(selected)} pairs of similar photos")
    for start in range(0, len(selected), MATCH_PAIRS_PER_BATCH):
        batch = selected[start:start + MATCH_PAIRS_PER_BATCH]
        pair_file.write_text("".join(f"{a} {b}\n" for a, b in batch), encoding="utf-8")
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = pair_file
        pairing.block_size = IMPORTED_BLOCK_PAIRS
        pycolmap.match_image_pairs(database, matching_options=options, pairing_options=pairing, device=device,
                                   cancellation_token=token)
        check_cancelled()
        done = start + len(batch)
        progress("match", done, len(selected), f"matched {done} of {len(selected)} pairs")
    return len(selected)


def retrieval_pairs(pycolmap, database: Path, photos: list[str]) -> list[tuple[str, str]]:
    """Pairs of similar photos, by a global descriptor computed from their own SIFT features
    (no vocabulary file), plus the pairs of photos near each other in name order."""
    db = pycolmap.Database.open(database)
    try:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        descriptors = [
            np.asarray(db.read_descriptors(ids[name]).data) if name in ids else np.zeros((0, 128), np.uint8)
            for name in photos
        ]
    finally:
        db.close()
    similarity = vlad_similarity(descriptors)
    index_pairs = select_pairs(similarity, RETRIEVAL_NEIGHBOURS, RETRIEVAL_NAME_WINDOW)
    return [(photos[i], photos[j]) for i, j in index_pairs]


def kmeans(points: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means: ``points [m, d]`` float32 -> centres ``[k, d]`` (k <= m)."""
    centres = points[rng.choice(len(points), k, replace=False)].copy()
    for _ in range(iterations):
        assignment = one_hot(nearest_centre(points, centres), k)  # [m, k]
        counts = assignment.sum(0)
        filled = counts > 0
        centres[filled] = (assignment.T @ points)[filled] / counts[filled, None]
    return centres


def one_hot(index: np.ndarray, k: int) -> np.ndarray:
    """``index [m]`` in ``[0, k)`` -> ``[m, k]`` float32 with a single 1 per row."""
    out = np.zeros((len(index), k), np.float32)
    out[np.arange(len(index)), index] = 1.0
    return out


def nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each of ``points [m, d]``: ``[m]``."""
    distances = (centres**2).sum(1)[None, :] - 2.0 * points @ centres.T  # |p|^2 is the same for every centre
    return distances.argmin(1)


def vlad_similarity(descriptors: list[np.ndarray], words: int = RETRIEVAL_WORDS, per_photo: int = RETRIEVAL_DESCRIPTORS_PER_PHOTO,
                    sample: int = RETRIEVAL_SAMPLE, seed: int = 0) -> np.ndarray:
    """Cosine similarity ``[n, n]`` of VLAD global descriptors (``words`` centres fitted to these
    photos' own descriptors; intra- and power-normalised). ``descriptors``: per photo ``[m_i, 128]``
    SIFT descriptors (any scale; each is L2-normalised here). Photos without descriptors get 0."""
    rng = np.random.default_rng(seed)
    chosen = []
    for d in descriptors:
        d = np.asarray(d, dtype=np.float32)
        if len(d) > per_photo:
            d = d[rng.choice(len(d), per_photo, replace=False)]
        chosen.append(d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12))
    pool = np.concatenate(chosen) if chosen else np.zeros((0, 128), np.float32)
    n = len(descriptors)
    if len(pool) < words:
        return np.zeros((n, n))
    if len(pool) > sample:
        pool = pool[rng.choice(len(pool), sample, replace=False)]
    centres = kmeans(pool, words, 10, rng)
    vlad = np.zeros((n, words, pool.shape[1]), np.float32)
    for row, d in enumerate(chosen):  # one row per photo
        if len(d):
            assignment = one_hot(nearest_centre(d, centres), words)  # [m_i, words]
            vlad[row] = assignment.T @ d - assignment.sum(0)[:, None] * centres  # residuals summed per centre
    vlad /= np.maximum(np.linalg.norm(vlad, axis=2, keepdims=True), 1e-12)  # intra-normalisation
    vlad = vlad.reshape(n, -1)
    vlad = np.sign(vlad) * np.sqrt(np.abs(vlad))  # power normalisation
    vlad /= np.maximum(np.linalg.norm(vlad, axis=1, keepdims=True), 1e-12)
    return vlad @ vlad.T


def select_pairs(similarity: np.ndarray, neighbours: int, window: int) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, sorted: each photo with its ``neighbours`` most similar
    photos (``similarity [n, n]``) and with the ``window`` photos after it in order."""
    n = len(similarity)
    if n < 2:
        return []
    scores = np.array(similarity, dtype=np.float64)
    np.fill_diagonal(scores, -np.inf)
    k = min(neighbours, n - 1)
    first = [np.repeat(np.arange(n), k)]
    second = [np.argsort(-scores, axis=1, kind="stable")[:, :k].ravel()]
    for step in range(1, min(window, n - 1) + 1):
        first.append(np.arange(n - step))
        second.append(np.arange(step, n))
    i, j = np.concatenate(first), np.concatenate(second)
    keys = np.unique(np.minimum(i, j) * n + np.maximum(i, j))
    return [(int(key // n), int(key % n)) for key in keys]


# ---------------------------------------------------------------------------------------
# Mapping and refinement
# ---------------------------------------------------------------------------------------


def mapping_options(pycolmap):
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = -1  # every core
    options.ba_refine_principal_point = False  # refined once at the end, with all views
    options.ba_global_frames_ratio = BA_GLOBAL_RATIO
    options.ba_global_points_ratio = BA_GLOBAL_RATIO
    options.ba_global_max_refinements = BA_GLOBAL_MAX_REFINEMENTS
    options.ba_local_max_refinements = BA_LOCAL_MAX_REFINEMENTS
    return options


def incremental_map(pycolmap, database: Path, image_dir: Path, work_dir: Path, photos: list[str], progress: Progress,
                    token, check_cancelled: Callable[[], None]):
    """The largest model incremental mapping finds; InputError when there is none."""
    registered_count = [0]

    def next_image() -> None:
        registered_count[0] += 1
        progress("map", min(registered_count[0] + 1, len(photos)), len(photos), "registering photos")

    progress("map", 0, len(photos), "registering photos")
    maps = pycolmap.incremental_mapping(
        database, image_dir, work_dir / "mapping", options=mapping_options(pycolmap),
        next_image_callback=next_image, cancellation_token=token,
    )
    check_cancelled()
    if not maps:
        raise InputError(
            f"Could not register the photos in {image_dir}: no two of the {len(photos)} photos overlap enough.",
            "Take photos with about 60 % overlap between neighbours, from positions around the subject.",
        )
    reconstruction = max(maps.values(), key=lambda rec: rec.num_reg_images())
    registered = reconstruction.num_reg_images()
    progress("map", registered, len(photos), f"registered {registered} of {len(photos)} photos")
    return reconstruction


def refine(pycolmap, reconstruction, settings: SfmSettings, token) -> None:
    """Final bundle adjustment with a Cauchy loss, refining the principal point and distortion
    as ``settings`` say; then drops the observations still off by more than 4 px."""
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_principal_point = settings.refine_principal_point
    options.refine_extra_params = settings.refine_distortion
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = FINAL_LOSS_SCALE_PX
    options.ceres.solver_options.max_num_iterations = FINAL_MAX_ITERATIONS
    pycolmap.bundle_adjustment(reconstruction, options, cancellation_token=token)
    observations = pycolmap.ObservationManager(reconstruction)
    observations.filter_points3D_with_large_reprojection_error(FILTER_MAX_ERROR_PX, set(reconstruction.point3D_ids()))
    reconstruction.update_point_3d_errors()


# ---------------------------------------------------------------------------------------
# Results as arrays
# ---------------------------------------------------------------------------------------


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
