"""Freed memory kept for reuse while a run trains (`train.keep_freed_memory`), on glibc.

A training step allocates the same large buffers every time (activations, gradients, the word
embeddings' 47 MB gradient). glibc serves large blocks with fresh `mmap` pages and returns them to the
OS on free, so every step pays a page fault per 4 KiB it touches first; on a 2-core CPU that is about
a tenth of a step (benchmarks/results/speed.md). Serving every block from the heap and never trimming
it lets a step reuse the last one's memory. Numbers do not change, only where buffers live.

The cost is memory, so it is given back when the run ends: a process that trains run after run (a
sweep or `compare` with `train.process_per_run: false`) builds differently sized models and pruned
copies each time, and an untrimmed heap grows with every one of them instead of staying at one run's
peak (benchmarks/results/sweep_memory.json).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (these settings are glibc's); None elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL("libc.so.6")


def keep_freed_memory() -> bool:
    """No `mmap` for large blocks and no heap trimming, for the rest of the process; whether it applied
    (glibc only: elsewhere the allocator is left as it is)."""
    libc = glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the OS (`malloc_trim`), after collecting what only cycles hold."""
    libc = glibc()
    if libc is not None:
        gc.collect()
        libc.malloc_trim(0)


@contextlib.contextmanager
def kept_while_running(enabled: bool) -> Iterator[None]:
    """Freed memory kept for reuse inside the block, what is free given back when it ends (a no-op when
    not `enabled`)."""
    if not (enabled and keep_freed_memory()):
        yield
        return
    try:
        yield
    finally:
        give_back_freed_memory()
