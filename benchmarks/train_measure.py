"""Train the zoo for real and record step time and peak memory, with Adam, on CPU or CUDA (torch).

    python benchmarks/train_measure.py --device cuda --out results.json [--only seed] [--steps 20]

Step time: the median of ``--steps`` timed steps after warm-up, each step forward + backward + Adam
update, synchronised on CUDA. Peak memory on CUDA: torch.cuda.max_memory_allocated over the timed steps
minus what was allocated before the model was built (the input batch stays outside both). On CPU each
model runs in a fresh process and peak memory is the rise of the process's peak resident set over its
value after the batch was made (ru_maxrss; allocator overheads included, so an upper bound).
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
import zoo  # noqa: E402


def batch_for(cfg: dict, device: str, torch):
    shape = (cfg["batch"],) + tuple(cfg["input_shape"])
    if cfg["input_dtype"] == "int64":
        x = torch.randint(0, cfg["args"].get("vocab", 100), shape, device=device)
    else:
        x = torch.randn(shape, device=device)
    if cfg["task"] == "classification":
        y = torch.randint(0, cfg["classes"], (cfg["batch"],), device=device)
    elif cfg["task"] == "regression_per_position":
        y = torch.randn((cfg["batch"], cfg["input_shape"][0], 1), device=device)
    else:
        y = torch.randn((cfg["batch"], 1), device=device)
    return x, y


def _warm_up_cpu(torch) -> None:
    """One tiny training step of every layer type in the zoo, so that the process's resident set
    already holds torch's kernels before the baseline is read."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    opt.step()
    lstm, emb = nn.LSTM(4, 4, batch_first=True), nn.Embedding(10, 4)
    enc = nn.TransformerEncoderLayer(4, 2, 8, batch_first=True)
    out = enc(lstm(emb(torch.randint(0, 10, (2, 3))))[0]).mean()
    out.backward()
    torch.nn.functional.cross_entropy(torch.randn(2, 3, requires_grad=True), torch.tensor([0, 1])).backward()


def measure(cfg: dict, device: str, steps: int, warmup: int, amp: str | None = None) -> dict:
    import torch

    torch.manual_seed(0)
    if device != "cuda":
        _warm_up_cpu(torch)  # load the kernels first: their code pages are no training memory
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
    loss_fn = torch.nn.CrossEntropyLoss() if cfg["task"] == "classification" else torch.nn.MSELoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        if amp:
            with torch.autocast(device_type=device, dtype=getattr(torch, amp)):
                out = model(x)
        else:
            out = model(x)
        loss = loss_fn(out.float(), y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    q = statistics.quantiles(times, n=10) if len(times) >= 10 else [min(times), max(times)]
    return {"config": cfg, "amp": amp, "params": params, "step_s": statistics.median(times), "p10_s": q[0],
            "p90_s": q[-1], "steps": steps, "peak_bytes": peak, "device": device, "times_s": times,
            "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="", help="names containing this text")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--amp", default="", help="also run under autocast with this dtype (e.g. bfloat16)")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: one config, print JSON
    args = parser.parse_args()
    where = "gpu" if args.device == "cuda" else "cpu"
    configs = [c for c in zoo.configs(where) if args.only in c["name"]]
    if args.one:
        cfg = next(c for c in zoo.configs(where) if c["name"] == args.one)
        print(json.dumps(measure(cfg, args.device, args.steps, args.warmup, args.amp or None)))
        return
    results = []
    for cfg in configs:
        variants = [None] + ([args.amp] if args.amp and args.device == "cuda" else [])
        for amp in variants:
            try:
                if args.device == "cuda":
                    result = measure(cfg, args.device, args.steps, args.warmup, amp)
                else:  # a fresh process per model, so that peak RSS is this model's
                    out = subprocess.run([sys.executable, __file__, "--device", "cpu", "--out", "-",
                                          "--one", cfg["name"], "--steps", str(args.steps),
                                          "--warmup", str(args.warmup)], capture_output=True, text=True,
                                         check=True)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
            except Exception as err:  # record and go on: one model must not sink the run
                result = {"config": cfg, "amp": amp, "error": f"{type(err).__name__}: {str(err)[:300]}"}
            results.append(result)
            step = result.get("step_s")
            print(f"{cfg['name']:<28} amp={amp or '-':<9} "
                  + (f"{step * 1e3:9.3f} ms/step  peak {result['peak_bytes'] / 2**20:9.1f} MiB" if step
                     else result.get("error", "")), flush=True)
            if args.device == "cuda":
                import torch

                torch.cuda.empty_cache()
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
