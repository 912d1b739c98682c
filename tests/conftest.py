# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures. Headless Blender (the ``bpy`` wheel) is imported only by the
``blender`` fixture, after BLENDER_USER_RESOURCES points at a temporary folder, so no test
touches a real user profile."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

# Before anything imports bpy: a private Blender profile and job folder for the whole session.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="recon-tests-"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(_SESSION_TMP / "blender-user"))
os.environ.setdefault("RECON_JOB_DIR", str(_SESSION_TMP / "jobs"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".venv" / "numba-cache"))
os.environ.setdefault("RECON_CACHE_DIR", str(ROOT / ".venv" / "recon-cache"))  # the body model's data, built once
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def data_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with a clear message when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared test data is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The extension zip, built from the working tree exactly as `make extension` builds it."""
    from tools.build_extension import build

    return build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def blender(extension_zip):
    """Headless Blender with the extension installed through Blender's own extension
    installer and enabled. Yields the extension's package name."""
    import bpy

    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}, result
    name = "bl_ext.user_default.recon"
    assert name in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
    yield name


@pytest.fixture
def empty_scene(blender):
    """The current scene emptied of objects and orphan meshes (the extension stays enabled)."""
    import bpy

    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)
    for collection in list(bpy.data.collections):
        bpy.data.collections.remove(collection)
    bpy.context.view_layer.update()
    return bpy.context.scene


def run_backend(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m backend ARGS`` from the repository root, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs,
    )
