# SPDX-License-Identifier: GPL-3.0-or-later
"""The standard 3DGS .ply (addon/splat_io.py, no Blender), checked against plyfile: our
files read by plyfile have the reference names, order, dtypes and values, and files that
plyfile writes (any number type, ascii, big-endian) read back exactly; meshes and plain
point clouds are refused with the file's name."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from addon import splat_io

REFERENCE_ORDER = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                   + [f"f_rest_{i}" for i in range(45)]
                   + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def random_splats(n: int, degree: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = splat_io.REST_COUNTS[degree]
    return {
        "means": rng.normal(size=(n, 3)).astype(np.float32),
        "f_dc": rng.normal(size=(n, 3)).astype(np.float32),
        "f_rest": rng.normal(scale=0.1, size=(n, k)).astype(np.float32),
        "opacities": rng.normal(scale=3.0, size=n).astype(np.float32),
        "scales": rng.normal(-4.0, 1.0, size=(n, 3)).astype(np.float32),
        "quats": rng.normal(size=(n, 4)).astype(np.float32),
    }


def assert_same(a: dict, b: dict) -> None:
    for key in splat_io.KEYS:
        assert a[key].dtype == np.float32 and b[key].dtype == np.float32, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_written_file_has_the_reference_layout(tmp_path, degree):
    splats = random_splats(50, degree)
    path = splat_io.write_splats(tmp_path / "splats.ply", splats)
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    assert ply.text is False and ply.byte_order == "<"
    vertex = ply["vertex"]
    k = splat_io.REST_COUNTS[degree]
    expected = REFERENCE_ORDER[:9] + REFERENCE_ORDER[9: 9 + k] + REFERENCE_ORDER[-8:]
    assert [p.name for p in vertex.properties] == expected
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in expected)
    data = vertex.data
    np.testing.assert_array_equal(np.stack([data["x"], data["y"], data["z"]], 1), splats["means"])
    np.testing.assert_array_equal(np.stack([data["nx"], data["ny"], data["nz"]], 1), 0)
    np.testing.assert_array_equal(np.stack([data[f"f_dc_{i}"] for i in range(3)], 1), splats["f_dc"])
    for i in range(k):
        np.testing.assert_array_equal(data[f"f_rest_{i}"], splats["f_rest"][:, i])
    np.testing.assert_array_equal(data["opacity"], splats["opacities"])
    np.testing.assert_array_equal(np.stack([data[f"scale_{i}"] for i in range(3)], 1), splats["scales"])
    np.testing.assert_array_equal(np.stack([data[f"rot_{i}"] for i in range(4)], 1), splats["quats"])
    assert_same(splat_io.read_splats(path), splats)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place


def test_f_rest_is_channel_major():
    """f_rest_0..m-1 are red's coefficients, then green's, then blue's (the reference
    ``features_rest.transpose(1, 2).flatten``)."""
    coefficients = np.arange(2 * 15 * 3, dtype=np.float32).reshape(2, 15, 3)  # [n, m, rgb]
    rest = splat_io.coefficients_to_rest(coefficients)
    np.testing.assert_array_equal(rest[0, :15], coefficients[0, :, 0])
    np.testing.assert_array_equal(rest[0, 15:30], coefficients[0, :, 1])
    np.testing.assert_array_equal(splat_io.rest_to_coefficients(rest), coefficients)


def plyfile_splats(splats: dict, dtype: str = "f4", extra_first: bool = False) -> PlyElement:
    n, k = splats["f_rest"].shape
    columns = {"x": splats["means"][:, 0], "y": splats["means"][:, 1], "z": splats["means"][:, 2]}
    columns |= {f"f_dc_{i}": splats["f_dc"][:, i] for i in range(3)}
    columns |= {f"f_rest_{i}": splats["f_rest"][:, i] for i in range(k)}
    columns |= {"opacity": splats["opacities"]}
    columns |= {f"scale_{i}": splats["scales"][:, i] for i in range(3)}
    columns |= {f"rot_{i}": splats["quats"][:, i] for i in range(4)}
    names = list(columns)
    if extra_first:  # another tool's order, with extra properties
        names = ["red", *reversed(names)]
        columns["red"] = np.zeros(n)
    record = np.empty(n, dtype=[(name, "u1" if name == "red" else dtype) for name in names])
    for name in names:
        record[name] = columns[name]
    return PlyElement.describe(record, "vertex")


@pytest.mark.parametrize("variant", ["binary", "big_endian", "ascii", "double_shuffled"])
def test_reads_what_plyfile_writes(tmp_path, variant):
    splats = random_splats(40, degree=1, seed=3)
    element = plyfile_splats(splats, "f8" if variant == "double_shuffled" else "f4", extra_first=variant == "double_shuffled")
    path = tmp_path / "other.ply"
    PlyData([element], text=variant == "ascii", byte_order=">" if variant == "big_endian" else "<").write(str(path))
    read = splat_io.read_splats(path)
    if variant == "ascii":  # decimal text: float32 values to their printed precision
        for key in splat_io.KEYS:
            np.testing.assert_allclose(read[key], splats[key], rtol=1e-6, atol=1e-7, err_msg=key)
    else:
        assert_same(read, splats)


def test_refuses_a_mesh(tmp_path):
    vertex = np.array([(0, 0, 0), (1, 0, 0), (0, 1, 0)], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    face = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    path = tmp_path / "bunny.ply"
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")]).write(str(path))
    with pytest.raises(splat_io.SplatFileError, match=r"'bunny.ply' is a mesh \(1 faces\)"):
        splat_io.read_splats(path)


def test_refuses_a_plain_point_cloud(tmp_path):
    vertex = np.zeros(5, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    path = tmp_path / "points.ply"
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    with pytest.raises(splat_io.SplatFileError, match=r"'points.ply' is a plain point cloud.*lacks opacity, scale_0"):
        splat_io.read_splats(path)


def test_refuses_damaged_files(tmp_path):
    path = splat_io.write_splats(tmp_path / "cut.ply", random_splats(10, 0))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(splat_io.SplatFileError, match=r"'cut.ply' is truncated: 9 of 10"):
        splat_io.read_splats(path)
    (tmp_path / "text.ply").write_text("hello\n")
    with pytest.raises(splat_io.SplatFileError, match="'text.ply' is not a PLY file"):
        splat_io.read_splats(tmp_path / "text.ply")
    with pytest.raises(splat_io.SplatFileError, match="Cannot open"):
        splat_io.read_splats(tmp_path / "missing.ply")
    odd = random_splats(4, 1)
    odd["f_rest"] = odd["f_rest"][:, :5]
    with pytest.raises(ValueError, match="5 f_rest values"):
        splat_io.write_splats(tmp_path / "odd.ply", odd)


def test_empty_file_round_trips(tmp_path):
    empty = random_splats(0, 2)
    assert_same(splat_io.read_splats(splat_io.write_splats(tmp_path / "empty.ply", empty)), empty)


def test_dc_colour():
    rgb = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(splat_io.dc_to_rgb(splat_io.rgb_to_dc(rgb)), rgb, atol=1e-6)


def rotation_matrix(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def covariances(splats) -> np.ndarray:
    q = splats["quats"].astype(np.float64)
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    R = np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                  np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                  np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], 1)
    variances = np.exp(2.0 * splats["scales"].astype(np.float64))
    return np.einsum("nij,nj,nkj->nik", R, variances, R)


@pytest.mark.parametrize("angle", [0.0, 0.7, 2.5, np.pi])
def test_transform_moves_turns_and_scales_gaussians_and_their_colours(angle):
    splats = random_splats(30, 3, seed=5)
    U = rotation_matrix([0.3, -1.0, 0.5], angle)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = 1.7 * U, [1.0, -2.0, 0.5]
    moved = splat_io.transform_splats(splats, matrix)
    np.testing.assert_allclose(moved["means"], splats["means"] @ (1.7 * U).T + [1.0, -2.0, 0.5], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(covariances(moved), 1.7**2 * U @ covariances(splats) @ U.T, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(moved["opacities"], splats["opacities"])
    np.testing.assert_array_equal(moved["f_dc"], splats["f_dc"])
    # the colour seen from direction U d after is the colour seen from d before
    d = np.random.default_rng(1).normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    before = np.einsum("kj,njc->nkc", splat_io.sh_basis(d, 3), splat_io.rest_to_coefficients(splats["f_rest"]))
    after = np.einsum("kj,njc->nkc", splat_io.sh_basis(d @ U.T, 3), splat_io.rest_to_coefficients(moved["f_rest"]))
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_transform_refuses_what_gaussians_cannot_hold():
    splats = random_splats(3, 1)
    for linear in (np.diag([1.0, 2.0, 1.0]), np.diag([-1.0, 1.0, 1.0]), np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])):
        matrix = np.eye(4)
        matrix[:3, :3] = linear
        with pytest.raises(ValueError, match="non-uniform scale"):
            splat_io.transform_splats(splats, matrix)
    same = splat_io.transform_splats(splats, np.eye(4))
    for key in splat_io.KEYS:
        np.testing.assert_allclose(same[key], splats[key], atol=1e-6)
