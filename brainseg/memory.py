"""A process's resident memory (``VmRSS``, peak ``VmHWM``), and handing what a script run freed back to the OS.

glibc keeps freed memory in per-thread arenas; ``release`` calls ``malloc_trim(0)`` (a no-op elsewhere), which the
app does after every page run.
"""
from __future__ import annotations

import ctypes
import functools
import resource
import sys
from pathlib import Path


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release() -> None:
    """Return the free memory of every malloc arena to the OS (glibc's ``malloc_trim(0)``; elsewhere nothing)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def resident_mb(pid: int | str = "self") -> dict[str, float]:
    """Resident (``VmRSS``) and peak resident (``VmHWM``) memory of ``pid`` in MB, from /proc/PID/status.

    Without /proc (not Linux) only this process's peak is known (``ru_maxrss``), given for both. Linux's
    ``ru_maxrss`` would carry a parent's peak across fork + exec, hence /proc first.
    """
    status = Path(f"/proc/{pid}/status")
    if not status.exists() and pid == "self":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
            1024 if sys.platform.startswith("linux") else 2**20
        )
        return {"VmRSS": peak, "VmHWM": peak}
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}
