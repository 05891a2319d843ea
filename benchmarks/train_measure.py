"""Train the zoo for real and record step time and peak memory, with Adam, on CPU or CUDA (torch).

    python benchmarks/train_measure.py --device cuda --out results.json [--only seed] [--steps 20]

Step time: the median of ``--steps`` timed steps after warm-up, each step forward + backward + Adam
update, synchronised on CUDA. Peak memory on CUDA: torch.cuda.max_memory_allocated over the timed steps
minus what was allocated before the model was built (the input batch stays outside both). On CPU, where
torch keeps no allocator statistics, one more (untimed) step runs under torch.profiler with
profile_memory=True: every allocation and free of torch's CPU allocator is recorded, and the peak is the
tensors alive before the step (weights, buffers, optimizer state: the step starts by dropping the
gradients) plus the highest running sum of the recorded allocations. That is what
max_memory_allocated measures on CUDA. The process's resident-set rise (ru_maxrss over its value after
the batch was made; each CPU model runs in a fresh process) is recorded too, as ``rss_peak_bytes``: it
adds the code pages of the kernels the first steps load, the C library's and oneDNN's caching, and never
falls, so it is an upper bound. On CPUs the minor page faults of each timed step (median, in bytes:
``paged_in_bytes``, the update's share in ``update_paged_in_bytes``) measure the fresh pages the step
touched, which the step-time model prices as ``paged_in_seconds``; where the timed steps left glibc's
mmap threshold is recorded beside them (``mmap_threshold_bytes``: twice it, the trim threshold, decides
which blocks churn). With ``--steady-heap`` each CPU model is measured again in a fresh process with
glibc's heap held steady (``steady_step_s``, ``steady_paged_in_bytes``): the step without the heap's
page churn, which depends on what the process allocated before and moves small models' steps up to
2.5x; ``validate.py`` compares it with the prediction less that churn.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import zoo  # noqa: E402

from paramcalc.calibration import sweeps as calibrate  # noqa: E402  (no framework: torch is imported where it measures)
from paramcalc.calibration.heap import mmap_threshold  # noqa: E402


def batch_for(cfg: dict, device: str, torch):
    shape = (cfg["batch"],) + tuple(cfg["input_shape"])
    if cfg["input_dtype"] == "int64":
        x = torch.randint(0, cfg["args"].get("vocab", 100), shape, device=device)
    else:
        x = torch.randn(shape, device=device)
    if cfg["task"] == "classification":
        y = torch.randint(0, cfg["classes"], (cfg["batch"],), device=device)
    elif cfg["task"] == "language_model":  # the next token at every position
        y = torch.randint(0, cfg["args"]["vocab"], shape, device=device)
    elif cfg["task"] == "regression_per_position":
        y = torch.randn((cfg["batch"], cfg["input_shape"][0], 1), device=device)
    else:
        y = torch.randn((cfg["batch"], 1), device=device)
    return x, y


def measure(cfg: dict, device: str, steps: int, warmup: int, amp: str | None = None) -> dict:
    import torch

    # No warm-up of other layers before the model is built: the blocks a tiny step of each leaves in the
    # heap serve the model's steps later and change which blocks the heap hands back (docs/accuracy.md).
    # A user's process builds its model, then trains.
    torch.manual_seed(0)
    x, y = batch_for(cfg, device, torch)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.device(device):  # built where it trains: a 1.8 B-parameter model never touches the host
        model = zoo.build(cfg)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss() if cfg["task"] in ("classification", "language_model") else torch.nn.MSELoss()

    # oneDNN lacks the 16-bit LSTM on AVX2-only CPUs: torch's own kernels run it there (recorded)
    lstm_path = (calibrate.cpu_lstm_path_under_autocast(torch, getattr(torch, amp)) if amp and device == "cpu"
                 else "default")

    def passes():
        optimizer.zero_grad(set_to_none=True)
        if amp:
            with torch.autocast(device_type=device, dtype=getattr(torch, amp)), \
                    calibrate.cpu_lstm_context(torch, "onednn" if lstm_path == "default" else lstm_path):
                out = model(x)
        else:
            out = model(x)
        loss = loss_fn(out.float().flatten(0, 1), y.flatten()) if cfg["task"] == "language_model" else loss_fn(out.float(), y)
        loss.backward()

    def step():
        passes()
        optimizer.step()

    for _ in range(warmup):
        step()
    times, faults, update_faults = [], [], []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        passes()
        between = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        update_faults.append(faults[-1] - (between - before))
    extra = {}
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        extra["rss_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        # fresh pages touched per step: what the allocator handed back to the kernel and took again
        page = os.sysconf("SC_PAGE_SIZE")
        extra["paged_in_bytes"] = int(statistics.median(faults)) * page
        extra["update_paged_in_bytes"] = int(statistics.median(update_faults)) * page  # of which, the update
        # where the steps left glibc's mmap threshold, read once they are timed: reading it allocates,
        # and the room that leaves in the heap changes which blocks the next steps hand back
        extra["mmap_threshold_bytes"] = mmap_threshold()
        optimizer.zero_grad(set_to_none=True)
        peak = allocator_peak(torch, [model, optimizer], step)
    q = statistics.quantiles(times, n=10) if len(times) >= 10 else [min(times), max(times)]
    return {"config": cfg, "amp": amp, "params": params, "step_s": statistics.median(times), "p10_s": q[0],
            "p90_s": q[-1], "steps": steps, "peak_bytes": peak, "device": device, "times_s": times,
            "torch": torch.__version__, "lstm_path": lstm_path, **extra}


def _alive_bytes(torch, model, optimizer) -> int:
    """Bytes of the distinct storages held by the model (weights, buffers, gradients) and the optimizer."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def allocator_peak(torch, owners, step) -> int:
    """Peak bytes of torch's CPU allocator during one ``step``: the storages alive before it plus the
    highest running sum of the allocations and frees the profiler records while it runs."""
    model, optimizer = owners
    return allocator_peak_of(torch, _alive_bytes(torch, model, optimizer), step)


