# SPDX-License-Identifier: GPL-3.0-or-later
"""Camera conventions between computer vision (OpenCV/COLMAP) and Blender, in numpy only
(no bpy: tests call these without Blender).

- Axes. OpenCV/COLMAP camera: x right, y down, looking along +z. Blender camera: x right,
  y up, looking along -z. ``c2w_blender = c2w_opencv @ diag(1, -1, -1, 1)``.
- Pixels. COLMAP's convention: the image spans ``[0, W] x [0, H]`` with pixel centres at
  half-integers, so a centred principal point is ``(W / 2, H / 2)``; Blender's view plane
  spans the same range.
- Intrinsics. Blender derives the projection from ``lens`` (mm), the sensor size along its
  fit axis, ``shift_x``/``shift_y`` (in units of the fit dimension in pixels) and the
  render's pixel aspect. With ``viewfac`` the fit dimension in pixels (``W`` for a
  horizontal fit, ``ycor * H`` for a vertical one, ``ycor = aspect_y / aspect_x``)::

      fx = lens * viewfac / sensor      fy = fx / ycor
      cx = W / 2 - shift_x * viewfac     cy = H / 2 + shift_y * viewfac / ycor
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CV_TO_BLENDER_AXES = np.diag([1.0, -1.0, -1.0, 1.0])  # camera-frame flip, its own inverse

SENSOR_SIZE_MM = 36.0  # the fit axis' sensor size used for imported cameras (Blender's default)


def blender_c2w_from_w2c_opencv(w2c: np.ndarray) -> np.ndarray:
    """Blender camera-to-world ``[..., 4, 4]`` from OpenCV world-to-camera ``[..., 4, 4]``."""
    return np.linalg.inv(np.asarray(w2c, dtype=np.float64)) @ CV_TO_BLENDER_AXES


def w2c_opencv_from_blender_c2w(c2w: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera ``[..., 4, 4]`` from a Blender camera's ``matrix_world``
    (without scale) ``[..., 4, 4]``."""
    return np.linalg.inv(np.asarray(c2w, dtype=np.float64) @ CV_TO_BLENDER_AXES)


@dataclass(frozen=True)
class BlenderIntrinsics:
    """What a Blender camera and its scene's render settings need to reproduce ``K``."""

    lens: float  # mm
    sensor_width: float  # mm
    sensor_height: float  # mm
    sensor_fit: str  # "HORIZONTAL", "VERTICAL" or "AUTO"
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0


def _fit(intr: BlenderIntrinsics) -> tuple[str, float, float]:
    """(the resolved fit, viewfac in pixels, ycor) as Blender computes them."""
    ycor = intr.pixel_aspect_y / intr.pixel_aspect_x
    fit = intr.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if intr.pixel_aspect_x * intr.resolution_x >= intr.pixel_aspect_y * intr.resolution_y else "VERTICAL"
    viewfac = intr.resolution_x if fit == "HORIZONTAL" else ycor * intr.resolution_y
    return fit, float(viewfac), ycor


def blender_intrinsics_from_K(K: np.ndarray, width: int, height: int, sensor_size: float = SENSOR_SIZE_MM) -> BlenderIntrinsics:
    """Blender camera settings that reproduce the pinhole ``K`` (3x3) at ``width x height``.

    The sensor fits the larger image side (what Blender's AUTO would pick), stated
    explicitly so later changes to the resolution cannot flip it. ``fx != fy`` becomes a
    pixel aspect (Blender keeps both aspects >= 1)."""
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if abs(K[0, 1]) > 1e-9 * fx:
        raise ValueError("K has a skew term, which Blender cameras cannot represent")
    ycor = fx / fy  # = aspect_y / aspect_x
    aspect_x, aspect_y = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    horizontal = aspect_x * width >= aspect_y * height
    viewfac = width if horizontal else ycor * height
    return BlenderIntrinsics(
        lens=float(fx * sensor_size / viewfac),
        sensor_width=sensor_size,
        sensor_height=sensor_size,
        sensor_fit="HORIZONTAL" if horizontal else "VERTICAL",
        shift_x=float((width / 2.0 - cx) / viewfac),
        shift_y=float((cy - height / 2.0) * ycor / viewfac),
        resolution_x=int(width),
        resolution_y=int(height),
        pixel_aspect_x=float(aspect_x),
        pixel_aspect_y=float(aspect_y),
    )


def K_from_blender_intrinsics(intr: BlenderIntrinsics) -> np.ndarray:
    """The pinhole ``K`` (3x3, COLMAP pixel convention) of a Blender camera and render."""
    fit, viewfac, ycor = _fit(intr)
    sensor = intr.sensor_width if fit == "HORIZONTAL" else intr.sensor_height
    fx = intr.lens * viewfac / sensor
    return np.array(
        [
            [fx, 0.0, intr.resolution_x / 2.0 - intr.shift_x * viewfac],
            [0.0, fx / ycor, intr.resolution_y / 2.0 + intr.shift_y * viewfac / ycor],
            [0.0, 0.0, 1.0],
        ]
    )


def project_opencv(K: np.ndarray, w2c: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """Pixels ``(n, 2)`` of world points ``(n, 3)`` through ``K`` and OpenCV ``w2c``."""
    cam = points_world @ np.asarray(w2c)[:3, :3].T + np.asarray(w2c)[:3, 3]
    uvw = cam @ np.asarray(K).T
    return uvw[:, :2] / uvw[:, 2:3]
