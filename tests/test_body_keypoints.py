# SPDX-License-Identifier: GPL-3.0-or-later
"""COCO-17 keypoints: COCO and OpenPose JSON files (and wrong ones, named by field), the
largest person first, MediaPipe on a real photo, previews."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.body.keypoints import (
    OPENPOSE_TO_COCO,
    MediaPipeDetector,
    draw_people,
    keypoints_for_photos,
    read_keypoint_file,
)
from backend.errors import InputError
from tests.conftest import data_path


def _coco_keypoints(offset: float, scale: float) -> list[float]:
    rng = np.random.default_rng(int(offset))
    xy = offset + scale * rng.uniform(0, 1, size=(17, 2))
    return np.concatenate([xy, np.full((17, 1), 2)], 1).ravel().tolist()


def test_coco_file_people_per_photo_largest_first(tmp_path):
    data = {
        "images": [{"id": 7, "file_name": "a.jpg"}, {"id": 8, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 7, "category_id": 1, "keypoints": _coco_keypoints(10, 50)},
            {"image_id": 7, "category_id": 1, "keypoints": _coco_keypoints(100, 200)},
            {"image_id": 8, "category_id": 1, "keypoints": _coco_keypoints(5, 100), "bbox": [0, 0, 120, 240]},
            {"image_id": 8, "category_id": 3, "bbox": [0, 0, 10, 10]},  # a car: ignored
        ],
    }
    path = tmp_path / "people.json"
    path.write_text(json.dumps(data))
    found = keypoints_for_photos(path, ["a.jpg", "b.jpg", "c.jpg"])
    assert set(found) == {"a.jpg", "b.jpg"}
    assert len(found["a.jpg"]) == 2 and found["a.jpg"][0].area > found["a.jpg"][1].area
    assert found["b.jpg"][0].box == (0, 0, 120, 240) and found["b.jpg"][0].keypoints.shape == (17, 3)
    assert "person at x" in found["a.jpg"][1].describe()


def test_coco_results_and_openpose_files(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 785, "keypoints": _coco_keypoints(3, 80), "score": 0.9}]))
    assert list(keypoints_for_photos(results, ["000000000785.jpg", "x.jpg"])) == ["000000000785.jpg"]
    body25 = np.zeros((25, 3))
    body25[:, 0], body25[:, 1], body25[:, 2] = np.arange(25) * 10.0, 5.0, 0.9
    body25[4] = 0  # a joint OpenPose did not find
    folder = tmp_path / "openpose"
    folder.mkdir()
    (folder / "shot_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": body25.ravel().tolist()}]}))
    found = keypoints_for_photos(folder, ["shot.png", "other.png"])
    person = found["shot.png"][0]
    expected = [10.0 * i if i != 4 else 0.0 for i in OPENPOSE_TO_COCO[25]]
    assert person.keypoints[:, 0].tolist() == expected
    assert person.keypoints[10, 2] == 0  # right wrist = OpenPose 4, not found


@pytest.mark.parametrize("content, field", [
    ({"annotations": [{"image_id": 1}]}, "annotations[0] has no 'keypoints'"),
    ({"annotations": [{"keypoints": [1, 2, 3]}]}, "annotations[0].keypoints has 3 numbers"),
    ({"people": [{"pose_keypoints_2d": [0] * 30}]}, "people[0].pose_keypoints_2d has 30 numbers"),
    ({"people": [{"face_keypoints_2d": []}]}, "people[0] has no 'pose_keypoints_2d'"),
    ({"persons": []}, "no 'annotations' field"),
    ({"annotations": [{"keypoints": ["a"] * 51}]}, "not a list of numbers"),
])
def test_wrong_keypoint_files_name_the_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError) as info:
        read_keypoint_file(path)
    assert field in info.value.message


def test_preview_draws_over_the_photo():
    image = np.zeros((100, 120, 3), np.uint8)
    keypoints = np.concatenate([np.random.default_rng(0).uniform(10, 90, (17, 2)), np.ones((17, 1))], 1)
    drawn = np.asarray(draw_people(image, [(keypoints, (255, 0, 0))]))
    assert drawn.shape == image.shape and drawn[..., 0].sum() > 0 and drawn[..., 1].sum() == 0


@pytest.mark.data
def test_mediapipe_on_a_real_photo_and_on_an_empty_one():
    from PIL import Image

    photo = data_path("people", "000000000785.jpg")
    truth = list(read_keypoint_file(data_path("people", "000000000785_keypoints.json")).values())[0][0]
    image = np.asarray(Image.open(photo).convert("RGB"))
    with MediaPipeDetector() as detector:
        people = detector.detect(image)
        assert detector.detect(np.full_like(image, 200)) == []
    assert len(people) == 1
    person = people[0]
    error = np.linalg.norm(person.keypoints[:, :2] - truth.keypoints[:, :2], axis=1)
    print(f"MediaPipe median error {np.median(error):.2f} px against the COCO ground truth")
    assert np.median(error) <= 10
    assert person.mask is not None and person.mask.shape == image.shape[:2] and person.mask.max() > 0.5


@pytest.mark.data
def test_mediapipe_finds_a_second_smaller_person():
    from PIL import Image

    photo = Image.open(data_path("people", "000000000785.jpg")).convert("RGB")
    width, height = photo.size
    canvas = Image.new("RGB", (2 * width, height), (235, 235, 240))
    canvas.paste(photo, (0, 0))
    canvas.paste(photo.resize((2 * width // 3, 2 * height // 3)), (width + 50, height // 3))
    with MediaPipeDetector() as detector:
        people = detector.detect(np.asarray(canvas))
    assert len(people) == 2
    assert people[0].box[0] < width < people[1].box[0] and people[0].area > people[1].area
