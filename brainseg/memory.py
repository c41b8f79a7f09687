"""Hand the memory a script run freed back to the OS, in the long-running app server (glibc; a no-op elsewhere).

glibc's ``malloc`` keeps freed memory for reuse instead of returning it: after the first predictions it serves
even the models' multi-MB activation buffers from its heaps (it raises its mmap threshold each time such a
buffer is freed), so every prediction, explanation and cached copy leaves free but resident pages behind, in
one arena per thread (Streamlit runs each session's script in its own thread). ``malloc_trim(0)`` returns the
free pages of every arena; it takes a few milliseconds.
"""
from __future__ import annotations

import ctypes
import functools
import sys


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
