# SPDX-License-Identifier: GPL-3.0-or-later
"""One frozen dataclass per job kind serves as CLI flags, ``submit.config`` and ``config.json``.

Each field carries its help text in ``metadata["help"]`` and, where it has a fixed set of
values, ``metadata["choices"]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Any

from .errors import InputError


def option(default: Any, help: str, choices: tuple | None = None, minimum: float | None = None) -> Any:
    """A dataclass field with a help text, optional choices and an optional lower bound."""
    metadata = {"help": help, "choices": choices, "minimum": minimum}
    return dataclasses.field(default=default, metadata=metadata)


def path_input(help: str, required: bool = True) -> Any:
    """A field of a job's ``Inputs``: a file or folder path, ``--name`` on the command line."""
    return dataclasses.field(default="", metadata={"help": help, "required": required})


def _field_types(cls) -> dict[str, type]:
    return typing.get_type_hints(cls)


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per dataclass field (``w_edge`` becomes ``--w-edge``)."""
    types = _field_types(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = types[field.name]
        help_text = f"{field.metadata.get('help', '')} (default: {field.default})"
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=field.name, type=kind, default=None, choices=field.metadata.get("choices"), help=help_text
            )


def from_args(cls, namespace: argparse.Namespace, **overrides: Any):
    """Build the config from parsed flags; flags left out keep the dataclass defaults."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if getattr(namespace, f.name, None) is not None}
    values.update(overrides)
    return from_dict(cls, values)


def from_dict(cls, values: dict[str, Any] | None):
    """Build and validate a config from a JSON object; unknown or ill-typed keys raise InputError."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(
            f"Unknown setting(s) for this job: {', '.join(unknown)}.", f"Valid settings are: {', '.join(sorted(names))}."
        )
    types = _field_types(cls)
    clean = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, kind = values[field.name], types[field.name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"Setting '{field.name}' must be {kind.__name__}, got {value!r}.")
        if kind is float and not math.isfinite(value):
            raise InputError(f"Setting '{field.name}' must be a finite number, got {value!r}.")
        choices = field.metadata.get("choices")
        if choices and value not in choices:
            raise InputError(f"Setting '{field.name}' is {value!r}.", f"Use one of: {', '.join(map(str, choices))}.")
        minimum = field.metadata.get("minimum")
        if minimum is not None and value < minimum:
            raise InputError(f"Setting '{field.name}' is {value!r}, below its minimum {minimum}.", "Raise it.")
        clean[field.name] = value
    return cls(**clean)


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
