# SPDX-License-Identifier: GPL-3.0-or-later
"""``mesh --mode sdf``: the SDF network's numerical derivatives against exact ones, and the
job through the command line on a field fitted to a known sphere, against the density mode
on the same field (closer to the sphere, and smoother)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend import protocol
from backend.jobs.runner import run_job
from backend.mesh.sdf import SDFNetwork, finite_differences
from tests.conftest import run_backend
from tests.test_mesh_job import (
    CENTER,
    RADIUS,
    TOP_RGB,
    fitted_sphere_field,
    signed_volume,
    sphere_splats,
    surface_chamfer,
)


def normal_angle(vertices: np.ndarray, faces: np.ndarray) -> float:
    """The mean angle (degrees) between the normals of faces sharing an edge: a mesh's
    roughness (a sphere of ~10,000 faces: about 2 degrees)."""
    v = vertices.astype(np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, owner = edges[order], owner[order]
    shared = np.all(edges[1:] == edges[:-1], axis=1)
    a, b = owner[:-1][shared], owner[1:][shared]
    return float(np.degrees(np.arccos(np.clip((n[a] * n[b]).sum(1), -1.0, 1.0))).mean())


# -- numerical derivatives -----------------------------------------------------------------------
def test_finite_differences_of_a_sphere_sdf_match_its_gradient_and_laplacian():
    center, radius = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64), 0.4

    def sphere(y):
        return (y - center).norm(dim=1) - radius

    y = torch.rand(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.6 - 0.8
    r = (y - center).norm(dim=1)
    y, r = y[r > 0.1], r[r > 0.1]
    value, gradient, laplacian = finite_differences(sphere, y, 1e-3)
    torch.testing.assert_close(value, r - radius)
    torch.testing.assert_close(gradient, (y - center) / r[:, None], atol=1e-4, rtol=0)
    torch.testing.assert_close(laplacian, 2.0 / r, rtol=1e-3, atol=0)  # the mean curvature's 2 / r, times 2


def test_finite_differences_of_the_network_match_autograd():
    """Within the hash grid's cells the network is smooth: central differences at a small
    step agree with autograd's gradient (the PyTorch encoding path, which differentiates
    with respect to the points)."""
    generator = torch.Generator().manual_seed(1)
    net = SDFNetwork(np.zeros(3) - 1.0, np.zeros(3) + 1.0, generator=generator)
    with torch.no_grad():
        net.encoding.table.normal_(0.0, 0.01, generator=generator)  # features that matter
    y = torch.rand(400, 3, generator=generator) * 1.6 - 0.8
    with torch.no_grad():
        _, numeric, _ = finite_differences(net.sdf, y, 2e-5)
    y_grad = y.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(net.sdf(y_grad).sum(), y_grad)
    error = (numeric - exact).norm(dim=1) / exact.norm(dim=1)
    # a step straddling a cell face of one of the 16 levels takes the mean of two slopes
    assert float(error.median()) < 1e-2 and float((error < 0.05).float().mean()) > 0.85, error


def test_the_network_starts_as_a_sphere():
    """SAL's geometric initialisation: about ``|y| - radius`` (64 random neurons: the zero
    level is a lumpy sphere), inside at the centre, outside at the cube's faces, the slope
    about 1 everywhere."""
    net = SDFNetwork(np.zeros(3) - 1.0, np.zeros(3) + 1.0, radius=0.5, margin=0.0,
                     generator=torch.Generator().manual_seed(0))
    d = torch.randn(2000, 3, generator=torch.Generator().manual_seed(2))
    d = d / d.norm(dim=1, keepdim=True)
    with torch.no_grad():
        centre, edge = float(net.sdf(torch.zeros(1, 3))), net.sdf(d)
        slope = (net.sdf(0.6 * d) - net.sdf(0.4 * d)) / 0.2
    assert centre < -0.3 and float(edge.min()) > 0.0, (centre, float(edge.min()))
    assert abs(float(slope.mean()) - 1.0) < 0.1 and float(slope.min()) > 0.3, slope


# -- the job ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sphere_field(tmp_path_factory):
    return fitted_sphere_field(tmp_path_factory.mktemp("field") / "field")


def test_sdf_mesh_from_the_command_line_is_near_the_sphere_and_smoother_than_density(sphere_field, tmp_path):
    """On the same field and grid (64 cells), the SDF mesh's chamfer to the sphere is within
    0.4 % of its diameter (measured: 0.20 %; the density mesh's 0.21 %, the exact sphere's own
    at this grid and sampling 0.15 %), and the angle between its adjacent faces exceeds that
    of the exact sphere's mesh on the same grid (1.4 degrees) by well under the density
    mesh's excess (measured: 1.4 degrees over against 3.1; asserted: under 60 % of it)."""
    from backend.mesh.extract import Grid, extract, sample_grid

    out_sdf, out_density = tmp_path / "sdf", tmp_path / "density"
    common = ["--field", str(sphere_field), "--resolution", "64"]
    proc = run_backend("mesh", *common, "--out", str(out_sdf), "--mode", "sdf", "--sdf-steps", "200")
    assert proc.returncode == 0, proc.stderr
    proc = run_backend("mesh", *common, "--out", str(out_density))
    assert proc.returncode == 0, proc.stderr
    meshes = {}
    for name, out in (("sdf", out_sdf), ("density", out_density)):
        with np.load(out / "mesh.npz") as data:
            meshes[name] = data["vertices"], data["faces"], data["colors"]
    vertices, faces, colors = meshes["sdf"]
    chamfer = surface_chamfer(vertices, faces)
    assert chamfer < 0.004 * (2 * RADIUS), chamfer
    assert signed_volume(vertices, faces) > 0
    summary = json.loads((out_sdf / "manifest.json").read_text())["summary"]
    assert summary["mode"] == "sdf" and summary["sdf"]["density_fit"]["steps"] == 200
    lo, hi = (np.array(b) for b in summary["bounds"])
    grid = Grid.around(lo, hi, 64)
    exact = extract(sample_grid(lambda p: RADIUS - np.linalg.norm(p - CENTER, axis=1), grid), grid, 0.0)
    ideal = normal_angle(exact.vertices, exact.faces)
    excess_sdf = normal_angle(vertices, faces) - ideal
    excess_density = normal_angle(*meshes["density"][:2]) - ideal
    assert excess_sdf < 0.6 * excess_density, (excess_sdf, excess_density, ideal)
    z = vertices[:, 2] - CENTER[2]  # colours from the field, as density meshes have
    assert np.abs(colors[z > 0.2].mean(0) / 255.0 - TOP_RGB).max() < 0.08


