# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``body``: photos of a person to a posed, rigged human body.

Keypoints come from MediaPipe Pose (COCO-17, with the person's mask, whose outline the last
stage of the fit also matches: ``--silhouette``) or from a COCO or OpenPose keypoint JSON
(``--keypoints``, a file or a folder of them). The body model is
Anny (``--model anny``, the default; ``--rig default|mixamo|game_engine``) or an
SMPL/SMPL-H/SMPL-X file (``--model PATH``, .npz or .pkl). One photo is fitted on its own;
several photos need their cameras (``--cameras cameras.npz`` from the ``sfm`` job) and are
fitted jointly, one body seen by every camera (without cameras, only the photo with the
most keypoints is fitted). When those cameras have lens distortion (``model`` and
``distortion`` in cameras.npz: COLMAP's SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV,
OPENCV_FISHEYE), the keypoints and the person's mask are undistorted through the pinhole
``K`` before the fit, and everything written in pixels (``keypoints_2d``,
``keypoints_input``, ``fit_error_px``, the previews) is in the photo's own, distorted pixels.

Files written:

- ``body.npz``: the body, everything Blender needs without torch (below).
- ``body.ply``: the posed mesh in the world frame.
- ``keypoints_<photo>.png``: the keypoints the fit used (green; other people grey), per photo.
- ``fit_<photo>.png``: the fitted mesh over the photo, with its keypoints (red) and the
  input keypoints (green).

``body.npz`` (P photos, V vertices, F faces, J bones, K skin influences per vertex; float32
unless noted; strings as numpy unicode arrays):

- ``model`` ("anny", "smpl", "smplh", "smplx"), ``rig`` (Anny: "default", "mixamo",
  "game_engine"), ``model_file`` (the SMPL-family file, "" for Anny).
