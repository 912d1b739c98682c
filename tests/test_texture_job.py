# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``texture`` job as a user runs it: a sphere on a plinth with a known colour pattern,
photographed from a ring of cameras (some with lens distortion), baked, and re-rendered
from a held-out camera; the rasteriser against its reference; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.nerf.rays import distort
from backend.sfm.scene import OPENGL_TO_OPENCV
from backend.texture.raster import rasterize, rasterize_reference
from tests.conftest import run_backend
from tests.scenes import look_at_w2c, ring_of_cameras

SIZE, FOCAL = 96, 150.0


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread (on busy cores more only spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pattern(points: np.ndarray) -> np.ndarray:  # [N, 3] -> [N, 3] colours in [0, 1], smooth
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return np.stack([0.5 + 0.35 * np.sin(3.0 * x + 1.0) * np.cos(2.0 * y),
                     0.5 + 0.35 * np.cos(2.5 * z - 0.5 * x),
                     0.5 + 0.3 * np.sin(2.0 * y + 2.0 * z)], -1)


def sphere_on_plinth() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    box = trimesh.creation.box(extents=(1.4, 1.4, 0.6))
    box = box.subdivide().subdivide()
    box.apply_translation((0.0, 0.0, -1.1))
    mesh = trimesh.util.concatenate([sphere, box])
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def project(vertices, K, w2c, k1=0.0):
    cam = vertices @ w2c[:3, :3].T + w2c[:3, 3]
    xy = torch.from_numpy(cam[:, :2] / cam[:, 2:3])
    if k1:
        xy = distort(xy, "OPENCV", np.array([k1, 0.0, 0.0, 0.0]))
    px = xy.numpy() * [K[0, 0], K[1, 1]] + K[:2, 2]
    return px, cam[:, 2]


def render(vertices, faces, K, w2c, width, height, colors_at, k1=0.0):
    """``[H, W, 3]`` image (white background) and coverage mask; ``colors_at(face, bary)``."""
    xy, z = project(vertices, K, w2c, k1)
    face, bary, _ = rasterize(torch.from_numpy(xy), torch.from_numpy(z), torch.from_numpy(faces), height, width)
    face, bary = face.numpy(), bary.numpy()
    image = np.ones((height, width, 3))
    mask = face >= 0
    image[mask] = colors_at(face[mask], bary[mask])
    return image, mask


def surface_colors(vertices, faces):
    return lambda face, bary: pattern((vertices[faces[face]] * bary[..., None]).sum(1))


def textured_colors(vertices, faces, uv, texture):
    """Colours of the textured mesh: corner UVs interpolated, the texture sampled bilinearly."""
    tex = torch.from_numpy(texture.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    corner_uv = uv.reshape(-1, 3, 2)

    def colors_at(face, bary):
        u = (corner_uv[face] * bary[..., None]).sum(1)
        grid = torch.from_numpy(np.stack([u[:, 0] * 2 - 1, (1 - u[:, 1]) * 2 - 1], -1)).float().view(1, 1, -1, 2)
        return torch.nn.functional.grid_sample(tex, grid, align_corners=False)[0, :, 0].T.double().numpy()

    return colors_at


def psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def write_scene(folder: Path, views: int = 12, distorted: bool = True) -> tuple[Path, dict]:
    """A transforms.json with ``views`` photos of the sphere on its plinth (every other one
    through a barrel lens, k1 = -0.3) and a held-out camera (returned, pinhole)."""
    vertices, faces = sphere_on_plinth()
    folder.mkdir(parents=True)
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]])
    w2cs = ring_of_cameras(views, radius=4.0, height=1.8, seed=3)
    frames = []
    for i, w2c in enumerate(w2cs):
        k1 = -0.3 if distorted and i % 2 else 0.0
        image, _ = render(vertices, faces, K, w2c, SIZE, SIZE, surface_colors(vertices, faces), k1)
        Image.fromarray((image * 255 + 0.5).astype(np.uint8)).save(folder / f"view_{i:02d}.png")
        frames.append({"file_path": f"view_{i:02d}.png", "transform_matrix": (np.linalg.inv(w2c) @ OPENGL_TO_OPENCV).tolist(),
                       "camera_model": "OPENCV", "k1": k1, "k2": 0.0, "p1": 0.0, "p2": 0.0})
    meta = {"fl_x": FOCAL, "fl_y": FOCAL, "cx": SIZE / 2, "cy": SIZE / 2, "w": SIZE, "h": SIZE, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta))
    np.savez(folder / "mesh.npz", vertices=vertices.astype(np.float32), faces=faces.astype(np.int32))
    held_out = look_at_w2c(np.array([2.6, -2.9, 1.2]), np.zeros(3))
    return folder / "transforms.json", {"K": K, "w2c": held_out, "vertices": vertices, "faces": faces}


