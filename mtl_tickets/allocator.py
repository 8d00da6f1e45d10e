"""Freed memory kept for reuse (`train.keep_freed_memory`), on glibc.

A training step allocates the same large buffers every time (activations, gradients, the word
embeddings' 47 MB gradient). glibc serves large blocks with fresh `mmap` pages and returns them to the
OS on free, so every step pays a page fault per 4 KiB it touches first; on a 2-core CPU that is about
a tenth of a step (benchmarks/results/speed.md). Serving every block from the heap and never trimming
it lets a step reuse the last one's memory. Numbers do not change, only where buffers live; the cost is
that the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """No `mmap` for large blocks and no heap trimming, for the rest of the process; whether it applied
    (glibc only: elsewhere the allocator is left as it is)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
