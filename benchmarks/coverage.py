"""How many real models paramcalc reads, exactly, and how fast: torchvision's classification, segmentation
and video models, and Hugging Face transformers architectures from small configs (tests/transformers_zoo.py; with
--full-size also five at their configs' default sizes, BERT-base to Llama-2-7B), built with no weights
on the meta device; every keras.applications model from its config, and KerasHub
backbones and task models from small arguments (tests/keras_hub_zoo.py), live.

Per family: tried / estimated / exact (parameters, trainable parameters, output shapes, and for torch 2 x
MACs equal to torch's FlopCounterMode count), the failure classes ranked, and the median time of an
estimate against the framework's own answer, interleaved, --repeat times each: torchinfo.summary() on the
meta device (torch); rebuilding the model from its config and count_params() (Keras).

    python benchmarks/coverage.py [--repeat 3] [--only resnet50,vit_b_16] [--skip torch] [--full-size]
                                  [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import re
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests import keras_hub_zoo, transformers_zoo  # noqa: E402
from tests.torchvision_zoo import build, input_shape, load, truth, zoo  # noqa: E402


def _seconds(fn, repeat: int) -> list:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _torchvision(family: str, name: str) -> tuple:
    """(model, input_shape for paramcalc, torchinfo's arguments, torch's (output shape, FLOPs))."""
    model = build(family, name)
    shape = input_shape(family, name)
    return model, shape, {"input_size": (1, *shape)}, truth(model, shape)


def _transformers(name: str) -> tuple:
    import torch

    model, shapes = transformers_zoo.build(name)
    data = {n: torch.zeros(1, *s, device="meta", dtype=torch.long if n.endswith("_ids") else torch.float32)
            for n, s in shapes.items()}
    return model, shapes, {"input_data": data}, transformers_zoo.truth(model, shapes)


def _row(family: str, name: str, source, shape, checks_of, theirs, their_key: str, repeat: int) -> dict:
    """One model's row: the failure class where it is not read; else which of ``checks_of(est)`` hold,
    how many rows paramcalc estimated (Keras classes without a rule), and the median times of the
    estimate and of ``theirs`` (the framework's own answer, None: not timed), interleaved ``repeat``
    times: a busy moment slows both."""
    import paramcalc

    row = {"family": family, "name": name}
    try:
        est = paramcalc.estimate(source, input_shape=shape, batch_size=1)
    except paramcalc.ParamcalcError as error:
        # the class of failure: the message without the layer and node names, before the fix
        message = re.sub(r"^layer '[^']*': |node '[^']*': ", "", str(error).split(". Fix:")[0])
        row["failure"] = f"{type(error).__name__}: {message[:110]}"
        return row
    checks = checks_of(est)
    row["exact"] = all(checks.values())
    row["wrong"] = [k for k, ok in checks.items() if not ok]
    row["estimated_rows"] = sum(r.kind == "foreign" for r in est.layers)
    ours, their = [], []
    for _ in range(repeat):
        ours += _seconds(lambda: paramcalc.estimate(source, input_shape=shape, batch_size=1), 1)
        if theirs is not None:
            their += _seconds(theirs, 1)
    row["paramcalc_s"] = statistics.median(ours)
    row[their_key] = statistics.median(their) if their else None
    return row


def _one(family: str, name: str, built: tuple, repeat: int, torchinfo) -> dict:
    """A torch row: params, trainable params, output shape and 2 x MACs against the model on meta
    (FlopCounterMode), timed against torchinfo on meta."""
    model, shape, torchinfo_args, (output_shape, flops) = built
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def checks(est) -> dict:
        return {"params": est.params == params, "trainable": est.trainable_params == trainable,
                "output": est.output_shape == output_shape, "flops": 2 * est.macs_per_batch == flops}

    theirs = (None if torchinfo is None else
              lambda: torchinfo.summary(model, **torchinfo_args, device="meta", verbose=0))
    baseline = None
    if theirs is not None:
        try:
            theirs()
        except RuntimeError:
            # torch's meta _grouped_mm takes bfloat16 alone (a mixture of experts in float32 stops
            # torchinfo there): torchinfo is timed on a bfloat16 copy, which runs the same forward
            twin = copy.deepcopy(model).to(torch_dtype("bfloat16"))
            theirs = lambda: torchinfo.summary(twin, **torchinfo_args, device="meta", verbose=0)  # noqa: E731
            baseline = "torchinfo on a bfloat16 copy: it cannot run the float32 model on meta"
    row = _row(family, name, model, shape, checks, theirs, "torchinfo_s", repeat)
    if baseline:
        row["baseline"] = baseline
    return row


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def _torch_rows(only: set, repeat: int, full_size: bool = False) -> list:
    if load() is None:
        print("torchvision is not installed: pip install torchvision==0.28.0 (it pins the CPU torch 2.13.0)")
        return []
    try:
        import torchinfo
    except ImportError:
        torchinfo = None
        print("torchinfo is not installed (pip install -e '.[bench]'): no comparison of times")
    rows = [_one(f, n, _torchvision(f, n), repeat, torchinfo) for f, n in zoo() if not only or n in only]
    if transformers_zoo.load() is None:
        print("transformers is not installed (pip install -e '.[test]'): no Hugging Face models")
    else:
        rows += [_one(f"hf-{family}", n, _transformers(n), repeat, torchinfo)
                 for n, (family, *_) in transformers_zoo.cases().items() if not only or n in only]
        if full_size:
            rows += [_one("hf-full-size", n, _transformers(n), repeat, torchinfo)
                     for n in transformers_zoo.full_size_cases() if not only or n in only]
    return rows


def _keras_one(family: str, name: str, source, shape, truth: tuple, baseline, repeat: int) -> dict:
    """A Keras row: ``truth`` is (params, trainable params, output shapes at batch 1); ``baseline`` what
    Keras takes to answer the same question (rebuild from the config, count the parameters)."""
    def checks(est) -> dict:
        return {"params": est.params == truth[0], "trainable": est.trainable_params == truth[1],
                "output": [tuple(s) for s in est.output_shapes] == truth[2]}

    return _row(family, name, source, shape, checks, baseline, "baseline_s", repeat)


def _keras_rows(only: set, repeat: int) -> list:
    import inspect
    import math

    import keras

    rows = []
    applications = sorted(n for n, f in inspect.getmembers(keras.applications) if inspect.isfunction(f) and n[0].isupper())
    for name in applications:
        if only and name not in only:
            continue
        model = getattr(keras.applications, name)(weights=None)
        config = model.get_config()
        trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
        truth = (model.count_params(), trainable, [(1,) + tuple(model.output_shape[1:])])
        rows.append(_keras_one("keras-apps", name, config, None, truth,
                               # from_config consumes the dict it is given: a copy each time
                               lambda c=config: keras.Model.from_config(copy.deepcopy(c)).count_params(), repeat))
        keras.backend.clear_session()
    keras_hub = keras_hub_zoo.load()
    if keras_hub is None:
        print("keras-hub is not installed (see the README's test command): no KerasHub models")
        return rows
    for name in sorted(keras_hub_zoo.backbones()) + sorted(keras_hub_zoo.tasks()):
        if only and name not in only:
            continue
        model = keras_hub_zoo.build(keras_hub, name)
        shapes = keras_hub_zoo.input_shapes(model)
        struct = keras.tree.map_structure(
            lambda t: keras.KerasTensor((1,) + shapes[t._keras_history.operation.name], dtype=t.dtype), model.input)
        outputs = [tuple(t.shape) for t in keras.tree.flatten(model.compute_output_spec(struct))]
        trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
        family = "hub-task" if name in keras_hub_zoo.tasks() else "hub-" + keras_hub_zoo.backbones()[name][0].split()[-1]
        rows.append(_keras_one(family, name, model, shapes, (model.count_params(), trainable, outputs),
                               lambda m=model: type(m).from_config(m.get_config()).count_params(), repeat))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--skip", default="", help="comma-separated frameworks to leave out: torch, keras")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--full-size", action="store_true",
                        help="also Hugging Face models at their configs' default sizes (BERT-base to Llama-2-7B)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    only = set(filter(None, args.only.split(",")))
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    if "torch" not in skip:
        rows += _torch_rows(only, args.repeat, args.full_size)
    if "keras" not in skip:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        rows += _keras_rows(only, args.repeat)
    print(f"{'family':<16}{'tried':>7}{'estimated':>11}{'exact':>7}   median estimate / torchinfo on meta (torch), "
          "from_config + count_params (Keras)")
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        done = [r for r in mine if "failure" not in r]
        ours = [r["paramcalc_s"] for r in done]
        theirs = [r.get("torchinfo_s") or r.get("baseline_s") for r in done]
        theirs = [t for t in theirs if t]
        speed = (f"{statistics.median(ours) * 1e3:.0f} ms / {statistics.median(theirs) * 1e3:.0f} ms"
                 if ours and theirs else "-")
        estimated = sum(r.get("estimated_rows", 0) > 0 for r in done)
        extra = f"   ({estimated} with rows Keras shaped and paramcalc estimated)" if estimated else ""
        print(f"{family:<16}{len(mine):>7}{len(done):>11}{sum(r['exact'] for r in done):>7}   {speed}{extra}")
    failures = collections.Counter(r["failure"] for r in rows if "failure" in r)
    if failures:
        print("\nfailure classes, most common first:")
        for failure, count in failures.most_common():
            names = ", ".join(r["name"] for r in rows if r.get("failure") == failure)
            print(f"  {count:>3}  {failure}  ({names})")
    wrong = [r for r in rows if r.get("wrong")]
    for r in wrong:
        print(f"  WRONG {r['name']}: {', '.join(r['wrong'])}")
    for r in rows:
        if r.get("baseline"):
            print(f"  {r['name']}: {r['baseline']}")
    slower = [r["name"] for r in rows if r.get("torchinfo_s") and r["paramcalc_s"] > r["torchinfo_s"]]
    print(f"\nslower than torchinfo: {len(slower)} of {len([r for r in rows if r.get('torchinfo_s')])}"
          f"{' (' + ', '.join(slower) + ')' if slower else ''}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
