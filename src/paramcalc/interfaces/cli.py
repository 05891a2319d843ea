"""The ``paramcalc`` command. Thin: parse arguments, call estimate(), print a rendering.

Exit codes: 0 success; 1 the model or its input is wrong (one line on stderr, no traceback);
2 the command line is wrong (argparse's usage message).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from paramcalc.core.contention import BUSY_SHARE
from paramcalc.core.dims import format_count


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


def _input_arg(text: str) -> tuple:
    """'20020,1' -> (None, (20020, 1)); 'seq=256,8' -> ('seq', (256, 8)): one input's shape, by name
    where the model has several."""
    name, sep, shape = text.partition("=")
    if sep and name.strip() and not name.strip().lstrip("-").isdigit():
        return name.strip(), _shape_arg(shape)
    return None, _shape_arg(text)


def input_shapes(values: list | None):
    """What ``--input`` (given once per input) means for estimate(): one shape, shapes in input order, or
    shapes by input name."""
    from paramcalc.core.errors import SpecError

    if not values:
        return None
    names = [name for name, _ in values]
    if all(name is None for name in names):
        return values[0][1] if len(values) == 1 else [shape for _, shape in values]
    if any(name is None for name in names):
        raise SpecError("--input: name every input (--input seq=256,8 --input meta=16) or none of them "
                        "(--input 256,8 --input 16, in the model's input order)", value=names)
    return {name: shape for name, shape in values}


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
    demo.add_argument("--markdown", action="store_true", help="print the three models as Markdown tables")

    compare = commands.add_parser(
        "compare", help="two models side by side, with what changed and why",
        description="Estimate two models and show their figures side by side, the layers that changed, and "
                    "the diagnostics the second has that the first has not. Models: files (JSON spec, Keras "
                    "config, .keras), seed:VARIANT[:FEATURES], or module:attribute.")
    compare.add_argument("model_a", metavar="MODEL_A", help=MODEL_HELP)
    compare.add_argument("model_b", metavar="MODEL_B", help="the second model, in any of the same forms")
    _model_options(compare, both=True)

    explain = commands.add_parser("explain", help="the diagnostics of a model, in prose",
                                  description="Explain the pitfalls paramcalc finds in a model, with fixes.")
    explain.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    _model_options(explain)

    plot = commands.add_parser(
        "plot", help="PNG of training memory by part and step time against batch size or input size",
        description="Draw training memory (weights, gradients, optimizer, activations, input batch; the "
                    "device's memory as a line) and, with --device, step time, against the batch size or "
                    "a symbolic input size. Needs matplotlib (pip install 'paramcalc[plot]').")
    plot.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    plot.add_argument("--out", required=True, help="PNG path")
    plot.add_argument("--values", default="1,2,4,8,16,32,64,128,256,512,1024",
                      help="comma-separated values of the swept size")
    plot.add_argument("--symbol", default=None, help="sweep this input symbol instead of the batch size")
    _model_options(plot, formats=False)  # a PNG: no text format to choose

    summary = commands.add_parser(
        "summary", help="estimate a model: a file, seed:VARIANT or module:attribute",
        description="Estimate a model read as data: a paramcalc spec or Keras config (JSON or YAML), a .keras "
                    "archive or legacy .h5 (their config only), an ONNX file (in an isolated child process), "
                    "or count the tensors of a safetensors file; or seed:VARIANT[:FEATURES], or "
                    "module:attribute (your own code, imported). Pickles are refused, never unpickled.")
    summary.add_argument("spec", metavar="MODEL", help=MODEL_HELP)
    summary.add_argument("--input", type=_input_arg, action="append", default=None, metavar="[NAME=]SHAPE",
                         help=INPUT_HELP)
    summary.add_argument("--batch-size", type=_batch_arg, default=None, metavar="N",
                         help="batch size (an int or a symbol name)")
    summary.add_argument("--target", type=_shape_arg, default=None, metavar="SHAPE",
                         help="one sample's target shape, e.g. '()' for a scalar; checks loss broadcasting")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.add_argument("--markdown", action="store_true", help="print a Markdown table")
    _training_options(summary)

    planner = commands.add_parser(
        "plan", help="ways to train a model on several devices, ranked by predicted step time",
        description="Data parallelism over every device with each ZeRO stage (DDP, ZeroRedundancyOptimizer, "
                    "FSDP2), with and without checkpointing the model's repeated blocks, at every micro-batch "
                    "that divides the global batch: those whose peak per rank fits the device first, fastest "
                    "first. Communication is timed on the device profile's datasheet interconnect.")
    planner.add_argument("spec", metavar="MODEL", help=MODEL_HELP)
    planner.add_argument("--devices", required=True, metavar="COUNTxDEVICE", help="e.g. 8xh100")
    planner.add_argument("--nodes", type=int, default=None, help="nodes the devices span (default: as few as hold "
                                                                 "them, 8 devices per node)")
    planner.add_argument("--batch", type=int, default=None, help="global batch per optimizer step (default: one "
                                                                 "sample per device)")
    planner.add_argument("--input", type=_input_arg, action="append", default=None, metavar="[NAME=]SHAPE",
                         help=INPUT_HELP)
    planner.add_argument("--optimizer", default="adam", help="optimizer (default adam)")
    planner.add_argument("--dtype", default="float32", help="training precision, e.g. bfloat16_master")
    planner.add_argument("--loss", default=None, choices=("cross_entropy", "mse"), help=LOSS_HELP)
    planner.add_argument("--json", action="store_true", help="print every configuration as JSON")

    calibrate = commands.add_parser(
        "calibrate", help="measure this machine with the framework that trains and save a device profile",
        description="Sweep matrix products over shapes, copies over sizes, convolutions, recurrent layers, "
                    "per-element kernels, optimizer updates and tiny training steps with the framework "
                    "that trains (torch, Keras on TensorFlow, or Keras on torch), once per device, "
                    "framework and dtype; save a profile that estimate(..., device='profile.json') and "
                    "--device read. Needs that framework (--merge needs none).")
    calibrate.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    calibrate.add_argument("--framework", default="torch", choices=["torch", "keras", "keras-torch"],
                           help="torch (CPU or CUDA), keras on TensorFlow (CPU), or keras on its torch "
                                "backend (CPU or CUDA)")
    calibrate.add_argument("--dtypes", default="float32", help="comma-separated: float32,tfloat32,bfloat16")
    calibrate.add_argument("--quick", action="store_true", help="smaller sweeps")
    calibrate.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                           help="measure nothing: write the median of these calibrations of one device and "
                                "framework, entry by entry (a shared machine's busy spells move single runs)")
    calibrate.add_argument("--repeat", type=int, default=1, metavar="N",
                           help="calibrate N times, each in a fresh process, and write their median "
                                "(--merge of the N runs, which are kept beside --out)")
    calibrate.add_argument("--allow-busy", action="store_true",
                           help="write the profile even when other processes took more than "
                                f"{int(BUSY_SHARE * 100)}%% of the machine while it measured (refused otherwise)")
    calibrate.add_argument("--out", required=True, help="where to write the profile JSON")
    return parser


def _keras_backend_option(parser) -> None:
    parser.add_argument("--keras-backend", default=None, choices=["tensorflow", "jax", "torch"],
                        help="for a Keras model, the backend that trains it: memory follows it (default: "
                             "TensorFlow, unless a calibrated --device names its framework)")


LOSS_HELP = ("the loss on the first output whose memory to count: cross_entropy (a classifier's, a language "
             "model's over its vocabulary) or mse")
INPUT_HELP = ("one sample's input shape, batch excluded, e.g. 20020,1 or n,1; for a model with several inputs, "
              "once per input, in order or by name (--input seq=256,8 --input meta=16)")


MODEL_HELP = ("a file (JSON or YAML spec, Keras config, .keras, .h5, ONNX, safetensors), "
              "seed:VARIANT[:FEATURES], or module:attribute (a model, a function returning one, or "
              "module:Class() to call a class with no arguments)")


def _training_options(parser) -> None:
    from paramcalc.cost.devices import BUILTIN, MEASURED
    from paramcalc.cost.step import OPTIMIZERS, PRECISIONS

    parser.add_argument("--optimizer", default=None,
                        help=f"add training memory and FLOPs with this optimizer ({', '.join(OPTIMIZERS)})"
                             "; with --device alone, Adam (said in a note)")
    parser.add_argument("--dtype", default=None, help=f"training precision ({', '.join(PRECISIONS)})")
    parser.add_argument("--loss", default=None, choices=("cross_entropy", "mse"), help=LOSS_HELP)
    parser.add_argument("--device", default=None,
                        help="predict step time on a device: a measured profile (" + ", ".join(sorted(MEASURED))
                             + "), a datasheet one (" + ", ".join(sorted(BUILTIN))
                             + "), or a calibration JSON from paramcalc calibrate")
    _keras_backend_option(parser)


def _model_options(parser, both: bool = False, formats: bool = True) -> None:
    parser.add_argument("--input", type=_input_arg, action="append", default=None, metavar="[NAME=]SHAPE",
                        help=INPUT_HELP + (" (for both models)" if both else ""))
    if both:
        parser.add_argument("--input-b", type=_input_arg, action="append", default=None, metavar="[NAME=]SHAPE",
                            help="the second model's input shapes, when they differ (as --input)")
    parser.add_argument("--batch-size", type=_batch_arg, default=None, metavar="N",
                        help="batch size (an int or a symbol name)")
    parser.add_argument("--target", type=_shape_arg, default=None, metavar="SHAPE",
                        help="one sample's target shape, e.g. '()' for a scalar; checks loss broadcasting")
    _training_options(parser)
    if formats:
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--markdown", action="store_true", help="print Markdown")


def load_model(text: str):
    """A model argument: a file, seed:VARIANT[:FEATURES], or module:attribute (a Keras or torch model,
    or a function returning one; the module is the user's own code and is imported)."""
    from paramcalc.analysis.seed import seed_model
    from paramcalc.io import files

    if text.startswith("seed:"):
        _, variant, *rest = text.split(":")
        features = rest[0] if rest else "20020"  # the seed case's size; a name keeps it symbolic
        return seed_model(variant, int(features) if features.isdigit() else features)
    path = Path(text)
    if path.exists():
        kind = files.sniff(path)
        if kind == "keras":
            return files.read_keras_config(path)
        if kind == "hdf5":
            return files.read_h5_config(path)
        if kind in ("json", "unknown") and path.suffix.lower() != ".keras":
            text = files.read_text(path)  # at most a spec's size; binary content is refused
            if path.suffix.lower() in (".yaml", ".yml"):
                from paramcalc.frontends.yaml_spec import load_spec_yaml

                return load_spec_yaml(text, str(path))
            from paramcalc.frontends.spec import load_spec_text

            return load_spec_text(text, str(path))
        raise files.refuse(path, kind)
    if ":" in text:
        return _load_attribute(text)
    raise OSError(2, "No such file or model", text)


def _load_attribute(text: str):
    """module:attribute, the user's own code (imported from the current folder): a model, a function
    returning one, or, written module:Class(), a class called with no arguments."""
    import importlib

    from paramcalc.core.errors import SpecError

    module_name, _, attribute = text.partition(":")
    call = attribute.endswith("()")
    attribute = attribute[:-2] if call else attribute
    sys.path.insert(0, str(Path.cwd()))
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise SpecError(f"cannot load {text}: {err}", value=text) from None
    if isinstance(obj, type) and not call:
        raise SpecError(f"{text} is the class {obj.__qualname__}, not a model", value=text,
                        fix=f"write {module_name}:{attribute}() to make one with no arguments, or name a "
                            "function that returns the model")
    if call or (callable(obj) and not isinstance(obj, type) and not hasattr(obj, "get_config")
                and not hasattr(obj, "parameters")):
        try:
            return obj()
        except TypeError as err:
            raise SpecError(f"cannot call {module_name}:{attribute}() with no arguments: {err}", value=text,
                            fix="name a function that builds the model with the arguments it needs") from None
    return obj


def _estimate_arg(model_text: str, args, input_shape=None):
    from paramcalc.analysis.estimate import estimate

    return estimate(load_model(model_text), input_shape=input_shape if input_shape is not None else input_shapes(args.input),
                    batch_size=args.batch_size, target_shape=args.target, optimizer=args.optimizer,
                    dtype=args.dtype, device=args.device, keras_backend=args.keras_backend, loss=args.loss)


def _compare(args) -> str:
    from paramcalc.interfaces.render import render_comparison

    a = _estimate_arg(args.model_a, args)
    b = _estimate_arg(args.model_b, args, input_shape=input_shapes(args.input_b or args.input))
    if args.json:
        return json.dumps({"a": a.to_dict(), "b": b.to_dict()}, indent=2)
    text = render_comparison(a, b)
    return f"```\n{text}\n```" if args.markdown else text


def _plot(args) -> str:
    from paramcalc.analysis.estimate import estimate
    from paramcalc.interfaces.plot import plot

    values = [int(v) for v in args.values.split(",") if v.strip()]
    est = estimate(load_model(args.model), input_shape=input_shapes(args.input), target_shape=args.target,
                   batch_size=args.batch_size if args.symbol else None)
    path = plot(est, values, args.out, symbol=args.symbol, optimizer=args.optimizer or "adam",
                precision=args.dtype or "float32", device=args.device, keras_backend=args.keras_backend,
                loss=args.loss)
    return f"wrote {path}"


def _explain(args) -> str:
    from paramcalc.interfaces.render import render_explanation

    est = _estimate_arg(args.model, args)
    if args.json:
        return json.dumps([d.to_dict() for d in est.diagnostics], indent=2)
    if args.markdown:
        if not est.diagnostics:
            return f"**{est.name}**: no pitfalls found."
        return "\n".join([f"**{est.name}**: {len(est.diagnostics)} finding(s)", ""] +
                         [f"- **{d.severity}: {d.code}** at `{d.layer}`: {d.message} *What to do:* {d.fix}."
                          for d in est.diagnostics])
    return render_explanation(est)


def _version() -> str:
    from paramcalc import __version__

    return __version__


def _use_color() -> bool:
    """ANSI styles on a terminal only: never when piped, redirected, or with NO_COLOR set."""
    import os

    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.color = _use_color()
    from paramcalc.core.errors import ParamcalcError

    try:
        if args.command == "demo":
            text = _demo(args.features, args.json, args.color, args.markdown)
        elif args.command == "calibrate":
            text = _calibrate(args)
        elif args.command == "compare":
            text = _compare(args)
        elif args.command == "explain":
            text = _explain(args)
        elif args.command == "plot":
            text = _plot(args)
        elif args.command == "plan":
            text = _plan(args)
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
    from paramcalc.analysis.estimate import estimate
    from paramcalc.io import files

    path = Path(args.spec)
    kind = files.sniff(path) if path.is_file() else "model"
    if kind == "onnx":
        from paramcalc.io.onnx_reader import read_onnx

        summary = read_onnx(str(path))
        if args.json:
            return json.dumps({"path": str(path), "params": summary.params, "bytes": summary.nbytes,
                               "inputs": {n: list(d) for n, d in summary.inputs}, "ops": summary.ops,
                               "external_data_not_read": list(summary.external)}, indent=2)
        inputs = ", ".join(f"{n} {tuple(d)}" for n, d in summary.inputs)
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(summary.ops.items(), key=lambda kv: -kv[1])[:8])
        note = f"; {len(summary.external)} initializers keep their data outside the file (not read)" if summary.external else ""
        return (f"{path}: ONNX, inputs {inputs}; {format_count(summary.params)} parameters in "
                f"{len(summary.initializers)} initializers ({format_count(summary.nbytes)} bytes){note}; ops: {ops}")
    if kind == "safetensors":
        weights = files.read_safetensors(path)
        if args.json:
            return json.dumps({"path": str(path), "params": weights.params, "bytes": weights.nbytes,
                               "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}
                                           for t in weights.tensors]}, indent=2)
        return (f"{path}: safetensors, {len(weights.tensors):,} tensors, {format_count(weights.params)} "
                f"parameters, {format_count(weights.nbytes)} bytes (weights only: no architecture)")
    doc = load_model(args.spec)
    est = estimate(doc, input_shape=input_shapes(args.input), batch_size=args.batch_size, target_shape=args.target,
                   optimizer=args.optimizer, dtype=args.dtype, device=args.device, keras_backend=args.keras_backend,
                   loss=args.loss)
    if args.json:
        return est.to_json(indent=2)
    if args.markdown:
        from paramcalc.interfaces.render import render_markdown

        return render_markdown(est)
    return est.summary(color=args.color)


