# SPDX-License-Identifier: GPL-3.0-or-later
"""The installable zip: the manifest Blender validates, and only what users need inside."""

import tomllib
import zipfile


def test_manifest_fields(extension_zip):
    with zipfile.ZipFile(extension_zip) as archive:
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert manifest["id"] == "recon" and manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["permissions"]) == {"files"}  # no network without a remote backend
    assert len(manifest["tagline"]) <= 64 and not manifest["tagline"].endswith((".", "!"))


def test_zip_holds_the_addon_and_backend_but_no_dev_files(extension_zip):
    with zipfile.ZipFile(extension_zip) as archive:
        names = set(archive.namelist())
    for needed in ("__init__.py", "blender_manifest.toml", "addon/jobs.py", "operators/deform.py",
                   "panels/jobs.py", "backend/__main__.py", "backend/protocol.py", "backend/jobs/deform.py"):
        assert needed in names, needed
    for name in names:
        assert not name.startswith(("tests/", "bench/", "tools/", ".ci/", ".venv/", "out/", "dist/")), name
        assert name not in ("Makefile", "pyproject.toml", "requirements.txt") and "__pycache__" not in name, name
