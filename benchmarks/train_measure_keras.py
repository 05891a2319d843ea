"""Train Keras versions of the zoo (seed models, MLPs, the CNN, an LSTM) and record step time (median of
``train_on_batch`` steps after warm-up; with ``--rounds``, the median of whole-zoo rounds) and peak memory, on the TensorFlow backend (CPU) or the torch
backend (CPU or CUDA).

    python benchmarks/train_measure_keras.py --out results.json                      # TensorFlow, CPU
    python benchmarks/train_measure_keras.py --backend torch [--device cuda] --out results.json

Peak memory on TensorFlow (CPU), where it runs oneDNN (by default on CPUs with AVX-512 VNNI/BF16 or AMX):
its oneDNN allocator serves requests of 256 KiB and more from a pool
(whose own statistics count whole chunks, not what was asked for) and smaller ones from malloc. One
untimed step runs under TensorFlow's profiler, whose allocation events carry the bytes each large
request asked for: their highest running sum is the pool's peak. The small ones are counted at malloc by
benchmarks/heapcount.c (preloaded into each child; the pool's chunks are in place after warm-up, so the
count sees no large ones) over three further untimed steps: the median rise; it counts nothing while the
steps are timed, since its counting slows allocation-heavy steps (the LSTM's 2.3x; measurements before
run 14 were timed counted). The two peaks need not coincide,
so ``peak_bytes`` is the variables and optimizer slots plus both rises (an upper bound) and
``peak_bytes_low`` the same with only the larger rise (a lower bound); the resident set's rise is kept
as ``rss_peak_bytes``. Without oneDNN (CPUs with AVX2 only, or ``TF_ENABLE_ONEDNN_OPTS=0``) its plain
allocator serves every request and its events are one timeline: ``peak_bytes`` is the variables and
slots plus their rise, exact (``allocation_source`` says which). On the torch backend it is measured as benchmarks/train_measure.py does: on CUDA
``torch.cuda.max_memory_allocated`` over the timed steps minus what was allocated before the model was
built; on a CPU the variables alive before one more step plus the highest running sum of torch's
allocator events during it (the input batch excluded in both).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import heapcount  # noqa: E402

from paramcalc.calibration.sweeps import tf_allocations  # noqa: E402

CONFIGS = [
    {"name": "keras_seed_flat_2000", "variant": "flat", "features": 2000, "batch": 128},
    {"name": "keras_seed_flat_20020", "variant": "flat", "features": 20020, "batch": 128},
    {"name": "keras_seed_reshaped_flatten_500", "variant": "reshaped_flatten", "features": 500, "batch": 128},
    {"name": "keras_seed_reshaped_flatten_2000", "variant": "reshaped_flatten", "features": 2000, "batch": 128},
    {"name": "keras_seed_reshaped_500", "variant": "reshaped", "features": 500, "batch": 128},
    {"name": "keras_mlp_w512_b128", "variant": "mlp", "features": 256, "width": 512, "batch": 128},
    {"name": "keras_mlp_w1024_b512", "variant": "mlp", "features": 256, "width": 1024, "batch": 512},
    {"name": "keras_cnn_b16", "variant": "cnn", "batch": 16},
    {"name": "keras_lstm", "variant": "lstm", "batch": 32},
]


def build(cfg: dict):
    import keras

    L = keras.layers
    if cfg["variant"] == "cnn":  # the torch zoo's CNN, channels last
        c = 32
        layers = [keras.Input((32, 32, 3))]
        for filters, pool in ((c, False), (c, True), (2 * c, False), (2 * c, True), (4 * c, False)):
            layers += [L.Conv2D(filters, 3, padding="same"), L.BatchNormalization(), L.ReLU()]
            if pool:
                layers.append(L.MaxPooling2D(2))
        layers += [L.GlobalAveragePooling2D(), L.Dense(10)]
        return keras.Sequential(layers), (32, 32, 3)
    if cfg["variant"] == "lstm":
        return keras.Sequential([keras.Input((32, 32)), L.LSTM(64, return_sequences=True), L.LSTM(64),
                                 L.Dense(1)]), (32, 32)
    if cfg["variant"] == "mlp":
        layers = [keras.Input((cfg["features"],))] + [L.Dense(cfg["width"], activation="relu") for _ in range(4)]
        return keras.Sequential(layers + [L.Dense(10)]), (cfg["features"],)
    shape = (cfg["features"],) if cfg["variant"] == "flat" else (cfg["features"], 1)
    layers = [keras.Input(shape), L.Dense(300, activation="relu")]
    if cfg["variant"] == "reshaped_flatten":
        layers.append(L.Flatten())
    layers += [L.Dense(300, activation="relu"), L.Dense(100, activation="relu"), L.Dense(1)]
    return keras.Sequential(layers), shape


# A compiled step settles after about ten calls: on the development CPU the fifth to tenth steps ran
# 10-25% slower than the eleventh to fiftieth (the LSTM 7.2-8.5 ms against 6.2-7.5, the 512-wide MLP
# 5.4-6.8 against 4.6-5.3), and training runs thousands.
COMPILED_WARMUP_STEPS = 10


def measure(cfg: dict, steps: int, backend: str = "tensorflow", device: str = "cpu",
            amp: str | None = None) -> dict:
    os.environ["KERAS_BACKEND"] = backend
    if backend == "torch":
        return _measure_torch_backend(cfg, steps, device)
    import keras
    import numpy as np
    import tensorflow as tf

    if amp:  # Keras' mixed precision: 32-bit variables, 16-bit compute (its norms compute in 32 bits)
        keras.config.set_dtype_policy(f"mixed_{amp}")

    counter = heapcount.attach()
    if counter is None:
        raise RuntimeError("run through main(), which preloads benchmarks/heapcount.c to count small allocations")
    counter.set_counting(False)  # until the memory steps: counted, the LSTM's step ran 2.3x slower
    warm = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    warm.compile(optimizer="adam", loss="mse")
    warm.train_on_batch(np.zeros((2, 4), "float32"), np.zeros((2, 1), "float32"))
    model, shape = build(cfg)
    # tensors made once, before any baseline: the steps then copy no input
    x = tf.constant(np.random.randn(cfg["batch"], *shape).astype("float32"))
    y = tf.constant(np.random.randn(cfg["batch"], *tuple(model.output_shape[1:])).astype("float32"))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model.compile(optimizer="adam", loss="mse")
    for _ in range(COMPILED_WARMUP_STEPS):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    alive = _variable_bytes(model.variables) + _variable_bytes(model.optimizer.variables)
    allocations = tf_allocations(tf, lambda: model.train_on_batch(x, y))
    pool_rise, pool_events = allocations.rise, allocations.events
    small_rises = []
    counter.set_counting(True)
    for _ in range(3):
        counter.reset_peak()
        model.train_on_batch(x, y)
        small_rises.append(counter.peak() - counter.live_at_reset)
    small_rise = int(statistics.median(small_rises))  # the first step after the profiler's may carry its leftovers
    if allocations.source == "cpu_allocator":  # TensorFlow's own allocator saw every request: one timeline
        peak, low = alive + pool_rise, alive + pool_rise
    else:
        peak, low = alive + pool_rise + small_rise, alive + max(pool_rise, small_rise)
    return {"config": cfg, "amp": amp, "params": model.count_params(), "step_s": statistics.median(times),
            "times_s": times, "allocation_source": allocations.source,
            "peak_bytes": peak, "peak_bytes_low": low,
            "variable_bytes": alive, "pool_rise_bytes": pool_rise, "small_rise_bytes": small_rise,
            "pool_events": pool_events, "rss_peak_bytes": rss, "device": "cpu", "framework": "keras",
            "keras": keras.__version__, "tensorflow": tf.__version__}


def _variable_bytes(variables) -> int:
    import numpy as np

    return sum(math.prod(int(d) for d in v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def _measure_torch_backend(cfg: dict, steps: int, device: str) -> dict:
    import keras
    import torch
    import train_measure

    with keras.device(device):
        model, shape = build(cfg)
        x = torch.randn((cfg["batch"],) + shape, device=device)
        y = torch.randn((cfg["batch"],) + tuple(model.output_shape[1:]), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() - x.nbytes - y.nbytes - _storage_bytes(model.variables)
    model.compile(optimizer="adam", loss="mse")

    def step():
        model.train_on_batch(x, y)
        if device == "cuda":
            torch.cuda.synchronize()
    for _ in range(3):
        step()
    times, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    extra = {}
    if device != "cuda":  # fresh pages touched per step, as train_measure.py records them for torch
        extra["paged_in_bytes"] = int(statistics.median(faults)) * os.sysconf("SC_PAGE_SIZE")
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base - x.nbytes - y.nbytes
    else:  # drop the last step's gradients first: their frees would not be recorded
        model.zero_grad(set_to_none=True)
        before = _storage_bytes(model.variables) + _storage_bytes(model.optimizer.variables)
        peak = train_measure.allocator_peak_of(torch, before, step)
    return {"config": cfg, "params": model.count_params(), "step_s": statistics.median(times), "times_s": times,
            "peak_bytes": peak, "device": device, "framework": "keras-torch", "keras": keras.__version__,
            "torch": torch.__version__, **extra}


def _storage_bytes(variables) -> int:
    return sum(v.value.untyped_storage().nbytes() for v in variables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "torch"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: torch backend only")
    parser.add_argument("--rounds", type=int, default=1, help="measure the whole zoo this many times; "
                        "step time is the median of the rounds' medians")
    parser.add_argument("--only", default="", help="names containing this text")
    parser.add_argument("--amp", default="", help="TensorFlow: train under Keras' mixed policy of this dtype "
                        "(e.g. bfloat16) instead of float32")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.amp and args.backend != "tensorflow":
        parser.error("--amp: the mixed policy is measured on TensorFlow only")
    if args.one:
        cfg = next(c for c in CONFIGS if c["name"] == args.one)
        print(json.dumps(measure(cfg, args.steps, args.backend, args.device, args.amp or None)))
        return
    results: dict = {}
    env = heapcount.preload_env() if args.backend == "tensorflow" else None
    for round_ in range(args.rounds):  # whole-zoo rounds: a busy moment of the machine hits one round
        for cfg in [c for c in CONFIGS if args.only in c["name"]]:
            try:
                out = subprocess.run([sys.executable, __file__, "--out", "-", "--one", cfg["name"], "--steps",
                                      str(args.steps), "--backend", args.backend, "--device", args.device,
                                      "--amp", args.amp],
                                     capture_output=True, text=True, check=True, env=env)
                result = json.loads(out.stdout.strip().splitlines()[-1])
            except Exception as err:
                detail = getattr(err, "stderr", "") or str(err)  # a child's traceback ends its stderr
                result = {"config": cfg, "error": f"{type(err).__name__}: {detail[-300:]}"}
            kept = results.setdefault(cfg["name"], result)  # memory: the first round's
            if "step_s" in result:
                kept.setdefault("round_step_s", []).append(result["step_s"])
            print(f"round {round_ + 1} {cfg['name']:<34} " +
                  (f"{result['step_s'] * 1e3:9.2f} ms/step  peak {result['peak_bytes'] / 2**20:8.1f} MiB"
                   if "step_s" in result else result["error"]), flush=True)
    for result in results.values():  # the median of the rounds' medians
        if result.get("round_step_s"):
            result["step_s"] = statistics.median(result["round_step_s"])
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(list(results.values()), handle, indent=1)


if __name__ == "__main__":
    main()