def _plan(args) -> str:
    from paramcalc.analysis.estimate import estimate
    from paramcalc.analysis.plan import parse_devices, plan, render
    from paramcalc.cost.devices import resolve

    count, device = parse_devices(args.devices)
    profile = resolve(device)
    batch = args.batch if args.batch is not None else count
    est = estimate(load_model(args.spec), input_shape=input_shapes(args.input))
    skipped: list = []
    options = plan(est, count, profile, batch, optimizer=args.optimizer, precision=args.dtype, nodes=args.nodes,
                   skipped=skipped, loss=args.loss)
    if args.json:
        return json.dumps([{"zero": o.parallel.zero, "data": o.parallel.data, "tensor": o.parallel.tensor,
                            "sequence_parallel": o.parallel.sequence, "tensor_plan": o.parallel.tensor_plan,
                            "checkpointed": list(o.parallel.checkpointed),
                            "units": list(o.parallel.units), "micro_batch": o.micro_batch,
                            "accumulation": o.parallel.accumulation, "peak_bytes_per_rank": o.peak_bytes,
                            "fits": o.fits, "step_seconds": o.step_seconds, "samples_per_second": o.samples_per_second,
                            "communication_bytes": o.communication_bytes} for o in options], indent=2)
    return render(options, count, profile.name, batch, profile.memory_bytes, skipped=tuple(skipped))


