# SPDX-License-Identifier: GPL-3.0-or-later
"""The splat rasterizer's paths (numba kernels, eager-PyTorch tiles, gsplat on CUDA) against
the dense per-pixel reference: image, alpha and every gradient, on random small scenes and
edge cases; and the spherical harmonics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.splat import _kernels, sh
from backend.splat.rasterize import rasterize
from backend.splat.reference import rasterize_dense

LEAVES = ("means", "quats", "scales", "opacities", "colors")
CPU_BACKENDS = [
    pytest.param("numba", marks=pytest.mark.skipif(not _kernels.AVAILABLE, reason="numba is not installed")),
    "torch",
]


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """World-to-camera (OpenCV: x right, y down, z forward) for a camera at ``eye``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([x, y, z])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return torch.tensor(w2c)


def random_scene(n=60, cameras=2, width=40, height=30, seed=0, sh_degree=None, scale=-2.5):
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    scene = {
        "means": torch.rand(n, 3, generator=g, dtype=d) * 2 - 1,
        "quats": torch.randn(n, 4, generator=g, dtype=d),
        "scales": torch.exp(torch.randn(n, 3, generator=g, dtype=d) * 0.5 + scale),
        "opacities": torch.rand(n, generator=g, dtype=d),
        "colors": (torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=d) * 0.3 if sh_degree is not None
                   else torch.rand(n, 3, generator=g, dtype=d)),
        "viewmats": torch.stack([look_at((3.0 * math.sin(0.4 * c), 0.3 * c, -3.0 * math.cos(0.4 * c)))
                                 for c in range(cameras)]),
        "Ks": torch.tensor([[45.0, 0, width / 2 + 1.3], [0, 47.0, height / 2 - 0.7], [0, 0, 1]], dtype=d)
        .expand(cameras, 3, 3).clone(),
        "width": width,
        "height": height,
    }
    if sh_degree is not None:
        scene["sh_degree"] = sh_degree
    return scene


def render_and_grad(fn, scene, dtype, backgrounds=None, **kwargs):
    """Image, alpha, the leaves' gradients and means2d's gradient for a fixed random upstream."""
    inputs = {k: (v.to(dtype).clone().requires_grad_(k in LEAVES) if torch.is_tensor(v) else v) for k, v in scene.items()}
    if backgrounds is not None:
        kwargs["backgrounds"] = backgrounds.to(dtype)
    rgb, alpha, meta = fn(**inputs, **kwargs)
    meta["means2d"].retain_grad()
    g = torch.Generator().manual_seed(123)
    v_rgb = torch.randn(rgb.shape, generator=g, dtype=torch.float64).to(dtype)
    v_alpha = torch.randn(alpha.shape, generator=g, dtype=torch.float64).to(dtype)
    ((rgb * v_rgb).sum() + (alpha * v_alpha).sum()).backward()
    grads = {k: inputs[k].grad.double() for k in LEAVES}
    grads["means2d"] = meta["means2d"].grad.double()
    return rgb.detach().double(), alpha.detach().double(), grads, meta


