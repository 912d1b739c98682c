# SPDX-License-Identifier: GPL-3.0-or-later
"""Anny behind Recon's body-model interface. Slow the first time on a machine: building
Anny's model data for a rig takes about 3 minutes (then cached in .venv/recon-cache)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

os.environ.setdefault("RECON_CACHE_DIR", str(ROOT / ".venv" / "recon-cache"))
pytest.importorskip("anny")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    from backend.body.anny_model import load_anny

    return load_anny("default")


def test_interface_sizes_and_rest_pose(model):
    assert model.name == "anny" and model.num_bones == 104 and model.num_vertices == 13718
    assert model.shape_names == ["gender", "age", "muscle", "weight", "height", "proportions"]
    shape = model.shape_default[None]
    rest = model(shape, torch.zeros(1, model.num_bones, 3))
    assert torch.allclose(rest.vertices, rest.rest_vertices, atol=1e-5)
    height = float(rest.rest_vertices[0, :, 2].max() - rest.rest_vertices[0, :, 2].min())
    assert 1.6 < height < 2.0  # an adult, metres, Z up
    nose, left_ear = rest.keypoints[0, 0], rest.keypoints[0, 3]
    assert nose[1] < left_ear[1] and left_ear[0] > 0  # faces -Y; its left is +X
    torch.testing.assert_close(model.skin_weights.sum(1), torch.ones(model.num_vertices))
    heads, frames, lengths = model.bone_frames(shape)
    eye = torch.eye(3).expand_as(frames[0])
    assert torch.allclose(frames[0] @ frames[0].transpose(1, 2), eye, atol=1e-4) and bool((lengths > 0).all())


def test_fast_phenotype_coefficients_match_annys(model):
    import anny

    module = anny.Anny(skinning_method="lbs").float()
    torch.manual_seed(0)
    shape = torch.rand(32, 6)
    shape[0] = torch.tensor([0.0, 1 / 3, 0.5, 0.0, 1.0, 0.25])  # on anchors
    shape[1, 1] = -0.2  # outside the range: clamped
    reference = module._get_phenotype_blendshape_coefficients(shape, shape[:, :0], shape[:, :0])
    torch.testing.assert_close(model.shape_to_coeffs(shape), reference, atol=1e-5, rtol=1e-5)
    # the same gradients, on anchors (0.5 is one for muscle and weight) and at the range's ends too
    for values in ([0.5] * 6, [0.0, 1 / 3, 0.5, 0.0, 1.0, 0.25], [1.0] * 6):
        ours = torch.tensor([values], requires_grad=True)
        theirs = torch.tensor([values], requires_grad=True)
        weights = torch.arange(reference.shape[1], dtype=torch.float32)
        (model.shape_to_coeffs(ours) @ weights).sum().backward()
        (module._get_phenotype_blendshape_coefficients(theirs, theirs[:, :0], theirs[:, :0]) @ weights).sum().backward()
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-4, rtol=1e-4)


def test_a_bone_rotation_moves_its_limb_only(model):
    shape = model.shape_default[None]
    rotvecs = torch.zeros(1, model.num_bones, 3)
    upperarm = model.bone_names.index("upperarm01.L")
    rotvecs[0, upperarm] = torch.tensor([0.0, 0.5, 0.0])
    posed, rest = model(shape, rotvecs), model(shape, torch.zeros_like(rotvecs))
    moved = (posed.vertices - rest.vertices).norm(dim=-1)[0]
    hand = model.skin_weights.new_zeros(model.num_vertices, dtype=torch.bool)
    wrist = model.bone_names.index("wrist.L")
    hand |= ((model.skin_indices == wrist) & (model.skin_weights > 0.5)).any(1)
    right_leg = ((model.skin_indices == model.bone_names.index("lowerleg01.R")) & (model.skin_weights > 0.5)).any(1)
    assert float(moved[hand].min()) > 0.05 and float(moved[right_leg].max()) < 1e-6
    np.testing.assert_allclose(posed.keypoints[0, 6].numpy(), rest.keypoints[0, 6].numpy(), atol=1e-6)  # right shoulder


def test_mixamo_rig_maps_the_fitted_joints():
    from backend.body.anny_model import load_anny
    from backend.body.fit import Rig

    mixamo = load_anny("mixamo")
    assert mixamo.bone_names[0] == "mixamorig:Hips"
    rig = Rig(mixamo)
    assert len(rig.bones) == 16 and rig.names[0] == "root"
    assert {mixamo.bone_names[b] for b in rig.bones} >= {"mixamorig:LeftUpLeg", "mixamorig:RightForeArm"}
