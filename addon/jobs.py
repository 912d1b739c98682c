# SPDX-License-Identifier: GPL-3.0-or-later
"""The job registry and its pump.

Job state lives in Python (never in the .blend). :func:`pump` drains the backend's events
and updates jobs; it runs from a ``bpy.app.timers`` timer in the interactive UI, from the
modal operators' timer events, and from :meth:`Job.wait` in scripts (timers never fire when
Blender runs as a Python module or in a blocking script).

Cancel: a ``cancel`` request first; if the job has not ended after a grace period, SIGTERM
to the backend's process group, then SIGKILL; the next submit starts a fresh backend. A
backend that ends while a job runs fails that job with a message and the log's path.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..backend import protocol
from . import settings
from .bridge import EXIT, Backend, BackendUnavailable, log_tail

CANCEL_GRACE_S = 5.0  # seconds a job gets to stop by itself after a cancel request
KILL_GRACE_S = 3.0  # seconds between SIGTERM and SIGKILL

ACTIVE = ("starting", "queued", "running")


@dataclass
class Job:
    id: str
    kind: str
    dir: Path
    config: dict
    inputs: dict
    title: str = ""  # what the result is named after (a photo folder, a movie clip, ...)
    backgrounds: dict = field(default_factory=dict)  # photo name -> name of an image datablock showing it
    status: str = "starting"  # starting, queued, running, succeeded, failed, cancelled
    stage: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    metrics: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)  # code, message, hint, log
    submitted: float = field(default_factory=time.monotonic)
    finished: float | None = None
    cancel_requested: float | None = None
    terminated: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def log_path(self) -> Path:
        return self.dir / protocol.LOG_FILE

    def artifact(self, name: str) -> Path:
        for entry in self.artifacts:
            if entry["name"] == name:
                return Path(entry["path"])
        raise KeyError(f"job {self.id} has no artifact {name!r} (it has {[a['name'] for a in self.artifacts]})")

    def error_text(self) -> str:
        """The error as one sentence or two for ``Operator.report``: message, then the fix."""
        text = " ".join(filter(None, [self.error.get("message"), self.error.get("hint")]))
        if self.error.get("log"):
            text += f" (log: {self.error['log']})"
        return text

    def cancel(self) -> None:
        manager().cancel(self)

    def wait(self, timeout: float | None = None, interval: float = 0.05, on_progress=None) -> Job:
        """Block until the job ends, pumping events (for scripts). Ctrl+C cancels the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                manager().pump()
                if on_progress is not None:
                    on_progress(self)
                if not self.active:
                    return self
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")
                time.sleep(interval)
        except KeyboardInterrupt:
            self.cancel()
            while self.active:
                manager().pump()
                time.sleep(interval)
            return self


