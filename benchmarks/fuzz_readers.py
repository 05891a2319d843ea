"""A long fuzz run of the readers (tests/fuzz_readers.py): damaged JSON specs, Keras configs, .keras
archives, safetensors and ONNX files; prints per kind how many were tried, read and refused, the
slowest file, and every escape (an error that is not paramcalc's), with the bytes that caused it.

    python benchmarks/fuzz_readers.py [--examples 2000] [--onnx-examples 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import fuzz_readers  # noqa: E402


def run(kind: str, seed: bytes, examples: int) -> dict:
    stats = {"tried": 0, "read": 0, "refused": 0, "slowest_s": 0.0, "escapes": []}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        damaged = data.draw(fuzz_readers.mutated(kind, seed))
        stats["tried"] += 1
        start = time.perf_counter()
        try:
            stats[fuzz_readers.read(kind, damaged)] += 1
        except Exception as error:  # an escape: recorded, the run goes on
            stats["escapes"].append((type(error).__name__, str(error)[:200], damaged[:120],
                                     traceback.format_exc().splitlines()[-3].strip()))
        stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - start)

    check()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--onnx-examples", type=int, default=200)
    args = parser.parse_args()
    total_escapes = 0
    for kind, seed in sorted(fuzz_readers.seeds().items()):
        stats = run(kind, seed, args.onnx_examples if kind == "onnx" else args.examples)
        total_escapes += len(stats["escapes"])
        print(f"{kind:<18} tried {stats['tried']:5d}  read {stats['read']:5d}  refused {stats['refused']:5d}  "
              f"escapes {len(stats['escapes']):3d}  slowest {stats['slowest_s'] * 1e3:7.1f} ms")
        for name, message, data, where in stats["escapes"][:10]:
            print(f"    {name}: {message}\n      at {where}\n      input {data!r}")
    print(f"escapes in all: {total_escapes}")


if __name__ == "__main__":
    main()
