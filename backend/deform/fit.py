# SPDX-License-Identifier: GPL-3.0-or-later
"""Fit a template mesh to a point cloud by optimising per-vertex offsets.

The objective of PyTorch3D's "deform a source mesh" tutorial and of chapter 3 of "3D Deep
Learning with Python" (``deform1.py``): chamfer distance between surface samples of the mesh
and the cloud, plus edge-length, normal-consistency and Laplacian regularisers, minimised
with SGD and momentum. The cloud is normalised (centred, largest coordinate 1) for the
optimisation, and the result is returned in the cloud's own frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import fused, losses


@dataclass(frozen=True)
class FitSettings:
    iterations: int = 2000
    lr: float = 1.0
    momentum: float = 0.9
    w_chamfer: float = 1.0
    w_edge: float = 1.0
    w_normal: float = 0.01
    w_laplacian: float = 0.1
    laplacian: str = "uniform"
    samples: int = 5000  # surface samples per iteration; 0: as many as the cloud has points
    normalize: bool = True
    seed: int = 0
    fused: bool = True  # fused numba kernels on the CPU (uniform Laplacian); False: PyTorch only


@dataclass
class FitResult:
    vertices: np.ndarray  # [V, 3] float32, the cloud's frame
    faces: np.ndarray  # [F, 3] int32
    iterations: int
    seconds: float
    final_losses: dict[str, float]
    compute_path: str  # "numba-fused" or "pytorch"


# (iteration, total, losses) -> None; may raise to stop (e.g. Cancelled).
Callback = Callable[[int, int, dict[str, float]], None]


def normalization(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (the mean) and scale (largest absolute centred coordinate) of a cloud ``(n, 3)``."""
    center = points.mean(axis=0)
    scale = float(np.abs(points - center).max())
    return center.astype(np.float32), (scale if scale > 0 else 1.0)


def fit_mesh_to_points(
    points: np.ndarray,  # [N, 3] the cloud, in its own frame
    template_vertices: np.ndarray,  # [V, 3] in the normalised frame if from_unit_template else the cloud's frame
    template_faces: np.ndarray,  # [F, 3]
    settings: FitSettings,
    *,
    template_in_unit_frame: bool,
    device: torch.device | str = "cpu",
    callback: Callback | None = None,
    callback_every: int = 10,
) -> FitResult:
    """Deform the template towards the cloud; returns the fitted mesh in the cloud's frame.

    ``template_in_unit_frame``: the template is already in the normalised frame (the unit
    ico-sphere); otherwise it is given in the cloud's frame and normalised with the cloud.
    """
    started = time.perf_counter()
    device = torch.device(device)
    if settings.normalize:
        center, scale = normalization(points)
    else:
        center, scale = np.zeros(3, np.float32), 1.0
    target = torch.as_tensor((points - center) / scale, dtype=torch.float32, device=device)
    src = template_vertices if template_in_unit_frame else (template_vertices - center) / scale
    src = torch.as_tensor(np.asarray(src, np.float32), device=device)
    topology = losses.MeshTopology.from_faces(template_faces, len(src), device=device)
    num_samples = settings.samples or len(target)
    generator = torch.Generator(device=device).manual_seed(settings.seed)

    # On the CPU, fused kernels compute the same terms with far fewer operators (see fused.py).
    use_fused = settings.fused and device.type == "cpu" and fused.AVAILABLE and settings.laplacian == "uniform"
    if use_fused:
        fused_mesh = fused.FusedMesh(topology)
        sampled_chamfer = fused.SampledChamfer(target.numpy(), fused_mesh)
    offsets = torch.zeros_like(src, requires_grad=True)
    optimizer = torch.optim.SGD([offsets], lr=settings.lr, momentum=settings.momentum)
    weights = {
        "chamfer": settings.w_chamfer,
        "edge": settings.w_edge,
        "normal": settings.w_normal,
        "laplacian": settings.w_laplacian,
    }
    terms: dict[str, torch.Tensor] = {}
    for iteration in range(settings.iterations):
        optimizer.zero_grad(set_to_none=True)
        verts = src + offsets
        terms = {}
        if use_fused:
            if weights["chamfer"]:
                terms["chamfer"] = sampled_chamfer(verts, num_samples, generator)
            edge, normal, laplacian = fused.regularizers(verts, fused_mesh)
            terms.update(edge=edge, normal=normal, laplacian=laplacian)
        else:
            if weights["chamfer"]:
                samples = losses.sample_points_from_mesh(verts, topology.faces, num_samples, generator)
                terms["chamfer"] = losses.chamfer_distance(target, samples)
            if weights["edge"]:
                terms["edge"] = losses.edge_loss(verts, topology)
            if weights["normal"]:
                terms["normal"] = losses.normal_consistency(verts, topology)
            if weights["laplacian"]:
                terms["laplacian"] = losses.laplacian_smoothing(verts, topology, settings.laplacian)
        loss = sum(weights[name] * value for name, value in terms.items() if weights[name])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss.item()} at iteration {iteration}; lower the learning rate"
            )
        loss.backward()
        optimizer.step()
        if callback is not None and (iteration % callback_every == 0 or iteration == settings.iterations - 1):
            callback(iteration + 1, settings.iterations, {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}})

    with torch.no_grad():
        final = (src + offsets).cpu().numpy()
    final_losses = {k: v.item() for k, v in terms.items()}
    return FitResult(
        vertices=(final * scale + center).astype(np.float32),
        faces=np.asarray(template_faces, np.int32),
        iterations=settings.iterations,
        seconds=time.perf_counter() - started,
        final_losses=final_losses,
        compute_path="numba-fused" if use_fused else "pytorch",
    )


def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit ico-sphere: level 0 has 12 vertices; level 4 has 2562 vertices and 5120 faces."""
    from ..errors import require

    trimesh = require("trimesh", "The ico-sphere template")
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int32)


def surface_chamfer(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    points: np.ndarray,  # [N, 3]
    num_samples: int = 10000,
    seed: int = 0,
) -> float:
    """Symmetric chamfer between ``num_samples`` surface samples of a mesh and a cloud, in the
    cloud's units squared (the figure reported in ``manifest.json``)."""
    with torch.no_grad():
        v = torch.as_tensor(vertices, dtype=torch.float32)
        f = torch.as_tensor(faces, dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        samples = losses.sample_points_from_mesh(v, f, num_samples, g)
        return float(losses.chamfer_distance(torch.as_tensor(points, dtype=torch.float32), samples))


def mean_surface_chamfer(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    points: np.ndarray,  # [N, 3]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
) -> float:
    """:func:`surface_chamfer` on 10,000 samples, averaged over ``seeds``: the closeness
    measure the tests and the benchmark compare fits with."""
    return float(np.mean([surface_chamfer(vertices, faces, points, 10_000, seed) for seed in seeds]))


def mean_dihedral_degrees(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Mean angle between adjacent faces' normals in degrees: the smoothness measure
    (lower is smoother) the tests and the benchmark compare fits with."""
    topology = losses.MeshTopology.from_faces(faces, len(vertices))
    with torch.no_grad():
        angle = losses.mean_dihedral_angle(torch.as_tensor(vertices, dtype=torch.float32), topology)
    return float(np.degrees(float(angle)))
