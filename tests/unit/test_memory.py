"""Resident-memory readings from /proc and the glibc trim: the figures the benchmarks report."""
from __future__ import annotations

import os

import numpy as np

from brainseg.memory import release, resident_mb


def test_resident_memory_follows_an_allocation() -> None:
    before = resident_mb()
    block = np.ones(200 * 2**20, np.uint8)             # 200 MB, touched
    during = resident_mb(os.getpid())
    assert during["VmRSS"] - before["VmRSS"] > 150
    assert during["VmHWM"] >= during["VmRSS"] > 0
    del block
    release()
    after = resident_mb()
    assert during["VmRSS"] - after["VmRSS"] > 150      # given back: a large block is its own mapping
    assert after["VmHWM"] > during["VmRSS"] - 10      # the peak is remembered (the kernel updates it lazily)
