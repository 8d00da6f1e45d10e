"""oneDNN's primitive cache, sized for the matmul shapes a training run meets.

On a CPU with bf16 instructions (AMX or avx512_bf16) autocast runs every Linear through oneDNN, which
compiles a kernel (a primitive) for each matmul shape and keeps the last 1,024 by default. A run with
dynamic padding meets new shapes with every batch length, and a ticket's layers each have their own
widths, so a single-task ticket run on SST-2 needs a few thousand: the default cache thrashes and the
step recompiles its matmuls, at 0.25 s a step against the full model's 0.16 (benchmarks/results/speed.md).
16,384 holds them all. The cost is memory, which grows with every new shape until the cache is full:
about half a GB on short sequences, but 67 MiB a batch length on RTE's (up to 128 tokens), where a sweep
process held 14-15 GB (benchmarks/results/speed.md). oneDNN reads the capacity once, when it builds its
first primitive, so the package sets it on import; a capacity already in the environment wins.
"""

from __future__ import annotations

import os

CAPACITY = 16_384
VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
NAMES = (VARIABLE, "DNNL_PRIMITIVE_CACHE_CAPACITY")  # oneDNN reads either (the second is its older name)


def enlarge() -> None:
    """Ask for `CAPACITY` primitives unless the environment names a capacity (no effect once oneDNN
    has built a primitive in this process)."""
    if not any(name in os.environ for name in NAMES):
        os.environ[VARIABLE] = str(CAPACITY)
