# SPDX-License-Identifier: GPL-3.0-or-later
"""Small synthetic reconstructions with known answers, written the way other tools write
them: a COLMAP text model (with 2D observations, projected through the camera's lens
model by pycolmap) and a NeRF-synthetic style ``transforms.json``, each with photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.test_sfm import write_png


def look_at_w2c(centre: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV world-to-camera (x right, y down, z forward) looking from ``centre`` at ``target``."""
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ centre
    return w2c


def ring_of_cameras(n: int, radius: float = 4.0, height: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False) + rng.uniform(-0.1, 0.1, n)
    centres = np.stack([radius * np.cos(angles), radius * np.sin(angles), height + rng.uniform(-0.3, 0.3, n)], axis=1)
    return np.stack([look_at_w2c(c, rng.normal(0.0, 0.05, 3)) for c in centres])


def quaternion_wxyz(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z]) * (1.0 if w >= 0 else -1.0)


def make_colmap_text_model(folder: Path, n_images: int = 8, n_points: int = 300, width: int = 320, height: int = 240,
                           params=(300.0, 163.5, 117.25, -0.05), model: str = "SIMPLE_RADIAL", noise_px: float = 0.3,
                           seed: int = 0) -> dict:
    """A COLMAP text model in ``folder/sparse/0`` and its photos in ``folder/images``.
    Returns the truth: ``names``, ``w2c``, ``xyz``, ``params``."""
    import pycolmap

    rng = np.random.default_rng(seed)
    model_dir = folder / "sparse" / "0"
    model_dir.mkdir(parents=True)
    (folder / "images").mkdir()
    camera = pycolmap.Camera.create_from_model_name(1, model, 300.0, width, height)
    camera.params = list(params)
    w2c = ring_of_cameras(n_images, seed=seed)
    xyz = rng.uniform(-1.0, 1.0, (n_points, 3))
    names = [f"photo_{i:02d}.png" for i in range(n_images)]
    tracks = [[] for _ in range(n_points)]
    image_lines = []
    for i, name in enumerate(names):  # tests: a loop over a few images
        cam = xyz @ w2c[i, :3, :3].T + w2c[i, :3, 3]
        pixels = np.asarray(camera.img_from_cam(cam)) + rng.normal(0.0, noise_px, (n_points, 2))
        inside = (pixels[:, 0] > 0) & (pixels[:, 0] < width) & (pixels[:, 1] > 0) & (pixels[:, 1] < height)
        visible = np.flatnonzero(inside)
        for k, p in enumerate(visible):
            tracks[p].append((i + 1, k))
        q, t = quaternion_wxyz(w2c[i, :3, :3]), w2c[i, :3, 3]
        image_lines.append(" ".join(map(repr, [i + 1, *q.tolist(), *t.tolist(), 1])) + f" {name}")
        image_lines.append(" ".join(f"{pixels[p, 0]!r} {pixels[p, 1]!r} {p + 1}" for p in visible))
        write_png(folder / "images" / name, rng.integers(0, 256, (height, width, 3)))
    (model_dir / "cameras.txt").write_text(f"1 {model} {width} {height} " + " ".join(map(repr, params)) + "\n")
    (model_dir / "images.txt").write_text("\n".join(image_lines) + "\n")
    rgb = rng.integers(0, 256, (n_points, 3))
    point_lines = []
    for p in range(n_points):
        track = " ".join(f"{image_id} {k}" for image_id, k in tracks[p])
        point_lines.append(" ".join(map(repr, [p + 1, *xyz[p].tolist(), *rgb[p].tolist(), 0.5])) + " " + track)
    (model_dir / "points3D.txt").write_text("\n".join(point_lines) + "\n")
    return {"names": names, "w2c": w2c, "xyz": xyz, "params": np.array(params), "model_dir": model_dir}


def make_transforms(folder: Path, n_images: int = 6, width: int = 80, height: int = 60, angle_x: float = 0.69,
                    seed: int = 1) -> dict:
    """A NeRF-synthetic style ``transforms.json`` (``camera_angle_x`` only, file paths without
    the extension, size from the PNGs) with its photos in ``folder/train``."""
    rng = np.random.default_rng(seed)
    (folder / "train").mkdir(parents=True)
    w2c = ring_of_cameras(n_images, seed=seed)
    c2w = np.linalg.inv(w2c) @ np.diag([1.0, -1.0, -1.0, 1.0])
    frames = []
    for i in range(n_images):
        write_png(folder / "train" / f"r_{i}.png", rng.integers(0, 256, (height, width, 3)))
        frames.append({"file_path": f"./train/r_{i}", "rotation": 0.012566, "transform_matrix": c2w[i].tolist()})
    (folder / "transforms.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    fx = 0.5 * width / np.tan(0.5 * angle_x)
    return {"w2c": w2c, "K": np.array([[fx, 0, width / 2], [0, fx, height / 2], [0, 0, 1.0]]),
            "names": [f"r_{i}.png" for i in range(n_images)], "path": folder / "transforms.json"}
