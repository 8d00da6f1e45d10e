"""Importing the package sizes oneDNN's primitive cache for a run's matmul shapes (kernel_cache.py), unless
the environment already names a capacity; on a CPU whose bf16 matmuls go through oneDNN, the cache then
holds more shapes than the default 1,024."""

import os
import subprocess
import sys

import pytest
import torch

from mtl_tickets import kernel_cache

pytestmark = pytest.mark.slow  # subprocesses that import torch

# 1,100 matmul shapes, twice in the same order, under bf16 autocast: a 1,024-entry LRU cache misses every one
# of the second pass, a larger one hits more than 1,024 of them (the smallest few take another path: 1,096
# here). oneDNN's verbose log says which.
SHAPES_TWICE = """
import sys
if sys.argv[1] == "package":
    import mtl_tickets
import torch
import torch.nn.functional as F
weight = torch.randn(32, 32)
for rep in range(2):
    print("pass", rep, flush=True)
    for m in range(1, 1101):
        with torch.autocast("cpu", torch.bfloat16):
            F.linear(torch.randn(m, 32), weight)
"""


def run(code: str, *args: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in kernel_cache.NAMES}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**environ, "OMP_NUM_THREADS": "1", **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_importing_the_package_sets_the_capacity_unless_the_environment_names_one():
    show = f"import os, mtl_tickets; print(os.environ['{kernel_cache.VARIABLE}'])"
    assert run(show).strip() == str(kernel_cache.CAPACITY)
    assert run(show, ONEDNN_PRIMITIVE_CACHE_CAPACITY="77").strip() == "77"


@pytest.mark.skipif(not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
                    reason="bf16 matmuls go through oneDNN only on CPUs with bf16 instructions")
def test_the_enlarged_cache_keeps_every_shape_the_default_one_evicts():
    def second_pass_hits(mode: str) -> int:
        log = run(SHAPES_TWICE, mode, ONEDNN_VERBOSE="all").split("pass 1\n", 1)[1]
        return sum("matmul" in line and "create:cache_hit" in line for line in log.splitlines())

    assert second_pass_hits("torch only") == 0
    assert second_pass_hits("package") > 1024