def _read_calibration(path: str) -> dict:
    from paramcalc.core.errors import ParamcalcError

    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ParamcalcError(f"{path}: not a calibration JSON ({err})", value=path,
                                 fix="pass files written by `paramcalc calibrate --out`") from None
    if not isinstance(data, dict) or "matmul" not in data:
        raise ParamcalcError(f"{path}: not a calibration (no matmul table)", value=path,
                             fix="pass files written by `paramcalc calibrate --out`")
    return data


def _calibrate_runs(args, run=None) -> list[str]:
    """Calibrate ``args.repeat`` times, each in a fresh process (a framework keeps state between runs
    in one process), beside ``args.out``: the paths written. ``run(arguments)`` runs ``paramcalc``
    with those arguments and returns its exit status (a child process that cannot import from the
    current folder, unless a test passes another)."""
    import subprocess

    from paramcalc.core.errors import ParamcalcError
    from paramcalc.io.subprocesses import python_command

    run = run or (lambda arguments: subprocess.run(python_command(module="paramcalc.interfaces.cli", args=tuple(arguments),
                                                                  isolated=False)).returncode)
    stem = args.out[:-5] if args.out.endswith(".json") else args.out
    paths = []
    for i in range(1, args.repeat + 1):
        paths.append(f"{stem}.run{i}.json")
        arguments = ["calibrate", "--device", args.device, "--framework", args.framework, "--dtypes", args.dtypes,
                     "--out", paths[-1], "--allow-busy"]
        code = run(arguments + (["--quick"] if args.quick else []))
        if code:
            raise ParamcalcError(f"calibration run {i} of {args.repeat} failed (exit status {code})", value=code,
                                 fix="see its message above; runs already written are kept: "
                                     + ", ".join(paths[:-1] or ["none"]))
    return paths