def test_rasterizer_matches_its_reference():
    rng = np.random.default_rng(0)
    points = rng.uniform([-8, -8, 1.5], [88, 68, 6.0], (80, 3))
    faces = rng.integers(0, 80, (60, 3))
    for perspective in (True, False):
        face, bary, depth = rasterize(torch.from_numpy(points[:, :2]), torch.from_numpy(points[:, 2]),
                                      torch.from_numpy(faces), 60, 80, perspective=perspective, chunk=700)
        face_ref, depth_ref = rasterize_reference(points[:, :2], points[:, 2], faces, 60, 80, perspective=perspective)
        assert 0.5 < (face_ref >= 0).mean() < 1.0  # the test covers empty and overlapped pixels
        assert np.array_equal(face.numpy(), face_ref)
        hit = face_ref >= 0
        assert np.allclose(depth.numpy()[hit], depth_ref[hit], rtol=1e-6)
        assert np.allclose(bary.numpy()[hit].sum(-1), 1.0)


def test_baked_texture_reproduces_a_held_out_photo(tmp_path):
    transforms, truth = write_scene(tmp_path / "scene")
    out = tmp_path / "textured"
    proc = run_backend("texture", "--mesh", str(tmp_path / "scene" / "mesh.npz"), "--scene", str(transforms),
                       "--out", str(out), "--texture-size", "256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["cameras"] == 12 and summary["texture_size"] == [256, 256]
    assert 0.6 < summary["seen_fraction"] < 0.95  # the plinth's underside is in no photo
    assert summary["fallback"] == "nearest"
    for name in ("textured.obj", "textured.mtl", "texture.png", "textured.npz"):
        assert (out / name).is_file()
    assert "map_Kd texture.png" in (out / "textured.mtl").read_text()
    data = np.load(out / "textured.npz")
    vertices, faces = truth["vertices"], truth["faces"]
    assert np.array_equal(data["faces"], faces) and np.allclose(data["vertices"], vertices, atol=1e-6)
    assert data["uv"].shape == (3 * len(faces), 2) and data["uv"].min() >= 0 and data["uv"].max() <= 1

    texture = np.asarray(Image.open(out / "texture.png").convert("RGB"))
    assert texture.shape == (256, 256, 3)
    photo, mask = render(vertices, faces, truth["K"], truth["w2c"], SIZE, SIZE, surface_colors(vertices, faces))
    baked, baked_mask = render(vertices, faces, truth["K"], truth["w2c"], SIZE, SIZE,
                               textured_colors(vertices, faces, data["uv"], texture))
    assert np.array_equal(mask, baked_mask)
    assert psnr(photo[mask], baked[mask]) > 38.0
    # Seams padded: no pixel of the re-render darker than the pattern can be (black leaking
    # in from empty atlas space along chart borders), and no black texel anywhere.
    assert baked[mask].min() > 0.1 and texture.reshape(-1, 3).sum(-1).min() > 30

    # The OBJ reads back with the same UVs.
    import trimesh

    obj = trimesh.load(out / "textured.obj", process=False, force="mesh")
    assert len(obj.faces) == len(faces)


def test_photos_are_sampled_through_their_lens_distortion(tmp_path):
    """The same photos with their barrel distortion left out of the cameras bake a worse texture."""
    from backend.jobs.runner import run_job

    transforms, truth = write_scene(tmp_path / "scene")
    meta = json.loads(transforms.read_text())
    for frame in meta["frames"]:
        frame["k1"] = 0.0
    (tmp_path / "scene" / "pinhole.json").write_text(json.dumps(meta))
    vertices, faces = truth["vertices"], truth["faces"]
    photo, mask = render(vertices, faces, truth["K"], truth["w2c"], SIZE, SIZE, surface_colors(vertices, faces))
    scores = {}
    for name, scene in (("lens", transforms), ("pinhole", tmp_path / "scene" / "pinhole.json")):
        inputs = {"mesh": str(tmp_path / "scene" / "mesh.npz"), "scene": str(scene), "field": ""}
        kind, fields = run_job("texture", {"texture_size": 256}, inputs, name, tmp_path / name, lambda *a: None)
        assert kind == "result", fields
        data = np.load(tmp_path / name / "textured.npz")
        texture = np.asarray(Image.open(tmp_path / name / "texture.png").convert("RGB"))
        baked, _ = render(vertices, faces, truth["K"], truth["w2c"], SIZE, SIZE,
                          textured_colors(vertices, faces, data["uv"], texture))
        scores[name] = psnr(photo[mask], baked[mask])
    assert scores["lens"] > scores["pinhole"] + 3.0, scores


def test_bad_input_names_the_fix(tmp_path):
    from backend.jobs.runner import run_job

    transforms, _ = write_scene(tmp_path / "scene", views=4, distorted=False)
    inputs = {"mesh": str(tmp_path / "scene" / "mesh.npz"), "scene": str(transforms), "field": ""}

    def error(config, **changed):
        kind, fields = run_job("texture", config, {**inputs, **changed}, "bad", tmp_path / "job", lambda *a: None)
        assert kind == "error"
        return fields

    fields = error({"max_faces": 1000})  # the mesh has 1,472 faces
    assert fields["code"] == "input" and "face budget of 1,000" in fields["message"] and "--max-faces" in fields["hint"]
    fields = error({"texture_size": 64})  # too many faces for so few texels
    assert "64 x 64 texture cannot hold" in fields["message"] and "--texture-size" in fields["hint"]
    (tmp_path / "scene" / "view_02.png").unlink()
    fields = error({})
    assert "1 of the 4 cameras" in fields["message"] and "view_02.png" in fields["message"]
    fields = error({}, mesh=str(tmp_path / "nowhere.ply"))
    assert "does not exist" in fields["message"]