- ``shape_names`` [S], ``shape`` [S]: Anny's phenotypes (0..1) or the SMPL betas.
- ``faces`` [F, 3] int32 triangles.
- ``rest_vertices`` [V, 3]: the fitted shape in its rest pose, model space (Z up, -Y
  front, +X the body's left, metres).
- ``pose_offsets`` [V, 3]: pose-corrective offsets at the fitted pose, added to the rest
  vertices before skinning (SMPL's posedirs: a shape key at value 1; zeros for Anny).
- ``bone_names`` [J], ``bone_parents`` [J] int32 (-1 for the root; parents come first).
- ``bone_rest_matrices`` [J, 4, 4]: each bone's rest matrix in model space (Blender's
  ``bone.matrix_local``: columns X, Y along the bone, Z, and the head); ``bone_heads``,
  ``bone_tails`` [J, 3] (tail = head + Y * length). Set an edit bone's ``matrix`` and
  ``length`` (or head, tail and the matrix's roll) from them.
- ``skin_indices`` [V, K] int32 bone indices and ``skin_weights`` [V, K] (each row sums to
  1): vertex group ``bone_names[i]`` holds weight w for vertex v where ``skin_indices[v, k]
  == i`` and ``skin_weights[v, k] == w > 0``.
- ``pose_matrices`` [J, 4, 4]: each pose bone's ``matrix_basis`` (rotations only);
  ``pose_quaternions`` [J, 4] the same as (w, x, y, z); ``pose_rotvecs`` [J, 3] the same
  pose as rotation vectors in model axes about each bone's head (SMPL's convention).
- ``model_to_world`` [4, 4] float64: the armature's and mesh's ``matrix_world`` (rotation
  times ``scale``, and translation); ``scale`` float64 (1 unless several non-metric cameras).
- ``world``: "level" (one photo: Z up, the camera upright and level, the feet on z = 0) or
  "cameras" (the world of the given cameras.npz).
- ``vertices`` [V, 3]: the posed mesh in the world: ``model_to_world`` applied to the rest
  vertices plus the pose offsets, skinned by the pose (``backend/body/export.py:
  pose_like_blender`` does this with numpy, as Blender does).
- ``joints`` [J, 3]: posed bone heads in the world.
- ``keypoint_names`` [17] (COCO-17 order), ``keypoints_3d`` [17, 3] the fitted model's
  keypoints in the world, ``keypoints_2d`` [P, 17, 2] those keypoints projected into each
  photo (pixels, through the lens distortion where the camera has one), ``keypoints_input``
  [P, 17, 3] the keypoints fitted (x, y in the photo's pixels, confidence).
- ``photo_names`` [P], ``K`` [P, 3, 3] and ``w2c`` [P, 4, 4] float64 (OpenCV camera axes, world
  to camera; ``K`` the pinhole part of a distorted camera) as fitted, ``width``, ``height`` [P]
  int32, ``fit_error_px`` [P] (median
  distance between fitted and input keypoints).
- For editing the shape later without the model: ``shape_lo``, ``shape_hi`` [S] (the valid
  range), ``shape_deltas_vertices`` [S, V, 3], ``shape_deltas_heads`` and
  ``shape_deltas_tails`` [S, J, 3]: the change of the rest vertices and bone ends per unit of
  each shape parameter around the fitted shape (exact for SMPL's betas; for Anny's
  phenotypes the local slope, good for moderate changes: refit for large ones). New rest
  vertices = ``rest_vertices + sum_i (shape_new[i] - shape[i]) * shape_deltas_vertices[i]``.

The summary names photos without a person, and the other people in each photo.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import option, path_input
from ..errors import InputError, require
from .runner import JobContext

KIND = "body"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
FULL_FRAME_DIAGONAL_MM = 43.27  # of a 36 x 24 mm frame


@dataclass(frozen=True)
class Config:
    """Settings of the body fit."""

    model: str = option("anny", "Body model: 'anny', or the path of an SMPL, SMPL-H or SMPL-X file (.npz or .pkl)")
    rig: str = option("default", "Anny's skeleton: its own, or Mixamo's or a game engine's bone names",
                      ("default", "mixamo", "game_engine"))
    num_betas: int = option(10, "SMPL-family models: shape components fitted", minimum=1)
    focal_35mm: float = option(0.0, "35 mm-equivalent focal length of a photo without cameras (0: from its EXIF, "
                                     "else 35)", minimum=0.0)
    iterations: int = option(120, "Optimisation steps of the body stages (split over four stages)", minimum=4)
    camera_iterations: int = option(25, "Optimisation steps placing the body from the torso", minimum=0)
    fit_shape: bool = option(True, "Fit the body's shape (else keep the model's average adult)")
    flip: str = option("auto", "Also try the body facing the other way: when the shoulders are ambiguous, "
                               "always, or never", ("auto", "always", "never"))
    metric_cameras: bool = option(False, "The cameras are in metres (else the body's scale in their world is fitted)")
    min_confidence: float = option(0.3, "Keypoints less confident than this are ignored", minimum=0.0)
    silhouette: float = option(10.0, "Weight of the person's outline (MediaPipe's mask) in the last stage; 0: off",
                               minimum=0.0)
    max_people: int = option(3, "People to look for in each photo (the largest is fitted)", minimum=1)


@dataclass(frozen=True)
class Inputs:
    images: str = path_input("a photo of a person, or a folder of photos of one person")
    keypoints: str = path_input("a COCO or OpenPose keypoint JSON (or a folder of them) instead of detecting",
                                required=False)
    cameras: str = path_input("cameras.npz from the sfm job: fit every photo jointly", required=False)


def cli_overrides(inputs: dict, args) -> dict:
    """On the command line, a relative --model path is taken from the current folder."""
    model = getattr(args, "model", None)
    if model and model != "anny":
        return {"model": str(Path(model).expanduser().resolve())}
    return {}


def _photos(images: str) -> list[Path]:
    path = Path(images)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path} does not exist.", "Pass --images PHOTO or --images FOLDER.")
    photos = sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise InputError(f"{path} holds no photos ({', '.join(PHOTO_SUFFIXES)}).", "Pass a photo or a folder of photos.")
    return photos


def _read_photo(path: Path) -> tuple[np.ndarray, float | None]:
    """(upright RGB uint8 [H, W, 3], 35 mm-equivalent focal length from EXIF or None)."""
    Image = require("PIL.Image", "Reading photos")
    ImageOps = require("PIL.ImageOps", "Reading photos")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                exif = image.getexif()
                focal = exif.get_ifd(0x8769).get(0xA405) if exif else None  # FocalLengthIn35mmFilm
                rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path.name} is not a readable photo ({exc}).", "Remove it or give another photo.") from exc
    focal = float(focal) if isinstance(focal, (int, float)) and focal > 0 else None
    return rgb, focal


