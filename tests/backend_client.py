# SPDX-License-Identifier: GPL-3.0-or-later
"""A minimal protocol client for tests: the real ``python -m backend serve`` subprocess."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from backend import protocol

ROOT = Path(__file__).resolve().parent.parent


class BackendClient:
    def __init__(self, log_path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, start_new_session=True,
        )
        self.events: queue.Queue = queue.Queue()
        self.raw_lines: list[bytes] = []
        self._seq = protocol.MessageCounter()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw_lines.append(line)
            self.events.put(protocol.decode(line))  # raises in the thread if stdout is not protocol-only
        self.events.put({"type": "__exit__", "returncode": self.proc.wait()})

    def send(self, type_: str, job: str | None = None, **fields) -> None:
        self.proc.stdin.write(protocol.encode(protocol.make(type_, job, self._seq.next(), **fields)))
        self.proc.stdin.flush()

    def send_raw(self, line: bytes) -> None:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def next_event(self, timeout: float = 60.0) -> dict:
        return self.events.get(timeout=timeout)

    def until(self, predicate, timeout: float = 120.0) -> list[dict]:
        """Collect events until one satisfies ``predicate`` (included); raises on timeout."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout} s; saw {[e['type'] for e in seen]}")
            event = self.next_event(remaining)
            seen.append(event)
            if predicate(event):
                return seen

    def terminal(self, job: str, timeout: float = 300.0) -> list[dict]:
        return self.until(lambda e: e.get("job") == job and e["type"] in protocol.TERMINAL or e["type"] == "__exit__", timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(protocol.SHUTDOWN)
                self.proc.stdin.close()
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()
