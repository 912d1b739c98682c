# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera conventions without Blender: axes and K <-> lens/sensor/shift round trips."""

import numpy as np
import pytest

from addon import camera_math as cm


def random_w2c(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, rng.normal(size=3) * 3
    return w2c


CASES = [  # (fx, fy, cx, cy, width, height)
    (1520.4, 1525.9, 302.3, 246.9, 640, 480),  # templeRing-like, off-centre
    (2905.88, 2905.88, 1416.0, 1064.0, 2832, 2128),  # Sceaux
    (800.0, 800.0, 300.0, 520.0, 600, 1000),  # portrait
    (500.0, 700.0, 256.0, 256.0, 512, 512),  # non-square pixels, fy > fx
    (900.0, 600.0, 333.0, 150.0, 640, 360),  # non-square pixels, fx > fy
]


@pytest.mark.parametrize("fx, fy, cx, cy, width, height", CASES)
def test_K_round_trips_through_blender_settings(fx, fy, cx, cy, width, height):
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    intr = cm.blender_intrinsics_from_K(K, width, height)
    assert intr.pixel_aspect_x >= 1.0 and intr.pixel_aspect_y >= 1.0
    assert intr.sensor_fit == ("HORIZONTAL" if intr.pixel_aspect_x * width >= intr.pixel_aspect_y * height else "VERTICAL")
    np.testing.assert_allclose(cm.K_from_blender_intrinsics(intr), K, rtol=1e-12, atol=1e-9)
    # AUTO picks the same fit, so the same K.
    auto = cm.BlenderIntrinsics(**{**intr.__dict__, "sensor_fit": "AUTO"})
    np.testing.assert_allclose(cm.K_from_blender_intrinsics(auto), K, rtol=1e-12, atol=1e-9)


def test_a_centred_36mm_camera_is_blenders_default():
    intr = cm.BlenderIntrinsics(50.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 1920, 1080)
    K = cm.K_from_blender_intrinsics(intr)
    np.testing.assert_allclose(K, [[50 / 36 * 1920, 0, 960], [0, 50 / 36 * 1920, 540], [0, 0, 1]])


def test_skew_is_refused():
    with pytest.raises(ValueError, match="skew"):
        cm.blender_intrinsics_from_K(np.array([[500.0, 3.0, 320], [0, 500, 240], [0, 0, 1]]), 640, 480)


def test_axes_round_trip_and_look_direction():
    rng = np.random.default_rng(0)
    w2c = random_w2c(rng)
    c2w = cm.blender_c2w_from_w2c_opencv(w2c)
    np.testing.assert_allclose(cm.w2c_opencv_from_blender_c2w(c2w), w2c, atol=1e-12)
    # Blender cameras look along their local -z; OpenCV cameras along +z: the same world direction.
    look_cv = np.linalg.inv(w2c)[:3, :3] @ [0, 0, 1]
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 0, -1], look_cv, atol=1e-12)
    # And "up" in Blender is "-y" (image up) in OpenCV.
    np.testing.assert_allclose(c2w[:3, :3] @ [0, 1, 0], np.linalg.inv(w2c)[:3, :3] @ [0, -1, 0], atol=1e-12)
