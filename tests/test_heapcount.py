"""The malloc counter the Keras-on-TensorFlow benchmark measures small allocations with
(benchmarks/heapcount.c): preloaded into a child, it sees a known allocation come and go."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.join(HERE, "..", "benchmarks")
sys.path.insert(0, BENCHMARKS)

import heapcount  # noqa: E402

CHILD = """
import ctypes, json, sys
sys.path.insert(0, {benchmarks!r})
import heapcount
counter = heapcount.attach()
counter.reset_peak()
block = ctypes.create_string_buffer(10_000_000)  # malloc'ed by CPython
held = counter.live() - counter.live_at_reset
del block
print(json.dumps({{"held": held, "peak": counter.peak() - counter.live_at_reset,
                  "after": counter.live() - counter.live_at_reset}}))
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the counter")
def test_the_counter_sees_an_allocation_come_and_go():
    assert heapcount.attach() is None  # this process was not started with it
    out = subprocess.run([sys.executable, "-c", CHILD.format(benchmarks=BENCHMARKS)], env=heapcount.preload_env(),
                         capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert 10_000_000 <= seen["held"] < 10_100_000
    assert 10_000_000 <= seen["peak"] < 10_100_000
    assert abs(seen["after"]) < 100_000  # freed, give or take the interpreter's own small objects


PAUSED = """
import ctypes, json, sys
sys.path.insert(0, {benchmarks!r})
import heapcount
counter = heapcount.attach()
counter.set_counting(False)
early = ctypes.create_string_buffer(4_000_000)  # made while uncounted
counter.set_counting(True)
counter.reset_peak()
block = ctypes.create_string_buffer(10_000_000)
del early  # a block made uncounted, freed counted
print(json.dumps({{"peak": counter.peak() - counter.live_at_reset,
                  "after": counter.live() - counter.live_at_reset}}))
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the counter")
def test_uncounted_stretches_leave_a_counted_rise_exact():
    out = subprocess.run([sys.executable, "-c", PAUSED.format(benchmarks=BENCHMARKS)], env=heapcount.preload_env(),
                         capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert 10_000_000 <= seen["peak"] < 10_100_000  # the rise, whatever was made before
    assert 6_000_000 - 100_000 < seen["after"] < 6_000_000 + 100_000  # 10 MB made, 4 MB freed
