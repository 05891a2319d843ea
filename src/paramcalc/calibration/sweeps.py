"""Measure the machine paramcalc runs on: matrix-product efficiency over shapes, memory bandwidth over
sizes, and the framework's fixed cost per operation. Done once per device, framework and dtype; the
saved profile is what ``estimate(..., device=profile)`` reads. Never per model.

Imports torch only when called (the core never does). Timings take the median of repeated runs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import statistics
import time
from typing import Callable

# Shapes (m, k, n) of the matrix products swept: squares, and the skinny shapes of MLP training
# (batch x features x units) where efficiency falls off.
SQUARE = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
SKINNY = [(32, 1024, 256), (128, 1024, 1024), (128, 20020, 300), (128, 300, 300), (128, 300, 100),
          (2048, 1024, 4096), (256, 4096, 4096), (32, 4096, 4096), (4096, 256, 256), (64, 256, 1024)]
# Products of a batch of 16 samples through a layer of 128 to 1024 features: the forward and the input
# gradient (16 x f x f), and the weight gradient (f x 16 x f). The shapes above are 2-8 times fuller, and
# a 16-row product runs at about two thirds of their rate (16x512x512 at 94-103 GFLOP/s on this project's
# CPU, where interpolating from them gave 148).
SMALL_BATCH = [shape for f in (128, 512, 1024) for shape in ((16, f, f), (f, 16, f))]
# Tall products (many positions, few features), their weight gradients (a long inner dimension, with
# square and narrow outputs: the H100's kernels ran those at a third to two thirds of the square
# products' rate) and their degenerate cases (one feature in or out), far from the roofline.
TALL = [(m, k, n) for m in (2**18, 2**21) for k, n in ((1, 256), (256, 256), (256, 1), (64, 256))] + \
       [(k, m, n) for m in (2**18, 2**21) for k, n in ((256, 256), (1, 256), (64, 256), (256, 64))]


# Sides that are not a multiple of the kernels' vector width (8 elements in 16 bits, 4 in 32): cuBLAS
# runs them on narrower loads (the H100's bf16 300-wide products at about half the rate of 256-wide).
MISALIGNED = [(4096, 300, 300), (2**18, 300, 300), (300, 2**18, 300), (2**18, 100, 300)]
# Wide products (a few output rows, a great many columns): a Dense layer's input gradient (batch x out x
# in) and torch's weight gradient (out x batch x in) where its input is wide, as a Flatten over many
# positions makes it. On this project's 2-core CPU they ran at 117-131 GFLOP/s where the same work
# shaped tall (many rows, few columns) ran at 169-177: the tall rows cannot stand in for them.
WIDE = [(m, k, n) for n in (2**18, 2**21) for m, k in ((128, 300), (300, 128), (300, 300))]
SWEEP_ROUNDS = 3


def product_shapes(max_square: int, max_skinny: int, max_side: int, quick: bool) -> list:
    """The matrix products a calibration times: squares up to ``max_square``, the skinny shapes up to
    ``max_skinny``, the tall ones up to ``max_side``; then, unless ``quick``, the misaligned and wide
    ones up to ``max_side``."""
    shapes = [(s, s, s) for s in SQUARE if s <= max_square] + [t for t in SKINNY + SMALL_BATCH if max(t) <= max_skinny]
    shapes += [t for t in TALL if max(t) <= max_side]
    if not quick:
        shapes += [t for t in MISALIGNED + WIDE if max(t) <= max_side]
    return shapes


def _timer(torch, device: str) -> Callable:
    """``run(fn, repeat, warmup, setup)``: the median seconds of ``fn`` after warm-up calls, synchronised
    on CUDA, with ``setup`` (untimed) before each call when given (``torch`` may be None on a CPU:
    TensorFlow's calibration times with it too)."""
    def run(fn: Callable, repeat: int, warmup: int = 3, setup: Callable | None = None) -> float:
        for _ in range(warmup):
            if setup:
                setup()
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            if setup:
                setup()
                if device == "cuda":
                    torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    return run


# glibc's mallopt parameters (malloc.h) and its highest accepted mmap threshold on 64-bit hosts
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20
GLIBC_DEFAULT_THRESHOLD = 128 * 2**10
STEADY_TRIM_THRESHOLD = 2**31 - 1  # an int: the heap trimmed only past 2 GiB free


def _hold_heap(mallopt, steady: bool) -> None:
    """glibc's heap held steady (blocks under 32 MiB kept in it, no trimming), or at its default
    thresholds as fixed values (blocks of 128 KiB and more mapped apart, trimmed past 128 KiB free)."""
    mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX if steady else GLIBC_DEFAULT_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD if steady else GLIBC_DEFAULT_THRESHOLD)


@contextlib.contextmanager
def steady_heap(active: bool = True):
    """glibc's heap without its churn while a CPU is measured: blocks under 32 MiB stay in the heap and
    the heap is not trimmed, so kernels and updates are timed without the page-ins that glibc's dynamic
    threshold causes in some processes and not in others. The step-time model prices those page-ins
    apart, at the cost measured on blocks of 64 MiB and more, which glibc maps from the kernel either
    way. Afterwards glibc's default thresholds are set again (as fixed values: its dynamic threshold
    stays off for the rest of the process). Does nothing where the C library has no ``mallopt``."""
    mallopt = None
    if active:
        try:
            import ctypes

            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            mallopt = None
    if mallopt is not None:
        _hold_heap(mallopt, steady=True)
    try:
        yield mallopt is not None
    finally:
        if mallopt is not None:
            _hold_heap(mallopt, steady=False)


def measure(device: str = "cpu", dtypes: tuple = ("float32",), quick: bool = False,
            progress: Callable[[str], None] | None = None, products: list | None = None) -> dict:
    """A device profile measured with torch on ``device`` ("cpu" or "cuda"); on a CPU with glibc's
    heap held steady (:func:`steady_heap`). ``products``: the (m, k, n) matrix products to time instead
    of the built-in sweep (a model's own shapes, or a few for a rehearsal). The profile records the
    machine (:mod:`paramcalc.core.machine`) and the share of it other processes took meanwhile
    (:mod:`paramcalc.core.contention`)."""
    watch, say = _watched(progress)
    with steady_heap(device != "cuda") as steady:
        profile = _measure(device, dtypes, quick, say, products)
    if steady:
        profile["heap"] = "steady"  # no glibc churn in the timings: fresh pages are priced apart
    return _with_machine(profile, watch)


def _watched(progress: Callable[[str], None] | None) -> tuple:
    """A contention watch, and the reporter a measurement speaks through, which marks the watch at every
    stage and message before passing them on to ``progress``."""
    from paramcalc.calibration.report import Reporter
    from paramcalc.core.contention import ContentionWatch

    watch = ContentionWatch()
    return watch, Reporter(progress, on_message=watch.mark)


# The stages of each measurement, in order, for progress bars (paramcalc.interfaces.progress)
TORCH_STAGES = ("matrix products", "copies and per-op cost", "training steps", "layer host costs",
                "fresh pages", "per-element kernels", "convolutions", "recurrent layers", "saved tensors",
                "attention", "optimizer updates")
KERAS_TF_STAGES = ("matrix products", "copies and per-op cost", "training steps", "optimizer updates",
                   "convolutions", "per-element kernels", "recurrent layers", "saved tensors")
KERAS_TORCH_STAGES = ("training steps", "optimizer updates", "convolutions", "per-element kernels",
                      "recurrent layers", "saved tensors")
# Each stage's usual share of a calibration's time (quick CPU runs), for the ETA alone
STAGE_WEIGHTS = {"matrix products": 8.0, "fresh pages": 4.0, "per-element kernels": 2.5, "saved tensors": 2.0,
                 "recurrent layers": 2.0, "training steps": 1.5}


def _with_machine(profile: dict, watch) -> dict:
    from paramcalc.core.machine import this_machine

    profile["machine"] = this_machine().to_dict()
    measured, before = watch.summary(), profile.get("contention")
    # a profile built on another one measured here keeps the busier of the two runs' figures
    if before and (measured is None or before["others_share"] > measured["others_share"]):
        measured = before
    profile["contention"] = measured
    return profile


def _rate(flops_per_s: float) -> str:
    """FLOP/s in the unit that shows it: small products run at GFLOP/s, not at "0.00 TFLOP/s"."""
    if flops_per_s >= 1e12:
        return f"{flops_per_s / 1e12:.2f} TFLOP/s"
    return f"{flops_per_s / 1e9:.1f} GFLOP/s"


def _measure(device: str, dtypes: tuple, quick: bool, say: Callable[[str], None], products: list | None) -> dict:
    import torch

    run = _timer(torch, device)
    profile = _torch_profile_header(torch, device)
    say.plan([name for name in TORCH_STAGES if device != "cuda" or name != "fresh pages"])
    say.stage("matrix products")
    profile["matmul"] = _matmul_sweep(torch, run, device, dtypes, quick, say, products)
    say.stage("copies and per-op cost")
    profile.update(_copy_sweep(torch, run, device, say))
    say.stage("training steps")
    profile.update(_training_overhead(torch, device, say))
    say.stage("layer host costs")
    profile["kind_overheads"] = _kind_overheads(torch, device, say)
    if device != "cuda":
        say.stage("fresh pages")
        profile["page_fault_s_per_byte"] = _page_fault_cost(torch, say, quick)
        churn = _page_churn_cost(torch, say, quick)
        if churn is not None:
            profile["page_churn"] = churn
        threshold = _mmap_threshold_of_training(say)
        if threshold is not None:
            profile["mmap_threshold_bytes"] = threshold
    say.stage("per-element kernels")
    profile["kernels"] = _kernel_throughput(torch, device, dtypes, say)
    say.stage("convolutions")
    profile["convs"] = _conv_throughput(torch, device, dtypes, say, quick)
    say.stage("recurrent layers")
    profile["recurrent"] = (_recurrent_throughput(torch, device, say, quick) if device == "cuda"
                            else _recurrent_in_fresh_process(torch, say, quick))
    say.stage("saved tensors")
    profile.update(_saved_tensors(torch, device, say))
    say.stage("attention")
    profile["attention"] = _attention_throughput(torch, device, dtypes, say, quick)
    say.stage("optimizer updates")
    profile["optimizers"] = _optimizer_throughput(torch, device, quick, say)
    # the step and per-layer costs above leave the update out: the optimizer rows price it whole
    profile["overheads_exclude_update"] = True
    return profile