def _calibrate(args) -> str:
    from paramcalc.core.errors import ParamcalcError

    if args.repeat > 1 and not args.merge:
        args.merge = _calibrate_runs(args)
    if args.merge:
        from paramcalc.calibration.merge import merge, spread

        runs = [_read_calibration(path) for path in args.merge]
        merged = merge(runs, args.merge)
        _refuse_if_busy(merged, args, f"the median of {len(runs)} runs")
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(merged, handle, indent=1)
        return (f"saved {args.out}: the median of {len(args.merge)} calibrations ({merged.get('framework')}, "
                f"{merged.get('name', merged.get('device'))}); {_spread_text(spread(runs))}")
    if args.repeat < 1:
        raise ParamcalcError(f"--repeat {args.repeat}: a calibration runs at least once", value=args.repeat,
                             fix="pass --repeat 3 on a shared machine, or leave it out")
    module = {"keras": "tensorflow", "keras-torch": "keras"}.get(args.framework, "torch")
    if args.framework == "keras-torch":  # before Keras is first imported: it picks its backend then
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        __import__(module)
    except ImportError:
        raise ParamcalcError(f"calibrate --framework {args.framework} measures with {module}, which is not installed",
                             fix="pip install 'paramcalc[test]' (pinned CPU builds) and run again") from None
    from paramcalc.calibration import sweeps as calibrate
    from paramcalc.interfaces.progress import ProgressBar

    progress = ProgressBar(weights=calibrate.STAGE_WEIGHTS)
    try:
        if args.framework == "keras":
            profile = calibrate.measure_keras(quick=args.quick, progress=progress)
        elif args.framework == "keras-torch":
            profile = calibrate.measure_keras_torch(args.device, dtypes=tuple(args.dtypes.split(",")),
                                                    quick=args.quick, progress=progress)
        else:
            profile = calibrate.measure(args.device, dtypes=tuple(args.dtypes.split(",")), quick=args.quick,
                                        progress=progress)
    finally:
        progress.finish()
    _refuse_if_busy(profile, args, "this calibration")
    calibrate.save(profile, args.out)
    return (f"saved {args.out}: {profile['name']}, per-op overhead {profile['op_overhead_s'] * 1e6:.1f} us "
            f"(took {progress.elapsed():.0f} s)")


