# SPDX-License-Identifier: GPL-3.0-or-later
"""COCO-17 keypoints of the people in a photo: detected with MediaPipe Pose (0.10.21, whose
wheel carries its models), or read from a COCO or OpenPose keypoint JSON; and preview
images with the keypoints drawn over the photo.

A person is a :class:`Person`: ``keypoints`` [17, 3] (x, y in pixels, confidence 0..1),
a box, and for MediaPipe a person mask [H, W]. MediaPipe's pose model finds one person per
pass, so after each find that person is covered and the photo searched again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from .model import COCO17_NAMES, COCO17_SKELETON

log = logging.getLogger("recon.body")

# BlazePose's 33 landmarks -> COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# OpenPose BODY_25 and COCO-18 -> COCO-17
OPENPOSE_TO_COCO = {
    25: (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11),
    18: (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10),
}
COCO_VISIBILITY = {0: 0.0, 1: 0.5, 2: 1.0}  # COCO's v: not labelled, labelled but hidden, visible
MIN_CONFIDENCE = 0.3  # keypoints below this are drawn faintly and count as missing


@dataclass
class Person:
    keypoints: np.ndarray  # [17, 3] x, y (pixels), confidence 0..1
    source: str  # "mediapipe", "coco" or "openpose"
    mask: np.ndarray | None = None  # [H, W] float32 person probability (MediaPipe)
    box: tuple[float, float, float, float] | None = None  # x, y, width, height in pixels

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = keypoint_box(self.keypoints)

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    @property
    def visible(self) -> int:
        return int((self.keypoints[:, 2] >= MIN_CONFIDENCE).sum())

    def describe(self) -> str:
        x, y, w, h = self.box
        return f"a person at x {x:.0f}-{x + w:.0f}, y {y:.0f}-{y + h:.0f} px ({self.visible} keypoints)"


@dataclass
class PhotoPeople:
    """The people found in one photo, largest first: ``people[0]`` is the one fitted."""

    name: str
    people: list[Person] = field(default_factory=list)

    @property
    def person(self) -> Person | None:
        return self.people[0] if self.people else None

    @property
    def others(self) -> list[Person]:
        return self.people[1:]


def keypoint_box(keypoints: np.ndarray) -> tuple[float, float, float, float]:
    good = keypoints[keypoints[:, 2] >= MIN_CONFIDENCE, :2]
    if len(good) == 0:
        good = keypoints[keypoints[:, 2] > 0, :2]
    if len(good) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    lo, hi = good.min(0), good.max(0)
    return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


def largest_first(people: list[Person]) -> list[Person]:
    return sorted(people, key=lambda p: (-p.area, -p.visible))


# -- MediaPipe ------------------------------------------------------------------------------
class MediaPipeDetector:
    """MediaPipe Pose (``static_image_mode=True, model_complexity=1``) with its segmentation
    mask. Use as a context manager; :meth:`detect` takes an RGB uint8 image [H, W, 3]."""

    def __init__(self, max_people: int = 3) -> None:
        if os.environ.get("RECON_CACHE_DIR") and not os.environ.get("MPLCONFIGDIR"):
            # mediapipe imports matplotlib, which writes a font cache under the user's home
            os.environ["MPLCONFIGDIR"] = str(Path(os.environ["RECON_CACHE_DIR"]) / "matplotlib")
        mp = require("mediapipe", "Detecting people in photos")
        self.max_people = max_people
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pose.close()

    def detect(self, image: np.ndarray) -> list[Person]:
        height, width = image.shape[:2]
        work = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        fill = np.median(image.reshape(-1, image.shape[-1])[:, :3], axis=0).astype(np.uint8)
        found: list[Person] = []
        while len(found) < self.max_people:
            person = self._find(work, found)
            if person is None and found:
                # the pose detector sees the whole photo at 224 px: look for smaller people in halves
                for region in _halves(width, height):
                    person = self._find(work, found, region)
                    if person is not None:
                        break
            if person is None:
                break
            found.append(person)
            # cover this person (box grown by a fifth, and its mask) and look again
            x, y, w, h = person.box
            x0, y0 = int(max(0, x - 0.2 * w)), int(max(0, y - 0.2 * h))
            x1, y1 = int(min(width, x + 1.2 * w + 1)), int(min(height, y + 1.2 * h + 1))
            work = work.copy()
            work[y0:y1, x0:x1] = fill
            if person.mask is not None:
                work[person.mask > 0.5] = fill
        return largest_first(found)

    def _find(self, work: np.ndarray, found: list[Person], region: tuple[int, int, int, int] | None = None):
        """The person MediaPipe finds in ``work`` (or in its ``region``: x0, y0, x1, y1), in
        the photo's pixels; None when there is none, or only one already found."""
        height, width = work.shape[:2]
        x0, y0, x1, y1 = region or (0, 0, width, height)
        result = self._pose.process(np.ascontiguousarray(work[y0:y1, x0:x1]))
        if result.pose_landmarks is None:
            return None
        marks = np.array([(p.x * (x1 - x0) + x0, p.y * (y1 - y0) + y0, p.visibility)
                          for p in result.pose_landmarks.landmark], dtype=np.float64)
        keypoints = marks[list(BLAZEPOSE_TO_COCO)]
        inside = (keypoints[:, 0] >= x0) & (keypoints[:, 0] < x1) & (keypoints[:, 1] >= y0) & (keypoints[:, 1] < y1)
        keypoints[~inside, 2] = 0.0  # guessed outside the photo: not seen
        mask = None
        if result.segmentation_mask is not None:
            mask = np.zeros((height, width), np.float32)
            mask[y0:y1, x0:x1] = np.asarray(result.segmentation_mask, dtype=np.float32)
        person = Person(keypoints, "mediapipe", mask)
        if person.visible < 4 or any(_overlap(person.box, other.box) > 0.5 for other in found):
            return None
        return person


