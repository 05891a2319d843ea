"""Predicted against measured training: step time and peak memory for the zoo, from stored
measurements (benchmarks/results/*_train_*.json) and the calibration of the same device.

    python benchmarks/validate.py benchmarks/results/h100_train_torch.json \
        benchmarks/results/h100_calibration_torch.json [--json out.json]

Each model is rebuilt on torch's meta device (nothing allocated) and estimated by paramcalc; the
measured peak memory excludes the input batch, so the prediction is compared without it too.
Prints the table and the median, 90th-percentile and worst absolute errors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import zoo  # noqa: E402

import paramcalc  # noqa: E402
from paramcalc.cost.devices import from_calibration  # noqa: E402
from paramcalc.cost.training import training_cost  # noqa: E402


def predict(cfg: dict, profile, amp: str | None, framework: str = "torch"):
    if framework in ("keras", "keras-torch"):  # read from their config: never built for a prediction
        import train_measure_keras

        model, shape = train_measure_keras.build(cfg)
        est = paramcalc.estimate(model.get_config(), input_shape=shape, batch_size=cfg["batch"])
        if framework == "keras-torch":  # torch's kernels, Keras' own update
            profile = replace(profile, framework="keras-torch")
    else:
        import torch

        with torch.device("meta"):
            model = zoo.build(cfg)
        est = paramcalc.estimate(model, input_shape=tuple(cfg["input_shape"]), batch_size=cfg["batch"])
    precision = {None: "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[amp]
    # the loss train_measure.py trains a torch model with (Keras computes its own inside the step)
    loss = None if framework != "torch" else (
        "cross_entropy" if cfg["task"] in ("classification", "language_model") else "mse")
    return est, training_cost(est, optimizer="adam", precision=precision, device=profile, loss=loss)


def error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured


def summary(errors: list[float]) -> str:
    a = sorted(abs(e) for e in errors)
    if not a:
        return "no data"
    p90 = a[min(len(a) - 1, int(round(0.9 * (len(a) - 1))))]
    return f"median {statistics.median(a) * 100:.1f}%, p90 {p90 * 100:.1f}%, worst {a[-1] * 100:.1f}% (n={len(a)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("measured")
    parser.add_argument("calibration")
    parser.add_argument("--json", default="")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (for docs/)")
    args = parser.parse_args()
    measured = json.load(open(args.measured, encoding="utf-8"))
    profile = from_calibration(json.load(open(args.calibration, encoding="utf-8")))
    print(f"device: {profile.name} ({profile.source}); framework {profile.framework}, Adam")
    print(f"{'model':<28}{'amp':<10}{'measured ms':>12}{'predicted':>11}{'err':>8}"
          f"{'meas MiB':>11}{'pred MiB':>11}{'err':>8}   rounds ms")
    time_errors, memory_errors, rows = [], [], []
    for m in measured:
        if "step_s" not in m:
            print(f"{m['config']['name']:<28}{m.get('amp') or '-':<10} not measured: {m.get('error')}")
            continue
        est, cost = predict(m["config"], profile, m.get("amp"), m.get("framework", "torch"))
        peak = cost.memory.peak - cost.memory.input_batch
        te, me = error(cost.step_seconds, m["step_s"]), error(peak, m["peak_bytes"])
        time_errors.append(te)
        memory_errors.append(me)
        rows.append({"model": m["config"]["name"], "amp": m.get("amp"), "measured_step_s": m["step_s"],
                     "predicted_step_s": cost.step_seconds, "step_error": te, "measured_peak_bytes": m["peak_bytes"],
                     "predicted_peak_bytes": peak, "peak_error": me, "params": est.params,
                     "measured_paged_in_bytes": m.get("paged_in_bytes"),
                     "predicted_paged_in_bytes": cost.paged_in_bytes if profile.page_fault_s_per_byte else None})
        rounds = sorted(m.get("round_step_s") or [m["step_s"]])
        rows[-1]["measured_round_step_s"] = rounds
        # the rounds are fresh processes: their spread is what the machine alone moves a step by
        print(f"{m['config']['name']:<28}{m.get('amp') or '-':<10}{m['step_s'] * 1e3:12.3f}"
              f"{cost.step_seconds * 1e3:11.3f}{te * 100:7.1f}%{m['peak_bytes'] / 2**20:11.1f}"
              f"{peak / 2**20:11.1f}{me * 100:7.1f}%   rounds {rounds[0] * 1e3:.3f}-{rounds[-1] * 1e3:.3f}")
    print(f"step time error: {summary(time_errors)}")
    wide = [r for r in rows if len(r["measured_round_step_s"]) > 1
            and r["measured_round_step_s"][-1] > 1.25 * r["measured_round_step_s"][0]]
    if wide:  # where the machine alone moved a step more than the goal allows a prediction
        print("rounds spread over 25% (slowest / fastest): " + ", ".join(
            f"{r['model']} {r['measured_round_step_s'][-1] / r['measured_round_step_s'][0]:.2f}x"
            + ("" if r["measured_round_step_s"][0] <= r["predicted_step_s"] <= r["measured_round_step_s"][-1]
               else " (prediction outside)") for r in wide))
    print(f"peak memory error: {summary(memory_errors)}")
    steady = [m for m in measured if "steady_step_s" in m]
    if steady:  # measured with glibc's heap held steady: against the prediction without the heap's churn
        quiet = replace(profile, page_churn=((1, 0.0),))  # heap blocks never handed back: no cost
        errors = [error(predict(m["config"], quiet, m.get("amp"), m.get("framework", "torch"))[1].step_seconds,
                        m["steady_step_s"]) for m in steady]
        print("with glibc's heap held steady, measured ms / predicted without its churn: " + ", ".join(
            f"{m['config']['name']} {m['steady_step_s'] * 1e3:.3f}/{e * 100:+.1f}%" for m, e in zip(steady, errors)))
        print(f"steady-heap step time error: {summary(errors)}")
    paged = [(r["model"], r["measured_paged_in_bytes"], r["predicted_paged_in_bytes"]) for r in rows
             if r["measured_paged_in_bytes"] is not None and r["predicted_paged_in_bytes"] is not None]
    if paged:  # the CPU's fresh pages per step: minor faults measured, the model's paged-in blocks
        rounds = {m["config"]["name"]: m["round_paged_in_bytes"] for m in measured if m.get("round_paged_in_bytes")}
        print("fresh pages per step, MiB measured (the first round; every round's where they differ) / predicted: " +
              ", ".join(f"{name} {m / 2**20:.1f}"
                        + (f" ({', '.join(f'{r / 2**20:.1f}' for r in rounds[name])})"
                           if len(set(rounds.get(name, ()))) > 1 else "") + f"/{p / 2**20:.1f}"
                        for name, m, p in paged))
    ends = [m["mmap_threshold_bytes"] for m in measured if m.get("mmap_threshold_bytes")]
    if ends:  # where the measured steps left glibc's threshold, against where the profile starts it
        print(f"glibc mmap threshold after the timed steps, MiB: {min(ends) / 2**20:.2f}-{max(ends) / 2**20:.2f} "
              f"over {len(ends)} processes; the profile starts it at "
              + (f"{profile.mmap_threshold / 2**20:.2f}" if profile.mmap_threshold else "glibc's 0.12 (not measured)"))
    if args.markdown:
        print("\n| model | amp | measured ms/step | predicted | error | measured peak MiB | predicted | error |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['amp'] or '-'} | {r['measured_step_s'] * 1e3:.3f} | "
                  f"{r['predicted_step_s'] * 1e3:.3f} | {r['step_error'] * 100:+.1f}% | "
                  f"{r['measured_peak_bytes'] / 2**20:.1f} | {r['predicted_peak_bytes'] / 2**20:.1f} | "
                  f"{r['peak_error'] * 100:+.1f}% |")
        print(f"\n- step time error: {summary(time_errors)}\n- peak memory error: {summary(memory_errors)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"device": profile.name, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