def _torch_profile_header(torch, device: str) -> dict:
    """What a torch profile says of the machine and framework before any sweep."""
    from paramcalc.core.machine import this_machine

    profile: dict = {
        "name": torch.cuda.get_device_name() if device == "cuda" else this_machine().cpu,
        "framework": "torch", "framework_version": torch.__version__, "device": device,
        "threads": torch.get_num_threads(), "matmul": {}, "bandwidth": [], "op_overhead_s": None,
        "matmul_into": "existing",  # products timed into an existing output: no fresh pages in their times
    }
    if device == "cuda":  # the framework's defaults, recorded before the sweep changes them
        profile["tf32_matmul_default"] = bool(torch.backends.cuda.matmul.allow_tf32)
        profile["tf32_cudnn_default"] = bool(torch.backends.cudnn.allow_tf32)
        props = torch.cuda.get_device_properties(0)
        profile["memory_bytes"] = int(props.total_memory)
        profile["multiprocessors"] = int(props.multi_processor_count)
    return profile


def _matmul_sweep(torch, run, device: str, dtypes: tuple, quick: bool, say, products: list | None) -> dict:
    """Rows (m, k, n, seconds, FLOP/s) of the matrix products, by dtype name."""
    max_square = 8192 if device == "cuda" else 2048
    if quick:
        max_square //= 4
    by_dtype = {}
    for dtype_name in dtypes:
        tf32 = dtype_name == "tfloat32"
        dtype = getattr(torch, "float32" if tf32 else dtype_name)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
        shapes = products or product_shapes(max_square, 4 * max_square,
                                            2**21 if device == "cuda" and not quick else 2**18, quick)
        # rounds over the whole sweep, the median per shape: a moment when the machine is busy elsewhere
        # slows one round, not the profile
        samples: dict = {shape: [] for shape in shapes}
        for _ in range(1 if quick else SWEEP_ROUNDS):
            for m, k, n in shapes:
                samples[(m, k, n)].append(_time_product(torch, run, device, dtype, m, k, n))
        rows = []
        for (m, k, n), times in samples.items():
            flops, seconds = 2 * m * k * n, statistics.median(times)
            rows.append({"m": m, "k": k, "n": n, "seconds": seconds, "flops_per_s": flops / seconds})
            say(f"matmul {dtype_name} {m}x{k}x{n}: {_rate(flops / seconds)}")
        by_dtype[dtype_name] = rows
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    return by_dtype


def _time_product(torch, run, device: str, dtype, m: int, k: int, n: int) -> float:
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    # Into an existing output: on a CPU host a fresh large output is paged in, which the step-time model
    # prices apart, as fresh pages, for every block a step maps.
    out = torch.empty(m, n, device=device, dtype=dtype)
    repeat = max(3, min(50, int(2e11 / (2 * m * k * n)) if device == "cuda" else int(2e9 / (2 * m * k * n))))
    return run(lambda: torch.matmul(a, b, out=out), repeat)


def _copy_sweep(torch, run, device: str, say) -> dict:
    """Copy bandwidth into existing and into fresh tensors over sizes, and the host cost of one op."""
    bandwidth, fresh_bandwidth = [], []
    for size in [2 ** p for p in range(16, 31 if device == "cuda" else 28, 2)]:
        x = torch.empty(size // 4, device=device, dtype=torch.float32)
        y = torch.empty_like(x)
        seconds = run(lambda: y.copy_(x), repeat=20 if device == "cuda" else 5)
        bandwidth.append({"bytes": 2 * size, "seconds": seconds, "bytes_per_s": 2 * size / seconds})
        say(f"copy {size / 2**20:.1f} MiB: {2 * size / seconds / 1e9:.1f} GB/s (read + write)")
        # Training writes into fresh tensors every step; on a CPU a fresh large block means page faults
        fresh = run(lambda: x * 2, repeat=20 if device == "cuda" else 5)
        fresh_bandwidth.append({"bytes": 2 * size, "seconds": fresh})
    tiny = torch.zeros(1, device=device)
    per_op = run(lambda: [tiny.add_(1) for _ in range(100)], repeat=20) / 100
    say(f"per-op overhead: {per_op * 1e6:.1f} us")
    return {"bandwidth": bandwidth, "fresh_bandwidth": fresh_bandwidth, "op_overhead_s": per_op}


def _saved_tensors(torch, device: str, say) -> dict:
    """What recurrent and Transformer layers keep for their backward, in full precision and under
    autocast as mixed precision trains them (memory needs no dtype sweep)."""
    recurrent_layer = _torch_recurrent_layer(torch, device)
    return {
        "recurrent_memory": _recurrent_memory_torch(torch, device, recurrent_layer, say),
        "transformer_saved": _transformer_saved(torch, device, say),
        "recurrent_memory_mixed": _recurrent_memory_torch(torch, device, recurrent_layer, say,
                                                          autocast=torch.bfloat16),
        "transformer_saved_mixed": _transformer_saved(torch, device, say, autocast=torch.bfloat16),
    }


def _training_overhead(torch, device: str, say) -> dict:
    """The framework's fixed cost of a training step and its cost per layer, from tiny models whose
    arithmetic is negligible: forward and backward of n (Linear(16, 16), ReLU) pairs, fitted as a + b*n.
    The update is left out: the optimizer rows price it by tensor count and size."""
    counts = [1, 2, 4, 8, 16]
    x = torch.randn(16, 16, device=device)
    y = torch.randn(16, 16, device=device)
    steps = {}
    for n in counts:
        layers = []
        for _ in range(n):
            layers += [torch.nn.Linear(16, 16), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers).to(device)

        def step(model=model):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
        steps[n] = step
    # rounds over all sizes, interleaved, so that a slow moment of the machine hits them alike
    samples: dict = {n: [] for n in counts}
    for _ in range(5):
        for n in counts:
            samples[n].append(_timer(torch, device)(steps[n], repeat=20, warmup=3))
    times = [statistics.median(samples[n]) for n in counts]
    for n, t in zip(counts, times):
        say(f"training step with {n} Linear+ReLU pairs: {t * 1e6:.0f} us")
    return {**_step_and_layer_costs(counts, times),
            "training_overhead_samples": [{"pairs": n, "seconds": t} for n, t in zip(counts, times)]}


def _step_and_layer_costs(counts: list, times: list) -> dict:
    """Step times of models with ``counts`` layers fitted as a + b x layers (least squares): the fixed
    cost of a step and the cost per layer, neither below zero."""
    mean_n, mean_t = sum(counts) / len(counts), sum(times) / len(times)
    slope = sum((n - mean_n) * (t - mean_t) for n, t in zip(counts, times)) / sum((n - mean_n) ** 2 for n in counts)
    return {"step_overhead_s": max(mean_t - slope * mean_n, 0.0), "layer_overhead_s": max(slope, 0.0)}


def _kind_overheads(torch, device: str, say) -> dict:
    """Host cost per layer of the kinds whose modules do much in Python or launch many kernels
    (attention, Transformer layers, RNNs, convolutions, batch norm), from training steps of tiny stacks
    of 1 and 4 of them: the difference over 3 is one layer's cost, forward and backward (the update is
    priced by the optimizer rows)."""
    nn = torch.nn

    class First(nn.Module):  # modules returning tuples, reduced to their first output
        def __init__(self, inner, call):
            super().__init__()
            self.inner, self.call = inner, call

        def forward(self, x):
            return self.call(self.inner, x)

    makers = {
        "conv": (lambda: nn.Conv2d(4, 4, 3, padding=1), (2, 4, 8, 8)),
        "batch_norm": (lambda: nn.BatchNorm2d(4), (2, 4, 8, 8)),
        "rnn": (lambda: First(nn.LSTM(8, 8, batch_first=True), lambda m, x: m(x)[0]), (2, 4, 8)),
        "attention": (lambda: First(nn.MultiheadAttention(8, 2, batch_first=True), lambda m, x: m(x, x, x)[0]),
                      (2, 4, 8)),
        "transformer": (lambda: nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), (2, 4, 8)),
    }
    out = {}
    run = _timer(torch, device)
    for kind, (make, shape) in makers.items():
        x = torch.randn(shape, device=device)
        steps = []
        for n in (1, 4):
            model = nn.Sequential(*[make() for _ in range(n)]).to(device)

            def step(model=model):
                model.zero_grad(set_to_none=True)
                model(x).float().pow(2).mean().backward()
            steps.append(step)
        one, four = [], []
        for _ in range(5):  # interleaved rounds, medians
            one.append(run(steps[0], repeat=10, warmup=2))
            four.append(run(steps[1], repeat=10, warmup=2))
        out[kind] = max((statistics.median(four) - statistics.median(one)) / 3, 0.0)
        say(f"{kind} layer: {out[kind] * 1e6:.0f} us of host time per layer and step")
    return out


def _fresh_page_penalties(torch, run, n: int) -> list:
    """Seconds per byte a fresh output of ``n`` floats costs over an existing one, for three kernels (the
    tensors are freed on return, before a larger size is tried)."""
    x = torch.rand(n) + 0.5
    out = torch.zeros(n)
    return [max(run(fresh, repeat=5) - run(existing, repeat=5), 0.0) / (4 * n)
            for fresh, existing in ((lambda: x.sqrt(), lambda: torch.sqrt(x, out=out)),
                                    (lambda: x / 2.0, lambda: torch.div(x, 2.0, out=out)),
                                    (lambda: torch.empty(n).fill_(1.0), lambda: out.fill_(1.0)))]


