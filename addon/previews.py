# SPDX-License-Identifier: GPL-3.0-or-later
"""Images on disk shown as Blender images: a job's live ``preview.png``, reloaded only when
the file changed, and rendered frames."""

from __future__ import annotations

from pathlib import Path

import bpy

_SHOWN: dict[str, tuple[str, float]] = {}  # image name -> (file, modification time) last loaded


def show_file(name: str, path: Path, sequence: bool = False) -> bpy.types.Image:
    """The image ``name`` showing ``path`` (a file, or the first of a numbered sequence), read
    from disk again (made when missing)."""
    image = bpy.data.images.get(name)
    if image is None or image.source not in ("FILE", "SEQUENCE"):
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = name
    image.source = "SEQUENCE" if sequence else "FILE"
    image.filepath = str(path)
    image.reload()
    return image


def show_preview(name: str, path: Path) -> bpy.types.Image | None:
    """Show ``path`` (a job's preview PNG, rewritten while it runs) as the image ``name`` when
    the file changed since it was last shown; returns the image (None before the first preview)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return bpy.data.images.get(name)
    image = bpy.data.images.get(name)
    if image is not None and _SHOWN.get(name) == (str(path), mtime) and Path(bpy.path.abspath(image.filepath)) == path:
        return image
    _SHOWN[name] = (str(path), mtime)
    image = show_file(name, path)
    if not bpy.app.background:  # panels draw the image's preview icon
        try:
            image.preview_ensure().reload()
        except (AttributeError, RuntimeError):
            pass
    return image
