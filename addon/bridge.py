# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend process as seen from Blender: start, send requests, read events, stop.

A daemon thread only parses stdout lines into a queue; the main thread drains the queue
(:meth:`Backend.poll`). When the process ends, the reader puts one ``__exit__`` pseudo-event
carrying the exit code, so the job registry can fail the running job instead of hanging.
No bpy here: this module is plain Python and can be used from any script.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..backend import protocol

EXIT = "__exit__"  # pseudo-event: the process ended


class BackendUnavailable(RuntimeError):
    """The backend process could not be started; the message names the interpreter and the fix."""


class Backend:
    def __init__(self, python: str, cwd: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.python = python
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self._env = env or {}
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[dict] = queue.Queue()
        self._seq = protocol.MessageCounter()
        self._write_lock = threading.Lock()
        self.capabilities: dict | None = None

    # -- lifecycle --------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if not self.python or not (Path(self.python).is_file() or _on_path(self.python)):
            raise BackendUnavailable(
                f"The backend Python '{self.python}' does not exist. Set 'Backend Python' in "
                "Edit > Preferences > Add-ons > Recon to a Python that has the backend's packages "
                "(the project's .venv/bin/python, for example)."
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        env["PYTHONPATH"] = os.pathsep.join([str(self.cwd), *filter(None, [env.get("PYTHONPATH")])])
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "backend", "serve"],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=(os.name == "posix"),  # its own process group, for SIGTERM on cancel
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            )
        except OSError as exc:
            raise BackendUnavailable(
                f"Could not start the backend Python '{self.python}': {exc}. Check 'Backend Python' in "
                "Edit > Preferences > Add-ons > Recon."
            ) from exc
        finally:
            log_file.close()
        threading.Thread(target=self._read, args=(self._proc,), name="recon-backend-reader", daemon=True).start()
        self.send(protocol.HELLO, None)

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self._events.put(protocol.decode(line))
            except protocol.ProtocolError as exc:
                self._events.put({"type": protocol.LOG, "job": None, "level": "warning", "message": f"bad line: {exc}"})
        self._events.put({"type": EXIT, "job": None, "returncode": proc.wait()})

    def send(self, type_: str, job: str | None, **fields) -> bool:
        """Send a request; returns False when the process is gone (its exit event follows)."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        line = protocol.encode(protocol.make(type_, job, self._seq.next(), **fields))
        with self._write_lock:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return False
        return True

    def poll(self) -> list[dict]:
        """All events received so far, in order (main thread)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _signal(self, posix_signal: int, fallback: str) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if os.name == "posix":
                os.killpg(proc.pid, posix_signal)  # the whole process group: the job's children too
            else:
                getattr(proc, fallback)()
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        """SIGTERM to the backend's process group."""
        self._signal(signal.SIGTERM, "terminate")

    def kill(self) -> None:
        """SIGKILL to the backend's process group."""
        self._signal(signal.SIGKILL, "kill")

    def stop(self, timeout: float = 5.0) -> None:
        """Ask for shutdown, then SIGTERM, then SIGKILL; waits at most about ``timeout`` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.send(protocol.SHUTDOWN, None)
            try:
                proc.stdin.close()
            except OSError:
                pass
            for action in (None, self.terminate, self.kill):
                if action is not None:
                    action()
                try:
                    proc.wait(timeout / 2 if action is None else 2.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def _on_path(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
