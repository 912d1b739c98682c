# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``deform``: fit a template mesh (an ico-sphere or a given mesh) to a point cloud.

Writes ``mesh.ply`` (for any tool) and ``mesh.npz`` (``vertices``, ``faces``: what Blender
imports), and reports the final chamfer distance in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option, path_input
from ..errors import InputError
from .runner import JobContext

KIND = "deform"


@dataclass(frozen=True)
class Config:
    """Settings of the mesh fit. Defaults are those of the book's ``deform1.py``."""

    template: str = option("icosphere", "Start shape: an ico-sphere, or the mesh given as input", ("icosphere", "mesh"))
    subdivisions: int = option(4, "Ico-sphere subdivision level (4: 2562 vertices, 5120 faces)", minimum=0)
    iterations: int = option(2000, "Optimisation steps", minimum=1)
    lr: float = option(1.0, "SGD learning rate", minimum=0.0)
    momentum: float = option(0.9, "SGD momentum", minimum=0.0)
    w_chamfer: float = option(1.0, "Weight of the chamfer distance to the cloud", minimum=0.0)
    w_edge: float = option(1.0, "Weight of the edge-length regulariser", minimum=0.0)
    w_normal: float = option(0.01, "Weight of the normal-consistency regulariser", minimum=0.0)
    w_laplacian: float = option(0.1, "Weight of the Laplacian smoothing regulariser", minimum=0.0)
    laplacian: str = option("uniform", "Laplacian weights", ("uniform", "cot", "cotcurv"))
    samples: int = option(
        5000,
        "Surface samples per step (the 5k of the book's comment; its code used the cloud's size, which is noisier); "
        "0 uses as many as the cloud has points",
        minimum=0,
    )
    normalize: bool = option(True, "Centre and scale the cloud to the unit cube while fitting")
    seed: int = option(0, "Random seed of the surface sampling")
    device: str = option("auto", "Compute device", ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class Inputs:
    points: str = path_input("the point cloud (.ply, .npz with 'points', .npy, .xyz)")
    template_mesh: str = path_input("fit this mesh (.ply, .npz with vertices and faces, .obj) instead of an ico-sphere",
                                    required=False)


def cli_overrides(inputs: dict, args) -> dict:
    """On the command line, giving --template-mesh implies --template mesh."""
    return {"template": "mesh"} if inputs["template_mesh"] and args.template is None else {}


def resolve_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("Device 'cuda' was asked for, but this backend has no CUDA device.", "Choose 'auto' or 'cpu'.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..deform.fit import FitSettings, fit_mesh_to_points, icosphere, surface_chamfer
    from ..geometry.io import read_mesh, read_points, write_mesh_npz, write_mesh_ply

    if not inputs.points:
        raise InputError("No point cloud was given.", "Pass --points CLOUD.ply (or select a point cloud object).")
    ctx.progress("load", 0, 1, "reading the point cloud")
    points = read_points(inputs.points)
    if len(points) < 4:
        raise InputError(f"{inputs.points} has only {len(points)} point(s).", "A fit needs at least 4 points.")
    if config.template == "mesh":
        if not inputs.template_mesh:
            raise InputError("Template 'mesh' was chosen but no template mesh was given.", "Pass --template-mesh MESH.ply.")
        template_vertices, template_faces = read_mesh(inputs.template_mesh)
        in_unit_frame = False
    else:
        template_vertices, template_faces = icosphere(config.subdivisions)
        in_unit_frame = True
    device = resolve_device(config.device)
    ctx.log("info", f"fitting {len(template_vertices)} vertices to {len(points)} points on {device}")

    def on_step(iteration: int, total: int, terms: dict[str, float]) -> None:
        ctx.check_cancelled()
        ctx.progress("fit", iteration, total, f"iteration {iteration}/{total}, loss {terms['loss']:.5f}", terms)

    settings = FitSettings(
        iterations=config.iterations,
        lr=config.lr,
        momentum=config.momentum,
        w_chamfer=config.w_chamfer,
        w_edge=config.w_edge,
        w_normal=config.w_normal,
        w_laplacian=config.w_laplacian,
        laplacian=config.laplacian,
        samples=config.samples,
        normalize=config.normalize,
        seed=config.seed,
    )
    try:
        result = fit_mesh_to_points(
            points, template_vertices, template_faces, settings,
            template_in_unit_frame=in_unit_frame, device=device, callback=on_step, callback_every=10,
        )
    except FloatingPointError as exc:
        raise InputError(f"The fit diverged: {exc}.", "Lower 'lr' (for example to 0.5) or raise 'w_edge'.") from exc

    ctx.progress("write", 0, 1, "writing the mesh")
    write_mesh_ply(ctx.dir / "mesh.ply", result.vertices, result.faces)
    ctx.artifact("mesh", ctx.dir / "mesh.ply", "ply")
    write_mesh_npz(ctx.dir / "mesh.npz", result.vertices, result.faces)
    ctx.artifact("mesh_arrays", ctx.dir / "mesh.npz", "npz")
    chamfer = surface_chamfer(result.vertices, result.faces, points)
    ctx.progress("write", 1, 1, "done")
    return {
        "chamfer": chamfer,
        "chamfer_note": "symmetric, squared distances, 10,000 surface samples against the cloud, cloud units",
        "vertices": int(len(result.vertices)),
        "faces": int(len(result.faces)),
        "points": int(len(points)),
        "iterations": result.iterations,
        "fit_seconds": round(result.seconds, 3),
        "final_losses": result.final_losses,
        "device": str(device),
        "compute_path": result.compute_path,
    }
