# SPDX-License-Identifier: GPL-3.0-or-later
"""The JSON-lines protocol between Blender and the backend.

Standard library only: this is the one module that both the Blender side (``addon/``) and
the backend import. One JSON object per line, UTF-8, ``\\n``-terminated. Every message
carries ``{"v": 1, "type": ..., "job": <id or None>, "seq": <n>}``.

Requests (Blender to backend): ``hello``, ``submit``, ``cancel``, ``shutdown``.
Events (backend to Blender): ``hello``, ``accepted``, ``progress``, ``log``, ``artifact``,
then exactly one terminal event per job: ``result``, ``error`` or ``cancelled``.

Bulk data never travels in JSON: a job writes files into ``workdir/<job>/`` and names
them in ``artifact`` and ``result`` events.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import threading
from typing import Any

VERSION = 1

# Requests.
HELLO = "hello"
SUBMIT = "submit"
CANCEL = "cancel"
SHUTDOWN = "shutdown"
REQUESTS = frozenset({HELLO, SUBMIT, CANCEL, SHUTDOWN})

# Events.
ACCEPTED = "accepted"
PROGRESS = "progress"
LOG = "log"
ARTIFACT = "artifact"
RESULT = "result"
ERROR = "error"
CANCELLED = "cancelled"
TERMINAL = frozenset({RESULT, ERROR, CANCELLED})
EVENTS = frozenset({HELLO, ACCEPTED, PROGRESS, LOG, ARTIFACT}) | TERMINAL

# Error codes carried by ``error`` events. The backend maps its typed exceptions to these;
# the Blender side adds the last two for failures it detects itself.
E_INPUT = "input"  # bad input: the message names the file or setting
E_MISSING_DEPENDENCY = "missing_dependency"  # a package the job needs does not import
E_OUT_OF_MEMORY = "out_of_memory"
E_INTERNAL = "internal"  # a bug: the traceback is in the job directory
E_PROTOCOL = "protocol"  # a malformed request
E_BACKEND_DIED = "backend_died"  # the backend process ended while the job ran
E_BACKEND_UNAVAILABLE = "backend_unavailable"  # the backend could not be started

# Files every job directory holds.
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
LOG_FILE = "job.log"
TRACEBACK_FILE = "traceback.txt"


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


class MessageCounter:
    """Thread-safe ``seq`` numbers for the messages one side sends."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


def make(type_: str, job: str | None, seq: int, **fields: Any) -> dict:
    """Build a message dict with the common envelope."""
    return {"v": VERSION, "type": type_, "job": job, "seq": seq, **fields}


def encode(message: dict) -> bytes:
    """One message as a UTF-8 JSON line (no embedded newlines: JSON escapes them)."""
    return (json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode(
        "utf-8"
    )


def decode(line: bytes | str) -> dict:
    """Parse and validate one line; raises :class:`ProtocolError` naming what is wrong."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"line is not UTF-8: {exc}") from None
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"line is not JSON: {exc}: {line[:200]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"message is not a JSON object: {line[:200]!r}")
    if message.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('v')!r} (expected {VERSION})")
    type_ = message.get("type")
    if type_ not in REQUESTS and type_ not in EVENTS:
        raise ProtocolError(f"unknown message type {type_!r}")
    return message


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temporary name beside ``path`` and rename it into place."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    """Write bytes so that a reader never sees half a file."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