def _refuse_if_busy(profile: dict, args, what: str) -> None:
    """Refuses a profile measured while others took much of the machine: it is kept beside --out (nothing
    measured is lost) and the message says what to do, unless --allow-busy."""
    from paramcalc.core.contention import too_busy
    from paramcalc.core.errors import ParamcalcError

    load = profile.get("contention")
    if args.allow_busy or not too_busy(load):
        return
    stem = args.out[:-5] if args.out.endswith(".json") else args.out
    kept = f"{stem}.busy.json"
    with open(kept, "w", encoding="utf-8") as handle:
        json.dump(profile, handle, indent=1)
    worst = (f" (the worst stretch, {load['worst_step']!r}: {load['worst_share']:.0%})"
             if load.get("worst_step") else "")
    raise ParamcalcError(
        f"other processes took {load['others_share']:.0%} of this machine's CPU time during {what}{worst}: its "
        f"timings describe a busy machine, not this one (kept in {kept}, not written to {args.out})",
        value=load["others_share"],
        fix="run it again when the machine is quiet, or with --repeat 3 (the median of three runs in fresh "
            "processes); --allow-busy writes it anyway")


def _spread_text(found: dict) -> str:
    if not found["count"]:
        return "nothing to compare between the runs"
    return (f"the runs' timings differ from their median by {found['median']:.0%} (median) and "
            f"{found['worst']:.0%} at most ({found['where']}); over 20%, calibrate again on a quieter machine")


