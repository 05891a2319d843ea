"""How fast paramcalc answers the seed question, against the frameworks' own ways of answering it.

Prints medians (and the spread) of:
  - paramcalc.estimate() on the reshaped+Flatten seed model (spec, symbolic, Keras object, torch meta);
  - Keras: build the same model and count_params() (in a subprocess, with its peak memory);
  - torchinfo.summary() of the same stack on the meta device;
  - a whole `paramcalc demo` process: wall time and peak memory.

  - ResNet50 (Keras applications, weights=None): paramcalc from its config against Keras building it
    and counting its parameters.

Goals (benchmark, not test): estimate() under 1 ms; `paramcalc demo` under 0.3 s and 60 MB; ResNet50
from its config under 20 ms.
Keras needs ~22 GB to build the full-size (20,020 features) model, so by default it builds a
scaled one (--keras-features 2000, 180 M parameters); pass --keras-features 20020 on a large machine.

    python benchmarks/engine_speed.py [--features 20020] [--keras-features 2000] [--repeat 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spread(samples: list[float], scale: float, unit: str) -> str:
    q = statistics.quantiles(samples, n=10) if len(samples) >= 10 else [min(samples), max(samples)]
    return (f"median {statistics.median(samples) * scale:,.3f} {unit} "
            f"(p10 {q[0] * scale:,.3f}, p90 {q[-1] * scale:,.3f}, n={len(samples)})")


def in_subprocess(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints a JSON dict; add its peak RSS (MB)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"p = subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "if p.returncode: sys.stderr.write(p.stderr); sys.exit(p.returncode)\n"
        "last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else '{}'\n"
        "result = json.loads(last) if last.startswith('{') else {}\n"
        "result['wall_s'] = wall\n"
        "result['peak_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps(result))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


KERAS_CODE = """
import os, time, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
L = keras.layers
t = time.perf_counter()
m = keras.Sequential([keras.Input(({n}, 1)), L.Dense(300, activation="relu"), L.Flatten(),
                      L.Dense(300, activation="relu"), L.Dense(100, activation="relu"), L.Dense(1)])
params = m.count_params()
print(json.dumps({{"seconds": time.perf_counter() - t, "params": params}}))
"""

TORCHINFO_CODE = """
import time, json, torch, torchinfo
nn = torch.nn
with torch.device("meta"):
    m = nn.Sequential(nn.Linear(1, 300), nn.ReLU(), nn.Flatten(), nn.Linear(300 * {n}, 300), nn.ReLU(),
                      nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 1))
t = time.perf_counter()
s = torchinfo.summary(m, input_size=(1, {n}, 1), device="meta", verbose=0)
print(json.dumps({{"seconds": time.perf_counter() - t, "params": s.total_params}}))
"""


RESNET_CODE = """
import os, time, json, statistics
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, paramcalc
t = time.perf_counter()
model = keras.applications.ResNet50(weights=None)
keras_params = model.count_params()
keras_s = time.perf_counter() - t
config = model.get_config()
for _ in range(5):
    paramcalc.estimate(config)
times = []
for _ in range(50):
    t = time.perf_counter()
    est = paramcalc.estimate(config)
    times.append((time.perf_counter() - t) * 1e3)