def _load_cameras(path: str) -> dict[str, dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]]
            K, w2c = data["K"], data["w2c"]
            width, height = data["width"], data["height"]
            models = [str(m).upper() for m in data["model"]] if "model" in data.files else ["PINHOLE"] * len(names)
            distortion = (np.asarray(data["distortion"], np.float64).reshape(len(names), -1)
                          if "distortion" in data.files else np.zeros((len(names), 0)))
    except KeyError as exc:
        raise InputError(f"{path} has no {exc} array; it is not a Recon cameras.npz.",
                         "Pass the cameras.npz written by the sfm or import job.") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable cameras.npz ({exc}).", "Pass the sfm job's cameras.npz.") from exc
    cameras = {}
    for i, name in enumerate(names):
        coefficients = distortion[i][np.isfinite(distortion[i])]
        lens = (models[i], coefficients) if np.any(coefficients != 0) else None
        if lens is not None and models[i] not in DISTORTED_MODELS:
            raise InputError(f"{path}: the camera of {name} has the lens model {models[i]}, whose distortion the body "
                             "fit cannot remove.",
                             f"Solve the cameras with one of: {', '.join(m.lower() for m in DISTORTED_MODELS)}, or a "
                             "pinhole camera.")
        cameras[name] = {"K": K[i].astype(np.float64), "w2c": w2c[i].astype(np.float64), "width": int(width[i]),
                         "height": int(height[i]), "lens": lens}
    return cameras


# Lens distortion (COLMAP's models, as the sfm job writes them) -----------------------------------

DISTORTED_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV", "OPENCV_FISHEYE")


def _normalised(pixels: np.ndarray, K: np.ndarray) -> np.ndarray:  # [N, 2] pixels -> [N, 2] normalised
    return (np.concatenate([pixels, np.ones((len(pixels), 1))], 1) @ np.linalg.inv(K).T)[:, :2]


def _pixels(normalised: np.ndarray, K: np.ndarray) -> np.ndarray:
    return np.concatenate([normalised, np.ones((len(normalised), 1))], 1) @ K[:2].T


def undistort_pixels(pixels: np.ndarray, K: np.ndarray, lens: tuple[str, np.ndarray] | None) -> np.ndarray:
    """Where the pinhole camera ``K`` sees what the photo shows at ``pixels [N, 2]``."""
    if lens is None:
        return np.asarray(pixels, np.float64)
    import torch

    from ..nerf.rays import undistort

    xy = undistort(torch.as_tensor(_normalised(pixels, K)), lens[0], lens[1]).numpy()
    return _pixels(xy, K)


def distort_pixels(pixels: np.ndarray, K: np.ndarray, lens: tuple[str, np.ndarray] | None) -> np.ndarray:
    """Where the photo shows what the pinhole camera ``K`` sees at ``pixels [N, 2]``."""
    if lens is None:
        return np.asarray(pixels, np.float64)
    import torch

    from ..nerf.rays import distort

    xy = distort(torch.as_tensor(_normalised(pixels, K)), lens[0], lens[1]).numpy()
    return _pixels(xy, K)


def undistort_mask(mask: np.ndarray, K: np.ndarray, width: int, height: int, lens, max_size: int = 640) -> np.ndarray:
    """The person mask ``[h, w]`` (over the photo, ``width x height`` camera pixels) as the
    pinhole camera ``K`` sees it, at most ``max_size`` pixels wide or high (nearest sample;
    outside the photo: no person)."""
    step = max(1.0, max(width, height) / max_size)
    out_w, out_h = max(1, round(width / step)), max(1, round(height / step))
    ys, xs = np.meshgrid((np.arange(out_h) + 0.5) * height / out_h, (np.arange(out_w) + 0.5) * width / out_w,
                         indexing="ij")
    source = distort_pixels(np.stack([xs.ravel(), ys.ravel()], 1), K, lens)
    col = np.floor(source[:, 0] * mask.shape[1] / width).astype(np.int64)
    row = np.floor(source[:, 1] * mask.shape[0] / height).astype(np.int64)
    inside = (col >= 0) & (col < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
    out = np.zeros(out_h * out_w, np.float32)
    out[inside] = mask[row[inside], col[inside]]
    return out.reshape(out_h, out_w)


def _distorted_vertices(vertices: np.ndarray, K: np.ndarray, w2c: np.ndarray, lens) -> np.ndarray:
    """Vertices moved (at their depth) to where a pinhole projection through ``K`` lands on
    their distorted projection: a pinhole preview drawn with them matches the photo."""
    if lens is None:
        return vertices
    cam = vertices @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2:]
    front = z[:, 0] > 1e-6
    xy = cam[:, :2] / np.where(front[:, None], z, 1.0)
    moved = distort_pixels(_pixels(xy, K), K, lens)
    cam[front, :2] = _normalised(moved, K)[front] * z[front]
    return (cam - w2c[:3, 3]) @ w2c[:3, :3]


