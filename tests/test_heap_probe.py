"""``paramcalc.calibration.heap``: the probe reads where glibc's dynamic mmap threshold stands, in a
child process (raising this one's threshold would move the timings other tests take)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from paramcalc.calibration.heap import mmap_threshold

PROBE = """
import ctypes, json
from paramcalc.calibration.heap import mmap_threshold
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
first = mmap_threshold()
size = first + 4 * 2**20  # mapped apart (at or over the threshold, more than the heap holds free)
libc.free(libc.malloc(size))  # glibc raises its threshold to a freed mapped block's size
print(json.dumps([first, mmap_threshold(), size]))
"""


@pytest.mark.skipif(mmap_threshold() is None, reason="the C library is not glibc")
def test_the_probe_reads_where_glibcs_threshold_rose_to():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    first, after, size = json.loads(out.stdout.strip().splitlines()[-1])
    assert 128 * 2**10 <= first < 32 * 2**20
    # the freed block's chunk (its size plus a header, rounded to a page), read to within a 16 KiB step
    # and the 128 KiB of room the heap keeps at its top
    assert size <= after <= size + (4 + 16 + 128) * 2**10