def _page_fault_cost(torch, say, quick: bool = False) -> float:
    """Seconds per byte that writing a fresh block costs over writing an existing one, on a CPU host.

    The C library maps blocks of 32 MiB and more straight from the kernel, and returns them when they
    are freed: each such tensor is paged in (faulted, zeroed) again at its first write, every step.
    Measured on elementwise outputs (square root, division, fill) of 64 and 256 MiB, fresh against
    written into an existing tensor; the median of the six."""
    run = _timer(torch, "cpu")
    penalties = []
    for mib in (64,) if quick else (64, 256):
        penalties += _fresh_page_penalties(torch, run, mib * 2**20 // 4)
    cost = statistics.median(penalties)
    say(f"fresh pages: {1 / cost / 1e9 if cost else float('inf'):.1f} GB/s paged in")
    return cost


# Reference training steps for the heap's page churn: (width, Linear+ReLU pairs, batch). Their weight
# gradients and Adam's temporaries, width x width floats (256 KiB to 4.6 MiB), are the blocks that churn;
# not the zoo's shapes.
CHURN_STEPS = ((256, 4, 32), (384, 4, 32), (768, 3, 32), (1100, 3, 32))


def _page_churn_cost(torch, say, quick: bool = False) -> list | None:
    """What a training step loses per byte of the heap blocks it hands back and pages in again, by block
    size: ``[{"block_bytes", "s_per_byte"}, ...]``, or None where that could not be measured (no glibc
    ``mallopt``, or no churn to divide by).

    glibc's heap returns the top of its memory to the kernel when enough of it is free, and blocks over
    its threshold are mapped apart and unmapped on free: a step whose gradients and temporaries fall
    there pages them in again, and the kernel's zeroing of each page evicts the step's own tensors from
    cache too. Measured whole: reference MLP steps with Adam, timed with glibc's threshold pinned low
    (every such block churns) and with the heap held steady (none does), in interleaved rounds; the
    time they differ by over the bytes of minor page faults they differ by (``getrusage``), the median
    of the rounds per reference. Each block also costs the kernel calls that hand it back and map it
    again, so small blocks cost more per byte: on this project's 2-core host 0.43-0.45 ns per byte for
    256 KiB blocks, 0.28-0.31 for 4.6 MiB ones, where 64 MiB blocks paged in at 0.21-0.26. In a child
    process, whose heap is fresh: a heap grown by the sweeps before serves the blocks from its free
    lists and churns or not by chance (two of three calibrations in one process measured none)."""
    rows = _in_fresh_process(f"from paramcalc.calibration.sweeps import _page_churn_rounds as r; print(r({bool(quick)}))")
    if not rows:
        say("heap churn in training steps: not measured (no glibc mallopt, or no churn)")
        return None
    for row in rows:
        say(f"heap churn in training steps, blocks of {row['block_bytes'] / 2**20:.2f} MiB: "
            f"{row['s_per_byte'] * 1e9:.2f} ns per byte paged in again")
    return rows


def _mmap_threshold_of_training(say) -> int | None:
    """glibc's mmap threshold in a fresh process once torch is imported and a first training step has
    run: where a training process's threshold stands before its own blocks move it
    (:mod:`paramcalc.calibration.heap`); None where it cannot be read. torch's first step sets up what
    it builds lazily, and a buffer that setup grows is mapped apart and freed on the way, in a model's
    first step as in this one (docs/accuracy.md)."""
    threshold = _in_fresh_process("from paramcalc.calibration.sweeps import _first_step_threshold as t; t()",
                                  timeout=120)
    say("glibc's mmap threshold after a first training step: " +
        (f"{threshold / 2**20:.2f} MiB" if threshold else "not read (not glibc)"))
    return threshold


def _first_step_threshold() -> None:
    """The child process of :func:`_mmap_threshold_of_training`: a tiny training step (a Linear pair,
    cross-entropy, Adam), then the threshold, printed as JSON."""
    import torch

    from paramcalc.calibration.heap import mmap_threshold

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters())
    torch.nn.functional.cross_entropy(model(torch.randn(2, 4)), torch.tensor([0, 1])).backward()
    optimizer.step()
    print(json.dumps(mmap_threshold()))


def _in_fresh_process(code: str, timeout: float = 600):
    """The JSON that ``code`` prints last, run by this Python in a child process that imports this
    paramcalc; None when the child fails, times out or prints nothing."""
    import subprocess

    from paramcalc.io.subprocesses import python_command

    try:
        child = subprocess.run(python_command(code=code, isolated=False), capture_output=True, text=True,
                               timeout=timeout)
        lines = child.stdout.strip().splitlines()
        return json.loads(lines[-1]) if child.returncode == 0 and lines else None
    except (subprocess.TimeoutExpired, OSError, ValueError):  # no child, or no answer from it
        return None


def _page_churn_rounds(quick: bool) -> str:
    """The child process of :func:`_page_churn_cost`: its rows, as JSON."""
    import ctypes
    import os
    import resource

    import torch

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "[]"
    page = os.sysconf("SC_PAGE_SIZE")

    def timed(step: Callable, churn: bool) -> tuple[float, float]:
        _hold_heap(mallopt, steady=not churn)  # churn: every block of 128 KiB and more handed back
        for _ in range(3):
            step()
        times, faulted = [], []
        for _ in range(10 if quick else 20):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
            faulted.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * page)
        return statistics.median(times), statistics.median(faulted)
    rows = []
    for width, pairs, batch in CHURN_STEPS[::2] if quick else CHURN_STEPS:
        step = _reference_step(torch, width, pairs, batch)
        costs = []
        for _ in range(2 if quick else 5):
            (churned, churned_bytes), (steady, steady_bytes) = timed(step, True), timed(step, False)
            if churned_bytes - steady_bytes >= 2**20:  # enough pages to divide by
                costs.append(max(churned - steady, 0.0) / (churned_bytes - steady_bytes))
        if costs:
            rows.append({"block_bytes": 4 * width * width, "s_per_byte": statistics.median(costs)})
    return json.dumps(rows)


def _reference_step(torch, width: int, pairs: int, batch: int) -> Callable:
    """A training step (forward, backward, Adam) of ``pairs`` Linear(width, width)+ReLU on a CPU."""
    layers = []
    for _ in range(pairs):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, width), torch.randn(batch, width)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return step


def _kernel_throughput(torch, device: str, dtypes: tuple, say) -> dict:
    """Seconds per element of the kernels that run far from the copy bandwidth, forward and backward:
    normalisation (statistics, layout changes), ReLU, tanh (slow on CPUs), dropout (random numbers: slow on CPUs), max and
    average pooling (per input element) and softmax, each measured differently for each dtype."""
    return _per_element_costs(torch, device, dtypes, say, _torch_kernel_makers(torch, device))


def _torch_kernel_makers(torch, device: str) -> dict:
    """kind -> (make(torch dtype) -> layer in training mode, input shape). A 16-bit layer is made as
    mixed precision trains it: a 32-bit module called under autocast on 16-bit activations, not a module
    converted to 16 bits, which training with autocast never runs. BatchNorm then runs torch's own
    mixed-dtype kernels (the H100 CNN's under autocast: 21.5 and 44 ps per element forward and backward,
    where cuDNN's took 12.7 and 36 in 32 bits), LayerNorm and softmax run in 32 bits (autocast's float32
    list)."""
    nn = torch.nn
    big = device == "cuda"  # large enough that the kernels, not the calls around them, take the time
    image = (128, 64, 64, 64) if big else (32, 64, 32, 32)
    rows = (65536, 512) if big else (8192, 256)

    def module(make):
        def built(dtype):
            if dtype not in (torch.float16, torch.bfloat16):
                return make().to(device=device, dtype=dtype).train()
            layer = make().to(device=device).train()

            def under_autocast(x):
                with torch.autocast(device_type=device, dtype=dtype):
                    return layer(x)
            under_autocast.module = layer
            return under_autocast
        return built
    return {
        "batch_norm": (module(lambda: nn.BatchNorm2d(image[1])), image),
        "layer_norm": (module(lambda: nn.LayerNorm(rows[-1])), rows),
        "relu": (module(lambda: nn.ReLU()), image),
        "tanh": (module(lambda: nn.Tanh()), image),
        "dropout": (module(lambda: nn.Dropout(0.1)), image),
        "max_pool": (module(lambda: nn.MaxPool2d(2)), image),
        "avg_pool": (module(lambda: nn.AvgPool2d(2)), image),
        "softmax": (module(lambda: nn.Softmax(dim=-1)), (image[0] * image[1], image[2], image[3])),
    }


def _per_element_costs(torch, device: str, dtypes: tuple, say, makers: dict) -> dict:
    """dtype -> kind -> forward and backward seconds per input element of each ``makers`` entry,
    ``kind: (make(torch dtype) -> callable layer in training mode, input shape)``."""
    out: dict = {}
    run = _timer(torch, device)
    for dtype_name in dtypes:
        if dtype_name == "tfloat32":
            continue
        dtype = getattr(torch, dtype_name)
        for kind, (make, shape) in makers.items():
            x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
            layer = make(dtype)
            grad = torch.randn_like(layer(x))
            forwards, boths = [], []
            for _ in range(SWEEP_ROUNDS):  # interleaved, medians: a busy moment cannot zero the backward
                forwards.append(run(lambda: layer(x), repeat=7))
                boths.append(run(lambda: layer(x).backward(grad), repeat=7))
            out.setdefault(dtype_name, {})[kind] = _per_element_row(forwards, boths, x.numel())
            say(f"{kind} {dtype_name}: {_per_element_text(out[dtype_name][kind])}")
    return out


def _per_element_row(forwards: list, boths: list, numel: int) -> dict:
    """Seconds per element forward and backward from timings of the forward and of both (medians)."""
    forward, both = statistics.median(forwards), statistics.median(boths)
    backward = max(both - forward, 0.1 * forward)  # a backward reads and writes at least once
    return {"forward_s_per_element": forward / numel, "backward_s_per_element": backward / numel}


def _per_element_text(row: dict) -> str:
    return (f"{row['forward_s_per_element'] * 1e12:.2f} ps/elem forward, "
            f"{row['backward_s_per_element'] * 1e12:.2f} backward")