def assert_matches_reference(scene, backend, backgrounds=None, atol=2e-5, rtol_grad=2e-4):
    ref_rgb, ref_alpha, ref_grads, _ = render_and_grad(rasterize_dense, scene, torch.float64, backgrounds)
    rgb, alpha, grads, meta = render_and_grad(rasterize, scene, torch.float32, backgrounds, backend=backend)
    assert meta["backend"] == backend
    torch.testing.assert_close(rgb, ref_rgb, atol=atol, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=atol, rtol=0)
    for name, ref in ref_grads.items():
        scale = max(float(ref.abs().max()), 1e-3)
        torch.testing.assert_close(grads[name], ref, atol=rtol_grad * scale, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    return ref_rgb, ref_alpha, ref_grads


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_scene_rgb(backend, seed):
    assert_matches_reference(random_scene(seed=seed), backend, backgrounds=torch.tensor([0.2, 0.5, 0.9]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("degree", [1, 3])
def test_random_scene_spherical_harmonics(backend, degree):
    assert_matches_reference(random_scene(seed=3, sh_degree=degree), backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_dense_overlap_hits_the_transmittance_stop(backend, monkeypatch):
    """Many large, nearly opaque Gaussians: pixels stop at T <= 1e-4, alphas clamp at 0.99."""
    scene = random_scene(n=150, cameras=1, seed=4, scale=-1.0)
    scene["opacities"] = 0.9 + 0.1 * scene["opacities"]
    scene["opacities"][:10] = 1.0  # alpha clamped at 0.99 at their centres
    ref_rgb, ref_alpha, _ = assert_matches_reference(scene, backend)
    from backend.splat import reference

    monkeypatch.setattr(reference, "T_MIN", 0.0)  # without the stop, most pixels would differ
    unstopped, _, _ = rasterize_dense(**scene)
    assert float(((unstopped - ref_rgb).abs().amax(-1) > 1e-6).double().mean()) > 0.5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_overlapping_depths_are_sorted(backend):
    """Gaussians stacked along the view axis at close, interleaved depths, in random order."""
    scene = random_scene(n=40, cameras=1, seed=5)
    g = torch.Generator().manual_seed(7)
    depth = torch.randperm(40, generator=g).double() * 0.01
    scene["means"] = torch.stack([0.05 * torch.randn(40, generator=g, dtype=torch.float64),
                                  0.05 * torch.randn(40, generator=g, dtype=torch.float64), depth - 0.2], 1)
    scene["viewmats"] = look_at((0.0, 0.0, -3.0))[None]
    scene["opacities"] = torch.full((40,), 0.3, dtype=torch.float64)
    assert_matches_reference(scene, backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_behind_camera_off_screen_and_thin(backend):
    scene = random_scene(n=30, cameras=1, seed=6)
    means = scene["means"]
    means[:5, 2] = -4.0  # behind the camera (it sits at z = -3 looking along +z)
    means[5:10, 2] = -2.995  # in front, closer than the near plane (0.01)
    means[10:15, 0] = 40.0  # far off-screen to the right
    scene["scales"][15:20, 0] = 1e-5  # needles and flat discs
    scene["scales"][20:25, 1:] = 1e-5
    scene["viewmats"] = look_at((0.0, 0.0, -3.0))[None]
    _, _, ref_grads = assert_matches_reference(scene, backend)
    rgb, alpha, grads, meta = render_and_grad(rasterize, scene, torch.float32, backend=backend)
    culled = slice(0, 15)
    assert (meta["radii"][0, culled] == 0).all()
    assert (meta["radii"][0, 15:] > 0).any()
    for name in LEAVES:
        assert torch.isfinite(grads[name]).all(), name
        assert float(grads[name][culled].abs().max()) == 0.0, name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nothing_visible_gives_the_background(backend):
    scene = random_scene(n=10, cameras=1, seed=8)
    scene["means"][:, 2] = -10.0  # all behind the camera
    rgb, alpha, grads, meta = render_and_grad(rasterize, scene, torch.float32, torch.tensor([0.1, 0.2, 0.3]),
                                              backend=backend)
    assert meta["n_isects"] == 0
    torch.testing.assert_close(rgb, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).expand_as(rgb))
    assert float(alpha.abs().max()) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads.values())


@pytest.mark.skipif(not _kernels.AVAILABLE, reason="numba is not installed")
def test_numba_and_torch_tiles_agree_on_a_larger_scene():
    """Thousands of Gaussians, image edges not multiples of the tile sizes, three cameras."""
    scene = random_scene(n=3000, cameras=3, width=70, height=53, seed=9, sh_degree=2, scale=-3.0)
    rgb_n, alpha_n, grads_n, meta_n = render_and_grad(rasterize, scene, torch.float32, backend="numba")
    rgb_t, alpha_t, grads_t, meta_t = render_and_grad(rasterize, scene, torch.float32, backend="torch")
    assert meta_n["n_isects"] > 3000
    torch.testing.assert_close(rgb_n, rgb_t, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha_n, alpha_t, atol=2e-5, rtol=0)
    for name in grads_n:
        scale = float(grads_t[name].abs().max())
        torch.testing.assert_close(grads_n[name], grads_t[name], atol=5e-4 * scale, rtol=0)


def test_projection_radii_bound_the_visible_footprint():
    """Outside its radii a Gaussian's alpha is below 1/255 (what makes tiling exact)."""
    scene = random_scene(n=200, cameras=1, width=64, height=64, seed=10, scale=-2.0)
    from backend.splat.rasterize import project
    from backend.splat.reference import pixel_centers

    proj = project(*(scene[k].float() for k in ("means", "quats", "scales", "opacities", "viewmats", "Ks")), 64, 64)
    centers = pixel_centers(64, 64)
    d = proj.means2d[0, :, None, :] - centers[None]  # [N, P, 2]
    a, b, c = proj.conics[0].unbind(-1)
    power = -0.5 * (a[:, None] * d[..., 0] ** 2 + c[:, None] * d[..., 1] ** 2) - b[:, None] * d[..., 0] * d[..., 1]
    alpha = scene["opacities"].float()[:, None] * torch.exp(power)
    outside = (d[..., 0].abs() > proj.radii[0, :, None, 0]) | (d[..., 1].abs() > proj.radii[0, :, None, 1])
    in_front = proj.depths[0] > 0.01
    assert float(alpha[outside & in_front[:, None]].max()) < 1.0 / 255.0


def test_spherical_harmonics_basis_is_orthonormal():
    """The 16 basis functions (3DGS constants) integrate to the identity over the sphere."""
    n_theta, n_phi = 100, 200
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) * math.pi / n_theta
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.5) * 2 * math.pi / n_phi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)], -1).reshape(-1, 3)
    weights = (torch.sin(t) * (math.pi / n_theta) * (2 * math.pi / n_phi)).reshape(-1)
    basis = []
    for k in range(16):
        coeffs = torch.zeros(len(dirs), 16, 3, dtype=torch.float64)
        coeffs[:, k, 0] = 1.0
        basis.append(sh.eval_sh(3, dirs, coeffs)[:, 0])
    basis = torch.stack(basis, 1)  # [P, 16]
    gram = basis.T @ (basis * weights[:, None])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-3, rtol=0)


