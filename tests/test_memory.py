"""The allocator settings the API applies where the C library is glibc."""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import numpy as np

from app.memory import limit_heaps, release_free_memory


def rss() -> int:
    """Resident bytes of this process (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def test_heaps_are_limited_and_freed_memory_goes_back() -> None:
    """With glibc: the settings apply, and after a large temporary is freed and trimmed the
    process holds no more than a fraction of it."""
    if ctypes.util.find_library("c") is None:  # pragma: no cover - not glibc
        assert limit_heaps() is False
        return
    assert limit_heaps() is True
    release_free_memory()
    before = rss()
    chunks = [np.ones(10_000, dtype=np.float64) for _ in range(5_000)]  # 400 MB of 80 KB blocks
    assert rss() > before + 300 * 2**20
    del chunks
    release_free_memory()
    assert rss() < before + 50 * 2**20
