"""Matrix products with their operands in cache and out of it, on this CPU (torch).

The calibration times each product repeated on the same operands, which then sit in cache; in a training
step other layers and the optimizer run between two uses of a weight. This re-times every product shape
of a torch calibration both ways (out of cache: right after a pass over 128 MB) and prints the ratio; with
``--out`` it writes a copy of the calibration whose products are the out-of-cache ones, for
``validate.py``.

    python benchmarks/cold_products.py benchmarks/results/cpu_run7_calibration_torch_2.json [--out cold.json]

Measured 2026-11-27 (docs/accuracy.md, torch run 7): 16x512x512 and 128x300x300 products 1.3-1.7x
slower out of cache, 64x64x64 9x, large products unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("calibration")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import torch

    cal = json.load(open(args.calibration, encoding="utf-8"))
    junk = torch.randn(16 * 2**20)  # 64 MB read and 64 MB written: more than this machine's L3
    junk_out = torch.empty_like(junk)
    rows = []
    for row in cal["matmul"]["float32"]:
        m, k, n = row["m"], row["k"], row["n"]
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        repeat = max(3, min(30, int(2e9 / (2 * m * k * n))))

        def timed(flush: bool) -> float:
            times = []
            for _ in range(repeat + 2):  # the first two warm the kernel up
                if flush:
                    torch.mul(junk, 1.0, out=junk_out)
                t = time.perf_counter()
                torch.matmul(a, b, out=out)
                times.append(time.perf_counter() - t)
            return statistics.median(times[2:])
        warm, cold = timed(False), timed(True)
        rows.append({"m": m, "k": k, "n": n, "seconds": cold, "flops_per_s": 2 * m * k * n / cold})
        print(f"{m}x{k}x{n}: in cache {warm * 1e6:.1f} us, out of cache {cold * 1e6:.1f} us ({cold / warm:.2f}x)",
              flush=True)
    if args.out:
        cal["matmul"]["float32"] = rows
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(cal, handle, indent=1)


if __name__ == "__main__":
    main()