def _halves(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Two overlapping halves of a photo along its longer side (x0, y0, x1, y1)."""
    if width >= height:
        half = int(width * 0.6)
        return [(0, 0, half, height), (width - half, 0, width, height)]
    half = int(height * 0.6)
    return [(0, 0, width, half), (0, height - half, width, height)]


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    smaller = max(min(aw * ah, bw * bh), 1e-9)
    return iw * ih / smaller


# -- keypoint files -------------------------------------------------------------------------
def _numbers(value, where: str, path: Path) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {where} is not a list of numbers.", "Fix the keypoint file.") from exc
    if not np.isfinite(array).all():
        raise InputError(f"{path}: {where} has values that are not finite numbers.", "Fix the keypoint file.")
    return array


def _coco_person(item, where: str, path: Path) -> Person:
    if not isinstance(item, dict):
        raise InputError(f"{path}: {where} is not an object.", "Each COCO annotation is an object with 'keypoints'.")
    if "keypoints" not in item:
        raise InputError(f"{path}: {where} has no 'keypoints' field.",
                         "A COCO keypoint annotation holds 'keypoints': 51 numbers (x, y, v for 17 joints).")
    values = _numbers(item["keypoints"], f"{where}.keypoints", path)
    if len(values) != 51:
        raise InputError(f"{path}: {where}.keypoints has {len(values)} numbers; COCO-17 needs 51 "
                         "(x, y, visibility for each of 17 joints).", "Give COCO-17 keypoints.")
    kp = values.reshape(17, 3).copy()
    v = kp[:, 2]
    if np.all(np.isin(v, (0, 1, 2))) and "score" not in item:
        kp[:, 2] = [COCO_VISIBILITY[int(x)] for x in v]  # annotations: visibility flags
    else:
        kp[:, 2] = np.clip(v, 0, 1)  # detections: confidences
    box = None
    if "bbox" in item:
        b = _numbers(item["bbox"], f"{where}.bbox", path)
        if len(b) != 4:
            raise InputError(f"{path}: {where}.bbox has {len(b)} numbers; expected 4 (x, y, width, height).",
                             "Fix the keypoint file.")
        box = tuple(float(x) for x in b)
    return Person(kp, "coco", box=box)


def _openpose_person(item, where: str, path: Path) -> Person:
    if not isinstance(item, dict) or "pose_keypoints_2d" not in item:
        raise InputError(f"{path}: {where} has no 'pose_keypoints_2d' field.",
                         "An OpenPose file holds 'people', each with 'pose_keypoints_2d'.")
    values = _numbers(item["pose_keypoints_2d"], f"{where}.pose_keypoints_2d", path)
    if len(values) % 3 or len(values) // 3 not in OPENPOSE_TO_COCO:
        raise InputError(f"{path}: {where}.pose_keypoints_2d has {len(values)} numbers; OpenPose BODY_25 has 75 "
                         "and COCO-18 has 54.", "Export BODY_25 or COCO keypoints from OpenPose.")
    raw = values.reshape(-1, 3)
    kp = raw[list(OPENPOSE_TO_COCO[len(raw)])].copy()
    kp[:, 2] = np.clip(kp[:, 2], 0, 1)
    kp[(kp[:, 0] == 0) & (kp[:, 1] == 0), 2] = 0.0  # OpenPose writes 0, 0, 0 for a joint it did not find
    return Person(kp, "openpose")


def read_keypoint_file(path: str | Path) -> dict[str | int | None, list[Person]]:
    """People per photo from one JSON file. Keys: a file name (COCO with ``images``), an
    image id (COCO without names), or None (OpenPose, or a list without ids: one photo)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"Keypoint file {path} is not readable JSON ({exc}).", "Give a COCO or OpenPose keypoint JSON.") from exc
    out: dict[str | int | None, list[Person]] = {}
    if isinstance(data, dict) and "people" in data:
        people = data["people"]
        if not isinstance(people, list):
            raise InputError(f"{path}: 'people' is not a list.", "An OpenPose file holds a 'people' list.")
        out[None] = [_openpose_person(p, f"people[{i}]", path) for i, p in enumerate(people)]
        return out
    if isinstance(data, dict) and "annotations" in data:
        annotations = data["annotations"]
        if not isinstance(annotations, list):
            raise InputError(f"{path}: 'annotations' is not a list.", "A COCO file holds an 'annotations' list.")
        names = {}
        for i, image in enumerate(data.get("images") or []):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise InputError(f"{path}: images[{i}] has no 'id' or no 'file_name' field.", "Fix the COCO file.")
            names[image["id"]] = image["file_name"]
        for i, item in enumerate(annotations):
            if isinstance(item, dict) and item.get("category_id", 1) != 1:
                continue  # not a person
            person = _coco_person(item, f"annotations[{i}]", path)
            image_id = item.get("image_id")
            key = names.get(image_id, image_id)
            out.setdefault(key, []).append(person)
        return out
    if isinstance(data, list):  # COCO results: a list of detections
        for i, item in enumerate(data):
            person = _coco_person(item, f"[{i}]", path)
            out.setdefault(item.get("image_id"), []).append(person)
        return out
    fields = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
    raise InputError(
        f"{path} is neither a COCO nor an OpenPose keypoint file: it has no 'annotations' field (COCO) and no "
        f"'people' field (OpenPose); it has: {fields}.",
        "Give a COCO keypoint file (annotations with 'keypoints') or an OpenPose JSON (people with 'pose_keypoints_2d').",
    )