# Convolutions (batch, channels in, side, channels out, kernel, stride) as small CNNs run them: the
# first layer of an image model, 3x3 blocks at falling resolution, 1x1 projections, a 7x7 stem.
CONVS = [(16, 3, 32, 32, 3, 1), (16, 32, 32, 32, 3, 1), (16, 32, 16, 64, 3, 1), (16, 64, 16, 64, 3, 1),
         (16, 64, 8, 128, 3, 1), (64, 32, 32, 32, 3, 1), (64, 64, 16, 64, 3, 1), (16, 64, 32, 256, 1, 1),
         (16, 256, 16, 64, 1, 1), (16, 3, 64, 32, 7, 2), (4, 128, 16, 128, 3, 1), (64, 3, 32, 32, 3, 1)]


def _torch_conv(torch, device: str) -> Callable:
    def make(cin: int, cout: int, kernel: int, stride: int, dtype) -> tuple:
        conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        return conv.to(device=device, dtype=dtype), False
    return make


def _conv_throughput(torch, device: str, dtypes: tuple, say, quick: bool = False,
                     make_conv: Callable | None = None) -> dict:
    """Forward and backward seconds of 2-D convolutions over a sweep of shapes, each keyed by the
    product it amounts to (output positions, inputs per output, filters): convolutions run their own
    kernels (oneDNN on CPUs, cuDNN on GPUs), whose rates differ from the matrix products'.
    ``make_conv(in, out, kernel, stride, torch dtype)`` gives a layer and whether it reads channels last
    (Keras' own, with the layout changes it makes around torch's kernel); torch's Conv2d by default."""
    make_conv = make_conv or _torch_conv(torch, device)
    out: dict = {}
    run = _timer(torch, device)
    scale = 4 if device == "cuda" else 1  # bigger batches where the machine is bigger
    for dtype_name in dtypes:
        if dtype_name == "tfloat32":
            continue
        dtype = getattr(torch, dtype_name)
        shapes = CONVS[:4] if quick else CONVS
        samples: dict = {shape: ([], []) for shape in shapes}
        for _ in range(1 if quick else SWEEP_ROUNDS):  # interleaved rounds, medians per shape
            for shape in shapes:
                batch, cin, side, cout, kernel, stride = shape
                conv, channels_last = make_conv(cin, cout, kernel, stride, dtype)
                layout = (side, side, cin) if channels_last else (cin, side, side)
                x = torch.randn(batch * scale, *layout, device=device, dtype=dtype, requires_grad=True)
                grad = torch.randn_like(conv(x))
                samples[shape][0].append(run(lambda: conv(x), repeat=5))
                samples[shape][1].append(run(lambda: conv(x).backward(grad), repeat=5))
        out[dtype_name] = [_conv_row(shape, scale, forwards, boths, say, f"conv {dtype_name}")
                           for shape, (forwards, boths) in samples.items()]
    return out


