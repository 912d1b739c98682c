# SPDX-License-Identifier: GPL-3.0-or-later
"""The standard 3D Gaussian splatting ``.ply``, the file every splat viewer reads.

One ``vertex`` element, binary little-endian float32 properties in the order of the 3DGS
reference implementation (``GaussianModel.save_ply``)::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..f_rest_{3(K-1)-1}  opacity  scale_0..2  rot_0..3

Stored raw, as the optimiser keeps them: ``opacity`` is a logit, ``scale_*`` natural logs
of the standard deviations, ``rot_*`` a quaternion ``w x y z`` (renderers normalise it),
``f_dc`` the degree-0 SH coefficients, ``f_rest`` the others channel-major (all of red's
coefficients, then green's, then blue's). Normals are zeros.

:class:`Splats` holds the same values as numpy arrays with the SH coefficients as
``[N, K, 3]`` (coefficient, channel; ``K = (degree + 1) ** 2``), the layout of gsplat and
of :func:`backend.splat.rasterize.rasterize`. Reading and writing are bulk numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.ply import PlyError, read_ply
from ..protocol import write_bytes_atomic

REST_COUNTS = {0: 0, 1: 9, 2: 24, 3: 45}  # SH degree -> f_rest values
GAUSSIAN_PROPERTIES = ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


@dataclass
class Splats:
    """Gaussians as stored (``N`` of them, float32)."""

    means: np.ndarray  # [N, 3]
    quats: np.ndarray  # [N, 4] w x y z, raw
    log_scales: np.ndarray  # [N, 3]
    logit_opacities: np.ndarray  # [N]
    sh: np.ndarray  # [N, K, 3]: sh[:, 0] = f_dc

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1


def property_names(sh_degree: int) -> list[str]:
    """The standard property order for splats of SH degree ``sh_degree``."""
    rest = REST_COUNTS[sh_degree]
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest)] + list(GAUSSIAN_PROPERTIES))


def to_columns(splats: Splats) -> np.ndarray:
    """The ``[N, 17 + 3 (K - 1)]`` float32 table of the file, columns in :func:`property_names` order."""
    n, k = len(splats), splats.sh.shape[1]
    if (k - 1) * 3 not in REST_COUNTS.values():
        raise ValueError(f"SH coefficients [N, K, 3] need K in 1, 4, 9, 16, got K = {k}")
    rest = np.asarray(splats.sh[:, 1:, :], np.float32).transpose(0, 2, 1).reshape(n, 3 * (k - 1))  # channel-major
    return np.concatenate([
        np.asarray(splats.means, np.float32).reshape(n, 3),
        np.zeros((n, 3), np.float32),
        np.asarray(splats.sh[:, 0, :], np.float32),
        rest,
        np.asarray(splats.logit_opacities, np.float32).reshape(n, 1),
        np.asarray(splats.log_scales, np.float32).reshape(n, 3),
        np.asarray(splats.quats, np.float32).reshape(n, 4),
    ], axis=1)


def write_splats(path: str | os.PathLike, splats: Splats) -> Path:
    """Write the standard 3DGS ``.ply`` atomically (temporary name, then rename)."""
    names = property_names(splats.sh_degree)
    table = to_columns(splats)
    header = "\n".join([
        "ply", "format binary_little_endian 1.0", "comment Recon 3D Gaussian splats (3DGS layout)",
        f"element vertex {len(splats)}", *(f"property float {name}" for name in names), "end_header",
    ]) + "\n"
    payload = header.encode("ascii") + np.ascontiguousarray(table, dtype="<f4").tobytes()
    write_bytes_atomic(path, payload)
    return Path(path)


def read_splats(path: str | os.PathLike) -> Splats:
    """Read a 3DGS ``.ply``; InputError when the file is a mesh, a plain point cloud or damaged."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Splat file {path} does not exist.", "Check the path.")
    try:
        ply = read_ply(path)
    except PlyError as exc:
        raise InputError(f"{path} is not a readable PLY file: {exc}.", "Give a 3D Gaussian splatting .ply.") from exc
    vertex = ply.get("vertex")
    if vertex is None:
        raise InputError(f"{path} has no 'vertex' element, so it holds no Gaussians.", "Give a 3D Gaussian splatting .ply.")
    if any(name in ply for name in ("face", "edge", "tristrips")):
        raise InputError(f"{path} is a mesh (it has faces), not Gaussian splats.",
                         "Import it as a mesh; splats come from the 'splat' job or another 3DGS trainer.")
    missing = [name for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", *GAUSSIAN_PROPERTIES) if name not in vertex]
    if missing:
        raise InputError(
            f"{path} is a point cloud, not Gaussian splats: it lacks {', '.join(missing)}.",
            "Train splats from it (the 'splat' job) or import it as a point cloud.",
        )
    rest_names = sorted((name for name in vertex if name.startswith("f_rest_")), key=lambda s: int(s[7:]))
    degree = next((d for d, count in REST_COUNTS.items() if count == len(rest_names)), None)
    if degree is None or rest_names != [f"f_rest_{i}" for i in range(len(rest_names))]:
        raise InputError(f"{path} has {len(rest_names)} f_rest values; a 3DGS file has 0, 9, 24 or 45 (SH degree 0-3).",
                         "Re-export it from the trainer.")
    n = len(vertex["x"])

    def stack(names):
        return np.stack([np.asarray(vertex[name], np.float32) for name in names], axis=1) if names else \
            np.zeros((n, 0), np.float32)

    m = len(rest_names) // 3
    sh = np.empty((n, m + 1, 3), np.float32)
    sh[:, 0] = stack(["f_dc_0", "f_dc_1", "f_dc_2"])
    sh[:, 1:] = stack(rest_names).reshape(n, 3, m).transpose(0, 2, 1)
    splats = Splats(
        means=stack(["x", "y", "z"]),
        quats=stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=stack(["scale_0", "scale_1", "scale_2"]),
        logit_opacities=np.asarray(vertex["opacity"], np.float32).copy(),
        sh=sh,
    )
    bad = ~np.isfinite(splats.means).all(1)
    if bad.any():
        raise InputError(f"{path} has {int(bad.sum())} Gaussian(s) with NaN or infinite positions.",
                         "Re-export it, or remove them.")
    return splats