q = statistics.quantiles(times, n=10)
print(json.dumps({"paramcalc_ms": statistics.median(times), "p10_ms": q[0], "p90_ms": q[-1],
                  "keras_s": keras_s, "params": est.params, "keras_params": keras_params}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=20020)
    parser.add_argument("--keras-features", type=int, default=2000)
    parser.add_argument("--keras-repeat", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--demo-repeat", type=int, default=10)
    args = parser.parse_args()

    import paramcalc

    n = args.features
    model = paramcalc.seed_model("reshaped_flatten", n)
    symbolic = paramcalc.seed_model("reshaped_flatten")
    print(f"paramcalc {paramcalc.__version__}, Python {sys.version.split()[0]}, seed model "
          f"reshaped+Flatten at {n:,} features")
    for _ in range(20):  # warm up
        paramcalc.estimate(model)
    # Interleave the two paramcalc variants so machine noise hits both alike.
    concrete_t, symbolic_t = [], []
    for _ in range(args.repeat):
        concrete_t += timed(lambda: paramcalc.estimate(model), 1)
        symbolic_t += timed(lambda: paramcalc.estimate(symbolic), 1)
    est_us = statistics.median(concrete_t) * 1e6
    print(f"  paramcalc.estimate (ints)       {spread(concrete_t, 1e6, 'us')}  params={paramcalc.estimate(model).params:,}")
    print(f"  paramcalc.estimate (symbolic n) {spread(symbolic_t, 1e6, 'us')}  params={paramcalc.estimate(symbolic).params}")

    results: dict = {"estimate_us": est_us}
    try:
        import torch  # noqa: F401
        nn = torch.nn
        with torch.device("meta"):
            tm = nn.Sequential(nn.Linear(1, 300), nn.ReLU(), nn.Flatten(), nn.Linear(300 * n, 300), nn.ReLU(),
                               nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 1))
        torch_t = timed(lambda: paramcalc.estimate(tm, input_shape=(n, 1)), args.repeat)
        print(f"  paramcalc.estimate (torch meta) {spread(torch_t, 1e6, 'us')}")
    except ImportError:
        print("  (torch not installed: skipping the torch front-end timing)")

    try:
        ti = [in_subprocess(TORCHINFO_CODE.format(n=n)) for _ in range(3)]
        ti_s = statistics.median(r["seconds"] for r in ti)
        results["torchinfo_s"] = ti_s
        print(f"  torchinfo.summary (meta device) median {ti_s * 1e3:,.1f} ms over 3 runs, "
              f"params={ti[0]['params']:,}  -> paramcalc is {ti_s * 1e6 / est_us:,.0f}x faster")
    except Exception as err:  # torchinfo is an optional benchmark dependency
        print(f"  torchinfo: not measured ({str(err).strip().splitlines()[-1] if str(err).strip() else err})")

    kn = args.keras_features
    keras_model = paramcalc.estimate(paramcalc.seed_model("reshaped_flatten", kn))
    try:
        kr = [in_subprocess(KERAS_CODE.format(n=kn)) for _ in range(args.keras_repeat)]
        ks = statistics.median(r["seconds"] for r in kr)
        peak = max(r["peak_mb"] for r in kr)
        assert all(r["params"] == keras_model.params for r in kr), "Keras and paramcalc disagree"
        k_est = timed(lambda: paramcalc.estimate(paramcalc.seed_model("reshaped_flatten", kn)), args.repeat)
        k_us = statistics.median(k_est) * 1e6
        print(f"  Keras build+count_params at {kn:,} features ({keras_model.params:,} params): median "
              f"{ks:,.2f} s over {len(kr)} runs, peak {peak:,.0f} MB  -> paramcalc ({k_us:,.0f} us) is "
              f"{ks * 1e6 / k_us:,.0f}x faster")
    except Exception as err:
        print(f"  Keras: not measured ({str(err).strip().splitlines()[-1] if str(err).strip() else err})")

    try:
        resnet = in_subprocess(RESNET_CODE)
        print(f"  ResNet50: paramcalc from config median {resnet['paramcalc_ms']:,.2f} ms "
              f"(p10 {resnet['p10_ms']:,.2f}, p90 {resnet['p90_ms']:,.2f}); Keras build+count_params "
              f"{resnet['keras_s']:,.2f} s; params {resnet['params']:,} (Keras {resnet['keras_params']:,}); "
              f"{resnet['keras_s'] * 1e3 / resnet['paramcalc_ms']:,.0f}x")
    except Exception as err:
        print(f"  ResNet50: not measured ({str(err).strip().splitlines()[-1] if str(err).strip() else err})")

    demo = [in_subprocess("import sys; from paramcalc.interfaces.cli import main; import io, contextlib\n"
                          "with contextlib.redirect_stdout(io.StringIO()): main(['demo'])")
            for _ in range(args.demo_repeat)]
    walls = [r["wall_s"] for r in demo]
    peaks = [r["peak_mb"] for r in demo]
    print(f"  `paramcalc demo` process: {spread(walls, 1e3, 'ms')}; peak memory median "
          f"{statistics.median(peaks):,.1f} MB (max {max(peaks):,.1f})")
    print("Goals: estimate < 1 ms; demo process < 300 ms and < 60 MB.")


if __name__ == "__main__":
    main()
