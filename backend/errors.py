# SPDX-License-Identifier: GPL-3.0-or-later
"""Typed errors: each maps to a protocol error code, a message and a hint (the fix)."""

from __future__ import annotations

from . import protocol


class ReconError(Exception):
    """Base class of the errors a job reports to the user.

    ``message`` says what is wrong and names the file or setting; ``hint`` says what to do.
    """

    code = protocol.E_INTERNAL

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class InputError(ReconError):
    """The input (a file, an object, a setting) cannot be used as given."""

    code = protocol.E_INPUT


class MissingDependency(ReconError):
    """A package the job needs is not importable in the backend's environment."""

    code = protocol.E_MISSING_DEPENDENCY


class OutOfMemory(ReconError):
    """The job ran out of (GPU or CPU) memory; the hint names the setting to lower."""

    code = protocol.E_OUT_OF_MEMORY


class Cancelled(Exception):
    """Raised inside a job when its cancel token is set; not an error."""


def require(module_name: str, feature: str):
    """Import ``module_name`` or raise :class:`MissingDependency` with the original error."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingDependency(
            f"{feature} needs the Python package '{module_name}', which does not import in the backend's "
            f"environment ({exc}).",
            "Point Recon's preferences at a Python that has the backend requirements installed "
            "(`make venv` creates one), or install them with `pip install -r requirements.txt`.",
        ) from exc
