"""Giving freed memory back to the operating system.

Loading a model or rebuilding the catalogue index allocates large temporaries. glibc keeps
freed heap memory for reuse instead of returning it, so a process's resident size would stay at
its loading peak for the rest of its life; ``malloc_trim`` returns what is free.
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
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    return trim


def release_free_memory() -> None:
    """Return freed heap memory to the operating system where the C library can."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