def test_sdf_refined_on_the_photos_stays_on_the_sphere(tmp_path):
    """``--sdf-photo-steps``: the SDF rendered against photos of the same sphere the field
    was fitted to (the colour head first, then the geometry) leaves the surface on it."""
    from tests.test_nerf_render import sphere_scene

    radius = 0.6
    transforms = sphere_scene(tmp_path / "scene", views=12, size=32, radius=radius)
    field = fitted_sphere_field(tmp_path / "field", center=np.zeros(3), radius=radius)
    out = tmp_path / "mesh"
    proc = run_backend("mesh", "--field", str(field), "--scene", str(transforms), "--out", str(out), "--resolution",
                       "48", "--mode", "sdf", "--sdf-steps", "100", "--sdf-photo-steps", "20", "--no-colors")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    photo = summary["sdf"]["photo_fit"]
    assert photo["steps"] == 20 and 0 < photo["photo"] < 0.1, photo
    with np.load(out / "mesh.npz") as data:
        distance = np.linalg.norm(data["vertices"].astype(np.float64), axis=1)
    assert abs(distance.mean() - radius) < 0.01 * radius and distance.std() < 0.01 * radius, (distance.mean(),
                                                                                            distance.std())


def test_sdf_mode_reports_progress_and_cancels(sphere_field, tmp_path):
    import threading

    cancel = threading.Event()
    stages = []

    def emit(type_, fields):
        if type_ == protocol.PROGRESS:
            stages.append(fields["stage"])
            if fields["stage"] == "sdf" and fields["done"] >= 20:
                cancel.set()

    type_, _ = run_job("mesh", {"resolution": 32, "mode": "sdf", "sdf_steps": 1000}, {"field": str(sphere_field)},
                       "mesh-sdf-cancel", tmp_path / "job", emit, cancel)
    assert type_ == protocol.CANCELLED
    assert "sdf" in stages and not (tmp_path / "job" / "mesh.npz").exists()


def test_sdf_mode_on_splats_says_it_needs_a_field(tmp_path):
    sphere_splats(tmp_path / "splats.ply", n=200, with_floater=False)
    proc = run_backend("mesh", "--field", str(tmp_path / "splats.ply"), "--out", str(tmp_path / "out"),
                       "--mode", "sdf")
    assert proc.returncode == 2
    assert "--mode sdf needs a trained field" in proc.stderr and "--mode density" in proc.stderr
