# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``mesh`` job: level sets of analytic densities, of a field fitted to a known sphere,
and of splats of a sphere, measured by their distance to the true surface; cleanup,
decimation, the files it writes, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import protocol
from backend.jobs.runner import run_job
from backend.mesh.extract import Grid, decimate, extract, face_areas, keep_components, level_set, sample_grid
from tests.conftest import run_backend

CENTER = np.array([0.3, -0.2, 0.5])  # off the origin: the frame is checked, not assumed
RADIUS = 0.5
TOP_RGB = np.array([0.9, 0.2, 0.1])  # colour of the sphere's upper half (z above its centre)
BOTTOM_RGB = np.array([0.1, 0.3, 0.9])
BATCH = 1024  # points per step of the field fit, anywhere in its box and as many near the sphere


def sphere_distance(points: np.ndarray, center=CENTER, radius=RADIUS) -> np.ndarray:
    return np.abs(np.linalg.norm(np.asarray(points, np.float64) - center, axis=1) - radius)


def surface_chamfer(vertices: np.ndarray, faces: np.ndarray, center=CENTER, radius=RADIUS, n: int = 100000) -> float:
    """Symmetric mean distance between the mesh and the sphere: mesh samples to the sphere
    (exact), sphere samples to the nearest mesh sample (an upper bound: about 0.002 at this
    sampling density)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    area = face_areas(vertices, faces)
    tri = rng.choice(len(faces), n, p=area / area.sum())
    a, b = rng.random((2, n, 1))
    flip = (a + b) > 1
    a, b = np.where(flip, 1 - a, a), np.where(flip, 1 - b, b)
    v = vertices.astype(np.float64)[faces[tri]]
    on_mesh = v[:, 0] + a * (v[:, 1] - v[:, 0]) + b * (v[:, 2] - v[:, 0])
    d = rng.normal(size=(n, 3))
    on_sphere = center + radius * d / np.linalg.norm(d, axis=1, keepdims=True)
    to_mesh, _ = cKDTree(on_mesh).query(on_sphere[: n // 5])
    return 0.5 * (sphere_distance(on_mesh, center, radius).mean() + to_mesh.mean())


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    v = vertices.astype(np.float64)
    return float(np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6.0)


def boundary_edges(faces: np.ndarray) -> int:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts == 1).sum())


def shell_density(points: np.ndarray) -> np.ndarray:
    """A hollow shell of density around the sphere (as splats and many fields are)."""
    return 50.0 * np.exp(-(np.linalg.norm(points - CENTER, axis=1) - RADIUS) ** 2 / (2 * 0.02**2))


# -- the extraction core on analytic densities -------------------------------------------------
def test_a_hollow_shell_gives_one_closed_outward_sphere():
    grid = Grid.around(CENTER - 0.8, CENTER + 0.8, 64)
    values = sample_grid(shell_density, grid, max_points=5000)  # many slabs
    result = extract(values, grid, level=25.0)
    v, f = result.vertices, result.faces
    assert result.stats["kept"] == 1 and result.stats["filled_samples"] > 0  # the inner wall is gone
    assert boundary_edges(f) == 0  # closed
    assert signed_volume(v, f) > 0  # normals point outwards
    offset = 0.02 * np.sqrt(2 * np.log(2))  # where the shell's density is half its peak, outside
    chamfer = surface_chamfer(v, f, radius=RADIUS + offset)
    assert chamfer < 0.004 * (2 * RADIUS), chamfer  # 0.4 % of the diameter at 64 cells


def test_the_automatic_level_of_a_soft_field_finds_its_surface():
    """A soft ball (density rising to 30 over a few hundredths inside its radius, as a field
    trained for a short time is): the level where it turns opaque from outside lies close to
    its radius; one grid cell half opaque (ln 2 / spacing, near the peak) would lie deep inside."""
    from backend.mesh.extract import opacity_level

    grid = Grid.around(CENTER - 0.8, CENTER + 0.8, 64)
    values = sample_grid(lambda p: 30.0 / (1.0 + np.exp((np.linalg.norm(p - CENTER, axis=1) - RADIUS) / 0.02)), grid)
    level = opacity_level(values, grid.spacing)
    assert 1.0 < level < 20.0
    result = extract(values, grid, level)
    radius = np.linalg.norm(result.vertices - CENTER, axis=1)
    assert abs(radius.mean() - RADIUS) < 0.02 * RADIUS, radius.mean()
    deep = extract(sample_grid(lambda p: 30.0 / (1.0 + np.exp((np.linalg.norm(p - CENTER, axis=1) - RADIUS) / 0.02)),
                               grid), grid, np.log(2.0) / grid.spacing)
    assert np.linalg.norm(deep.vertices - CENTER, axis=1).mean() < 0.93 * RADIUS


def test_a_steep_density_is_interpolated_in_log_space():
    """A density rising by orders of magnitude across its surface (as a trained field's does):
    the vertices land on the level set within a hundredth of a cell, where interpolating the
    density itself along the cube edges leaves them a tenth of a cell off on average (a
    third at worst), crowded next to the outer grid points."""
    from skimage import measure

    grid = Grid.around(CENTER - 0.8, CENTER + 0.8, 48)
    level = 50.0
    values = sample_grid(lambda p: level * np.exp((RADIUS - np.linalg.norm(p - CENTER, axis=1)) / 0.01), grid)
    vertices, _ = level_set(values, level, grid)
    error = np.abs(np.linalg.norm(vertices - CENTER, axis=1) - RADIUS) / grid.spacing
    assert error.mean() < 0.03 and error.max() < 0.2, (error.mean(), error.max())
    linear, *_ = measure.marching_cubes(values, level=level, spacing=(grid.spacing,) * 3)
    linear_error = np.abs(np.linalg.norm(linear + grid.lo - CENTER, axis=1) - RADIUS) / grid.spacing
    assert linear_error.mean() > 5 * error.mean(), (linear_error.mean(), error.mean())


def test_cleanup_drops_a_floater_and_keeps_what_is_asked():
    grid = Grid.around([-1, -1, -1], [1.5, 1, 1], 64)

    def two_balls(p):
        big = np.linalg.norm(p, axis=1) < 0.6
        small = np.linalg.norm(p - [1.2, 0, 0], axis=1) < 0.12
        return (big | small).astype(np.float32)

    values = sample_grid(two_balls, grid)
    vertices, faces = level_set(values, 0.5, grid)
    kept_v, kept_f, stats = keep_components(vertices, faces, min_fraction=0.05)
    assert stats == {"components": 2, "kept": 1, "dropped_faces": stats["dropped_faces"]} and stats["dropped_faces"] > 0
    assert np.linalg.norm(kept_v, axis=1).max() < 0.7  # only the big ball
    both_v, _, both = keep_components(vertices, faces, min_fraction=0.0)
    assert both["kept"] == 2 and len(both_v) == len(vertices)
    _, _, first = keep_components(vertices, faces, min_fraction=0.0, max_components=1)
    assert first["kept"] == 1


def test_decimation_meets_the_face_budget_and_keeps_the_shape():
    grid = Grid.around(CENTER - 0.8, CENTER + 0.8, 96)
    values = sample_grid(lambda p: RADIUS - np.linalg.norm(p - CENTER, axis=1), grid)
    vertices, faces = level_set(values, 0.0, grid)
    colors = np.tile(np.array([[10, 200, 30]], np.uint8), (len(vertices), 1))
    v, f, c = decimate(vertices, faces, 3000, colors)
    assert len(faces) > 20000 and 2800 < len(f) <= 3000  # the budget, nearly all of it
    assert len(np.unique(np.sort(f, axis=1), axis=0)) == len(f)  # no triangle twice (Blender would drop it)
    assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
    assert c.shape == (len(v), 3) and np.all(c == [10, 200, 30])
    assert surface_chamfer(v, f) < 0.02 * (2 * RADIUS)
    assert signed_volume(v, f) > 0


# -- a field with known geometry -------------------------------------------------------------------
def fitted_sphere_field(folder: Path, steps: int = 300, seed: int = 0, center=CENTER, radius: float = RADIUS,
                        box: float = 2.0, occupied_everywhere: bool = False) -> Path:
    """A hash-grid field fitted directly to a sphere (log-density from log 0.01 outside to
    log 2e5 inside across a thin shell, so the automatic level at about 50 falls midway, at
    the sphere; colour
    TOP_RGB above the centre, BOTTOM_RGB below), saved as a 'nerf' job would save it, in a
    box ``box`` radii wide, with an occupancy grid marking the cells near the sphere (or,
    ``occupied_everywhere``, every cell, as haze and floaters leave a trained field's)."""
    from backend.nerf.field import Field, FieldConfig, SceneFrame, build_model, save_field
    from backend.nerf.hashgrid import HashGridConfig
    from backend.nerf.render import OccupancyGrid, unit_to_world

    config = FieldConfig(hashgrid=HashGridConfig(levels=8, log2_table_size=14, base_resolution=4, finest_resolution=96))
    model = build_model(config, seed=seed)
    center = np.asarray(center, np.float64)
    frame = SceneFrame("box", tuple(center + [0.1, 0.0, -0.1]), (box * radius,) * 3)
    generator = torch.Generator().manual_seed(seed)
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)  # small steps: one thread is many times faster than several on a busy machine
    numba.set_num_threads(1)
    try:
        _fit(model, frame, steps, generator, center, radius)
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(numba_threads)
    occupancy = OccupancyGrid(resolution=32)
    cells = unit_to_world(occupancy.cell_centers(), frame)
    occupancy.bits = ((cells - torch.tensor(center, dtype=torch.float32)).norm(dim=1) < radius * (1 + 12.0 / 32))
    if occupied_everywhere:
        occupancy.bits[:] = True
    occupancy.density = torch.where(occupancy.bits, 100.0, 0.0)
    save_field(folder, Field(config, model, frame, 0.1, 10.0, (1.0, 1.0, 1.0), occupancy, {"train_views": 40}))
    return folder


def _fit(model, frame, steps: int, generator: torch.Generator, center, radius: float) -> None:
    from backend.nerf.render import unit_to_world

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-15)
    center = torch.tensor(center, dtype=torch.float32)
    top, bottom = torch.tensor(TOP_RGB, dtype=torch.float32), torch.tensor(BOTTOM_RGB, dtype=torch.float32)
    for _ in range(steps):
        u = torch.rand(BATCH, 3, generator=generator)
        near = torch.randn(BATCH, 3, generator=generator)
        near = center + near / near.norm(dim=1, keepdim=True) * (radius * (1 + 0.1 * torch.randn(BATCH, 1, generator=generator)))
        u = torch.cat([u, frame.to_unit(near).clamp(0, 1)])
        x = unit_to_world(u, frame)
        inside = torch.sigmoid((radius - (x - center).norm(dim=1)) / (0.01 * radius))
        target_log = inside * np.log(2e5) + (1 - inside) * np.log(0.01)
        dirs = torch.nn.functional.normalize(torch.randn(len(u), 3, generator=generator), dim=1)
        geo = model.geometry(u)
        rgb = model.color(geo, dirs)
        want = torch.where((x[:, 2] > center[2])[:, None], top, bottom)
        loss = ((geo[:, 0] - target_log) ** 2).mean() + 10 * (((rgb - want) ** 2).sum(1) * inside).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.fixture(scope="module")
