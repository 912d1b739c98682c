# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``mesh``: a triangle mesh from a trained radiance field or from Gaussian splats.

``--field`` is a ``nerf`` job folder (its density), or splats: a 3DGS ``.ply`` or a
``splat`` job folder holding ``splats.ply`` (opacity times each Gaussian's kernel). The
density is sampled on a dense grid (``--resolution`` cells along the longest side of the
region: the field's box, or its inner cube for an unbounded scene, cut to the occupancy
grid's occupied cells and then, with ``--focus`` (the default), to the surface a coarse
pass finds there; for splats, around the Gaussians), in slabs, with progress and
cancel. Its level set at ``--threshold`` (0: automatic: for a field, half the density
where lines through the grid turn opaque, a low percentile of it; for splats, half the
median density at the opaque Gaussians' centres) is extracted by marching cubes (a
density interpolated in log space along the cube edges) after
the hollow inside of closed shells is filled; connected components with less area than
``--min-component`` of the largest are dropped (floaters). With ``--visible-only`` (the
default) the faces that none of the training cameras sees are dropped first (surfaces left
inside the object, which reach the outside through small gaps so that filling does not
remove them): the cameras of the scene the field was trained on (its ``field.json``), or of
``--scene``; without cameras (splats, a moved scene) every face is kept, with a note.
``--max-faces`` (default 100,000; 0: no limit) decimates by vertex clustering: the texture
job's default face budget is 300,000, and xatlas charts 100,000 faces in minutes on a CPU. Vertex colours come from the field (seen along the inward
normal) or the splats' base colours.

Writes ``mesh.ply`` (binary: float32 x y z, uchar red green blue, int32 faces) and
``mesh.npz`` (``vertices`` float32 [V, 3], ``faces`` int32 [F, 3], ``colors`` uint8
[V, 3]), in the scene's world frame (the frame of the field's or splats' cameras).

``--mode sdf`` (a trained field only; splats are refused with a note to use ``density``):
instead of the density's level set, the zero level set of a signed distance field fitted
to it (``backend.mesh.sdf``, after Neuralangelo): a hash-grid SDF network learns the
field's inside and outside from the sampled grid (``--sdf-steps``, at most
``--sdf-minutes``), with the eikonal and curvature terms (``--sdf-eikonal``,
``--sdf-curvature``) computed by central differences, coarse to fine; it is then sampled on
the same grid and meshed, cleaned, coloured and decimated as above. Measured on the
benchmark's Suzanne (``bench/mesh.py``, its field trained 12 minutes, one busy CPU core):
chamfer 0.115 % of the diagonal against the density mode's 0.125 %, adjacent faces turning
by 4 degrees on average against 15, the texture baked on it 2.33 dB below the true mesh's
against 1.92 dB (the density's level set lies 0.05 % of the size outside the true surface,
the SDF's on it: likely the silhouettes' gain), in about five minutes against half of one;
these were measured on the whole box's grid. With ``--focus``, on a field trained anew:
chamfer 0.114 % against 0.117 %, the texture 1.67 dB against 1.70 dB below the true mesh's
bake. ``--sdf-photo-steps`` then refines it on the field's photos (with alpha) by
NeuS-style volume rendering; off by default: 300 steps (a minute) took the chamfer from
0.130 % to 0.126 % after 2,000 steps, where 700 more ``--sdf-steps`` in that minute took it
to 0.115 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import option, path_input
from ..errors import InputError
from .runner import JobContext

KIND = "mesh"


