# SPDX-License-Identifier: GPL-3.0-or-later
"""The CPU training step with its backward written out (``backend.nerf.fused``) against
autograd through a plain PyTorch rendering of the same function: the loss and every
parameter's gradient, with every sample coloured and with samples behind opaque ones left
uncoloured, in one worker and in several, through both of its MLP paths (the numba kernel
calling MKL, :mod:`backend.nerf._mlp`, and PyTorch operations), and whether it adds to
gradients already there."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.nerf import _kernels, _mlp, fused
from backend.nerf.field import trunc_exp
from backend.nerf.hashgrid import hash_encode
from backend.nerf.render import composite, ray_spans, sample_occupied
from tests.test_nerf_fast import _field, _rays

pytestmark = pytest.mark.skipif(not _kernels.AVAILABLE, reason="numba is not installed")


def reference_loss(fld, origins, dirs, background, target, samples, jitter, min_transmittance):
    """The same function through autograd: the samples the light reaches (transmittance
    above ``min_transmittance``, from every sample's density) with their density and
    colour, the rest left out (no density, no colour)."""
    model = fld.model
    spans = ray_spans(origins, dirs, fld.frame, fld.near, fld.far)
    t, dt, count = sample_occupied(origins, dirs, spans, fld.frame, fld.occupancy, jitter)
    hit = torch.nonzero(count > 0).flatten()
    points = origins[hit][:, None, :] + t[hit][..., None] * dirs[hit][:, None, :]
    u = fld.frame.to_unit(points.reshape(-1, 3)).clamp(0.0, 1.0)
    geo = model.density_net(hash_encode(u, model.encoding.table, model.encoding.levels, "torch"))
    sigma = trunc_exp(geo[:, 0]).view(-1, samples)
    tau = sigma.detach() * dt[hit]
    lit = torch.exp(-(torch.cumsum(tau, 1) - tau)) > min_transmittance
    color = model.color(geo, dirs[hit]).view(-1, samples, 3) * lit[..., None]
    out = composite(sigma * lit, color, dt[hit], background[hit], t[hit])
    rgb = background.clone().index_copy(0, hit, out["rgb"])
    return F.mse_loss(rgb, target), int(lit.sum())


@pytest.fixture(params=["blas", "torch"])
def mlp_path(request, monkeypatch):
    """Which path runs the MLPs: ``blas`` (skipped where PyTorch has no MKL to call) or ``torch``."""
    if request.param == "blas":
        if not _mlp.available():
            pytest.skip("PyTorch exports no MKL sgemm_ here: the MLPs run as PyTorch operations")
        monkeypatch.setattr(_mlp, "BLOCK_SAMPLES", 16 * 3)  # blocks of 3 rays: a chunk's last block short
    else:
        monkeypatch.setenv("RECON_NERF_BLAS_KERNEL", "0")
    return request.param


@pytest.mark.parametrize("density_gain, min_transmittance, threads", [
    (1.0, 0.0, 1),  # every sample coloured: the chunks' broadcast path
    (40.0, 1e-2, 1),  # opaque: the samples behind are left out (the gather path)
    (40.0, 1e-2, 3),  # the same over three worker threads
])
def test_fused_step_gives_autograds_loss_and_gradients(density_gain, min_transmittance, threads, mlp_path,
                                                       monkeypatch):
    monkeypatch.setattr(fused, "CHUNK_SAMPLES", 16 * 7)  # many chunks, the last one short
    fld = _field(seed=3, density_gain=density_gain)
    origins, dirs = _rays(300, seed=4)
    g = torch.Generator().manual_seed(6)
    background, target, jitter = torch.rand(300, 3, generator=g), torch.rand(300, 3, generator=g), \
        torch.rand(300, 16, generator=g)
    model = fld.model

    loss, lit = reference_loss(fld, origins, dirs, background, target, 16, jitter, min_transmittance)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    out = fused.loss_and_grads(fld, origins, dirs, background, target, 16, jitter, min_transmittance, threads=threads)
    assert out["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert out["samples"] == lit
    if min_transmittance > 0:
        assert lit < 0.8 * 16 * 300, "the opaque field should leave samples uncoloured"
    for name, p in model.named_parameters():
        scale = float(expected[name].abs().max())
        assert scale > 0, name
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=3e-5 * scale, msg=name)


def test_fused_gradients_add_to_existing_ones(mlp_path):
    fld = _field(seed=1)
    origins, dirs = _rays(64, seed=2)
    g = torch.Generator().manual_seed(0)
    args = (origins, dirs, torch.rand(64, 3, generator=g), torch.rand(64, 3, generator=g), 8,
            torch.rand(64, 8, generator=g))
    fused.loss_and_grads(fld, *args)
    once = {name: p.grad.clone() for name, p in fld.model.named_parameters()}
    fused.loss_and_grads(fld, *args)
    for name, p in fld.model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name], msg=name)