def _demo(features: int, as_json: bool, color: bool = False, markdown: bool = False) -> str:
    from paramcalc.analysis.estimate import estimate
    from paramcalc.analysis.seed import SEED_VARIANTS, seed_model

    symbolic = {v: estimate(seed_model(v), target_shape=()) for v in SEED_VARIANTS}
    concrete = {v: est.subs(n=features) for v, est in symbolic.items()}
    if as_json:
        return json.dumps({
            "features": features,
            "models": {v: {"formula_params": str(symbolic[v].params), **concrete[v].to_dict()}
                       for v in SEED_VARIANTS},
        }, indent=2)
    if markdown:
        from paramcalc.interfaces.render import render_markdown

        return "\n\n".join(render_markdown(concrete[v]) for v in SEED_VARIANTS)
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
        out += [f"== {titles[variant]} ==", concrete[variant].summary(color=color), ""]
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
    from paramcalc.analysis.estimate import estimate
    from paramcalc.analysis.seed import SEED_VARIANTS, seed_model
    from paramcalc.core.units import format_bytes, format_seconds
    from paramcalc.cost.capacity import largest_fitting

    devices = [("h100-sxm-torch", "H100 (torch)"), ("cpu-dev-keras", "2-core CPU (Keras)"),
               ("cpu-dev-torch", "2-core CPU (torch)")]
    lines = [f"== Training with Adam (float32), batch {SEED_BATCH}, {SEED_SAMPLES:,} samples per epoch ==",
             f" {'model':<17} {'Keras memory':>12} {'fits 24 GiB':>11}" + "".join(f" {label:>22}" for _, label in devices)]
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
