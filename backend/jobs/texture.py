# SPDX-License-Identifier: GPL-3.0-or-later
"""Job ``texture``: a mesh with a UV atlas and a texture baked from the posed photos.

The mesh (``.ply``, ``.obj`` or ``.npz`` with ``vertices`` and ``faces``, as the ``mesh``
job or the add-on writes it) is in the scene's world frame, the frame of the cameras that
``--scene`` holds (anything ``load_scene`` reads, with its photos). xatlas cuts it into
charts packed into one ``texture_size`` square; every texel takes the colour of the photos
that see its point best (visibility by a depth test against the mesh, weight by viewing
angle and distance, the best few views blended; photos sampled through their lens
distortion); texels no photo sees take the colour of the radiance field ``--field`` seen
along the surface normal, or else of the nearest seen texel; empty atlas space is filled
from the nearest texel (seam padding).

Writes ``textured.obj`` + ``textured.mtl`` + ``texture.png`` (for other tools) and
``textured.npz`` (``vertices [V, 3]`` float32, ``faces [F, 3]`` int32, ``uv [F * 3, 2]``
float32 per face corner, same frame), which Blender reads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import option, path_input
from ..errors import InputError
from .runner import JobContext

KIND = "texture"


@dataclass(frozen=True)
class Config:
    """How to unwrap and bake."""

    texture_size: int = option(2048, "Width and height of the texture in pixels", minimum=64)
    max_faces: int = option(300000, "Face budget: larger meshes are refused (decimate them first)", minimum=1)
    views: int = option(3, "Photos blended per texel (the best by viewing angle and distance)", minimum=1)
    angle_power: float = option(4.0, "How strongly photos facing the surface are preferred (weight cos^power)",
                                minimum=0.0)
    padding: int = option(4, "Texels between UV charts", minimum=1)
    depth_size: int = option(1024, "Longest side of the depth maps used for visibility, pixels", minimum=16)
    threads: int = option(0, "CPU threads (0: the cores other processes leave idle)", minimum=0)


@dataclass(frozen=True)
class Inputs:
    mesh: str = path_input("the mesh: .ply, .obj or .npz (vertices, faces) in the scene's world frame")
    scene: str = path_input("the posed photos: a Recon job folder (cameras.npz), a COLMAP model or a transforms.json")
    field: str = path_input("optional: a trained field (a 'nerf' job folder) for surfaces no photo sees", required=False)


def field_fallback(folder: str, extent: float):
    """Colours of a trained field at surface points, seen from just outside along the normal."""
    import torch

    from ..nerf.field import load_field
    from ..nerf.render import render_image

    fld = load_field(folder, "cpu")
    background = torch.tensor(fld.background, dtype=torch.float32)

    def colors(points: np.ndarray, normals: np.ndarray) -> np.ndarray:  # [M, 3], [M, 3] -> [M, 3] in [0, 1]
        lift = fld.near + 0.05 * extent
        origins = torch.from_numpy(points + normals * lift).float()
        dirs = torch.from_numpy(-normals).float()
        out = render_image(fld, origins, dirs, len(points), 1, background)
        return out["rgb"].reshape(-1, 3).clamp(0, 1).numpy()

    return colors


def write_obj(folder: Path, vertices: np.ndarray, faces: np.ndarray, atlas_faces: np.ndarray, uv: np.ndarray) -> None:
    """``textured.obj`` (positions, atlas UVs, faces ``v/vt``) and ``textured.mtl`` naming ``texture.png``."""
    from ..protocol import write_bytes_atomic

    buffer = io.StringIO()
    buffer.write("# written by Recon\nmtllib textured.mtl\n")
    np.savetxt(buffer, vertices, fmt="v %.7g %.7g %.7g")
    np.savetxt(buffer, uv, fmt="vt %.7g %.7g")
    buffer.write("usemtl recon_texture\n")
    corners = np.stack([faces + 1, atlas_faces + 1], -1).reshape(-1, 6)
    np.savetxt(buffer, corners, fmt="f %d/%d %d/%d %d/%d")
    write_bytes_atomic(folder / "textured.obj", buffer.getvalue().encode("utf-8"))
    mtl = "# written by Recon\nnewmtl recon_texture\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd texture.png\n"
    write_bytes_atomic(folder / "textured.mtl", mtl.encode("utf-8"))


def run(ctx: JobContext, config: Config, inputs: Inputs) -> dict:
    import torch
    from PIL import Image

    from ..geometry.io import read_mesh, write_npz
    from ..nerf.cpu import idle_cores, keep_freed_memory
    from ..nerf.rays import cameras_from_scene
    from ..protocol import write_bytes_atomic
    from ..sfm.scene import load_scene
    from ..texture.atlas import atlas_texels, build_atlas, check_budget
    from ..texture.bake import BakeSettings, bake

    if not inputs.mesh:
        raise InputError("No mesh was given.", "Pass --mesh with a .ply, .obj or .npz mesh (the mesh job's mesh.ply).")
    if not inputs.scene:
        raise InputError("No cameras were given.", "Pass --scene with a reconstruction that has the photos.")
    torch.set_num_threads(config.threads or idle_cores())  # busy cores: fewer threads run faster (nerf/cpu.py)
    ctx.progress("load", 0, 1, "reading the mesh and the cameras")
    vertices, faces = read_mesh(inputs.mesh)
    check_budget(len(faces), config.texture_size, config.max_faces)
    scene = load_scene(inputs.scene)
    missing = scene.missing_photos
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(
            f"{len(missing)} of the {len(scene.cameras['names'])} cameras in {scene.path} have no photo: {listed}.",
            "The texture is baked from the photos: put them where the reconstruction says (for a transforms.json, "
            "its 'file_path's; for a COLMAP model, an 'images' folder beside or above it), or leave those cameras out.")
    cameras = cameras_from_scene(scene)
    fallback = None
    extent = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    if inputs.field:
        fallback = field_fallback(inputs.field, extent)
    ctx.progress("load", 1, 1, f"{len(faces):,} faces, {len(cameras)} camera(s)")

    ctx.progress("atlas", 0, 1, "unwrapping (xatlas)")
    atlas = build_atlas(vertices, faces, config.texture_size, config.padding, ctx.check_cancelled)
    ctx.check_cancelled()
    texel_index, texel_face, texel_bary = atlas_texels(atlas)
    ctx.progress("atlas", 1, 1, f"{atlas.charts} charts, {atlas.utilization:.0%} of the texture used")

    settings = BakeSettings(views=config.views, angle_power=config.angle_power, depth_size=config.depth_size)
    with keep_freed_memory():
        image, stats = bake(
            vertices, faces, atlas, texel_index, texel_face, texel_bary, cameras,
            [str(p) for p in scene.cameras["paths"]], settings, fallback,
            progress=lambda done, total, message: ctx.progress("bake", done, total, message),
            check_cancelled=ctx.check_cancelled)
    if stats["seen"] < stats["texels"]:
        share = 1 - stats["seen"] / max(stats["texels"], 1)
        source = "the field's colour" if fallback is not None else "the nearest seen colour"
        ctx.log("info" if share < 0.2 else "warning", f"{share:.1%} of the surface is in no photo; it takes {source}")

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    write_bytes_atomic(ctx.dir / "texture.png", buffer.getvalue())
    ctx.artifact("texture", ctx.dir / "texture.png", "png")
    write_obj(ctx.dir, vertices, faces, atlas.faces, atlas.uv)
    ctx.artifact("textured_obj", ctx.dir / "textured.obj", "obj")
    write_npz(ctx.dir / "textured.npz", vertices=vertices.astype(np.float32), faces=faces.astype(np.int32),
              uv=atlas.corner_uv())
    ctx.artifact("textured", ctx.dir / "textured.npz", "npz")
    return {
        "faces": int(len(faces)), "vertices": int(len(vertices)), "cameras": len(cameras),
        "texture_size": [atlas.width, atlas.height], "charts": atlas.charts,
        "utilization": round(atlas.utilization, 4), "texels": stats["texels"],
        "seen_fraction": round(stats["seen"] / max(stats["texels"], 1), 4), "fallback": stats["unseen_fallback"],
        "field": str(Path(inputs.field).resolve()) if inputs.field else "",
    }
