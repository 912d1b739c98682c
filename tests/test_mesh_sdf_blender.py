# SPDX-License-Identifier: GPL-3.0-or-later
"""``recon.extract_mesh`` with ``mode="sdf"`` in headless Blender, through the real backend:
the setting reaches the job, and the SDF mesh of an aligned reconstruction's field lands on
the sphere its cameras look at."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_meshes_blender import RADIUS, reconstruction, world_vertices  # noqa: F401 - the fixture

pytestmark = pytest.mark.blender


def test_the_sdf_mode_reaches_the_job_and_gives_the_sphere(reconstruction):  # noqa: F811 - the fixture
    import bpy

    api, collection = reconstruction["api"], reconstruction["collection"]
    operator = bpy.ops.recon.extract_mesh.get_rna_type()
    modes = [item.identifier for item in operator.properties["mode"].enum_items]
    assert modes == ["density", "sdf"] and "sdf_steps" in operator.properties.keys()
    job, finish = api.submit_extract_mesh(collection, mode="sdf", sdf_steps=60, resolution=32, max_faces=3000)
    obj = finish()
    assert job.config["mode"] == "sdf" and job.config["sdf_steps"] == 60
    assert job.summary["mode"] == "sdf" and job.summary["sdf"]["density_fit"]["steps"] == 60
    S = np.array(collection["recon_alignment"]).reshape(4, 4)
    scale = np.cbrt(np.linalg.det(S[:3, :3]))
    distance = np.linalg.norm(world_vertices(obj) - S[:3, 3], axis=1)
    assert abs(distance.mean() - scale * RADIUS) < 0.03 * scale * RADIUS, (distance.mean(), scale * RADIUS)
    assert obj.name in collection.objects and 0 < len(obj.data.polygons) <= 3000