def test_spherical_harmonics_dc_and_degrees():
    rgb = torch.rand(5, 3, dtype=torch.float64)
    torch.testing.assert_close(sh.sh_to_rgb(sh.rgb_to_sh(rgb)), rgb)
    coeffs = torch.randn(5, 16, 3, dtype=torch.float64)
    dirs = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(sh.eval_sh(0, dirs, coeffs), sh.SH_C0 * coeffs[:, 0])
    truncated = coeffs.clone()
    truncated[:, 4:] = 0.0
    torch.testing.assert_close(sh.eval_sh(1, dirs, coeffs), sh.eval_sh(3, dirs, truncated))
    assert [sh.degree_of(k) for k in (1, 4, 9, 16)] == [0, 1, 2, 3]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gsplat_matches_our_rasterizer():
    pytest.importorskip("gsplat")
    scene = random_scene(n=2000, cameras=2, width=96, height=64, seed=11, sh_degree=3, scale=-3.0)
    ours = render_and_grad(rasterize, scene, torch.float32, backend="torch")
    cuda_scene = {k: (v.float().cuda() if torch.is_tensor(v) else v) for k, v in scene.items()}
    inputs = {k: (v.clone().requires_grad_(k in LEAVES) if torch.is_tensor(v) else v) for k, v in cuda_scene.items()}
    rgb, alpha, meta = rasterize(**inputs, backend="gsplat")
    g = torch.Generator().manual_seed(123)
    v_rgb = torch.randn(rgb.shape, generator=g, dtype=torch.float64).float().cuda()
    v_alpha = torch.randn(alpha.shape, generator=g, dtype=torch.float64).float().cuda()
    ((rgb * v_rgb).sum() + (alpha * v_alpha).sum()).backward()
    # gsplat culls with 3-sigma radii where ours are exact: allow a little at the rims.
    assert float((rgb.double().cpu() - ours[0]).abs().mean()) < 2e-3
    for name in LEAVES:
        ref = ours[2][name]
        diff = (inputs[name].grad.double().cpu() - ref).norm() / ref.norm()
        assert float(diff) < 0.05, name