def sphere_field(tmp_path_factory) -> Path:
    return fitted_sphere_field(tmp_path_factory.mktemp("field") / "field")


def test_the_grid_spans_the_object_not_the_field_box(tmp_path):
    """A field whose box is three times the sphere's size and occupied everywhere: --focus
    (the default) finds the sphere on a coarse grid and spends --resolution across it, so
    the same resolution gives a finer grid and a closer surface than --no-focus."""
    field = fitted_sphere_field(tmp_path / "field", box=6.0, occupied_everywhere=True)
    found = {}
    for flag in ("--focus", "--no-focus"):
        out = tmp_path / flag.strip("-")
        proc = run_backend("mesh", "--field", str(field), "--out", str(out), "--resolution", "64", "--no-colors",
                           "--no-visible-only", flag)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((out / "manifest.json").read_text())["summary"]
        with np.load(out / "mesh.npz") as data:
            found[flag] = summary["spacing"], surface_chamfer(data["vertices"], data["faces"]), proc.stderr
    (focused, chamfer_focused, said), (whole, chamfer_whole, _) = found["--focus"], found["--no-focus"]
    assert "the surface lies in" in said  # the log says how far the grid was narrowed
    assert focused < 0.6 * whole, (focused, whole)
    assert chamfer_focused < chamfer_whole, (chamfer_focused, chamfer_whole)


