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


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3x3) taking unit vector ``a`` onto unit vector ``b``."""
    a = np.asarray(a, float) / np.linalg.norm(a)
    b = np.asarray(b, float) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-12:  # opposite: half a turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def alignment(c2w: np.ndarray, points: np.ndarray, known_distance: float = 0.0, ground_percentile: float = 1.0) -> np.ndarray:
    """A similarity (4x4, ``s R | t``) that makes a reconstruction sit upright in Blender:

    - up: the cameras' average up direction (Blender camera +Y) becomes world +Z;
    - ground: the lowest points (the ``ground_percentile`` of their heights, robust to stray
      points) at z = 0, and the points' median at x = y = 0;
    - scale: when ``known_distance`` > 0, the first two cameras end up that far apart.

    ``c2w`` are Blender camera-to-world matrices ``[n, 4, 4]``, ``points`` ``[m, 3]`` (may be
    empty: the cameras' centres stand in for them)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    up = c2w[:, :3, 1].sum(axis=0)
    R = rotation_between(up, [0.0, 0.0, 1.0]) if np.linalg.norm(up) > 1e-9 else np.eye(3)
    s = 1.0
    if known_distance > 0.0 and len(c2w) >= 2:
        baseline = np.linalg.norm(c2w[0, :3, 3] - c2w[1, :3, 3])
        if baseline > 0.0:
            s = known_distance / baseline
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    anchor = points if len(points) else c2w[:, :3, 3]
    moved = s * anchor @ R.T
    t = np.array([-np.median(moved[:, 0]), -np.median(moved[:, 1]), -np.percentile(moved[:, 2], ground_percentile)])
    S = np.eye(4)
    S[:3, :3] = s * R
    S[:3, 3] = t
    return S


def apply_similarity_to_cameras(S: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices moved by the similarity ``S``, kept free of scale (a camera's
    view does not change size; only its position scales)."""
    S = np.asarray(S, dtype=np.float64)
    s = np.cbrt(np.linalg.det(S[:3, :3]))
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, :3] = (S[:3, :3] / s) @ out[..., :3, :3]
    out[..., :3, 3] = out[..., :3, 3] @ S[:3, :3].T + S[:3, 3]
    return out


def quaternion_wxyz_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` (w, x, y, z, w >= 0) of rotation matrices ``[..., 3, 3]``
    (Shepperd's method, choosing the best-conditioned branch per matrix)."""
    R = np.asarray(R, dtype=np.float64)
    m = R.reshape(-1, 3, 3)
    trace = np.trace(m, axis1=1, axis2=2)
    diag = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    branch = np.argmax(diag, axis=1)
    q = np.empty((len(m), 4))
    for b in range(4):  # four vectorised branches, not a loop over matrices
        sel = branch == b
        r = m[sel]
        if b == 0:
            s = 2.0 * np.sqrt(1.0 + trace[sel])
            q[sel] = np.stack([s / 4, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 1, 0] - r[:, 0, 1]) / s], 1)
        else:
            i, j, k = (b - 1), b % 3, (b + 1) % 3
            s = 2.0 * np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, k, k])
            out = np.empty((len(r), 4))
            out[:, 0] = (r[:, k, j] - r[:, j, k]) / s
            out[:, 1 + i] = s / 4
            out[:, 1 + j] = (r[:, j, i] + r[:, i, j]) / s
            out[:, 1 + k] = (r[:, k, i] + r[:, i, k]) / s
            q[sel] = out
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(*R.shape[:-2], 4)


def K_from_colmap_params(model: str, params) -> np.ndarray | None:
    """The pinhole part ``K`` of a COLMAP camera model's parameters (None for a model this
    does not know)."""
    p = [float(v) for v in params]
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    elif model in ("PINHOLE", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV", "FOV", "THIN_PRISM_FISHEYE"):
        fx, fy, cx, cy = p[:4]
    else:
        return None
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