class JobManager:
    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.jobs: dict[str, Job] = {}

    # -- backend --------------------------------------------------------------------
    def ensure_backend(self) -> Backend:
        if self.backend is not None and self.backend.alive:
            return self.backend
        if self.backend is not None:
            self._drain(self.backend)  # deliver the old process's last events first
            self.backend.stop(timeout=1.0)
        root = settings.jobs_root()
        backend = Backend(
            settings.backend_python(),
            settings.EXTENSION_ROOT,
            root / "backend.log",
            # model data the backend builds once (the body model's) stays in Recon's own folder
            env={"RECON_CACHE_DIR": os.environ.get("RECON_CACHE_DIR") or str(root / "cache")},
        )
        backend.start()
        self.backend = backend
        return backend

    def stop_backend(self) -> None:
        """Stop the backend (on unregister and when a file is loaded); running jobs end cancelled."""
        for job in self.jobs.values():
            if job.active:
                job.cancel_requested = job.cancel_requested or time.monotonic()
        if self.backend is not None:
            self.backend.stop()
            self._drain(self.backend)
            self.backend = None
        for job in self.jobs.values():
            if job.active:
                self._finish(job, "cancelled")

    # -- jobs -----------------------------------------------------------------------
    def new_job(self, kind: str, config: dict[str, Any]) -> Job:
        """Create a job and its directory (write inputs there), not yet submitted."""
        job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        job_dir = settings.jobs_root() / job_id
        (job_dir / "inputs").mkdir(parents=True, exist_ok=True)
        return Job(id=job_id, kind=kind, dir=job_dir, config=dict(config), inputs={})

    def submit(self, job: Job) -> Job:
        """Send the job to the backend (starting one if needed). Raises BackendUnavailable."""
        self.jobs[job.id] = job
        try:
            backend = self.ensure_backend()
        except BackendUnavailable as exc:
            self._finish(job, "failed", error={"code": protocol.E_BACKEND_UNAVAILABLE, "message": str(exc), "hint": ""})
            raise
        job.status = "queued"
        backend.send(
            protocol.SUBMIT, job.id, kind=job.kind, config=job.config, inputs=job.inputs, workdir=str(job.dir.parent)
        )
        _ensure_timer()
        return job

    def cancel(self, job: Job) -> None:
        if not job.active or job.cancel_requested is not None:
            return
        job.cancel_requested = time.monotonic()
        job.message = "cancelling..."
        if self.backend is None or not self.backend.send(protocol.CANCEL, job.id):
            self._finish(job, "cancelled")

    def active_jobs(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.active]

    def latest(self, kind: str | None = None) -> Job | None:
        jobs = [j for j in self.jobs.values() if kind is None or j.kind == kind]
        return jobs[-1] if jobs else None

    # -- events ---------------------------------------------------------------------
    def pump(self) -> bool:
        """Apply pending backend events and escalate stuck cancels; True while jobs are active."""
        if self.backend is not None:
            self._drain(self.backend)
        now = time.monotonic()
        for job in self.active_jobs():
            if job.cancel_requested is None or self.backend is None:
                continue
            if job.terminated is None and now - job.cancel_requested > CANCEL_GRACE_S:
                job.terminated = now
                self.backend.terminate()
            elif job.terminated is not None and now - job.terminated > KILL_GRACE_S:
                self.backend.kill()
        return bool(self.active_jobs())

    def _drain(self, backend: Backend) -> None:
        for event in backend.poll():
            self._apply(backend, event)

    def _apply(self, backend: Backend, event: dict) -> None:
        type_ = event["type"]
        if type_ == EXIT:
            self._backend_exited(backend, event.get("returncode"))
            return
        if type_ == protocol.HELLO:
            backend.capabilities = event.get("capabilities")
            return
        job = self.jobs.get(event.get("job") or "")
        if job is None:  # a job from before a restart, or a malformed-request error: nothing to update
            return
        if type_ == protocol.ACCEPTED:
            job.status = "running" if job.status in ("starting", "queued") else job.status
        elif type_ == protocol.PROGRESS:
            job.status = "running"
            job.stage, job.done, job.total = event.get("stage", ""), event.get("done", 0), event.get("total", 0)
            job.message, job.metrics = event.get("message", ""), event.get("metrics", {})
        elif type_ == protocol.ARTIFACT:
            job.artifacts.append({k: event[k] for k in ("name", "path", "format")})
        elif type_ == protocol.RESULT:
            job.artifacts = event.get("artifacts", job.artifacts)
            job.summary = event.get("summary", {})
            self._finish(job, "succeeded")
        elif type_ == protocol.CANCELLED:
            self._finish(job, "cancelled")
        elif type_ == protocol.ERROR:
            self._finish(job, "failed", error={k: event.get(k, "") for k in ("code", "message", "hint", "log")})

    def _backend_exited(self, backend: Backend, returncode: int | None) -> None:
        if backend is self.backend:
            self.backend = None
        for job in self.active_jobs():
            if job.cancel_requested is not None:
                self._finish(job, "cancelled")
                continue
            tail = log_tail(backend.log_path, 5)
            self._finish(
                job,
                "failed",
                error={
                    "code": protocol.E_BACKEND_DIED,
                    "message": f"The Recon backend stopped unexpectedly (exit code {returncode}) while running this job.",
                    "hint": "Run it again: a fresh backend starts by itself."
                    + (f" Last lines of {backend.log_path}: {tail}" if tail else ""),
                    "log": str(backend.log_path),
                },
            )

    def _finish(self, job: Job, status: str, error: dict | None = None) -> None:
        job.status = status
        job.finished = time.monotonic()
        if error:
            job.error = error
            job.message = error.get("message", "")
        elif status == "cancelled":
            job.message = "cancelled"
        elif status == "succeeded":
            job.message = "done"


_MANAGER: JobManager | None = None


def manager() -> JobManager:
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = JobManager()
    return _MANAGER


# -- the UI timer -------------------------------------------------------------------------


def _timer_pump() -> float | None:
    active = manager().pump()
    _redraw()
    return 0.1 if active else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer_pump):
        bpy.app.timers.register(_timer_pump, first_interval=0.1)


def _redraw() -> None:
    window_manager = getattr(bpy.context, "window_manager", None)
    for window in getattr(window_manager, "windows", ()):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    manager().stop_backend()


def register() -> None:
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    global _MANAGER
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    if bpy.app.timers.is_registered(_timer_pump):
        bpy.app.timers.unregister(_timer_pump)
    if _MANAGER is not None:
        _MANAGER.stop_backend()
        _MANAGER = None