def allocator_peak_of(torch, before: int, step) -> int:
    """``before`` (bytes alive when ``step`` starts) plus the highest running sum of torch's CPU
    allocator events (allocations, and frees as negative sizes) while ``step`` runs."""
    from paramcalc.calibration.sweeps import peak_rise

    return before + peak_rise(torch, "cpu", step)


# glibc's heap held steady for a whole process, as calibrate.steady_heap holds it: blocks under 32 MiB
# stay in the heap, which is trimmed only past 2 GiB free
STEADY_HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(calibrate.GLIBC_MMAP_THRESHOLD_MAX),
                   "MALLOC_TRIM_THRESHOLD_": str(calibrate.STEADY_TRIM_THRESHOLD)}


def _measure_in_child(cfg: dict, steps: int, warmup: int, env: dict | None = None, amp: str | None = None) -> dict:
    """One model measured on the CPU in a fresh process (with ``env`` added to its environment)."""
    out = subprocess.run([sys.executable, __file__, "--device", "cpu", "--out", "-", "--one", cfg["name"],
                          "--steps", str(steps), "--warmup", str(warmup), "--amp", amp or ""],
                         capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="", help="names containing this text")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--amp", default="", help="also run under autocast with this dtype (e.g. bfloat16)")
    parser.add_argument("--rounds", type=int, default=1, help="measure the whole zoo this many times; "
                        "step time is the median of the rounds' medians")
    parser.add_argument("--steady-heap", action="store_true",
                        help="CPU: also measure each model with glibc's heap held steady (MALLOC_MMAP_THRESHOLD_ "
                             "and MALLOC_TRIM_THRESHOLD_ set high), as steady_step_s: the step without the "
                             "heap's page churn, which validate.py compares with the prediction less it")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: one config, print JSON
    args = parser.parse_args()
    where = "gpu" if args.device == "cuda" else "cpu"
    configs = [c for c in zoo.configs(where) if args.only in c["name"]]
    if args.one:
        cfg = next(c for c in zoo.configs(where) if c["name"] == args.one)
        print(json.dumps(measure(cfg, args.device, args.steps, args.warmup, args.amp or None)))
        return
    results = {}
    for round_ in range(args.rounds):  # whole-zoo rounds: a busy moment of the machine hits one round
        for cfg in configs:
            variants = [None] + ([args.amp] if args.amp else [])
            for amp in variants:
                try:
                    if args.device == "cuda":
                        result = measure(cfg, args.device, args.steps, args.warmup, amp)
                    else:  # a fresh process per model, so that peak RSS is this model's
                        result = _measure_in_child(cfg, args.steps, args.warmup, amp=amp)
                        if args.steady_heap:
                            # without the churn, a fresh process's first ten steps ran 1.5-2x slower
                            # than the rest (mlp_w512_b16: 4.3 ms, then 2.1-2.4)
                            steady = _measure_in_child(cfg, args.steps, max(args.warmup, 10), STEADY_HEAP_ENV, amp)
                            result["steady_step_s"] = steady["step_s"]
                            result["steady_paged_in_bytes"] = steady["paged_in_bytes"]
                except Exception as err:  # record and go on: one model must not sink the run
                    result = {"config": cfg, "amp": amp, "error": f"{type(err).__name__}: {str(err)[:300]}"}
                key = (cfg["name"], amp)
                if "step_s" not in results.get(key, {}):  # the first round that measured it
                    results[key] = result
                if "step_s" in result:
                    results[key].setdefault("round_step_s", []).append(result["step_s"])
                    if "paged_in_bytes" in result:  # a round that paged in while another did not tells churn
                        results[key].setdefault("round_paged_in_bytes", []).append(result["paged_in_bytes"])
                if "steady_step_s" in result:
                    results[key].setdefault("steady_round_step_s", []).append(result["steady_step_s"])
                step = result.get("step_s")
                print(f"round {round_ + 1} {cfg['name']:<28} amp={amp or '-':<9} "
                      + (f"{step * 1e3:9.3f} ms/step  peak {result['peak_bytes'] / 2**20:9.1f} MiB" if step
                         else result.get("error", "")), flush=True)
                if args.device == "cuda":
                    import torch

                    torch.cuda.empty_cache()
    for result in results.values():  # the median of the rounds' medians
        if result.get("round_step_s"):
            result["step_s"] = statistics.median(result["round_step_s"])
        if result.get("steady_round_step_s"):
            result["steady_step_s"] = statistics.median(result["steady_round_step_s"])
    results = list(results.values())
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