@dataclass(frozen=True)
class Config:
    """How to extract the mesh."""

    threshold: float = option(0.0, "Density of the surface (0: automatic: for a field, half a low percentile of "
                              "the densities where lines through the grid turn opaque; for splats, half the median "
                              "density at the opaque Gaussians' centres)", minimum=0.0)
    resolution: int = option(256, "Grid cells along the longest side of the sampled region", minimum=8)
    focus: bool = option(True, "A field: find the surface on a coarse grid first and sample --resolution cells "
                         "across it only (a field's box is mostly empty, or haze and floaters)")
    max_faces: int = option(100000, "Decimate to at most this many faces (0: keep all); 100,000 fits the texture "
                            "job's default face budget (300,000) and unwraps in minutes on a CPU", minimum=0)
    min_component: float = option(0.05, "Drop pieces with less area than this fraction of the largest piece "
                                  "(floaters)", minimum=0.0)
    max_components: int = option(0, "Keep at most this many pieces, largest first (0: all above --min-component)",
                                 minimum=0)
    fill_cavities: bool = option(True, "Fill hollow insides of closed shells, so that only the outer surface is kept")
    visible_only: bool = option(True, "Drop the faces no training camera sees (surfaces inside the object), using "
                                "the cameras of the field's scene (or --scene); skipped with a note when there are "
                                "none, as for splats without cameras")
    visible_views: int = option(2, "Cameras that must see a face for --visible-only (inner surfaces glimpsed "
                                "by one camera through a small gap go too); at most the number of cameras", minimum=1)
    visibility_size: int = option(512, "Longest side of the depth maps for --visible-only, pixels (never more than "
                                  "the photos')", minimum=16)
    colors: bool = option(True, "Vertex colours from the field or the splats")
    mode: str = option("density", "Surface of: the density level set, or a signed distance field fitted to it "
                       "with eikonal and curvature terms (sdf: smoother; a trained field only, a few minutes more)",
                       ("density", "sdf"))
    sdf_steps: int = option(3000, "--mode sdf: steps fitting the SDF to the field's density", minimum=1)
    sdf_photo_steps: int = option(0, "--mode sdf: steps refining the SDF on the field's photos (NeuS-style volume "
                                  "rendering) after the fit, for photos with alpha (a masked object) only; 0: none "
                                  "(the benchmark gained more from as much time spent on --sdf-steps)", minimum=0)
    sdf_eikonal: float = option(0.1, "--mode sdf: weight of the eikonal term (|gradient| = 1)", minimum=0.0)
    sdf_curvature: float = option(5e-4, "--mode sdf: weight of the curvature term (the Laplacian's magnitude): "
                                  "higher is smoother, and rounds off sharp details", minimum=0.0)
    sdf_minutes: float = option(10.0, "--mode sdf: stop fitting after this many minutes (0: no limit)", minimum=0.0)
    device: str = option("auto", "Compute device", ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class Inputs:
    field: str = path_input("a trained field (a 'nerf' job folder), or splats: a 3DGS .ply or a 'splat' job folder")
    scene: str = path_input("optional: the posed photos whose cameras decide what is visible (default: the scene "
                            "the field was trained on)", required=False)


def write_colored_mesh_ply(path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> None:
    """Binary little-endian PLY: float32 x y z (+ uchar red green blue), int32 triangles, in bulk."""
    from ..protocol import write_bytes_atomic

    vertex_type = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        vertex_type += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    table = np.empty(len(vertices), dtype=vertex_type)
    for axis, name in enumerate("xyz"):
        table[name] = vertices[:, axis]
    if colors is not None:
        for channel, name in enumerate(("red", "green", "blue")):
            table[name] = colors[:, channel]
    face = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces
    props = "property float x\nproperty float y\nproperty float z\n"
    if colors is not None:
        props += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    header = (f"ply\nformat binary_little_endian 1.0\ncomment written by Recon\nelement vertex {len(table)}\n{props}"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    write_bytes_atomic(path, header.encode("ascii") + table.tobytes() + face.tobytes())


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    from ..geometry.io import write_mesh_npz
    from ..mesh.extract import Grid, decimate, extract, sample_grid, vertex_normals
    from ..mesh.sources import FieldSource, SplatSource, resolve_source
    from .deform import resolve_device

    if not inputs.field:
        raise InputError("No field or splats were given.",
                         "Pass --field with a 'nerf' job folder, a 3DGS splats .ply or a 'splat' job folder.")
    kind, path = resolve_source(inputs.field)
    if config.mode == "sdf" and kind != "field":
        raise InputError(f"--mode sdf needs a trained field, and {path} holds splats.",
                         "Mesh splats with --mode density (the default), or train a field on the same photos "
                         "('nerf' job) and mesh that with --mode sdf.")
    ctx.progress("load", 0, 1, f"reading the {'field' if kind == 'field' else 'splats'}")
    if kind == "field":
        device = resolve_device(config.device)
        source = FieldSource(path, device)
        trained = int(source.field.info.get("train_views", 0) or 0)
        from ..nerf.train import MIN_VIEWS

        if 0 < trained < MIN_VIEWS:
            ctx.log("warning", f"this field was trained on only {trained} view(s): expect a rough surface and floaters")
    else:
        device = "cpu"
        source = SplatSource(path)
    threads = 0
    if kind == "field" and str(device) == "cpu":
        from ..nerf.cpu import choose_threads

        threads = choose_threads(0)  # the cores other processes leave idle (oversubscribed numba threads crawl)
    lo, hi = source.bounds()
    if kind == "field" and config.focus:
        lo, hi = focus_bounds(ctx, config, source, lo, hi)
    grid = Grid.around(lo, hi, config.resolution)
    ctx.progress("load", 1, 1, f"grid {grid.shape[0]} x {grid.shape[1]} x {grid.shape[2]}, spacing {grid.spacing:.4g}")

    def sampled(done: int, total: int) -> None:
        ctx.progress("sample", done, total, "evaluating the density")

    ctx.check_cancelled()
    color_sums = None
    if kind == "field":
        from ..nerf.cpu import keep_freed_memory

        with keep_freed_memory(str(device) == "cpu"):
            values = sample_grid(source.density, grid, max_points=1 << 18, progress=sampled,
                                 check_cancelled=ctx.check_cancelled)
    else:
        values, color_sums = source.accumulate(grid, progress=sampled, check_cancelled=ctx.check_cancelled)
    ctx.check_cancelled()
    level = float(config.threshold) or source.default_level(grid, values)
    density_range = [float(values.min()), float(values.max())]
    sdf_summary = None
    if config.mode == "sdf":
        values, sdf_summary = fit_sdf(ctx, config, inputs, source, grid, values, level, device)
        ctx.progress("surface", 0, 1, "marching cubes of the SDF at 0")
        surface_level = 0.0
    else:
        ctx.progress("surface", 0, 1, f"marching cubes at density {level:.4g}")
        surface_level = level
    raw = values.copy() if color_sums is not None and config.colors else None
    result = extract(values, grid, surface_level, source.what, fill=config.fill_cavities,
                     min_fraction=config.min_component, max_components=config.max_components)
    vertices, faces = result.vertices, result.faces
    del values
    ctx.progress("surface", 1, 1, f"{len(faces)} faces in {result.stats['kept']} piece(s) "
                                  f"({result.stats['components'] - result.stats['kept']} dropped)")
    on_border = np.any((vertices <= grid.lo + 0.5 * grid.spacing) | (vertices >= grid.hi - 0.5 * grid.spacing), axis=1)
    if kind == "field" and not source.frame.contracted and on_border.mean() > 0.01:  # an object's box: no surface there
        ctx.log("warning", f"{100 * on_border.mean():.0f} % of the surface lies on the edge of the sampled region: "
                           f"haze fills it at density {level:.4g}; raise --threshold (the densities found reach "
                           f"{density_range[1]:.4g}) or train the field longer")
    ctx.check_cancelled()
    visibility = None
    if config.visible_only:
        vertices, faces, visibility = keep_visible(ctx, config, inputs, source, kind, vertices, faces, grid.spacing)
    colors = None
    if config.colors:
        ctx.progress("colour", 0, 1, "vertex colours")
        if kind == "field":
            colors = source.colors(vertices, vertex_normals(vertices, faces), grid.spacing)
        else:
            colors = source.colors(vertices, raw, color_sums, grid)
        ctx.progress("colour", 1, 1, "vertex colours")
    if config.max_faces and len(faces) > config.max_faces:
        ctx.check_cancelled()
        ctx.progress("decimate", 0, 1, f"{len(faces)} faces to at most {config.max_faces}")
        vertices, faces, colors = decimate(vertices, faces, config.max_faces, colors)
        ctx.progress("decimate", 1, 1, f"{len(faces)} faces")
    if len(faces) == 0:
        raise InputError(f"The surface of {source.what} vanished in the cleanup.",
                         "Lower the minimum piece size (--min-component), or raise the face budget (--max-faces).")
    ply, npz = ctx.dir / "mesh.ply", ctx.dir / "mesh.npz"
    write_colored_mesh_ply(ply, vertices, faces, colors)
    ctx.artifact("mesh", ply, "ply")
    extra = {"colors": colors} if colors is not None else {}
    write_mesh_npz(npz, vertices, faces, **extra)
    ctx.artifact("mesh_arrays", npz, "npz")
    extent = (vertices.max(0) - vertices.min(0)).tolist()
    return {"source": kind, "vertices": int(len(vertices)), "faces": int(len(faces)), "threshold": level,
            "resolution": list(grid.shape), "spacing": grid.spacing, "bounds": [grid.lo.tolist(), grid.hi.tolist()],
            "extent": extent, "components": result.stats["components"], "kept_components": result.stats["kept"],
            "density_range": density_range, "mode": config.mode, "sdf": sdf_summary,
            "colors": colors is not None, "device": str(device), "threads": threads, "visibility": visibility}


FOCUS_RESOLUTION = 128  # cells along the longest side of the field's box for --focus's coarse pass
FOCUS_MARGIN = 3  # coarse cells kept around the surface it finds


def focus_bounds(ctx: JobContext, config: Config, source, lo: np.ndarray, hi: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``--focus``: the box around the surface found on a coarse grid over ``lo, hi`` (the
    same level, cavity filling and piece cleanup as the fine pass, :data:`FOCUS_MARGIN` coarse
    cells around it), so that ``--resolution`` spans the object, not the empty or hazy rest of
    the field's box. On the benchmark's Suzanne (``bench/mesh.py``, two fields trained 12
    minutes) the box's longest side shrank from 3.2 to 1.8: at 256 cells, chamfer 0.130 % to
    0.117 % and 0.117 % to 0.110 %, the baked texture's gap to the true mesh's 2.14 to 1.70 dB
    and 1.60 to 1.26 dB; the job took 40 to 48 s against 17 to 25 s (the focused grid lies
    mostly in occupied cells; a 512 grid over the whole box, as close a surface, 75 s). On
    lego, nothing of the unfocused mesh lies outside the focused box. ``lo, hi`` unchanged
    when the coarse pass finds no surface (the fine pass then says what to change)."""
    from ..mesh.extract import Grid, extract, sample_grid
    from ..nerf.cpu import keep_freed_memory

    resolution = min(FOCUS_RESOLUTION, config.resolution // 2)
    if resolution < 16:
        return lo, hi
    coarse = Grid.around(lo, hi, resolution)
    with keep_freed_memory(str(source.device) == "cpu"):
        values = sample_grid(source.density, coarse, max_points=1 << 18, check_cancelled=ctx.check_cancelled,
                             progress=lambda done, n: ctx.progress("focus", done, n, "finding the surface"))
    level = float(config.threshold) or source.default_level(coarse, values)
    if not float(values.min()) < level < float(values.max()):
        return lo, hi
    found = extract(values, coarse, level, source.what, fill=config.fill_cavities, min_fraction=config.min_component,
                    max_components=config.max_components)
    if len(found.faces) == 0:
        return lo, hi
    margin = FOCUS_MARGIN * coarse.spacing
    new_lo = np.maximum(lo, found.vertices.min(0) - margin)
    new_hi = np.minimum(hi, found.vertices.max(0) + margin)
    ctx.log("info", f"the surface lies in {' x '.join(f'{e:.3g}' for e in new_hi - new_lo)} of the field's "
                    f"{' x '.join(f'{e:.3g}' for e in hi - lo)}: the grid spans that (--no-focus: the whole box)")
    return new_lo, new_hi


def fit_sdf(ctx: JobContext, config: Config, inputs: Inputs, source, grid, values: np.ndarray, level: float,
            device) -> tuple[np.ndarray, dict]:
    """``--mode sdf``: an SDF fitted to the density ``values`` on ``grid`` (and, with
    ``--sdf-photo-steps``, to the field's photos), sampled on ``grid`` as minus the distance
    (inside above 0, as a density); and a summary (``backend.mesh.sdf``)."""
    import time

    import torch

    from ..mesh.extract import empty_level_set_error, fill_cavities
    from ..mesh.sdf import DensityTarget, SDFNetwork, SDFSettings, fit_to_density, fit_to_photos, grid_sdf
    from ..nerf.cpu import keep_freed_memory

    if not float(values.min()) < level < float(values.max()):
        raise empty_level_set_error(level, values, source.what)
    if config.fill_cavities:
        fill_cavities(values, level)
    settings = SDFSettings(steps=config.sdf_steps, photo_steps=config.sdf_photo_steps, eikonal=config.sdf_eikonal,
                           curvature=config.sdf_curvature)
    budget = 60.0 * config.sdf_minutes
    started = time.perf_counter()
    target = DensityTarget(values, grid, level, device)
    torch.manual_seed(settings.seed)
    net = SDFNetwork(grid.lo, grid.hi, settings.hashgrid, settings.hidden, settings.geo_features,
                     generator=torch.Generator().manual_seed(settings.seed)).to(device)
    total = settings.steps + settings.photo_steps

    def fitted(step: int, steps: int, metrics: dict) -> None:
        ctx.progress("sdf", step, total, f"fitting the SDF to the density: step {step}, loss {metrics['loss']:.4g} "
                                         f"(eikonal {metrics['eikonal']:.3g}, curvature {metrics['curvature']:.3g})",
                     metrics)

    summary: dict = {}
    with keep_freed_memory(str(device) == "cpu"):
        summary["density_fit"] = fit_to_density(net, target, settings, fitted, ctx.check_cancelled, budget)
        left = budget - (time.perf_counter() - started) if budget > 0 else 0.0
        if settings.photo_steps and (budget <= 0 or left > 0):
            views = photos_of(ctx, inputs, source)
            if views is not None:
                def rendered(step: int, steps: int, metrics: dict) -> None:
                    ctx.progress("sdf", settings.steps + step, total,
                                 f"refining the SDF on the photos: step {step}, L1 {metrics['photo']:.4g}", metrics)

                summary["photo_fit"] = fit_to_photos(net, views, target, settings, rendered, ctx.check_cancelled,
                                                     max(left, 1.0) if budget > 0 else 0.0)
        elif settings.photo_steps:
            ctx.log("info", f"--sdf-photo-steps skipped: the fit to the density took the {config.sdf_minutes:g} "
                            "minutes of --sdf-minutes")
        del target
        ctx.check_cancelled()
        distance = grid_sdf(net, grid, lambda done, n: ctx.progress("sample", done, n, "evaluating the SDF"),
                            ctx.check_cancelled)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    if not float(distance.min()) < 0.0 < float(distance.max()):
        raise InputError(f"The signed distance fitted to {source.what} has no surface (it ranges from "
                         f"{float(distance.min()):.4g} to {float(distance.max()):.4g}).",
                         "Mesh it with --mode density, or fit longer (--sdf-steps).")
    np.negative(distance, out=distance)
    return distance, summary


def photos_of(ctx: JobContext, inputs: Inputs, source):
    """The photos the field was trained on (or --scene's), at most 512 pixels wide; None
    with a note when there are none or they have no alpha."""
    from pathlib import Path

    from ..nerf.rays import load_views
    from ..sfm.scene import load_scene

    path = scene_of(inputs, source, "field")
    if not path or not Path(path).expanduser().exists():
        ctx.log("info", "no photos to refine the SDF on (--sdf-photo-steps skipped): pass --scene")
        return None
    scene = load_scene(path)
    widest = max([int(w) for w in scene.cameras["width"]] or [1])
    views = load_views(scene, min(1.0, 512.0 / widest), ctx.check_cancelled)
    if not views.has_alpha:  # no model of what lies beyond the box: the SDF would grow surfaces to explain it
        ctx.log("info", f"--sdf-photo-steps skipped: the photos of {path} have no alpha (the refinement needs the "
                        "object masked out of its background)")
        return None
    return views


def scene_of(inputs: Inputs, source, kind: str) -> str:
    """The scene whose cameras decide visibility: --scene, else the one the field was trained on ('' if none)."""
    if inputs.scene:
        return inputs.scene
    if kind == "field":
        return str(source.field.info.get("scene", "") or "")
    return ""


def keep_visible(ctx: JobContext, config: Config, inputs: Inputs, source, kind: str, vertices: np.ndarray,
                 faces: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """The faces some camera sees (``backend.mesh.visible``), then the component cleanup again."""
    from pathlib import Path

    from ..mesh.extract import compact, face_areas, keep_components
    from ..mesh.visible import seen_faces
    from ..nerf.rays import cameras_from_scene
    from ..sfm.scene import load_scene

    path = scene_of(inputs, source, kind)
    if not path or not Path(path).expanduser().exists():
        why = (f"the scene it was trained on ({path}) is gone" if path else
               "splats carry no cameras" if kind == "splats" else "the field does not name its scene")
        ctx.log("info", f"every face kept (--visible-only skipped): {why}; pass --scene to drop the faces no camera sees")
        return vertices, faces, {"skipped": why}
    cameras = cameras_from_scene(load_scene(path))  # raises InputError for a bad --scene
    ctx.progress("visible", 0, len(cameras), "faces the cameras see")
    seen = seen_faces(vertices, faces, cameras, size=config.visibility_size, tolerance=spacing,
                      min_views=config.visible_views,
                      progress=lambda done, total: ctx.progress("visible", done, total, "faces the cameras see"),
                      check_cancelled=ctx.check_cancelled)
    area = face_areas(vertices, faces)
    hidden = float(area[~seen].sum() / max(area.sum(), 1e-30))
    kept_v, kept_f, _ = compact(vertices, faces[seen])
    kept_v, kept_f, parts = keep_components(kept_v, kept_f, config.min_component, config.max_components)
    if len(kept_f) == 0:
        ctx.log("warning", f"no camera of {path} sees the surface: every face kept (are they the field's cameras?)")
        return vertices, faces, {"scene": str(path), "cameras": len(cameras), "hidden_area": hidden, "kept": False}
    ctx.log("info", f"{100 * hidden:.1f} % of the surface's area is seen by fewer than "
                    f"{min(config.visible_views, len(cameras))} of the {len(cameras)} cameras: "
                    f"{len(faces) - len(kept_f)} faces dropped")
    return kept_v, kept_f, {"scene": str(path), "cameras": len(cameras), "hidden_area": round(hidden, 4),
                            "dropped_faces": int(len(faces) - len(kept_f)), "kept_components": parts["kept"]}
