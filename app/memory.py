"""Giving freed memory back to the operating system.

Loading a model or rebuilding the catalogue index allocates large temporaries. glibc keeps
freed heap memory for reuse instead of returning it, so a process's resident size would stay at
its loading peak for the rest of its life; ``malloc_trim`` returns what is free.

Requests run on many threads, and glibc gives threads their own heaps ("arenas", up to eight
per core), each keeping what its thread freed; and after the first large block is freed it
raises the size from which blocks are mapped directly (and unmapped on free) up to 32 MB, so
per-request score arrays end up kept in those heaps too. :func:`limit_heaps` caps the arenas and
fixes that threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    trim: Callable[[int], int] | None = getattr(_libc(), "malloc_trim", None)
    return trim  # None where the C library is not glibc (musl, macOS): nothing to do


M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_heaps(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> bool:
    """Cap glibc's per-thread heaps and map every block of ``mmap_threshold`` bytes or more
    directly (returned to the system when freed); False where the C library is not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))


def release_free_memory() -> None:
    """Return freed heap memory to the operating system where the C library can."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
