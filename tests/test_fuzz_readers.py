"""The readers under damaged files (tests/fuzz_readers.py): whatever the damage, only paramcalc's own
errors come out, each file within a time and memory bound. A few hundred files here; a long run in
benchmarks/fuzz_readers.py."""

from __future__ import annotations

import resource
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import fuzz_readers

SEEDS = fuzz_readers.seeds()
SECONDS_PER_FILE = 5.0  # the slowest reader (ONNX, in a child process) takes about 0.3 s
MAX_RSS_RISE = 512 * 2**20


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_every_seed_is_read(kind):
    assert fuzz_readers.read(kind, SEEDS[kind]) == "read"


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_damaged_files_get_paramcalc_errors_only(kind):
    examples = 15 if kind == "onnx" else 60
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seen: dict = {"read": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def check(data):
        damaged = data.draw(fuzz_readers.mutated(kind, SEEDS[kind]))
        start = time.perf_counter()
        seen[fuzz_readers.read(kind, damaged)] += 1  # an escape raises here, with the file hypothesis shrank
        assert time.perf_counter() - start < SECONDS_PER_FILE

    check()
    assert seen["refused"] > 0  # the damage reached the readers' checks
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < MAX_RSS_RISE
