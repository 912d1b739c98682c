# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the backend's interpreter, the job directory and the device come from: the add-on
preferences when the extension is enabled, else environment variables, else defaults."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import bpy

from . import ADDON_ID

# The folder that holds backend/ (the extension's root): the backend runs as `python -m backend` from here.
EXTENSION_ROOT = Path(__file__).resolve().parent.parent


def preferences():
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_python() -> str:
    prefs = preferences()
    if prefs is not None and prefs.python_path:
        return bpy.path.abspath(prefs.python_path)
    return os.environ.get("RECON_BACKEND_PYTHON") or sys.executable


def jobs_root() -> Path:
    prefs = preferences()
    if prefs is not None and prefs.job_directory:
        root = Path(bpy.path.abspath(prefs.job_directory))
    elif os.environ.get("RECON_JOB_DIR"):
        root = Path(os.environ["RECON_JOB_DIR"])
    else:
        try:
            root = Path(bpy.utils.extension_path_user(ADDON_ID, path="jobs", create=True))
        except (ValueError, AttributeError):  # not loaded as an extension (e.g. a legacy add-on)
            root = Path(tempfile.gettempdir()) / "recon-jobs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def device() -> str:
    prefs = preferences()
    return prefs.device if prefs is not None else os.environ.get("RECON_DEVICE", "auto")