def _conv_row(shape: tuple, scale: int, forwards: list, boths: list, say, label: str) -> dict:
    """A convolution's row, keyed by the product it amounts to (output positions, inputs per output,
    filters), from timings of its forward and of both passes (medians)."""
    batch, cin, side, cout, kernel, stride = shape
    forward, both = statistics.median(forwards), statistics.median(boths)
    side_out = (side + 2 * (kernel // 2) - kernel) // stride + 1
    positions = batch * scale * side_out * side_out
    say(f"{label} {batch * scale}x{cin}x{side}x{side} -> {cout}, {kernel}x{kernel}: "
        f"{2 * positions * cin * kernel * kernel * cout / max(forward, 1e-9) / 1e9:.1f} GFLOP/s forward")
    return {"m": positions, "k": cin * kernel * kernel, "n": cout, "forward_s": forward,
            "backward_s": max(both - forward, forward)}


# Recurrent layers (batch, steps, input features, hidden units): the frameworks run them as fused
# kernels (oneDNN on CPUs, cuDNN on GPUs) that step through time, far from the matrix products' rates.
RECURRENT = [(16, 16, 32, 32), (32, 32, 32, 64), (32, 32, 64, 128), (64, 32, 128, 256)]


def _torch_recurrent_layer(torch, device: str) -> Callable:
    """torch's own LSTM or GRU layer, batch first, on ``device``."""
    return lambda cell, features, hidden: getattr(torch.nn, cell.upper())(
        features, hidden, batch_first=True).to(device)


def cpu_lstm_path_under_autocast(torch, dtype) -> str:
    """Which kernels run torch's LSTM under CPU autocast to ``dtype`` (16 bits) here: ``"onednn"``, or
    ``"native"`` where oneDNN lacks the 16-bit LSTM primitive (on AVX2-only CPUs torch still picks it
    for a 32-bit input and it fails to create the primitive): torch's own kernels then, under
    :func:`cpu_lstm_context`. Autocast casts the same weights either way."""
    layer = torch.nn.LSTM(2, 2)
    try:
        with torch.autocast("cpu", dtype=dtype):
            layer(torch.zeros(1, 1, 2))
    except RuntimeError as error:
        if "primitive descriptor" not in str(error):
            raise
        return "native"
    return "onednn"


@contextlib.contextmanager
def cpu_lstm_context(torch, path: str):
    """Runs torch's CPU LSTM on ``path`` (see :func:`cpu_lstm_path_under_autocast`) while the block runs."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = before and path == "onednn"
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _output(result):
    """The output sequence: torch's layers return (output, states), Keras' the output alone."""
    return result[0] if isinstance(result, tuple) else result


def _recurrent_throughput(torch, device: str, say, quick: bool = False, make_layer: Callable | None = None) -> dict:
    """Seconds per time step of one LSTM and one GRU layer, forward and backward, over a sweep of
    sizes, in interleaved rounds (medians); each row keyed by the layer's work per step (2 x batch x
    (input + hidden) x gates x hidden). ``make_layer(cell, features, hidden)``: torch's layers, or
    Keras' on its torch backend (which steps through time in Python: its host time is in the rows)."""
    run = _timer(torch, device)
    make_layer = make_layer or _torch_recurrent_layer(torch, device)
    scale = 4 if device == "cuda" else 1
    cases = [(cell, gates, size) for cell, gates in (("lstm", 4), ("gru", 3))
             for size in (RECURRENT[:2] if quick else RECURRENT)]
    samples: dict = {i: ([], []) for i in range(len(cases))}
    measured: dict = {}  # the last round's layer and input per case, for what it keeps
    rounds = 1 if quick or device == "cuda" else SWEEP_ROUNDS  # the LSTM's time moves 2x on a busy CPU host
    for _ in range(rounds):
        for i, (cell, _, (batch, steps, features, hidden)) in enumerate(cases):
            layer = make_layer(cell, features, hidden)
            x = torch.randn(batch * scale, steps, features, device=device, requires_grad=True)
            grad = torch.randn(batch * scale, steps, hidden, device=device)
            samples[i][0].append(run(lambda: _output(layer(x)), repeat=5))
            samples[i][1].append(run(lambda: _output(layer(x)).backward(grad), repeat=5))
            measured[i] = (layer, x)
    out: dict = {"lstm": [], "gru": []}
    for i, (cell, gates, (batch, steps, features, hidden)) in enumerate(cases):
        batch *= scale
        forward, both = statistics.median(samples[i][0]), statistics.median(samples[i][1])
        layer, x = measured[i]
        out[cell].append({"work_per_step": 2 * batch * (features + hidden) * gates * hidden,
                          "forward_s_per_step": forward / steps,
                          "backward_s_per_step": max(both - forward, forward) / steps,
                          "units": batch * steps * hidden, "saved_bytes": _saved_bytes(torch, layer, x)})
        say(f"{cell} {batch}x{steps}x{features} -> {hidden}: {forward / steps * 1e6:.1f} us per step forward, "
            f"{max(both - forward, forward) / steps * 1e6:.1f} backward")
    return out


def _recurrent_in_fresh_process(torch, say, quick: bool) -> dict:
    """:func:`_recurrent_throughput` on the CPU in a child process with glibc's heap held steady, as a
    training process runs the layers: after this calibration's sweeps, in their process, torch's LSTM
    and GRU ran markedly slower, and by turns (docs/accuracy.md), as Keras' do on TensorFlow. In this
    process where no child answers."""
    return _recurrent_rows_in_child(f"from paramcalc.calibration.sweeps import _recurrent_child as r; r({bool(quick)})",
                                    lambda: _recurrent_throughput(torch, "cpu", say, quick), say, "")


def _recurrent_child(quick: bool) -> None:
    """The child process of :func:`_recurrent_in_fresh_process`: its rows, printed as JSON."""
    import torch

    with steady_heap():
        rows = _recurrent_throughput(torch, "cpu", lambda message: None, quick)
    print(json.dumps(rows))


def _keras_tf_recurrent_in_fresh_process(keras, tf, say, quick: bool) -> dict:
    """:func:`_recurrent_throughput_keras_tf` in a child process, as a training process runs the layers:
    measured after this calibration's sweeps, in their process, a recurrent layer runs markedly slower
    than in a fresh process or inside a training model. In this process where no child answers."""
    return _recurrent_rows_in_child(
        "import os; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3'); import json, keras, tensorflow as tf; "
        "from paramcalc.calibration.sweeps import _recurrent_throughput_keras_tf as r; "
        f"print(json.dumps(r(keras, tf, lambda message: None, {bool(quick)})))",
        lambda: _recurrent_throughput_keras_tf(keras, tf, say, quick), say, "Keras ")


def _recurrent_rows_in_child(code: str, here: Callable[[], dict], say, label: str) -> dict:
    """The recurrent rows a child process running ``code`` prints, each said as measured there, or
    ``here()``'s where no child answers."""
    rows = _in_fresh_process(code)
    if not rows:
        return here()
    for cell, measured in rows.items():
        for row in measured:
            say(f"{label}{cell}, {row['work_per_step']} FLOPs per step: {row['forward_s_per_step'] * 1e6:.1f} us per "
                f"step forward, {row['backward_s_per_step'] * 1e6:.1f} backward (in a fresh process)")
    return rows


def _recurrent_throughput_keras_tf(keras, tf, say, quick: bool = False) -> dict:
    """Seconds per time step of Keras' LSTM and GRU on TensorFlow, as training runs them: the compiled
    ``train_on_batch`` of a model with the layer less that of the same model without it (measured: the
    layer alone, forward and gradients in their own ``tf.function``, took 1.5x longer), split into
    forward and backward by the layer's own compiled forward. Rows as for torch's layers."""
    import numpy as np

    timed = _tf_timer()

    def trained(layers: list, x, y):
        model = keras.Sequential([keras.Input(x.shape[1:])] + layers + [keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        return lambda: model.train_on_batch(x, y)
    cases = [(cell, gates, size) for cell, gates in (("lstm", 4), ("gru", 3))
             for size in (RECURRENT[:2] if quick else RECURRENT)]
    samples: dict = {i: ([], [], []) for i in range(len(cases))}
    for _ in range(1 if quick else SWEEP_ROUNDS):
        for i, (cell, _, (batch, steps, features, hidden)) in enumerate(cases):
            x = tf.constant(np.random.randn(batch, steps, features).astype("float32"))
            y = tf.constant(np.random.randn(batch, steps, 1).astype("float32"))
            layer = getattr(keras.layers, cell.upper())(hidden, return_sequences=True)
            samples[i][0].append(timed(trained([layer], x, y)))
            samples[i][1].append(timed(trained([], x, y)))
            forward = tf.function(lambda layer=layer, x=x: tf.reduce_sum(layer(x, training=True)))
            samples[i][2].append(timed(lambda: forward().numpy()))
    out: dict = {"lstm": [], "gru": []}
    for i, (cell, gates, (batch, steps, features, hidden)) in enumerate(cases):
        with_layer, without, alone = (statistics.median(times) for times in samples[i])
        both = max(with_layer - without, 0.0)
        forward = min(alone, both / 2)  # the forward alone also pays a call of its own
        out[cell].append({"work_per_step": 2 * batch * (features + hidden) * gates * hidden,
                          "forward_s_per_step": forward / steps, "backward_s_per_step": (both - forward) / steps})
        say(f"Keras {cell} {batch}x{steps}x{features} -> {hidden}: {forward / steps * 1e6:.1f} us per step "
            f"forward, {(both - forward) / steps * 1e6:.1f} backward")
    return out


# One recurrent layer at two sequence lengths: what grows with the length, per batch x step x unit
# (batch, features, hidden, steps). Every per-step tensor is 256 KiB or more, so TensorFlow's pool
# (which sees only those) holds them all.
RECURRENT_MEMORY = (512, 256, 256, 4)


def recurrent_memory(slope_per_unit: float, saved_per_unit: float, output_per_unit: float = 0.0) -> dict:
    """Bytes per batch x step x unit that a recurrent layer keeps from its forward to its backward
    (``saved``) and that its backward holds only while it runs (``workspace``): the rise of the step's
    peak with the sequence length (``slope``) less what was saved and the output it returned."""
    return {"saved_bytes_per_unit": saved_per_unit,
            "workspace_bytes_per_unit": max(0.0, slope_per_unit - saved_per_unit - output_per_unit)}


def _recurrent_memory_torch(torch, device: str, make_layer: Callable, say, autocast=None) -> dict:
    """Saved and backward-workspace bytes per unit of ``make_layer(cell, features, hidden)``'s LSTM and
    GRU (torch's own, or Keras' on its torch backend): the saved tensors read by autograd's hooks, the
    workspace from the allocator's peak at two lengths. ``autocast``: the same under autocast to this
    16-bit dtype, on a 16-bit input (a layer inside a mixed-precision model reads one)."""
    batch, features, hidden, steps = RECURRENT_MEMORY
    if device != "cuda":
        batch //= 4  # the same per-unit figures in a quarter of the time
    dtype = autocast or torch.float32
    context = ((lambda: torch.autocast(device_type=device, dtype=autocast)) if autocast is not None
               else contextlib.nullcontext)
    out = {}
    for cell in ("lstm", "gru"):
        rises, saved = [], 0
        for length in (steps, 2 * steps):
            layer = make_layer(cell, features, hidden)
            x = torch.randn(batch, length, features, device=device, dtype=dtype)
            grad = torch.randn(batch, length, hidden, device=device, dtype=dtype)
            weights = list(layer.parameters())

            def step():
                with context():
                    y = _output(layer(x))
                y.backward(grad.to(y.dtype))
            step()
            saved, output_saved = _saved_bytes(torch, layer, x, output=True, autocast=autocast)
            for w in weights:  # the step starts without gradients, as training's does
                w.grad = None
            rises.append(peak_rise(torch, device, step))
        units = batch * steps * hidden
        out[cell] = recurrent_memory((rises[1] - rises[0]) / units, saved / (2 * units),
                                     0.0 if output_saved else dtype.itemsize)
        mode = f" under {str(autocast).split('.')[-1]} autocast" if autocast is not None else ""
        say(f"{cell} memory{mode}: {out[cell]['saved_bytes_per_unit']:.1f} bytes kept per batch x step x unit, "
            f"{out[cell]['workspace_bytes_per_unit']:.1f} more while its backward runs")
    return out


def peak_rise(torch, device: str, step: Callable) -> int:
    """Highest bytes allocated during ``step`` above what was allocated when it started: CUDA's
    allocator statistics, or on CPUs the highest running sum of the allocations and frees torch's
    profiler records (it keeps no statistics there)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with _without_profiler_stage_lines():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    return _highest_running_sum(e.nbytes() for e in events)  # nbytes is negative for a free


# What torch's profiler library (kineto) writes to the process's stderr at every start and stop: its
# stage markers, which would fall between calibration progress lines.
PROFILER_STAGE_PREFIXES = (b"USDT:", b"STAGE:")


@contextlib.contextmanager
def _without_profiler_stage_lines():
    """Holds what native code writes to stderr while the block runs and passes it on afterwards, less
    the profiler's stage markers; nothing else is lost."""
    import os
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedding host): nothing to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not line.startswith(PROFILER_STAGE_PREFIXES)]
            if kept:
                os.write(2, b"".join(kept))


def _highest_running_sum(sizes) -> int:
    """The most bytes held at once by a time-ordered stream of allocations (+) and frees (-)."""
    running = highest = 0
    for nbytes in sizes:
        running += nbytes
        highest = max(highest, running)
    return highest


def _recurrent_memory_keras_tf(keras, tf, say) -> dict:
    """Bytes per batch x step x unit that Keras' LSTM and GRU keep on TensorFlow, from its allocations' peak
    over a training step at two lengths: its loop keeps what grows with the length until the layer's
    backward, one layer's beside the next's (measured: two stacked layers rise as two), so all of it
    counts as kept."""
    import numpy as np

    batch, features, hidden, steps = RECURRENT_MEMORY
    out = {}
    for cell in ("lstm", "gru"):
        rises = []
        for length in (steps, 2 * steps):
            model = keras.Sequential([keras.Input((length, features)), getattr(keras.layers, cell.upper())(hidden),
                                      keras.layers.Dense(1)])
            model.compile(optimizer="adam", loss="mse")
            x = tf.constant(np.random.randn(batch, length, features).astype("float32"))
            y = tf.constant(np.random.randn(batch, 1).astype("float32"))
            model.train_on_batch(x, y)
            rises.append(tf_allocations(tf, lambda: model.train_on_batch(x, y)).rise)
        out[cell] = {"saved_bytes_per_unit": (rises[1] - rises[0]) / (batch * steps * hidden),
                     "workspace_bytes_per_unit": 0.0}
        say(f"Keras {cell} memory: {out[cell]['saved_bytes_per_unit']:.1f} bytes kept per batch x step x unit")
    return out


class NoAllocationEvents(RuntimeError):
    """A framework recorded no allocation events where a memory measurement needs them: the
    measurement is refused rather than read as zero bytes."""


def tf_onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN operations here. It turns them on by default only on CPUs with
    AVX-512 VNNI or BF16, AVX-VNNI or AMX (``TF_ENABLE_ONEDNN_OPTS`` overrides it); without them, its
    plain CPU allocator serves every tensor."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


@contextlib.contextmanager
def _tf_cpu_allocator_statistics(tf):
    """TensorFlow's plain CPU allocator records allocation events only while its statistics are
    collected, a switch that only its C++ library exposes (``tsl::EnableCPUAllocatorStats``). On while
    the block runs, then back off: collecting takes a lock per allocation."""
    import ctypes
    import glob
    import os

    found = glob.glob(os.path.join(os.path.dirname(tf.__file__), "libtensorflow_framework.so*"))
    library = ctypes.CDLL(found[0]) if found else None
    enable = getattr(library, "_ZN3tsl23EnableCPUAllocatorStatsEv", None)
    disable = getattr(library, "_ZN3tsl24DisableCPUAllocatorStatsEv", None)
    if enable is None or disable is None:
        raise NoAllocationEvents(
            f"TensorFlow {tf.__version__} runs without oneDNN on this CPU and its library exposes no switch for "
            "the CPU allocator's statistics, so its profiler records no allocations. Set "
            "TF_ENABLE_ONEDNN_OPTS=1 to measure through oneDNN's pool instead.")
    enable()
    try:
        yield
    finally:
        disable()


@dataclasses.dataclass(frozen=True)
class TFAllocations:
    """The allocations TensorFlow's profiler saw during one step.

    ``rise``: the highest running sum of the bytes requested during the step (what it held at its peak
    beyond what it started with); ``events``: ``[bytes, op, shape]`` in time order, frees negative;
    ``source``: ``"onednn_pool"`` (oneDNN's allocator: requests of 256 KiB and more, smaller ones go to
    malloc unseen) or ``"cpu_allocator"`` (the plain allocator: every request)."""

    rise: int
    events: list
    source: str


MEASURED_STEP = "paramcalc-measured-step"


def tf_allocations(tf, step: Callable) -> TFAllocations:
    """What TensorFlow allocates during one ``step``, read from its profiler's allocation events.

    The step runs twice under the profiler and only the second is read: the plain CPU allocator's free
    events carry an address but no size, so a block the step frees is sized from its allocation, which
    the first run shows when the block outlives a step. Raises ``NoAllocationEvents`` rather than
    report zero where the profiler records nothing."""
    import glob
    import os
    import tempfile

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    onednn = tf_onednn_enabled()
    logdir = tempfile.mkdtemp(prefix="paramcalc-tfprof-")
    statistics_on = contextlib.nullcontext() if onednn else _tf_cpu_allocator_statistics(tf)
    with statistics_on:
        tf.profiler.experimental.start(logdir, options=tf.profiler.experimental.ProfilerOptions(host_tracer_level=3))
        try:
            step()
            with tf.profiler.experimental.Trace(MEASURED_STEP):
                step()
        finally:
            tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as handle:
        space.ParseFromString(handle.read())
    events, window = _tf_memory_events(space)
    if not events or window is None:
        raise NoAllocationEvents(
            f"TensorFlow's profiler recorded no allocations during the step (oneDNN {'on' if onednn else 'off'}): "
            "nothing to measure memory from.")
    sizes: dict = {}
    read: list = []
    for time_ps, freed, nbytes, address, op, shape in sorted(events):
        if not freed:
            sizes[address] = nbytes
        else:  # its own size where the event has one, else the size its block was made with
            nbytes = -(nbytes or sizes.pop(address, 0))
        if window[0] <= time_ps <= window[1] and nbytes:
            read.append([nbytes, op, shape])
    return TFAllocations(_highest_running_sum(n for n, _, _ in read), read,
                         "onednn_pool" if onednn else "cpu_allocator")


def _tf_memory_events(space) -> tuple[list, tuple | None]:
    """Allocation and free events of an XSpace as (time in ps, whether freed, bytes, address, op, shape), and the
    span of the measured step's trace (None when it is missing)."""
    events, window = [], None
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                kind = names.get(event.metadata_id)
                start = line.timestamp_ns * 1000 + event.offset_ps
                if kind == MEASURED_STEP:
                    window = (start, start + event.duration_ps)
                if kind not in ("MemoryAllocation", "MemoryDeallocation"):
                    continue
                stats = {stat_names[s.metadata_id]: stat_names[s.ref_value] if s.ref_value  # interned text
                         else s.int64_value or s.uint64_value or s.str_value for s in event.stats}
                events.append((start, kind == "MemoryDeallocation", int(stats.get("requested_bytes") or 0),
                               stats.get("addr") or 0, stats.get("tf_op", ""), stats.get("shape", "")))
    return events, window


def _transformer_saved(torch, device: str, say, autocast=None) -> dict:
    """Bytes a Transformer encoder layer (float32, dropout on) keeps for its backward per token and
    model feature, per token and feed-forward unit, and per attention score: three layers that vary
    the length and the feed-forward width apart, solved exactly. The attention path differs by device
    (fused kernels on GPUs, the composite one on CPUs), so this is measured, not assumed. ``autocast``:
    the same under autocast to this 16-bit dtype (the residual stream stays float32, the products' outputs
    are 16-bit: neither half nor all of the float32 figures)."""
    shapes = [(8, 16, 64, 4, 128), (8, 64, 64, 4, 128), (8, 16, 64, 4, 512)]  # batch, length, model, heads, FF
    rows, kept = [], []
    for b, t, e, h, f in shapes:
        layer = torch.nn.TransformerEncoderLayer(e, h, f, dropout=0.1, batch_first=True).to(device)
        x = torch.randn(b, t, e, device=device, requires_grad=True)
        rows.append([b * t * e, b * t * f, b * h * t * t])
        kept.append(_saved_bytes(torch, layer, x, autocast=autocast))
    # a fused attention kernel keeps no scores: its solved coefficient is alignment noise around zero
    per_feature, per_hidden, per_score = (max(c, 0.0) for c in _solve3(rows, kept))
    mode = f" under {str(autocast).split('.')[-1]} autocast" if autocast is not None else ""
    say(f"Transformer layer{mode} keeps {per_feature:.1f} bytes per token feature, {per_hidden:.1f} per FF unit, "
        f"{per_score:.1f} per attention score")
    return {"per_token_feature": per_feature, "per_token_hidden": per_hidden, "per_score": per_score}


# Attention as torch's MultiheadAttention runs it (batch, length, model width, heads): short and long
# sequences, head widths of 16 to 64; larger on GPUs, where small ones measure the launches.
ATTENTION_CPU = [(16, 64, 64, 4), (4, 256, 128, 8), (8, 128, 256, 4), (2, 512, 256, 4)]
ATTENTION_GPU = [(32, 256, 512, 8), (8, 1024, 512, 8), (8, 1024, 1024, 16), (2, 4096, 1024, 8)]


def _attention_throughput(torch, device: str, dtypes: tuple, say, quick: bool = False) -> dict:
    """Seconds of attention's core (the scores' products, mask handling, softmax, dropout on the
    probabilities, and the heads' layout changes), forward and backward, as torch's
    MultiheadAttention runs it in training: the whole layer less its input and output projections,
    timed apart as the same Linear layers on the same tokens. Per dtype, with dropout 0.1 and without
    (random numbers for the scores cost more than the rest of the core on CPUs). Rows: batch x heads,
    query and key length, head width, forward and backward seconds."""
    nn = torch.nn
    run = _timer(torch, device)
    shapes = ATTENTION_GPU if device == "cuda" else ATTENTION_CPU
    if quick:
        shapes = shapes[:2]
    out: dict = {}
    for dtype_name in dtypes:
        if dtype_name == "tfloat32":
            continue
        dtype = getattr(torch, dtype_name)
        for dropout in (0.1, 0.0):
            rows = out.setdefault(dtype_name, {}).setdefault("dropout" if dropout else "plain", [])
            for b, t, e, h in shapes:
                layer = nn.MultiheadAttention(e, h, dropout=dropout, batch_first=True).to(device, dtype)
                projections = [nn.Linear(e, 3 * e).to(device, dtype), nn.Linear(e, e).to(device, dtype)]
                x = torch.randn(b, t, e, device=device, dtype=dtype, requires_grad=True)
                tokens = torch.randn(t, b, e, device=device, dtype=dtype, requires_grad=True)

                def whole(backward: bool):
                    y = layer(x, x, x, need_weights=False)[0]
                    if backward:
                        y.sum().backward()

                def projected(backward: bool):
                    y = sum(p(tokens).sum() for p in projections)
                    if backward:
                        y.backward()
                samples = {key: [] for key in ("fwd", "both", "proj_fwd", "proj_both")}
                for _ in range(1 if quick else SWEEP_ROUNDS):  # interleaved rounds, medians
                    samples["fwd"].append(run(lambda: whole(False), repeat=5))
                    samples["both"].append(run(lambda: whole(True), repeat=5))
                    samples["proj_fwd"].append(run(lambda: projected(False), repeat=5))
                    samples["proj_both"].append(run(lambda: projected(True), repeat=5))
                m = {key: statistics.median(v) for key, v in samples.items()}
                forward = max(m["fwd"] - m["proj_fwd"], 0.1 * m["fwd"])
                both = max(m["both"] - m["proj_both"], 1.1 * forward)  # a backward is never free
                rows.append({"batch_heads": b * h, "query": t, "key": t, "head_dim": e // h,
                             "forward_s": forward, "backward_s": both - forward})
                say(f"attention {dtype_name} dropout {dropout}: {b}x{h} heads, length {t}, width {e // h}: "
                    f"{forward / (b * h * t * t) * 1e9:.2f} ns per score forward, "
                    f"{(both - forward) / (b * h * t * t) * 1e9:.2f} backward")
    return out


def _solve3(a: list, y: list) -> list:
    """x with a @ x = y for a 3x3 system (Cramer's rule)."""
    def det(m):
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
    d = det(a)
    return [det([[y[r] if c == i else a[r][c] for c in range(3)] for r in range(3)]) / d for i in range(3)]


def _saved_bytes(torch, layer, x, output: bool = False, autocast=None):
    """Bytes autograd keeps for ``layer(x)``'s backward beyond its weights and its input: the kernel's
    workspace, its output and states (distinct storages). ``output``: also say whether the output
    returned is among them. ``autocast``: a 16-bit dtype to run it under autocast, whose 16-bit copies
    of the weights (a parameter's shape) are left out too: the memory model counts them apart."""
    storages: dict = {}
    alive: list = []
    skip = {p.untyped_storage().data_ptr() for p in layer.parameters()} | {x.untyped_storage().data_ptr()}
    weight_shapes = {tuple(p.shape) for p in layer.parameters()}

    def pack(t):
        storage = t.untyped_storage()
        cast_weight = autocast is not None and t.dtype == autocast and tuple(t.shape) in weight_shapes
        if storage.data_ptr() not in skip and not cast_weight:
            storages[storage.data_ptr()] = storage.nbytes()
        # alive until the forward ends, as in training (a freed one's address could come back as
        # another's), but not in the graph: no backward runs, and an operation's own output kept by its
        # graph is a cycle through C++ that no collector frees (layers timed after would find it taken)
        alive.append(t)
        return None
    context = (torch.autocast(device_type=x.device.type, dtype=autocast) if autocast is not None
               else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None), context:
        result = layer(x)
    alive.clear()  # the graph holds the hook, and the hook this list: emptied, it holds no tensor
    if not output:
        return sum(storages.values())
    return sum(storages.values()), _output(result).untyped_storage().data_ptr() in storages


# Optimizer updates over sets of 8 equal tensors (total parameters), and over 64 tiny tensors, whose
# time is the update's cost per tensor: torch loops over tensors on CPUs, and what a parameter costs
# depends on whether the optimizer's state stays in cache.
UPDATE_TOTALS = [2**p for p in range(12, 25, 2)]


def _optimizer_throughput(torch, device: str, quick: bool, say) -> dict:
    """Seconds per update of each optimizer: per parameter on a large set (``seconds_per_param``) and,
    over sizes (``sizes``), the rows that give a cost per tensor and a cost per parameter by size."""
    top = (2**26 if device == "cuda" else 2**24) // (4 if quick else 1)
    sets = [(64, 64)] + [(8, total) for total in UPDATE_TOTALS if total <= top]
    if device == "cuda":
        sets.append((8, top))
    makers = (("adam", lambda ps: torch.optim.Adam(ps, lr=1e-4)),
              ("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-4)),
              ("sgd", lambda ps: torch.optim.SGD(ps, lr=1e-4)),
              ("momentum", lambda ps: torch.optim.SGD(ps, lr=1e-4, momentum=0.9)))
    out: dict = {name: {"sizes": []} for name, _ in makers}
    for tensors, total in sets:
        params = [torch.nn.Parameter(torch.randn(total // tensors, device=device)) for _ in range(tensors)]
        grads = [torch.randn_like(p) for p in params]

        def fresh_gradients():
            # as in training, where each backward writes new gradients: an update timed again and again
            # on the same gradients finds them in the cache and runs faster than training's
            for p, g in zip(params, grads):
                p.grad = g.clone()
        for name, make in makers:
            opt = make(params)
            seconds = _timer(torch, device)(opt.step, repeat=10 if total < 2**22 else 4, warmup=2,
                                            setup=fresh_gradients)
            out[name]["sizes"].append({"tensors": tensors, "params": total, "seconds": seconds})
            del opt
        say(f"updates of {tensors} tensors, {total} parameters: " + ", ".join(
            f"{name} {out[name]['sizes'][-1]['seconds'] * 1e6:.0f} us" for name, _ in makers))
    for name, _ in makers:  # the largest set: the cost per parameter once bound by memory
        largest = out[name]["sizes"][-1]
        out[name].update(seconds_per_param=largest["seconds"] / largest["params"], params=largest["params"])
    return out


def save(profile: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(profile, handle, indent=1)


def measure_keras(quick: bool = False, progress: Callable[[str], None] | None = None,
                  products: list | None = None) -> dict:
    """A CPU profile measured with Keras on TensorFlow: what ``model.fit`` runs (compiled train steps).

    Matmuls (plain and with either operand transposed, one after another) and elementwise passes run
    inside ``tf.function`` as Keras' training step does; the per-step and per-layer costs come from
    ``train_on_batch`` on tiny Dense+ReLU models; the optimizer's cost per parameter from Keras' Adam on
    large variables; Keras' Conv2D and its per-element layers compiled alone; the recurrent layers per
    time step as training runs them, with what they keep. Sweeps run in interleaved rounds, medians.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    watch, say = _watched(progress)
    from paramcalc.core.machine import this_machine

    profile: dict = {"name": this_machine().cpu, "framework": "keras", "framework_version": f"keras {keras.__version__}, "
                     f"tensorflow {tf.__version__}", "device": "cpu", "matmul": {}, "bandwidth": []}

    def timed(fn, repeat: int) -> float:
        return _timer(None, "cpu")(fn, repeat, warmup=1)

    say.plan(list(KERAS_TF_STAGES))
    say.stage("matrix products")
    plain, transposed = _tf_product_sweep(tf, products or product_shapes(512 if quick else 2048, 20020, 2**18, quick),
                                          quick, say, timed)
    profile["matmul"]["float32"] = plain
    profile["matmul_layouts"] = {layout: {"float32": rows} for layout, rows in transposed.items()}
    say.stage("copies and per-op cost")
    for size in [2 ** p for p in range(16, 28, 2)]:
        x = tf.random.normal((size // 4,))
        reps = 8  # several passes per call, so the call's own cost is spread thin
        fn = tf.function(lambda: _one_after_another(tf, [lambda i=i: x * float(i + 2) for i in range(reps)]))
        seconds = timed(lambda: [t.numpy() for t in fn()], 5) / reps
        profile["bandwidth"].append({"bytes": 2 * size, "seconds": seconds, "bytes_per_s": 2 * size / seconds})
        say(f"fresh write {size / 2**20:.1f} MiB: {2 * size / seconds / 1e9:.1f} GB/s")
    tiny = tf.zeros((1,))
    profile["op_overhead_s"] = timed(lambda: [tf.add(tiny, 1.0) for _ in range(100)], 10) / 100
    say.stage("training steps")
    counts = [1, 2, 4, 8, 16]
    x, y = np.random.randn(16, 16).astype("float32"), np.random.randn(16, 16).astype("float32")
    models = []
    for n in counts:
        layers = [keras.Input((16,))] + [keras.layers.Dense(16, activation="relu") for _ in range(n)]
        models.append(keras.Sequential(layers))
        models[-1].compile(optimizer="adam", loss="mse")
        models[-1].train_on_batch(x, y)
    step_times: list = [[] for _ in counts]
    for _ in range(1 if quick else SWEEP_ROUNDS):  # interleaved: the line through them is a difference of small times
        for model, samples in zip(models, step_times):
            samples.append(timed(lambda: model.train_on_batch(x, y), 30))
    times = [statistics.median(samples) for samples in step_times]
    for n, seconds in zip(counts, times):
        say(f"train_on_batch with {n} Dense(relu) layers: {seconds * 1e6:.0f} us")
    # one Keras Dense(relu) is the Linear+ReLU pair the step-time model prices
    profile.update(_step_and_layer_costs(counts, times))
    say.stage("optimizer updates")
    profile["optimizers"] = {"adam": _keras_tf_adam(keras, tf, quick, timed)}
    say(f"adam update: {profile['optimizers']['adam']['seconds_per_param'] * 1e9:.3f} ns per parameter, "
        f"{profile['optimizers']['adam']['seconds_per_param_alone'] * 1e9:.3f} for one variable alone")
    say.stage("convolutions")
    profile["convs"] = {"float32": _conv_throughput_keras_tf(keras, tf, say, quick)}
    say.stage("per-element kernels")
    profile["kernels"] = {"float32": _keras_tf_per_element_costs(keras, tf, say)}
    say.stage("recurrent layers")
    profile["recurrent"] = _keras_tf_recurrent_in_fresh_process(keras, tf, say, quick)
    say.stage("saved tensors")
    profile["recurrent_memory"] = _recurrent_memory_keras_tf(keras, tf, say)
    return _with_machine(profile, watch)


def _tf_product_sweep(tf, shapes: list, quick: bool, say, timed) -> tuple[list, dict]:
    """Matmul rows over ``shapes`` read as stored, and per transposed layout, compiled with
    ``tf.function``: interleaved rounds, the median per shape and layout (as for torch's sweep)."""
    product_times: dict = {(layout, shape): [] for layout in PRODUCT_LAYOUTS for shape in shapes}
    for _ in range(1 if quick else SWEEP_ROUNDS):
        for m, k, n in shapes:
            # up to 8 products per call, while each one's own first operand and output stay under 200 MB
            reps = max(1, min(8, int(2e8 // (4 * max(m * k, m * n)))))
            for layout in PRODUCT_LAYOUTS:
                fn = _tf_products(tf, layout, m, k, n, reps)
                product_times[(layout, (m, k, n))].append(timed(lambda: [t.numpy() for t in fn()], 5) / reps)
    tables: dict = {}
    for (layout, (m, k, n)), times in product_times.items():
        seconds = statistics.median(times)
        tables.setdefault(layout, []).append({"m": m, "k": k, "n": n, "seconds": seconds,
                                              "flops_per_s": 2 * m * k * n / seconds})
        say(f"matmul {m}x{k}x{n} {layout}: {2 * m * k * n / seconds / 1e9:.1f} GFLOP/s")
    return tables.pop("plain"), tables


def _keras_tf_adam(keras, tf, quick: bool, timed) -> dict:
    """Keras' Adam per parameter over eight variables and over one, compiled, in interleaved rounds.

    Eight variables' updates run side by side on TensorFlow's inter-op threads; one variable's has
    nothing beside it (2.5 against 1.6 ns per parameter on the development CPU), as the first layer's,
    updated last in a training step."""
    import numpy as np

    total = 2**22 // (4 if quick else 1)

    def adam_over(parts: int) -> Callable:
        variables = [keras.Variable(np.random.randn(total // parts).astype("float32")) for _ in range(parts)]
        grads = [tf.random.normal((total // parts,)) for _ in range(parts)]
        optimizer = keras.optimizers.Adam()
        return tf.function(lambda: optimizer.apply_gradients(zip(grads, variables)))
    applies = {"seconds_per_param": adam_over(8), "seconds_per_param_alone": adam_over(1)}
    adam_times: dict = {key: [] for key in applies}
    for _ in range(1 if quick else SWEEP_ROUNDS):
        for key, apply in applies.items():
            adam_times[key].append(timed(apply, 10) / total)
    return {key: statistics.median(times) for key, times in adam_times.items()} | {"params": total}


# How a product reads its operands: as stored, or one of them transposed (a layer's backward reads
# its weight or its input that way). oneDNN under TensorFlow ran 128x20020 @ (300x20020)^T at 220
# GFLOP/s where the plain product ran at 390 on the development CPU; MKL under torch at the same rate.
PRODUCT_LAYOUTS = ("plain", "transpose_a", "transpose_b")


def _tf_products(tf, layout: str, m: int, k: int, n: int, reps: int) -> Callable:
    """A compiled function making ``reps`` (m, k) @ (k, n) products in ``layout``, one after another,
    from distinct first operands (TensorFlow's graph optimiser merges identical products)."""
    transpose_a, transpose_b = layout == "transpose_a", layout == "transpose_b"
    operands = [tf.random.normal((k, m) if transpose_a else (m, k)) for _ in range(reps)]
    b = tf.random.normal((n, k) if transpose_b else (k, n))
    return tf.function(lambda: _one_after_another(
        tf, [lambda a=a: tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b) for a in operands]))


def _one_after_another(tf, ops: list) -> list:
    """One element of each op's result, each op started only once the previous one has finished.

    A compiled function runs independent operations at once on its inter-op threads, so independent
    products timed together run faster per product than one after another, while a training step's
    operations mostly wait for each other."""
    out: list = []
    for op in ops:
        with tf.control_dependencies(out[-1:]):
            out.append(tf.reshape(op(), [-1])[:1])
    return out


def _tf_layer_seconds(tf, layer, x, timed) -> tuple[float, float]:
    """(forward, backward) seconds of a built Keras layer on TensorFlow, each compiled with
    ``tf.function`` as a compiled training step runs it: the forward, then the forward with the gradients
    of the input and the weights, each less a compiled call that only reads one element (what every
    such call pays besides the layer's work)."""
    grad = tf.random.normal(layer(x, training=True).shape)
    weights = list(layer.trainable_variables)

    def first(t):  # one element of each result: enough to make the call run, nothing to copy out
        return tf.reshape(t, [-1])[:1]

    @tf.function
    def forward():
        return first(layer(x, training=True))

    @tf.function
    def both():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return [first(g) for g in tape.gradient(y, [x] + weights, output_gradients=grad)]

    call = tf.function(lambda: first(x))
    cost = timed(lambda: call().numpy())
    forward_s = max(timed(lambda: forward().numpy()) - cost, 0.0)
    both_s = max(timed(lambda: [g.numpy() for g in both()]) - cost, 0.0)
    return forward_s, both_s


def _conv_throughput_keras_tf(keras, tf, say, quick: bool = False) -> list:
    """Keras' Conv2D on TensorFlow (channels last, oneDNN's kernels, whose rates are not the matrix
    products'), forward and backward over :data:`CONVS`, in interleaved rounds; rows as for torch's."""
    timed = _tf_timer()
    shapes = CONVS[:4] if quick else CONVS
    samples: dict = {shape: ([], []) for shape in shapes}
    for _ in range(1 if quick else SWEEP_ROUNDS):
        for shape in shapes:
            batch, cin, side, cout, kernel, stride = shape
            conv = keras.layers.Conv2D(cout, kernel, strides=stride, padding="same")
            x = tf.random.normal((batch, side, side, cin))
            conv.build(x.shape)
            forward, both = _tf_layer_seconds(tf, conv, x, timed)
            samples[shape][0].append(forward)
            samples[shape][1].append(both)
    return [_conv_row(shape, 1, forwards, boths, say, "Keras conv") for shape, (forwards, boths) in samples.items()]


def _keras_tf_per_element_costs(keras, tf, say) -> dict:
    """Seconds per input element of the Keras layers that run as per-element kernels (normalisation,
    activations, dropout, pooling, softmax) on TensorFlow, compiled, forward and backward, in
    interleaved rounds: the kernels :func:`_kernel_throughput` measures for torch."""
    timed = _tf_timer()
    image, rows = (32, 32, 32, 64), (8192, 256)
    L = keras.layers
    makers = {"batch_norm": (L.BatchNormalization, image), "layer_norm": (L.LayerNormalization, rows),
              "relu": (L.ReLU, image), "tanh": (lambda: L.Activation("tanh"), image),
              "dropout": (lambda: L.Dropout(0.1), image),
              "max_pool": (lambda: L.MaxPooling2D(2), image), "avg_pool": (lambda: L.AveragePooling2D(2), image),
              "softmax": (L.Softmax, (image[0] * image[1], image[2], image[3]))}
    samples: dict = {kind: ([], []) for kind in makers}
    for _ in range(SWEEP_ROUNDS):
        for kind, (make, shape) in makers.items():
            layer, x = make(), tf.random.normal(shape)
            layer.build(x.shape)
            forward, both = _tf_layer_seconds(tf, layer, x, timed)
            samples[kind][0].append(forward)
            samples[kind][1].append(both)
    out = {kind: _per_element_row(forwards, boths, math.prod(makers[kind][1]))
           for kind, (forwards, boths) in samples.items()}
    for kind, row in out.items():
        say(f"Keras {kind}: {_per_element_text(row)}")
    return out


def _tf_timer() -> Callable:
    """``timed(fn)``: the median of 7 calls after 10: a compiled function's first calls run slower (a
    compiled training step of one LSTM layer: 5.0-6.4 ms over its first ten calls, 3.3-4.7 ms after)."""
    run = _timer(None, "cpu")
    return lambda fn: run(fn, repeat=7, warmup=10)


def measure_keras_torch(device: str = "cpu", dtypes: tuple = ("float32",), quick: bool = False,
                        progress: Callable[[str], None] | None = None, base: dict | None = None,
                        products: list | None = None) -> dict:
    """A profile for Keras on its torch backend: torch's kernels (:func:`measure`), with the host costs
    and the update Keras adds on top of them.

    Keras runs each layer through its own Python machinery and updates the weights with its own foreach
    optimizer, so the step and per-layer costs come from ``train_on_batch`` of tiny Dense(relu) models
    (update included) and the update from Keras' Adam on large variables; torch's per-module host costs
    and its per-tensor update rows are dropped, and the recurrent layers are measured again as Keras'
    own (which steps through time in Python, re-expanding each step's gradient to the whole sequence).
    ``base``: a torch profile of the same device measured before (its kernels are reused).
    """
    import os

    os.environ["KERAS_BACKEND"] = "torch"
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras was imported with the {keras.backend.backend()} backend; "
                           "set KERAS_BACKEND=torch before importing it")
    profile = copy.deepcopy(base) if base else measure(device, dtypes=dtypes, quick=quick, progress=progress,
                                                        products=products)
    watch, say = _watched(progress)
    profile["kind_overheads"] = {}
    profile.update(framework="keras-torch", overheads_exclude_update=False,
                   framework_version=f"keras {keras.__version__}, torch {torch.__version__}")

    with steady_heap(device != "cuda"):
        profile = _measure_keras_costs(keras, torch, device, dtypes, quick, say, profile)
    return _with_machine(profile, watch)


def _keras_conv(keras, device: str) -> Callable:
    """Keras' Conv2D on torch, channels last: it hands torch a channels-first copy of its input and
    adds the bias in an operation of its own."""
    def make(cin: int, cout: int, kernel: int, stride: int, dtype) -> tuple:
        with keras.device(device):
            conv = keras.layers.Conv2D(cout, kernel, strides=stride, padding="same", dtype=_dtype_name(dtype))
            conv.build((None, None, None, cin))
        return conv, True
    return make


def _dtype_name(dtype) -> str:
    """torch.float32 -> "float32", the name Keras takes."""
    return str(dtype).split(".")[-1]


def _keras_per_element_costs(keras, torch, device: str, dtypes: tuple, say) -> dict:
    """Keras' BatchNormalization (built from elementwise operations on torch) and pooling (with its
    layout changes), per input element, channels last, as :func:`_kernel_throughput` measures torch's."""
    image = (128, 64, 64, 64) if device == "cuda" else (32, 32, 32, 64)

    def layer(make):
        def built(dtype):
            # 16 bits as mixed precision trains: Keras' mixed policy (32-bit variables, 16-bit compute)
            name = ("mixed_" if dtype in (torch.float16, torch.bfloat16) else "") + _dtype_name(dtype)
            with keras.device(device):
                made = make(name)
                made.build((None,) + image[1:])
            return lambda x: made(x, training=True)
        return built
    makers = {"batch_norm": (layer(lambda d: keras.layers.BatchNormalization(dtype=d)), image),
              "max_pool": (layer(lambda d: keras.layers.MaxPooling2D(2, dtype=d)), image),
              "avg_pool": (layer(lambda d: keras.layers.AveragePooling2D(2, dtype=d)), image)}
    return _per_element_costs(torch, device, dtypes, say, makers)


def _measure_keras_costs(keras, torch, device: str, dtypes: tuple, quick: bool, say, profile: dict) -> dict:
    """What Keras on torch puts in ``profile`` (a torch profile's copy): step and layer host costs, its
    Adam, its own convolutions, batch norm and pooling, its recurrent layers."""
    def timed(fn, repeat: int) -> float:
        return _timer(torch, device)(fn, repeat, warmup=2)

    say.plan(list(KERAS_TORCH_STAGES))
    say.stage("training steps")
    counts, times = [1, 2, 4, 8, 16], []
    with keras.device(device):
        x, y = torch.randn(16, 16, device=device), torch.randn(16, 16, device=device)
        for n in counts:
            model = keras.Sequential([keras.Input((16,))] + [keras.layers.Dense(16, activation="relu")
                                                             for _ in range(n)])
            model.compile(optimizer="adam", loss="mse")
            times.append(timed(lambda: model.train_on_batch(x, y), 20))
            say(f"Keras train_on_batch with {n} Dense(relu) layers: {times[-1] * 1e6:.0f} us")
        profile.update(_step_and_layer_costs(counts, times))
        say.stage("optimizer updates")
        total = (2**24 if device == "cuda" else 2**22) // (4 if quick else 1)
        variables = [keras.Variable(torch.randn(total // 8, device=device)) for _ in range(8)]
        sources = [torch.randn(total // 8, device=device) for _ in range(8)]
        grads = list(sources)

        def fresh_gradients():  # as each backward makes them, as for torch's optimizers
            grads[:] = [g.clone() for g in sources]
        optimizer = keras.optimizers.Adam()
        run = _timer(torch, device)
        # the median of rounds: one calibration's figure (2.05 ns per parameter) was 1.5x the next one's
        seconds = statistics.median(run(lambda: optimizer.apply(grads, variables), 10, 2, fresh_gradients)
                                    for _ in range(1 if quick else SWEEP_ROUNDS))
    profile["optimizers"] = {"adam": {"seconds_per_param": seconds / total, "params": total}}
    say(f"Keras adam update: {seconds / total * 1e9:.3f} ns per parameter")

    say.stage("convolutions")
    keras_convs = _conv_throughput(torch, device, dtypes, say, quick, _keras_conv(keras, device))
    profile.setdefault("convs", {}).update(keras_convs)
    profile["own_layers"] = ["conv", "batch_norm", "max_pool", "avg_pool"]  # timed as Keras' own layers
    say.stage("per-element kernels")
    for dtype_name, table in _keras_per_element_costs(keras, torch, device, dtypes, say).items():
        profile.setdefault("kernels", {}).setdefault(dtype_name, {}).update(table)

    def keras_layer(cell: str, features: int, hidden: int):
        with keras.device(device):
            layer = getattr(keras.layers, cell.upper())(hidden, return_sequences=True)
            layer.build((None, None, features))
        return layer
    say.stage("recurrent layers")
    profile["recurrent"] = _recurrent_throughput(torch, device, say, quick, keras_layer)
    say.stage("saved tensors")
    profile["recurrent_memory"] = _recurrent_memory_torch(torch, device, keras_layer, say)
    return profile
