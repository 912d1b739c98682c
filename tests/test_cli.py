# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m backend`` as a user runs it: doctor, and deform on real and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.deform.fit import mean_dihedral_degrees, mean_surface_chamfer, surface_chamfer
from backend.geometry.io import read_mesh, read_points, write_mesh_ply
from tests.conftest import data_path, run_backend


def test_doctor_prints_capabilities():
    proc = run_backend("doctor")
    assert proc.returncode == 0, proc.stderr
    caps = json.loads(proc.stdout)
    assert caps["torch"]["available"] and caps["python"].startswith("3.11")
    assert "pycolmap" in caps["packages"] and "cuda" in caps


@pytest.mark.data
@pytest.mark.slow
def test_deform_pedestrian_matches_the_book(tmp_path):
    cloud = data_path("pedestrian", "pedestrian.ply")
    book_vertices, book_faces = read_mesh(data_path("pedestrian", "deform1.ply"))
    proc = run_backend("deform", "--points", str(cloud), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["summary"]["iterations"] == 2000
    vertices, faces = read_mesh(tmp_path / "mesh.ply")
    assert vertices.shape == (2562, 3) and faces.shape == (5120, 3)
    assert np.isfinite(vertices).all()
    points = read_points(cloud)
    ours, book = mean_surface_chamfer(vertices, faces, points), mean_surface_chamfer(book_vertices, book_faces, points)
    print(f"chamfer ours {ours:.6f} book {book:.6f}; dihedral ours {mean_dihedral_degrees(vertices, faces):.2f} "
          f"book {mean_dihedral_degrees(book_vertices, book_faces):.2f} deg")
    assert ours <= book, "the fit is farther from the cloud than the book's result"
    assert mean_dihedral_degrees(vertices, faces) <= mean_dihedral_degrees(book_vertices, book_faces), "the fit is rougher than the book's"
    # In the cloud's own frame (not the normalised one).
    assert np.allclose(vertices.mean(0), points.mean(0), atol=0.1)
    assert abs(manifest["summary"]["chamfer"] - surface_chamfer(vertices, faces, points, 10_000, 0)) < 1e-6


def test_deform_with_a_template_mesh_keeps_its_topology(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    np.save(tmp_path / "cloud.npy", points * 2.0)
    import trimesh

    box = trimesh.creation.box(extents=(1, 1, 1)).subdivide().subdivide()
    write_mesh_ply(tmp_path / "template.ply", box.vertices, box.faces)
    proc = run_backend("deform", "--points", str(tmp_path / "cloud.npy"), "--template-mesh", str(tmp_path / "template.ply"),
                       "--iterations", "200", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    vertices, faces = read_mesh(tmp_path / "out" / "mesh.ply")
    assert len(vertices) == len(box.vertices) and np.array_equal(faces, box.faces)
    assert np.abs(np.linalg.norm(vertices, axis=1) - 2.0).mean() < 0.3  # pulled out to the radius-2 sphere


@pytest.mark.parametrize(
    "content, flags, expect",
    [
        (b"hello, this is text", [], "is not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n", [], "has no points"),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\nnan 1 2\n", [], "NaN or infinite"),
        (None, [], "does not exist"),
        (b"ply\n", ["--iterations", "0"], "iterations"),
    ],
)
def test_deform_bad_input_exits_2_with_a_clear_message(tmp_path, content, flags, expect):
    path = tmp_path / "cloud.ply"
    if content is not None:
        path.write_bytes(content)
    proc = run_backend("deform", "--points", str(path), "--out", str(tmp_path / "out"), *flags)
    assert proc.returncode == 2, proc.stderr
    assert expect in proc.stderr, proc.stderr
    if not flags:
        assert str(path) in proc.stderr
        assert (tmp_path / "out" / "job.log").is_file()
