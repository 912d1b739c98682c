# SPDX-License-Identifier: GPL-3.0-or-later
"""The standard 3DGS .ply: written by us and read by plyfile (names, order, dtypes, values),
written by plyfile as other trainers do and read by us, and meshes or plain clouds refused."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InputError
from backend.splat.ply import Splats, property_names, read_splats, write_splats

plyfile = pytest.importorskip("plyfile")


def random_splats(n: int, degree: int, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    return Splats(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.normal(-3, 1, size=(n, 3)).astype(np.float32),
        logit_opacities=rng.normal(size=n).astype(np.float32),
        sh=rng.normal(size=(n, (degree + 1) ** 2, 3)).astype(np.float32),
    )


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_written_file_has_the_standard_layout(tmp_path, degree):
    splats = random_splats(50, degree)
    path = write_splats(tmp_path / "splats.ply", splats)
    ply = plyfile.PlyData.read(str(path))
    assert ply.byte_order == "<" and not ply.text
    assert [e.name for e in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    names = [p.name for p in vertex.properties]
    rest = 3 * ((degree + 1) ** 2 - 1)
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(rest)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == property_names(degree)
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in names)
    data = vertex.data
    np.testing.assert_array_equal(np.stack([data["x"], data["y"], data["z"]], 1), splats.means)
    np.testing.assert_array_equal(np.stack([data[f"rot_{i}"] for i in range(4)], 1), splats.quats)
    np.testing.assert_array_equal(np.stack([data[f"scale_{i}"] for i in range(3)], 1), splats.log_scales)
    np.testing.assert_array_equal(data["opacity"], splats.logit_opacities)
    np.testing.assert_array_equal(np.stack([data[f"f_dc_{i}"] for i in range(3)], 1), splats.sh[:, 0])
    assert not np.any(np.stack([data["nx"], data["ny"], data["nz"]]))
    if degree:
        # channel-major, as the reference implementation's features_rest.transpose(1, 2).flatten(1)
        m = (degree + 1) ** 2 - 1
        for channel in range(3):
            for j in range(m):
                np.testing.assert_array_equal(data[f"f_rest_{channel * m + j}"], splats.sh[:, 1 + j, channel])


def test_reads_a_file_written_by_plyfile(tmp_path):
    """As other trainers write it (the reference implementation uses plyfile)."""
    splats = random_splats(30, 3, seed=1)
    names = property_names(3)
    m = 15
    columns = {"x": splats.means[:, 0], "y": splats.means[:, 1], "z": splats.means[:, 2],
               "nx": 0, "ny": 0, "nz": 0, "opacity": splats.logit_opacities}
    for i in range(3):
        columns[f"f_dc_{i}"] = splats.sh[:, 0, i]
        columns[f"scale_{i}"] = splats.log_scales[:, i]
    for i in range(4):
        columns[f"rot_{i}"] = splats.quats[:, i]
    for channel in range(3):
        for j in range(m):
            columns[f"f_rest_{channel * m + j}"] = splats.sh[:, 1 + j, channel]
    table = np.empty(30, dtype=[(name, "f4") for name in names])
    for name in names:
        table[name] = columns[name]
    plyfile.PlyData([plyfile.PlyElement.describe(table, "vertex")]).write(str(tmp_path / "other.ply"))
    back = read_splats(tmp_path / "other.ply")
    for field in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        np.testing.assert_array_equal(getattr(back, field), getattr(splats, field), err_msg=field)
    assert back.sh_degree == 3


def test_round_trip_is_exact(tmp_path):
    splats = random_splats(1000, 2, seed=2)
    back = read_splats(write_splats(tmp_path / "a.ply", splats))
    for field in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        np.testing.assert_array_equal(getattr(back, field), getattr(splats, field), err_msg=field)


def test_refuses_meshes_and_plain_point_clouds(tmp_path):
    vertices = np.array([(0, 0, 0), (1, 0, 0), (0, 1, 0)], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex"),
                     plyfile.PlyElement.describe(faces, "face")]).write(str(tmp_path / "mesh.ply"))
    with pytest.raises(InputError, match="is a mesh"):
        read_splats(tmp_path / "mesh.ply")
    plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(InputError, match="point cloud, not Gaussian splats.*opacity"):
        read_splats(tmp_path / "cloud.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply at all")
    with pytest.raises(InputError, match="not a readable PLY"):
        read_splats(tmp_path / "junk.ply")