def test_field_mesh_from_the_command_line(sphere_field, tmp_path):
    import trimesh
    from plyfile import PlyData

    out = tmp_path / "mesh"
    proc = run_backend("mesh", "--field", str(sphere_field), "--out", str(out), "--resolution", "96")
    assert proc.returncode == 0, proc.stderr
    ply = PlyData.read(str(out / "mesh.ply"))
    assert {p.name for p in ply["vertex"].properties} == {"x", "y", "z", "red", "green", "blue"}
    loaded = trimesh.load(out / "mesh.ply", process=False)
    with np.load(out / "mesh.npz") as data:
        vertices, faces, colors = data["vertices"], data["faces"], data["colors"]
    assert vertices.dtype == np.float32 and faces.dtype == np.int32 and colors.dtype == np.uint8
    np.testing.assert_allclose(loaded.vertices, vertices)
    np.testing.assert_array_equal(loaded.faces, faces)
    chamfer = surface_chamfer(vertices, faces)
    assert chamfer < 0.01 * (2 * RADIUS), chamfer  # the target: 1 % of the object's size
    assert signed_volume(vertices, faces) > 0
    summary = json.loads((out / "manifest.json").read_text())["summary"] if (out / "manifest.json").is_file() else {}
    if summary:
        assert summary["faces"] == len(faces)
    # colours: the upper half's colour above, the lower half's below (away from the equator)
    z = vertices[:, 2] - CENTER[2]
    top = colors[z > 0.2].mean(0) / 255.0
    bottom = colors[z < -0.2].mean(0) / 255.0
    assert np.abs(top - TOP_RGB).max() < 0.08, top
    assert np.abs(bottom - BOTTOM_RGB).max() < 0.08, bottom


