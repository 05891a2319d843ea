"""Measure the machine paramcalc runs on: matrix-product efficiency over shapes, memory bandwidth over
sizes, and the framework's fixed cost per operation. Done once per device, framework and dtype; the
saved profile is what ``estimate(..., device=profile)`` reads. Never per model.

Imports torch only when called (the core never does). Timings take the median of repeated runs.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Callable

# Shapes (m, k, n) of the matrix products swept: squares, and the skinny shapes of MLP training
# (batch x features x units) where efficiency falls off.
SQUARE = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
SKINNY = [(32, 1024, 256), (128, 1024, 1024), (128, 20020, 300), (128, 300, 300), (128, 300, 100),
          (2048, 1024, 4096), (256, 4096, 4096), (32, 4096, 4096), (4096, 256, 256), (64, 256, 1024)]


def _timer(torch, device: str) -> Callable:
    def run(fn: Callable, repeat: int, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    return run


def measure(device: str = "cpu", dtypes: tuple = ("float32",), quick: bool = False,
            progress: Callable[[str], None] | None = None) -> dict:
    """A device profile measured with torch on ``device`` ("cpu" or "cuda")."""
    import torch

    say = progress or (lambda message: None)
    run = _timer(torch, device)
    max_square = 8192 if device == "cuda" else 2048
    if quick:
        max_square //= 4
    profile: dict = {
        "name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "framework": "torch", "framework_version": torch.__version__, "device": device,
        "threads": torch.get_num_threads(), "matmul": {}, "bandwidth": [], "op_overhead_s": None,
    }
    if device == "cuda":  # the framework's defaults, recorded before the sweep changes them
        profile["tf32_matmul_default"] = bool(torch.backends.cuda.matmul.allow_tf32)
        profile["tf32_cudnn_default"] = bool(torch.backends.cudnn.allow_tf32)
        props = torch.cuda.get_device_properties(0)
        profile["memory_bytes"] = int(props.total_memory)
        profile["multiprocessors"] = int(props.multi_processor_count)
    for dtype_name in dtypes:
        tf32 = dtype_name == "tfloat32"
        dtype = getattr(torch, "float32" if tf32 else dtype_name)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        shapes = [(s, s, s) for s in SQUARE if s <= max_square] + [t for t in SKINNY if max(t) <= 4 * max_square]
        rows = []
        for m, k, n in shapes:
            a = torch.randn(m, k, device=device, dtype=dtype)
            b = torch.randn(k, n, device=device, dtype=dtype)
            flops = 2 * m * k * n
            repeat = max(3, min(50, int(2e11 / flops) if device == "cuda" else int(2e9 / flops)))
            seconds = run(lambda: a @ b, repeat)
            rows.append({"m": m, "k": k, "n": n, "seconds": seconds, "flops_per_s": flops / seconds})
            say(f"matmul {dtype_name} {m}x{k}x{n}: {flops / seconds / 1e12:.2f} TFLOP/s")
        profile["matmul"][dtype_name] = rows
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    sizes = [2 ** p for p in range(16, 31 if device == "cuda" else 28, 2)]
    for size in sizes:
        x = torch.empty(size // 4, device=device, dtype=torch.float32)
        y = torch.empty_like(x)
        seconds = run(lambda: y.copy_(x), repeat=20 if device == "cuda" else 5)
        profile["bandwidth"].append({"bytes": 2 * size, "seconds": seconds, "bytes_per_s": 2 * size / seconds})
        say(f"copy {size / 2**20:.1f} MiB: {2 * size / seconds / 1e9:.1f} GB/s (read + write)")
    tiny = torch.zeros(1, device=device)
    per_op = run(lambda: [tiny.add_(1) for _ in range(100)], repeat=20) / 100
    profile["op_overhead_s"] = per_op
    say(f"per-op overhead: {per_op * 1e6:.1f} us")
    return profile


def save(profile: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(profile, handle, indent=1)
