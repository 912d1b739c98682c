# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU resources while training: threads, and freed memory kept in the process.

:func:`choose_threads`: torch's and numba's thread pools wait for their slowest thread at
every operation, so on a machine whose cores are already busy two threads can run several
times slower than one (measured here: a small training step 5 times slower with 2 threads
than with 1 at a load average of 6 on 2 cores). ``"auto"`` takes the cores other processes
leave idle by the load average (at least one), when training starts and again every minute.

:func:`keep_freed_memory`: glibc's ``malloc`` serves large blocks (a training step's activations: tens of MB each)
with ``mmap`` and returns them on ``free``, so every step page-faults its temporaries in
afresh: on the 2-core machines this project measures on, that made element-wise work
about 4 times slower. :func:`keep_freed_memory` turns that off for a block of code
(``M_MMAP_MAX = 0``: large blocks come from the heap; ``M_TRIM_THRESHOLD`` raised: freed
memory stays for the next step) and restores glibc's defaults afterwards, as tcmalloc
would, without preloading anything. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import threading

log = logging.getLogger("recon.nerf")

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024

_lock = threading.Lock()
_depth = 0


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True):
    """Within the block, large freed blocks stay in the process for reuse (see the module's docstring)."""
    global _depth
    libc = _libc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                with contextlib.suppress(AttributeError):
                    libc.malloc_trim(0)


def idle_cores(own_threads: int = 0) -> int:
    """Cores not taken by other processes (the load average of the last minute less the
    ``own_threads`` this process keeps busy), at least 1."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    others = max(0.0, load - own_threads)
    return max(1, min(cores, int(round(cores - others + 0.25))))


def choose_threads(threads: int, busy: bool = False) -> int:
    """Set torch's (and numba's) thread count: ``threads``, or with 0 the cores other
    processes leave idle (``busy``: this process has been working with its current threads,
    which the load average counts too); returns it."""
    import torch

    from . import _kernels

    n = threads if threads > 0 else idle_cores(torch.get_num_threads() if busy else 0)
    n = max(1, min(n, os.cpu_count() or n))
    if _kernels.AVAILABLE:  # first: starting numba's OpenMP pool resets the process's OpenMP thread count
        _kernels.numba.set_num_threads(min(n, _kernels.numba.config.NUMBA_NUM_THREADS))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
