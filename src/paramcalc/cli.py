"""The ``paramcalc`` command. Thin: parse arguments, call estimate(), print a rendering.

Exit codes: 0 success; 1 the model or its input is wrong (one line on stderr, no traceback);
2 the command line is wrong (argparse's usage message).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .dims import format_count


def _parse_shape(text: str) -> tuple:
    """'20020,1' -> (20020, 1); 'n,1' -> ('n', 1); '' or '()' -> () (a scalar per sample)."""
    text = text.strip().strip("()[]").strip()
    if not text:
        return ()
    out: list = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        out.append(int(part) if part.lstrip("-").isdigit() else None if part == "None" else part)
    return tuple(out)


def _shape_arg(text: str) -> tuple:
    try:
        return _parse_shape(text)
    except ValueError as err:  # pragma: no cover - int() of digits cannot fail
        raise argparse.ArgumentTypeError(str(err)) from None


def _batch_arg(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paramcalc",
        description="Shapes, parameters, FLOPs and pitfalls of a Keras or PyTorch model, before you "
                    "build or train it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="the seed case: why a reshape made a Dense network explode",
                               description="Estimate the three seed models (flat, reshaped + Flatten, "
                                           "reshaped) and explain the difference. Needs no framework.")
    demo.add_argument("--features", type=int, default=20020, help="input features (default 20020)")
    demo.add_argument("--json", action="store_true", help="print JSON instead of tables")

    summary = commands.add_parser("summary", help="estimate a model file: JSON spec, .keras, safetensors",
                                  description="Estimate a paramcalc spec or Keras config saved as JSON, or a "
                                              ".keras archive (its config, read as data); count the tensors of "
                                              "a safetensors file. Pickles are refused, never unpickled.")
    summary.add_argument("spec", help="path to a JSON spec, a Keras config, a .keras archive or safetensors")
    summary.add_argument("--input", type=_shape_arg, default=None, metavar="SHAPE",
                         help="one sample's input shape, batch excluded, e.g. 20020,1 or n,1")
    summary.add_argument("--batch-size", type=_batch_arg, default=None, metavar="N",
                         help="batch size (an int or a symbol name)")
    summary.add_argument("--target", type=_shape_arg, default=None, metavar="SHAPE",
                         help="one sample's target shape, e.g. '()' for a scalar; checks loss broadcasting")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.add_argument("--optimizer", default=None, help="add training memory and FLOPs (adam, sgd, ...)")
    summary.add_argument("--dtype", default=None, help="training precision (float32, mixed_bfloat16, ...)")
    summary.add_argument("--device", default=None,
                         help="predict step time on a device (h100-sxm, h100-sxm-torch, a100-80gb, l4, cpu, "
                              "cpu-dev-torch, or a calibration JSON)")

    calibrate = commands.add_parser(
        "calibrate", help="measure this machine with torch and save a device profile",
        description="Sweep matrix products over shapes, copies over sizes, the per-operation cost and tiny "
                    "training steps with torch, once per device and dtype; save a profile that "
                    "estimate(..., device='profile.json') and --device read. Needs torch.")
    calibrate.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    calibrate.add_argument("--dtypes", default="float32", help="comma-separated: float32,tfloat32,bfloat16")
    calibrate.add_argument("--quick", action="store_true", help="smaller sweeps")
    calibrate.add_argument("--out", required=True, help="where to write the profile JSON")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import ParamcalcError

    try:
        if args.command == "demo":
            text = _demo(args.features, args.json)
        elif args.command == "calibrate":
            text = _calibrate(args)
        else:
            text = _summary(args)
    except ParamcalcError as err:
        print(f"paramcalc: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"paramcalc: error: {err.strerror or err}: {getattr(err, 'filename', '')}", file=sys.stderr)
        return 1
    try:
        print(text)
    except BrokenPipeError:  # `paramcalc demo | head` is fine
        sys.stderr.close()
    return 0


def _summary(args) -> str:
    from .estimate import estimate
    from .frontends.spec import MAX_SPEC_BYTES, load_spec_text

    from . import files

    path = Path(args.spec)
    kind = files.sniff(path)
    if kind == "safetensors":
        weights = files.read_safetensors(path)
        if args.json:
            return json.dumps({"path": str(path), "params": weights.params, "bytes": weights.nbytes,
                               "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}
                                           for t in weights.tensors]}, indent=2)
        return (f"{path}: safetensors, {len(weights.tensors):,} tensors, {format_count(weights.params)} "
                f"parameters, {format_count(weights.nbytes)} bytes (weights only: no architecture)")
    if kind == "keras":
        doc = files.read_keras_config(path)
    elif kind in ("json", "unknown") and path.suffix.lower() != ".keras":
        if path.stat().st_size > MAX_SPEC_BYTES:
            from .errors import SpecError

            raise SpecError(f"{path}: {path.stat().st_size:,} bytes is larger than any model spec "
                            f"(limit {MAX_SPEC_BYTES:,})")
        doc = load_spec_text(path.read_text(encoding="utf-8", errors="replace"), str(path))
    else:
        raise files.refuse(path, kind)
    est = estimate(doc, input_shape=args.input, batch_size=args.batch_size, target_shape=args.target,
                   optimizer=args.optimizer, dtype=args.dtype, device=args.device)
    return est.to_json(indent=2) if args.json else est.summary()


def _calibrate(args) -> str:
    from .errors import ParamcalcError

    try:
        import torch  # noqa: F401
    except ImportError:
        raise ParamcalcError("calibrate measures with torch, which is not installed",
                             fix="pip install torch==2.13.0 (CPU) and run again") from None
    from . import calibrate

    steps = {"n": 0}

    def progress(message: str) -> None:
        steps["n"] += 1
        print(f"\r[{steps['n']:3d}] {message:<70}", end="", file=sys.stderr, flush=True)

    profile = calibrate.measure(args.device, dtypes=tuple(args.dtypes.split(",")), quick=args.quick,
                                progress=progress)
    print(file=sys.stderr)
    calibrate.save(profile, args.out)
    return f"saved {args.out}: {profile['name']}, per-op overhead {profile['op_overhead_s'] * 1e6:.1f} us"


def _demo(features: int, as_json: bool) -> str:
    from .estimate import estimate
    from .seed import SEED_VARIANTS, seed_model

    symbolic = {v: estimate(seed_model(v), target_shape=()) for v in SEED_VARIANTS}
    concrete = {v: est.subs(n=features) for v, est in symbolic.items()}
    if as_json:
        return json.dumps({
            "features": features,
            "models": {v: {"formula_params": str(symbolic[v].params), **concrete[v].to_dict()}
                       for v in SEED_VARIANTS},
        }, indent=2)
    titles = {
        "flat": f"1. flat: the data as (samples, {features}); Dense(300) -> Dense(300) -> Dense(100) -> Dense(1)",
        "reshaped_flatten": f"2. reshaped to (samples, {features}, 1), Flatten after the first Dense",
        "reshaped": f"3. reshaped to (samples, {features}, 1), no Flatten",
    }
    out = [
        "paramcalc demo: the seed case",
        f"A regression MLP on {features} features. Reshaping the data from (samples, {features}) to "
        f"(samples, {features}, 1)",
        "made training ~1000x slower and changed its results. Why? Keras Dense acts on the LAST axis.",
        "",
    ]
    for variant in SEED_VARIANTS:
        out += [f"== {titles[variant]} ==", concrete[variant].summary(), ""]
    out.append(f"== Parameters as formulas in n (input features), and at n = {features} ==")
    flat_params = concrete["flat"].params
    for variant in SEED_VARIANTS:
        est = concrete[variant]
        ratio = ""
        if variant != "flat" and flat_params:
            ratio = f"  ({est.params * 100 // flat_params / 100:,.2f}x the flat model)"
        out.append(f" {variant:<17} {str(symbolic[variant].params):<18} = {format_count(est.params):>15}"
                   f"  output {est.format_shape(est.output_shape)}{ratio}")
    out += ["", *_training_table(features)]
    out += [
        "",
        "The answer: on (None, n, 1), Dense(300) is applied to each of the n positions with a (1, 300)",
        "kernel. A Flatten then hands 300*n features to the next Dense(300): 90000*n parameters. Without",
        "the Flatten the model predicts one value per position, and the loss broadcasts that against y.",
        "Fix: keep the data 2-D (samples, n), or Flatten before the first Dense.",
    ]
    return "\n".join(out)


SEED_SAMPLES = 33230  # the seed case's training set
SEED_BATCH = 128


def _training_table(features: int) -> list[str]:
    """Memory and time of training each seed model with Adam, predicted on measured device profiles."""
    from .capacity import largest_fitting
    from .estimate import estimate
    from .render import format_bytes, format_seconds
    from .seed import SEED_VARIANTS, seed_model

    devices = [("h100-sxm-torch", "H100 (torch)"), ("cpu-dev-torch", "2-core CPU (torch)")]
    lines = [f"== Training with Adam (float32), batch {SEED_BATCH}, {SEED_SAMPLES:,} samples per epoch ==",
             f" {'model':<17} {'peak memory':>12} {'fits 24 GiB':>11}" + "".join(f" {label:>22}" for _, label in devices)]
    epochs = {}
    for variant in SEED_VARIANTS:
        base = estimate(seed_model(variant, features), batch_size=SEED_BATCH, optimizer="adam")
        fits = "yes" if largest_fitting(estimate(seed_model(variant, features)), "24 GiB") >= SEED_BATCH else "no"
        cells = []
        for device, _ in devices:
            cost = estimate(seed_model(variant, features), batch_size=SEED_BATCH, device=device).training
            seconds = cost.epoch_seconds(SEED_SAMPLES)
            epochs[(variant, device)] = seconds
            cells.append(f"{format_seconds(seconds)}/epoch")
        lines.append(f" {variant:<17} {format_bytes(base.training.memory.peak):>12} {fits:>11}"
                     + "".join(f" {c:>22}" for c in cells))
    for device, label in devices:
        ratio = epochs[("reshaped_flatten", device)] / epochs[("flat", device)]
        lines.append(f" reshaped+Flatten trains {ratio:,.0f}x slower than flat on the {label}")
    return lines


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
