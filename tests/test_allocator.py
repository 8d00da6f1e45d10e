"""`train.keep_freed_memory`: with it, memory a process frees stays with the process for its next
buffers (the numbers a run computes are unchanged: benchmarks/allocator_speed.py checks the losses)."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting applies to glibc's allocator only")

PROBE = """
import os, sys
from mtl_tickets.allocator import keep_freed_memory
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
start = resident()
block = b"x" * (64 << 20)  # 64 MiB, written: resident
held = resident() - start
del block
print(applied, held >> 20, (resident() - start) >> 20)
"""


def freed_and_still_resident(setting: str) -> tuple[str, int, int]:
    done = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    applied, held, after = done.stdout.split()
    return applied, int(held), int(after)


def test_freed_memory_stays_with_the_process_only_when_kept():
    assert freed_and_still_resident("keep")[0] == "True"
    for setting, stays in (("keep", True), ("default", False)):
        _, held, after = freed_and_still_resident(setting)
        assert held >= 60 and (after >= 60) == stays, (setting, held, after)