def test_field_mesh_with_a_face_budget_in_process(sphere_field, tmp_path):
    events = []
    type_, fields = run_job("mesh", {"resolution": 64, "max_faces": 2000, "colors": False},
                            {"field": str(sphere_field)}, "mesh-budget", tmp_path / "job",
                            lambda t, f: events.append((t, f)))
    assert type_ == protocol.RESULT, fields
    summary = fields["summary"]
    assert summary["faces"] <= 2000 and summary["colors"] is False
    with np.load(tmp_path / "job" / "mesh.npz") as data:
        assert "colors" not in data.files
        assert surface_chamfer(data["vertices"], data["faces"]) < 0.02 * (2 * RADIUS)
    stages = {f["stage"] for t, f in events if t == protocol.PROGRESS}
    assert {"load", "sample", "surface", "decimate"} <= stages


def test_an_empty_level_set_says_which_threshold_to_lower(sphere_field, tmp_path):
    proc = run_backend("mesh", "--field", str(sphere_field), "--out", str(tmp_path / "out"), "--resolution", "16",
                       "--threshold", "1e12")
    assert proc.returncode == 2
    assert "No surface at threshold 1e+12" in proc.stderr and "Lower the threshold (--threshold) below" in proc.stderr
    assert "densities found range from" in proc.stderr


