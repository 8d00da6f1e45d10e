"""`train.keep_freed_memory`: with it, memory a process frees stays with the process for its next
buffers while a run trains, and goes back to the OS when the run ends (the numbers a run computes are
unchanged: benchmarks/allocator_speed.py checks the losses)."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting applies to glibc's allocator only")

PROBE = """
import os, sys
from mtl_tickets.allocator import kept_while_running
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
start = resident()
with kept_while_running(sys.argv[1] == "keep"):
    block = b"x" * (64 << 20)  # 64 MiB, written: resident
    held = resident() - start
    del block
    during = resident() - start
print(held >> 20, during >> 20, (resident() - start) >> 20)
"""


def resident_mib(setting: str) -> tuple[int, int, int]:
    """A freed 64 MiB block's resident MiB: while held, once freed inside the block, after the block."""
    done = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    held, during, after = map(int, done.stdout.split())
    return held, during, after


def test_freed_memory_stays_with_the_process_only_while_kept():
    held, during, after = resident_mib("keep")
    assert held >= 60 and during >= 60 and after < 8, (held, during, after)
    held, during, after = resident_mib("default")
    assert held >= 60 and during < 8 and after < 8, (held, during, after)
