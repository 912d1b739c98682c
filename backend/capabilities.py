# SPDX-License-Identifier: GPL-3.0-or-later
"""What this backend can do here: Python, torch, device, and which optional packages import."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys

from . import __version__

OPTIONAL = ("pycolmap", "gsplat", "tinycudann", "anny", "mediapipe", "trimesh", "scipy", "plyfile")


def _probe(name: str, deep: bool) -> dict:
    if not deep:
        return {"available": importlib.util.find_spec(name) is not None}
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"available": True, "version": str(getattr(module, "__version__", ""))}


def capabilities(deep: bool = True) -> dict:
    """A JSON-ready description of the environment.

    ``deep=True`` imports every optional package (slow, for ``doctor``); otherwise only
    torch is imported and the rest are looked up without importing them.
    """
    caps: dict = {
        "backend": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
    }
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        caps["torch"] = {"available": False, "error": f"{type(exc).__name__}: {exc}"}
        caps["device"] = "none"
        caps["cuda"] = False
    else:
        cuda = bool(torch.cuda.is_available())
        caps["torch"] = {"available": True, "version": torch.__version__, "threads": torch.get_num_threads()}
        caps["cuda"] = cuda
        caps["device"] = "cuda" if cuda else "cpu"
        if cuda:
            caps["cuda_device"] = torch.cuda.get_device_name(0)
    caps["packages"] = {name: _probe(name, deep) for name in OPTIONAL}
    caps["splat_rasterizer"] = splat_rasterizer(caps, deep)
    return caps


def splat_rasterizer(caps: dict, deep: bool) -> str:
    """What the splat jobs rasterize with by default: gsplat on CUDA, else our numba kernels
    on the CPU, else our PyTorch rasterizer (see ``backend.splat.rasterize.resolve_backend``)."""
    if caps.get("cuda") and caps["packages"].get("gsplat", {}).get("available"):
        return "gsplat"
    if not caps.get("torch", {}).get("available"):
        return "none"
    return "numba" if _probe("numba", deep)["available"] else "torch"