def keypoints_for_photos(source: str | Path, photo_names: list[str]) -> dict[str, list[Person]]:
    """People per photo name from a keypoint JSON or a folder of them (OpenPose writes
    ``<photo>_keypoints.json`` per photo). Photos the file says nothing about get no entry."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"Keypoint file {source} does not exist.", "Check --keypoints.")
    files = sorted(source.glob("*.json")) if source.is_dir() else [source]
    if not files:
        raise InputError(f"No .json keypoint files in {source}.", "Give a COCO or OpenPose keypoint JSON.")
    stems = {Path(name).stem: name for name in photo_names}
    out: dict[str, list[Person]] = {}
    for file in files:
        for key, people in read_keypoint_file(file).items():
            name = _match(key, file, stems, photo_names, len(files))
            if name is not None:
                out.setdefault(name, []).extend(people)
    return {name: largest_first(people) for name, people in out.items()}


def _match(key, file: Path, stems: dict[str, str], photo_names: list[str], file_count: int) -> str | None:
    if isinstance(key, str):
        if key in photo_names:
            return key
        if Path(key).stem in stems:
            return stems[Path(key).stem]
    if isinstance(key, int):
        for stem, name in stems.items():
            if stem.isdigit() and int(stem) == key:
                return name
    if key is None:
        stem = file.stem.removesuffix("_keypoints")
        if stem in stems:
            return stems[stem]
    if len(photo_names) == 1 and file_count == 1:
        return photo_names[0]  # one photo, one file: they belong together
    return None


# -- previews -------------------------------------------------------------------------------
def draw_people(image: np.ndarray, people: list[tuple[np.ndarray, tuple[int, int, int]]], radius: int | None = None):
    """A PIL image of ``image`` [H, W, 3] with each (keypoints [17, 2 or 3], colour) drawn:
    limbs as lines, joints as dots; keypoints under :data:`MIN_CONFIDENCE` are left out."""
    Image = require("PIL.Image", "Drawing previews")
    ImageDraw = require("PIL.ImageDraw", "Drawing previews")
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    size = max(image.shape[:2])
    radius = radius or max(2, size // 200)
    width = max(1, size // 400)
    for keypoints, colour in people:
        kp = np.asarray(keypoints, dtype=np.float64)
        seen = kp[:, 2] >= MIN_CONFIDENCE if kp.shape[1] > 2 else np.ones(len(kp), bool)
        for a, b in COCO17_SKELETON:
            if seen[a] and seen[b]:
                draw.line([tuple(kp[a, :2]), tuple(kp[b, :2])], fill=colour, width=width)
        for (x, y), ok in zip(kp[:, :2], seen, strict=True):
            if ok:
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
    return canvas


def keypoint_names() -> np.ndarray:
    return np.array(COCO17_NAMES)
