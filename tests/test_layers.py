# SPDX-License-Identifier: GPL-3.0-or-later
"""The two processes stay apart: backend/ never imports bpy or mathutils, and the Blender
side (addon/, operators/, panels/) never imports compute packages. addon/ never imports
operators/ or panels/ (imports point down)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "backend": {"bpy", "mathutils", "bmesh", "gpu", "bpy_extras"},
    "addon": {"torch", "pycolmap", "gsplat", "tinycudann", "numba", "scipy", "trimesh", "plyfile"},
    "operators": {"torch", "pycolmap", "gsplat", "tinycudann", "numba", "scipy", "trimesh", "plyfile"},
    "panels": {"torch", "pycolmap", "gsplat", "tinycudann", "numba", "scipy", "trimesh", "plyfile"},
}


def imports_of(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) for every import in a file, nested ones too;
    ``from ..backend import protocol`` counts as module ``backend.protocol``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found += [(node.lineno, f"{base}.{alias.name}".strip("."), node.level) for alias in node.names]
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_forbidden(layer):
    offenders = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, module, level in imports_of(path):
            top = module.split(".")[0]
            if level == 0 and top in FORBIDDEN[layer]:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            crosses = level > 0 and module.split(".")[0] == "backend" and not module.startswith("backend.protocol")
            if layer != "backend" and crosses:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module} (only backend.protocol may cross)")
    assert not offenders, "\n".join(offenders)


def test_addon_never_imports_operators_or_panels():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "addon").rglob("*.py"))
        for line, module, level in imports_of(path)
        if level > 0 and module.split(".")[0] in {"operators", "panels"}
    ]
    assert not offenders, "\n".join(offenders)


def test_the_scan_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch\n", encoding="utf-8")
    assert (2, "torch", 0) in imports_of(bad)


def test_protocol_is_standard_library_only():
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    modules = {module.split(".")[0] for _, module, level in imports_of(ROOT / "backend" / "protocol.py") if level == 0}
    assert all(level == 0 for _, _, level in imports_of(ROOT / "backend" / "protocol.py"))
    assert modules <= stdlib, modules - stdlib