def _default_K(width: int, height: int, focal_35mm: float) -> np.ndarray:
    focal = focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..body.export import body_arrays, overlay_mesh, save_png
    from ..body.fit import FitSettings, View, fit_body
    from ..body.keypoints import MediaPipeDetector, PhotoPeople, draw_people, keypoints_for_photos
    from ..body.smpl import load_model
    from ..geometry.io import write_mesh_ply, write_npz

    if not inputs.images:
        raise InputError("No photos were given.", "Pass --images PHOTO (or a folder of photos of one person).")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    paths = _photos(inputs.images)
    cameras = _load_cameras(inputs.cameras) if inputs.cameras else None
    if cameras is not None:
        without = [p.name for p in paths if p.name not in cameras]
        paths = [p for p in paths if p.name in cameras]
        if not paths:
            raise InputError(f"None of the photos has a camera in {inputs.cameras}.",
                             "Give the photo folder the cameras were solved from.")
        if without:
            ctx.log("warning", f"{len(without)} photo(s) have no camera and are left out: {', '.join(without[:5])}")

    ctx.progress("model", 0, 1, "loading the body model (the first use of an Anny rig on a machine builds its "
                                "data: about 3 minutes)")
    t0 = time.perf_counter()
    model = load_model(config.model, config.rig, config.num_betas)
    seconds["model"] = round(time.perf_counter() - t0, 2)
    ctx.progress("model", 1, 1, f"{model.name} ({model.rig}): {model.num_vertices} vertices, {model.num_bones} bones")
    ctx.check_cancelled()

    # keypoints, per photo
    t0 = time.perf_counter()
    given = keypoints_for_photos(inputs.keypoints, [p.name for p in paths]) if inputs.keypoints else None
    detector = None if given is not None else MediaPipeDetector(max_people=config.max_people)
    found: list[tuple[Path, np.ndarray, PhotoPeople, float | None]] = []
    no_person, others_report = [], {}
    try:
        for i, path in enumerate(paths):
            ctx.check_cancelled()
            ctx.progress("keypoints", i, len(paths), f"keypoints of {path.name}")
            rgb, focal = _read_photo(path)
            people = given.get(path.name, []) if given is not None else detector.detect(rgb)
            entry = PhotoPeople(path.name, [p for p in people if p.visible >= 4])
            if entry.person is None:
                no_person.append(path.name)
                ctx.log("warning", f"{path.name}: no person found" + (" in the keypoint file" if given is not None else ""))
            else:
                if entry.others:
                    described = "; ".join(p.describe() for p in entry.others)
                    others_report[path.name] = [p.describe() for p in entry.others]
                    ctx.log("info", f"{path.name}: {len(entry.people)} people; fitting the largest "
                                    f"({entry.person.describe()}); also seen: {described}")
                drawn = [(p.keypoints, (150, 150, 150)) for p in entry.others] + [(entry.person.keypoints, (40, 220, 60))]
                preview = ctx.dir / f"keypoints_{path.stem}.png"
                save_png(preview, draw_people(rgb, drawn))
                ctx.artifact(f"keypoints_{path.stem}", preview, "png")
                found.append((path, rgb, entry, focal))
    finally:
        if detector is not None:
            detector.close()
    seconds["keypoints"] = round(time.perf_counter() - t0, 2)
    ctx.progress("keypoints", len(paths), len(paths), f"people in {len(found)} of {len(paths)} photo(s)")
    if not found:
        raise InputError(f"No person was found in {', '.join(no_person)}.",
                         "Use photos in which one person is seen whole (or give their keypoints with --keypoints).")
    left_out = []
    if cameras is None and len(found) > 1:
        found.sort(key=lambda item: -item[2].person.visible)
        left_out = [item[0].name for item in found[1:]]
        ctx.log("warning", f"Without cameras only one photo is fitted ({found[0][0].name}); left out: "
                           f"{', '.join(left_out)}. Pass --cameras (from the sfm job) to fit them jointly.")
        found = found[:1]

    views, lenses, photo_keypoints = [], [], []
    for path, rgb, entry, focal in found:
        height, width = rgb.shape[:2]
        keypoints = entry.person.keypoints.copy()
        mask, lens = entry.person.mask, None
        if cameras is not None:
            camera = cameras[path.name]
            sx, sy = camera["width"] / width, camera["height"] / height
            if abs(sx - 1) > 1e-3 or abs(sy - 1) > 1e-3:
                keypoints[:, 0] *= sx
                keypoints[:, 1] *= sy
            K, w2c, width, height, lens = camera["K"], camera["w2c"], camera["width"], camera["height"], camera["lens"]
        else:
            K = _default_K(width, height, config.focal_35mm or focal or 35.0)
            w2c = np.eye(4)
        photo_keypoints.append(keypoints.copy())
        if lens is not None:  # the fit's cameras are pinholes: keypoints and mask as a pinhole sees them
            keypoints[:, :2] = undistort_pixels(keypoints[:, :2], K, lens)
            if mask is not None:
                mask = undistort_mask(np.asarray(mask), K, width, height, lens)
        lenses.append(lens)
        views.append(View(path.name, K, w2c, width, height, keypoints, mask))

    steps = [max(1, round(config.iterations * f)) for f in (0.2, 0.2, 0.25, 0.35)]
    settings = FitSettings(camera_steps=config.camera_iterations, body_steps=tuple(steps), fit_shape=config.fit_shape,
                           flip=config.flip, metric_cameras=config.metric_cameras, min_confidence=config.min_confidence,
                           w_silhouette=config.silhouette)

    def progress(stage: str, done: int, total: int, message: str) -> None:
        ctx.check_cancelled()
        ctx.progress(stage, done, total, message)

    t0 = time.perf_counter()
    result = fit_body(model, views, settings, cameras_known=cameras is not None, progress=progress)
    seconds["fit"] = round(time.perf_counter() - t0, 2)
    if any(lens is not None for lens in lenses):  # back into the photos' own pixels
        views = [replace(view, keypoints=keypoints) for view, keypoints in zip(views, photo_keypoints, strict=True)]
        valid = model.keypoint_valid.numpy()
        for p, (view, lens) in enumerate(zip(views, lenses, strict=True)):
            if lens is None:
                continue
            result.keypoints_2d[p] = distort_pixels(result.keypoints_2d[p], result.K[p], lens)
            ok = (view.keypoints[:, 2] >= config.min_confidence) & valid
            d = np.linalg.norm(result.keypoints_2d[p] - view.keypoints[:, :2], axis=1)[ok]
            result.errors_px[p] = float(np.median(d)) if len(d) else float("nan")
    ctx.progress("fit", 1, 1, f"fitted: median keypoint error {np.nanmedian(result.errors_px):.1f} px")

    ctx.progress("write", 0, 1, "writing the body")
    world = "cameras" if cameras is not None else "level"
    arrays = body_arrays(model, result, views, world)
    write_npz(ctx.dir / "body.npz", **arrays)
    ctx.artifact("body", ctx.dir / "body.npz", "npz")
    write_mesh_ply(ctx.dir / "body.ply", arrays["vertices"], arrays["faces"])
    ctx.artifact("mesh", ctx.dir / "body.ply", "ply")
    for p, (path, rgb, _entry, _focal) in enumerate(found):
        ctx.check_cancelled()
        image = rgb
        if image.shape[1] != views[p].width or image.shape[0] != views[p].height:
            Image = require("PIL.Image", "Drawing previews")
            image = np.asarray(Image.fromarray(rgb).resize((views[p].width, views[p].height)))
        vertices = _distorted_vertices(arrays["vertices"], result.K[p], result.w2c[p], lenses[p])
        shaded = overlay_mesh(image, vertices, arrays["faces"], result.K[p], result.w2c[p])
        fitted = np.concatenate([result.keypoints_2d[p], np.ones((17, 1))], 1)
        preview = ctx.dir / f"fit_{path.stem}.png"
        save_png(preview, draw_people(shaded, [(views[p].keypoints, (40, 220, 60)), (fitted, (230, 40, 40))]))
        ctx.artifact(f"fit_{path.stem}", preview, "png")
    ctx.progress("write", 1, 1, "done")
    height_m = float(np.ptp(arrays["rest_vertices"][:, 2]))
    return {
        "model": model.name,
        "rig": model.rig,
        "photos": [v.name for v in views],
        "photos_without_person": no_person,
        "photos_left_out": left_out,
        "other_people": others_report,
        "keypoint_source": "file" if given is not None else "mediapipe",
        "fit_error_px": {v.name: round(float(e), 2) for v, e in zip(views, result.errors_px, strict=True)},
        "facing": result.facing,
        "tried_flip": bool(result.tried_flip),
        "start_headings": result.headings,
        "shape": {name: round(float(v), 4) for name, v in zip(model.shape_names, result.shape, strict=True)},
        "height_m": round(height_m * result.scale, 3),
        "scale": round(result.scale, 6),
        "vertices": model.num_vertices,
        "bones": model.num_bones,
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
    }
