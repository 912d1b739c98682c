# SPDX-License-Identifier: GPL-3.0-or-later
"""xatlas in a child process.

xatlas 0.0.11 can crash the process it runs in (a segmentation fault while packing, seen
on a perfectly regular icosphere of 81,920 faces), which would take the whole backend
server down with the job. :func:`pack_isolated` runs one chart-and-pack pass in a child
process (this file as a script: numpy and xatlas only) and reports a crash as :class:`UnwrapCrashed`; the caller can
retry on slightly perturbed positions. Cancel terminates the child.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


class UnwrapCrashed(RuntimeError):
    """xatlas killed its process (exit code in the message)."""


def pack(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int, texels_per_unit: float) -> dict:
    """One xatlas pass: charts, then packing at ``texels_per_unit`` (0: xatlas's estimate
    for ``resolution``; with ``resolution`` 0, one atlas of free size)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    options = xatlas.PackOptions()
    options.padding = int(padding)
    options.bilinear = True
    options.rotate_charts = True
    options.resolution = int(resolution)
    options.texels_per_unit = float(texels_per_unit)
    atlas.generate(xatlas.ChartOptions(), options)
    out = {"width": int(atlas.width), "height": int(atlas.height), "atlas_count": int(atlas.atlas_count),
           "chart_count": int(atlas.chart_count), "utilization": float(atlas.utilization),
           "texels_per_unit": float(atlas.texels_per_unit)}
    if atlas.atlas_count == 1:
        vmapping, indices, uv = atlas[0]
        out.update(vmapping=np.asarray(vmapping, np.int64), indices=np.asarray(indices, np.int64).reshape(-1, 3),
                   uv=np.asarray(uv, np.float32))
    return out


def pack_isolated(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int, texels_per_unit: float,
                  check_cancelled: Callable[[], None] | None = None) -> dict:
    """:func:`pack` in a child process (this file run as a script, arrays through ``.npz``
    files); raises :class:`UnwrapCrashed` if it dies of a signal."""
    with tempfile.TemporaryDirectory(prefix="recon-xatlas-") as folder:
        folder = Path(folder)
        np.savez(folder / "in.npz", vertices=np.asarray(vertices, np.float32), faces=np.asarray(faces, np.uint32),
                 options=np.array([resolution, padding, texels_per_unit], np.float64))
        with open(folder / "stderr.txt", "wb") as stderr:
            process = subprocess.Popen([sys.executable, __file__, str(folder / "in.npz"), str(folder / "out.npz")],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                while process.poll() is None:
                    if check_cancelled is not None:
                        check_cancelled()
                    time.sleep(0.05)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if process.returncode < 0:
            raise UnwrapCrashed(f"xatlas died of signal {-process.returncode}")
        if process.returncode != 0:
            message = (folder / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            raise RuntimeError(f"xatlas failed: {message[-1] if message else process.returncode}")
        with np.load(folder / "out.npz") as data:
            out = {key: data[key] for key in data.files}
    for key in ("width", "height", "atlas_count", "chart_count"):
        out[key] = int(out[key])
    for key in ("utilization", "texels_per_unit"):
        out[key] = float(out[key])
    return out


def main(argv: list[str]) -> int:
    with np.load(argv[0]) as data:
        resolution, padding, texels_per_unit = data["options"]
        out = pack(data["vertices"], data["faces"], int(resolution), int(padding), float(texels_per_unit))
    np.savez(argv[1], **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
