# SPDX-License-Identifier: GPL-3.0-or-later
"""Recon's compute backend: runs jobs in a process separate from Blender.

Run it as ``python -m backend``. This package never imports ``bpy`` or ``mathutils``;
heavy packages (torch, pycolmap, ...) are imported by the jobs that need them, so that
``import backend.protocol`` stays cheap for the Blender side.
"""

__version__ = "0.1.0"
