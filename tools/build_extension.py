# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the installable extension zip (``dist/recon-<version>.zip``) from the working tree,
leaving out what ``blender_manifest.toml``'s ``[build] paths_exclude_pattern`` names.

The same layout as Blender's own ``blender --command extension build``, for machines where
only the ``bpy`` module is installed."""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _excluded(relative: str, patterns: list[str]) -> bool:
    """gitignore-style subset: '/x' anchors at the root, 'x/' matches directories, '*' globs."""
    parts = relative.split("/")
    for pattern in patterns:
        anchored, directory = pattern.startswith("/"), pattern.endswith("/")
        core = pattern.strip("/")
        if anchored:
            if directory and (relative + "/").startswith(core + "/"):
                return True
            if not directory and (fnmatch.fnmatch(relative, core) or fnmatch.fnmatch(parts[0], core) and len(parts) == 1):
                return True
            if not directory and relative.startswith(core + "/"):
                return True
        else:
            candidates = parts[:-1] if directory else parts
            if any(fnmatch.fnmatch(part, core) for part in candidates):
                return True
    return False


def source_files(root: Path = ROOT) -> list[str]:
    """Files tracked by git, plus untracked ones not ignored (what a fresh clone would hold)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=root, check=True, capture_output=True, text=True,
        ).stdout
        files = [line for line in out.splitlines() if line and (root / line).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    return sorted(files)


def build(out_dir: Path, root: Path = ROOT) -> Path:
    manifest = tomllib.loads((root / "blender_manifest.toml").read_text(encoding="utf-8"))
    patterns = manifest.get("build", {}).get("paths_exclude_pattern", [])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in source_files(root):
            if not _excluded(relative, patterns):
                archive.write(root / relative, relative)
    tmp.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    path = build(args.out)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    print(f"{path} ({len(names)} files, {path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
