"""Where a training step's time goes on a GPU, kernel by kernel (torch.profiler), for a few zoo
models: data for refining the step-time model's decomposition, not a benchmark.

    python benchmarks/gpu_profile.py --out profile.json [--only cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo  # noqa: E402
from train_measure import batch_for  # noqa: E402

PROFILED = ["seed_reshaped_flatten_20020", "seed_reshaped_20020", "mlp_w4096_b32", "cnn_b256", "lstm",
            "transformer"]


def profile(cfg: dict, amp: str | None, steps: int = 5) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    x, y = batch_for(cfg, "cuda", torch)
    with torch.device("cuda"):
        model = zoo.build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss() if cfg["task"] == "classification" else torch.nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=getattr(torch, amp or "bfloat16"), enabled=amp is not None):
            out = model(x)
        loss_fn(out.float(), y).backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        device_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        rows.append({"name": e.key, "count": e.count, "cpu_us": e.cpu_time_total, "self_cpu_us": e.self_cpu_time_total,
                     "device_us": device_us})
    rows.sort(key=lambda r: -r["device_us"])
    torch.cuda.empty_cache()
    return {"model": cfg["name"], "amp": amp, "steps": steps, "ops": rows[:60]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    configs = {c["name"]: c for c in zoo.configs("gpu")}
    results = []
    for name in PROFILED:
        if args.only not in name:
            continue
        for amp in (None, "bfloat16"):
            try:
                results.append(profile(configs[name], amp))
                top = results[-1]["ops"][:3]
                print(name, amp or "-", [(r["name"][:40], round(r["device_us"] / 5)) for r in top], flush=True)
            except Exception as err:
                results.append({"model": name, "amp": amp, "error": f"{type(err).__name__}: {str(err)[:300]}"})
                print(name, amp, "error", err, flush=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
