# SPDX-License-Identifier: GPL-3.0-or-later
"""What every benchmark shares: how busy the machine was while a section ran, and the
printed table (section, measurement, value, target, result)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class Contention:
    """CPU time used by other processes while a section ran: the machine's busy time
    (/proc/stat) minus this process's and its children's, per second of wall time, in cores.
    Near 0: the timing is clean; near 1 on a 2-core machine: it ran on about half the CPU.
    After the ``with`` block: ``result`` (wall and own CPU seconds, ``other_cpu_cores``) and
    ``cores`` (``other_cpu_cores``, None where /proc/stat is missing)."""

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except OSError:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
        return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Contention:
        self.busy0, self.own0, self.wall0 = self._busy(), sum(os.times()[:4]), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.wall0
        busy, own = self._busy(), sum(os.times()[:4]) - self.own0
        self.result = {"wall_seconds": wall, "own_cpu_seconds": own}
        self.cores = None
        if busy is not None and self.busy0 is not None and wall > 0:
            self.cores = self.result["other_cpu_cores"] = max(0.0, (busy - self.busy0 - own) / wall)


def table(rows: list[tuple[str, ...]]) -> str:
    header = ("section", "measurement", "value", "target", "result")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def write_report(report: dict, out: Path) -> None:
    """Print the report's table and write the whole report as JSON to ``out``."""
    print(report["table"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
