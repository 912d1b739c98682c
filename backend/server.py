# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m backend serve``: the job loop behind the JSON-lines protocol.

The main thread reads requests from stdin; one worker thread runs jobs one at a time, in
the order they were submitted. Cancel sets the job's token (cooperative: jobs check it
between iterations). stdout carries protocol messages only: :func:`serve` moves file
descriptor 1 onto stderr before anything else can print, so stray output from C++ or
torch lands in the log, not in the protocol stream.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO, TextIO

from . import __version__, protocol
from .capabilities import capabilities
from .jobs.runner import run_job

log = logging.getLogger("recon.backend")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Server:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._out_lock = threading.Lock()
        self._seq = protocol.MessageCounter()
        self._pending: deque[dict] = deque()
        self._cond = threading.Condition()
        self._cancel_events: dict[str, threading.Event] = {}
        self._running: str | None = None
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="recon-job-worker", daemon=True)
        self._caps: dict | None = None
        self._auto_ids = 0

    # -- output ---------------------------------------------------------------------
    def send(self, type_: str, job: str | None, **fields) -> None:
        line = protocol.encode(protocol.make(type_, job, self._seq.next(), **fields))
        with self._out_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError):  # Blender went away; nothing to tell
                pass

    # -- requests -------------------------------------------------------------------
    def handle_line(self, line: bytes) -> bool:
        """Handle one request line; returns False when the server should stop."""
        if not line.strip():
            return True
        try:
            message = protocol.decode(line)
        except protocol.ProtocolError as exc:
            self.send(protocol.ERROR, None, code=protocol.E_PROTOCOL, message=str(exc), hint="")
            return True
        type_ = message["type"]
        if type_ == protocol.HELLO:
            if self._caps is None:
                self._caps = capabilities(deep=False)
            self.send(protocol.HELLO, None, version=__version__, protocol=protocol.VERSION, capabilities=self._caps)
        elif type_ == protocol.SUBMIT:
            self._submit(message)
        elif type_ == protocol.CANCEL:
            self._cancel(message.get("job"))
        elif type_ == protocol.SHUTDOWN:
            return False
        else:
            self.send(protocol.ERROR, message.get("job"), code=protocol.E_PROTOCOL, message=f"{type_!r} is not a request", hint="")
        return True

    def _submit(self, message: dict) -> None:
        job = message.get("job")
        if job is None:
            self._auto_ids += 1
            job = f"job-{os.getpid()}-{self._auto_ids}"
        problems = []
        if not isinstance(job, str) or not _JOB_ID.match(job):
            problems.append(f"job id {job!r} must be letters, digits, '_', '.' or '-'")
        if not isinstance(message.get("kind"), str):
            problems.append("'kind' must be a string")
        if not isinstance(message.get("workdir"), str):
            problems.append("'workdir' must be a directory path")
        for key in ("config", "inputs"):
            if not isinstance(message.get(key, {}), dict):
                problems.append(f"'{key}' must be an object")
        with self._cond:
            if job in self._cancel_events:
                problems.append(f"job id {job!r} is already in use")
            if problems:
                self.send(protocol.ERROR, job if isinstance(job, str) else None, code=protocol.E_PROTOCOL,
                          message="Malformed submit: " + "; ".join(problems) + ".", hint="")
                return
            self._cancel_events[job] = threading.Event()
            self._pending.append({**message, "job": job})
            self.send(protocol.ACCEPTED, job, kind=message["kind"], queued=len(self._pending) - 1 + (self._running is not None))
            self._cond.notify()

    def _cancel(self, job: str | None) -> None:
        with self._cond:
            event = self._cancel_events.get(job)
            if event is None:
                return  # finished already or never known: the terminal event was (or will be) sent
            event.set()
            queued = next((m for m in self._pending if m["job"] == job), None)
            if queued is not None:
                self._pending.remove(queued)
                del self._cancel_events[job]
        if queued is not None:
            self.send(protocol.CANCELLED, job, artifacts=[])

    # -- worker ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._pending:
                    return
                message = self._pending.popleft()
                job = message["job"]
                self._running = job
                cancel_event = self._cancel_events[job]

            def emit(type_: str, fields: dict, _job=job) -> None:
                self.send(type_, _job, **fields)

            job_dir = Path(message["workdir"]) / job
            type_, fields = run_job(
                message["kind"], message.get("config", {}), message.get("inputs", {}), job, job_dir, emit, cancel_event
            )
            with self._cond:
                self._running = None
                self._cancel_events.pop(job, None)
            self.send(type_, job, **fields)

    def run(self, stdin: BinaryIO | TextIO) -> None:
        self._worker.start()
        try:
            for line in stdin:
                if not self.handle_line(line if isinstance(line, bytes) else line.encode("utf-8")):
                    break
        finally:
            self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything and wait for the running job to wind down."""
        with self._cond:
            self._stopping = True
            for event in self._cancel_events.values():
                event.set()
            cancelled = [m["job"] for m in self._pending]
            self._pending.clear()
            self._cond.notify_all()
        for job in cancelled:
            self.send(protocol.CANCELLED, job, artifacts=[])
        if self._worker.is_alive():
            self._worker.join(timeout)


def serve(stdin: BinaryIO | None = None) -> int:
    """Run the server on this process's stdin/stdout until shutdown or end of input."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed to fd 1 from now on (Python, C++, CUDA) goes to the log
    sys.stdout = sys.stderr
    out = os.fdopen(protocol_fd, "wb", buffering=0)
    log.info("recon backend %s serving (pid %d, python %s)", __version__, os.getpid(), sys.version.split()[0])
    server = Server(out)
    server.run(stdin or sys.stdin.buffer)
    log.info("recon backend stopped")
    return 0