def test_a_folder_that_is_not_a_field_is_named(tmp_path):
    (tmp_path / "notes").mkdir()
    proc = run_backend("mesh", "--field", str(tmp_path / "notes"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert str(tmp_path / "notes") in proc.stderr and "neither a trained field" in proc.stderr
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "field.json").write_text(json.dumps({"format": "something-else"}))
    proc = run_backend("mesh", "--field", str(tmp_path / "fake"), "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2 and "is not a Recon radiance field" in proc.stderr


# -- splats ------------------------------------------------------------------------------------------
def sphere_splats(path: Path, n: int = 3000, with_floater: bool = True) -> Path:
    """Flat Gaussians tiling a sphere (tangent discs), coloured like the field above; and a
    small clump of Gaussians away from it (a floater)."""
    from backend.splat.ply import Splats, write_splats
    from backend.splat.sh import SH_C0

    golden = np.pi * (3 - np.sqrt(5))
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    normal = np.stack([r * np.cos(golden * i), r * np.sin(golden * i), z], -1)
    means = CENTER + RADIUS * normal
    # rotation taking local z to the normal: quaternion from (0, 0, 1) to n
    w = 1 + normal[:, 2]
    q = np.stack([w, -normal[:, 1], normal[:, 0], np.zeros(n)], -1)
    q[w < 1e-6] = [0, 1, 0, 0]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    spacing = RADIUS * np.sqrt(4 * np.pi / n)
    scales = np.tile([spacing * 0.8, spacing * 0.8, 0.003], (n, 1))
    rgb = np.where((normal[:, 2] > 0)[:, None], TOP_RGB, BOTTOM_RGB)
    opacity = np.full(n, 0.9)
    if with_floater:
        clump = CENTER + [0.9, 0.0, 0.0] + 0.02 * np.random.default_rng(1).normal(size=(20, 3))
        means = np.concatenate([means, clump])
        q = np.concatenate([q, np.tile([1.0, 0, 0, 0], (20, 1))])
        scales = np.concatenate([scales, np.full((20, 3), 0.02)])
        rgb = np.concatenate([rgb, np.full((20, 3), 0.5)])
        opacity = np.concatenate([opacity, np.full(20, 0.9)])
    sh = ((rgb - 0.5) / SH_C0)[:, None, :]
    write_splats(path, Splats(means.astype(np.float32), q.astype(np.float32), np.log(scales).astype(np.float32),
                              np.log(opacity / (1 - opacity)).astype(np.float32), sh.astype(np.float32)))
    return path


def test_splats_of_a_sphere_give_a_sphere_without_the_floater(tmp_path):
    (tmp_path / "splat-job").mkdir()
    sphere_splats(tmp_path / "splat-job" / "splats.ply")
    type_, fields = run_job("mesh", {"resolution": 128}, {"field": str(tmp_path / "splat-job")}, "mesh-splats",
                            tmp_path / "job", lambda *a: None)
    assert type_ == protocol.RESULT, fields
    assert fields["summary"]["source"] == "splats" and fields["summary"]["kept_components"] == 1
    with np.load(tmp_path / "job" / "mesh.npz") as data:
        vertices, faces, colors = data["vertices"], data["faces"], data["colors"]
    assert sphere_distance(vertices).max() < 0.05  # the floater (0.4 beyond the surface) is gone
    assert boundary_edges(faces) == 0 and signed_volume(vertices, faces) > 0
    # The level set of a thin shell sits just outside it (half its drawn thickness, at least
    # half a grid spacing): about 1 % of the diameter at 128 cells.
    chamfer = surface_chamfer(vertices, faces)
    assert chamfer < 0.015 * (2 * RADIUS), chamfer
    z = vertices[:, 2] - CENTER[2]
    assert np.abs(colors[z > 0.2].mean(0) / 255.0 - TOP_RGB).max() < 0.05
    assert np.abs(colors[z < -0.2].mean(0) / 255.0 - BOTTOM_RGB).max() < 0.05


def test_a_mesh_ply_is_not_splats(tmp_path):
    from backend.geometry.io import write_mesh_ply

    write_mesh_ply(tmp_path / "tri.ply", np.eye(3, dtype=np.float32), np.array([[0, 1, 2]]))
    proc = run_backend("mesh", "--field", str(tmp_path / "tri.ply"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "is a mesh (it has faces), not Gaussian splats" in proc.stderr


def test_cancel_while_sampling_writes_no_mesh(sphere_field, tmp_path):
    import threading

    cancel = threading.Event()
    events = []

    def emit(type_, fields):
        events.append(type_)
        if type_ == protocol.PROGRESS and fields["stage"] == "sample":
            cancel.set()

    type_, _ = run_job("mesh", {"resolution": 96}, {"field": str(sphere_field)}, "mesh-cancel", tmp_path / "job", emit,
                       cancel)
    assert type_ == protocol.CANCELLED
    assert not (tmp_path / "job" / "mesh.npz").exists() and not (tmp_path / "job" / "mesh.ply").exists()


def test_an_unbounded_field_is_meshed_in_its_inner_cube(sphere_field, tmp_path):
    """A contracted (unbounded) frame: only its inner cube (centre +- radius) is sampled."""
    import shutil

    folder = tmp_path / "unbounded"
    shutil.copytree(sphere_field, folder)
    meta = json.loads((folder / "field.json").read_text())
    meta["frame"]["kind"] = "contracted"
    (folder / "field.json").write_text(json.dumps(meta))
    with np.load(folder / "field.npz") as data:  # no occupancy grid: the whole inner cube
        arrays = {k: data[k] for k in data.files if not k.startswith("occupancy.")}
    np.savez(folder / "field.npz", **arrays)
    type_, fields = run_job("mesh", {"resolution": 24, "threshold": 1.0, "colors": False}, {"field": str(folder)},
                            "mesh-unbounded", tmp_path / "job", lambda *a: None)
    assert type_ == protocol.RESULT, fields
    lo, hi = (np.array(b) for b in fields["summary"]["bounds"])
    center, half = np.array(meta["frame"]["center"]), np.array(meta["frame"]["half_size"])
    np.testing.assert_allclose(lo, center - half, atol=1e-6)
    assert np.all(hi >= center + half - 1e-6) and np.all(hi <= center + half + half / 24 + 1e-6)


# -- faces no camera sees ----------------------------------------------------------------------
def ring_cameras(center=CENTER, n: int = 8, distance: float = 2.5, size: int = 64):
    """``n`` pinhole cameras on a tilted ring around ``center``, looking at it (OpenCV axes)."""
    from backend.nerf.rays import Cameras

    c2w = []
    for k in range(n):
        angle = 2 * np.pi * k / n
        eye = np.asarray(center) + distance * np.array([np.cos(angle), np.sin(angle), 0.4 * (-1) ** k])
        forward = (np.asarray(center) - eye) / np.linalg.norm(eye - center)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, forward, eye
        c2w.append(m)
    f = size / (2 * np.tan(np.radians(20)))
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float64).repeat(n, 1, 1)
    return Cameras([f"c{k}" for k in range(n)], K, torch.tensor(np.stack(c2w)), [size] * n, [size] * n,
                   ["PINHOLE"] * n, [np.zeros(0)] * n)


def test_surfaces_inside_the_object_that_no_camera_sees_are_dropped():
    """A ball with a hollow gap holding a smaller ball (cavities not filled): three nested
    spheres; the cameras see only the outer one, and only it is kept, whole."""
    from backend.mesh.visible import seen_faces

    grid = Grid.around(CENTER - 0.7, CENTER + 0.7, 56)

    def nested(p):
        r = np.linalg.norm(p - CENTER, axis=1)
        return ((r < RADIUS) & ~((r > 0.25) & (r < 0.35))).astype(np.float32)

    result = extract(sample_grid(nested, grid), grid, 0.5, fill=False, min_fraction=0.0)
    v, f = result.vertices, result.faces
    assert result.stats["kept"] == 3
    seen = seen_faces(v, f, ring_cameras(), tolerance=grid.spacing)
    kept_v, kept_f, parts = keep_components(v, f[seen], min_fraction=0.05)
    radius = np.linalg.norm(kept_v - CENTER, axis=1)
    assert parts["kept"] == 1 and radius.min() > 0.45, (parts, radius.min())
    outer = np.linalg.norm(v[f].mean(1) - CENTER, axis=1) > 0.42
    assert seen[outer].mean() > 0.999 and not seen[~outer].any()  # the outer sphere whole, nothing inside
    assert boundary_edges(kept_f) == 0


def test_the_job_keeps_what_the_scene_cameras_see_and_skips_without_cameras(sphere_field, tmp_path):
    cameras = ring_cameras(size=48)
    frames = []
    for k in range(len(cameras)):
        c2w = cameras.c2w[k].numpy() @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> transforms.json's OpenGL axes
        frames.append({"file_path": f"c{k}.png", "transform_matrix": c2w.tolist()})
    K = cameras.Ks[0].numpy()
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"w": 48, "h": 48, "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": 24.0, "cy": 24.0, "frames": frames}))
    type_, fields = run_job("mesh", {"resolution": 64, "colors": False}, {"field": str(sphere_field),
                            "scene": str(tmp_path / "transforms.json")}, "mesh-visible", tmp_path / "job", lambda t, f: None)
    assert type_ == protocol.RESULT, fields
    visibility = fields["summary"]["visibility"]
    assert visibility["cameras"] == 8 and visibility["hidden_area"] < 0.01, visibility
    with np.load(tmp_path / "job" / "mesh.npz") as data:
        assert surface_chamfer(data["vertices"], data["faces"]) < 0.01 * (2 * RADIUS)
        assert boundary_edges(data["faces"]) == 0
    # the field names no scene: every face kept, with a note
    type_, fields = run_job("mesh", {"resolution": 32, "colors": False}, {"field": str(sphere_field)},
                            "mesh-novis", tmp_path / "job2", lambda t, f: None)
    assert type_ == protocol.RESULT and "skipped" in fields["summary"]["visibility"], fields
