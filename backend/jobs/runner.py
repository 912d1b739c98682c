# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs one job in its directory: config.json, a log, artifacts, manifest.json, and exactly
one terminal outcome (result, error or cancelled). Shared by ``serve`` and the CLI."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import config as config_mod
from .. import protocol
from ..errors import Cancelled, InputError, OutOfMemory, ReconError
from . import load as load_kind

log = logging.getLogger("recon.backend")

Emit = Callable[[str, dict], None]  # (event type, fields)


class JobContext:
    """What a running job sees: its directory, progress and log events, artifacts, cancel."""

    def __init__(self, job_id: str, job_dir: Path, emit: Emit, cancel_event: threading.Event) -> None:
        self.job_id = job_id
        self.dir = job_dir
        self._emit = emit
        self._cancel = cancel_event
        self._last_progress = 0.0
        self.artifacts: list[dict[str, str]] = []

    # -- cancel -----------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop; call between steps."""
        if self._cancel.is_set():
            raise Cancelled()

    # -- events -----------------------------------------------------------------------
    def progress(
        self,
        stage: str,
        done: int,
        total: int,
        message: str = "",
        metrics: dict[str, float] | None = None,
        *,
        min_interval: float = 0.2,
    ) -> None:
        """Report progress, at most every ``min_interval`` seconds except at a stage's end."""
        now = time.monotonic()
        if done < total and now - self._last_progress < min_interval:
            return
        self._last_progress = now
        self._emit(
            protocol.PROGRESS,
            {"stage": stage, "done": int(done), "total": int(total), "message": message, "metrics": metrics or {}},
        )

    def log(self, level: str, message: str) -> None:
        log.log(logging.getLevelName(level.upper()), message)
        self._emit(protocol.LOG, {"level": level, "message": message})

    def artifact(self, name: str, path: Path, format: str) -> None:
        """Announce a finished file (already written atomically into the job directory)."""
        entry = {"name": name, "path": str(Path(path).resolve()), "format": format}
        self.artifacts.append(entry)
        self._emit(protocol.ARTIFACT, entry)


def _error_fields(exc: BaseException, job_dir: Path) -> dict[str, Any]:
    log_path = str(job_dir / protocol.LOG_FILE)
    if isinstance(exc, ReconError):
        return {"code": exc.code, "message": exc.message, "hint": exc.hint, "log": log_path}
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        oom = OutOfMemory(f"Ran out of memory: {exc}", "Lower the job's size settings (samples, subdivisions).")
        return {"code": oom.code, "message": oom.message, "hint": oom.hint, "log": log_path}
    return {
        "code": protocol.E_INTERNAL,
        "message": f"Internal error: {type(exc).__name__}: {exc}",
        "hint": f"This is a bug in Recon. The traceback is in {job_dir / protocol.TRACEBACK_FILE}.",
        "log": log_path,
    }


def run_job(
    kind: str,
    config: dict | Any,
    inputs: dict,
    job_id: str,
    job_dir: Path,
    emit: Emit,
    cancel_event: threading.Event | None = None,
) -> tuple[str, dict]:
    """Run a job to its end; returns the terminal event ``(type, fields)``.

    Never raises for a job's own failure: errors become ``error`` events with a code,
    message and hint, and the traceback goes to ``traceback.txt`` in the job directory.
    """
    cancel_event = cancel_event or threading.Event()
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(job_dir / protocol.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("recon")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    ctx = JobContext(job_id, job_dir, emit, cancel_event)
    given_inputs = dataclasses.asdict(inputs) if dataclasses.is_dataclass(inputs) else inputs
    manifest: dict[str, Any] = {"job": job_id, "kind": kind, "inputs": given_inputs, "started": time.time()}
    started = time.perf_counter()
    try:
        log.info("job %s (%s) starting in %s", job_id, kind, job_dir)
        module = load_kind(kind)
        cfg = config if dataclasses.is_dataclass(config) else config_mod.from_dict(module.Config, config)
        ins = inputs if dataclasses.is_dataclass(inputs) else _inputs_from_dict(module.Inputs, given_inputs)
        manifest["config"] = config_mod.to_dict(cfg)
        manifest["inputs"] = dataclasses.asdict(ins)
        protocol.write_json_atomic(job_dir / protocol.CONFIG_FILE, {"kind": kind, **manifest["config"]})
        summary = module.run(ctx, cfg, ins)
        outcome = (protocol.RESULT, {"artifacts": ctx.artifacts, "summary": summary})
        manifest.update(status="succeeded", summary=summary)
        log.info("job %s succeeded: %s", job_id, summary)
    except Cancelled:
        outcome = (protocol.CANCELLED, {"artifacts": ctx.artifacts})
        manifest["status"] = "cancelled"
        log.info("job %s cancelled", job_id)
    except BaseException as exc:  # noqa: BLE001 - every failure must become an error event
        if not isinstance(exc, Exception):  # KeyboardInterrupt / SystemExit: treat as cancel
            outcome = (protocol.CANCELLED, {"artifacts": ctx.artifacts})
            manifest["status"] = "cancelled"
        else:
            fields = _error_fields(exc, job_dir)
            if not isinstance(exc, InputError):
                (job_dir / protocol.TRACEBACK_FILE).write_text(traceback.format_exc(), encoding="utf-8")
            log.error("job %s failed: %s %s", job_id, fields["message"], fields["hint"])
            log.debug("%s", traceback.format_exc())
            outcome = (protocol.ERROR, fields)
            manifest.update(status="failed", error=fields)
    finally:
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        manifest["artifacts"] = [
            {**a, "path": os.path.relpath(a["path"], job_dir)} for a in ctx.artifacts
        ]
        try:
            protocol.write_json_atomic(job_dir / protocol.MANIFEST_FILE, manifest)
        finally:
            root.removeHandler(handler)
            handler.close()
    return outcome


def _inputs_from_dict(cls, values: dict) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values or {}) - names)
    if unknown:
        raise InputError(f"Unknown input(s): {', '.join(unknown)}.", f"Valid inputs are: {', '.join(sorted(names))}.")
    return cls(**(values or {}))
