# SPDX-License-Identifier: GPL-3.0-or-later
"""Job kinds. One module per kind, each with ``Config`` (a frozen dataclass), ``Inputs``
(a frozen dataclass of file paths) and ``run(ctx, config, inputs) -> summary dict``.

Modules are imported on first use, so the server starts (and answers ``hello``) even when
a job's heavy dependencies are missing.
"""

from __future__ import annotations

import importlib

from ..errors import InputError

KINDS = {
    "deform": "backend.jobs.deform",
    "sfm": "backend.jobs.sfm",
    "import": "backend.jobs.import_scene",
    "splat": "backend.jobs.splat",
    "render-splats": "backend.jobs.render_splats",
    "body": "backend.jobs.body",
    "body_shape": "backend.jobs.body_shape",
    "nerf": "backend.jobs.nerf",
    "render-nerf": "backend.jobs.render_nerf",
    "texture": "backend.jobs.texture",
    "mesh": "backend.jobs.mesh",
}


def load(kind: str):
    """The module implementing job ``kind``; raises InputError for an unknown kind."""
    if kind not in KINDS:
        raise InputError(f"Unknown job kind {kind!r}.", f"Known kinds: {', '.join(sorted(KINDS))}.")
    return importlib.import_module(KINDS[kind])
