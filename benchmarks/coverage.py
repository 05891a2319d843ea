"""How many real models paramcalc reads, exactly, and how fast: torchvision's classification, segmentation
and video models, and Hugging Face transformers architectures from small configs (tests/transformers_zoo.py),
built with no weights on the meta device.

Per family: tried / estimated / exact (parameters, trainable parameters, output shape, and 2 x MACs equal
to torch's FlopCounterMode count), the failure classes ranked, and the median time of an estimate against
torchinfo.summary() on the meta device for the same model (interleaved, --repeat times each).

    python benchmarks/coverage.py [--repeat 3] [--only resnet50,vit_b_16] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests import transformers_zoo  # noqa: E402
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


def _one(family: str, name: str, built: tuple, repeat: int, torchinfo) -> dict:
    import paramcalc

    model, shape, torchinfo_args, (output_shape, flops) = built
    row = {"family": family, "name": name}
    try:
        est = paramcalc.estimate(model, input_shape=shape, batch_size=1)
    except paramcalc.ParamcalcError as error:
        # the class of failure: the message without the layer and node names, before the fix
        message = re.sub(r"^layer '[^']*': |node '[^']*': ", "", str(error).split(". Fix:")[0])
        row["failure"] = f"{type(error).__name__}: {message[:110]}"
        return row
    checks = {"params": est.params == sum(p.numel() for p in model.parameters()),
              "trainable": est.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad),
              "output": est.output_shape == output_shape,
              "flops": 2 * est.macs_per_batch == flops}
    row["exact"] = all(checks.values())
    row["wrong"] = [k for k, ok in checks.items() if not ok]
    ours, theirs = [], []
    for _ in range(repeat):  # interleaved: a busy moment slows both
        ours += _seconds(lambda: paramcalc.estimate(model, input_shape=shape, batch_size=1), 1)
        if torchinfo is not None:
            theirs += _seconds(lambda: torchinfo.summary(model, **torchinfo_args, device="meta", verbose=0), 1)
    row["paramcalc_s"] = statistics.median(ours)
    row["torchinfo_s"] = statistics.median(theirs) if theirs else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if load() is None:
        sys.exit("torchvision is not installed: pip install torchvision==0.28.0 (it pins the CPU torch 2.13.0)")
    try:
        import torchinfo
    except ImportError:
        torchinfo = None
        print("torchinfo is not installed (pip install -e '.[bench]'): no comparison of times")
    only = set(filter(None, args.only.split(",")))
    rows = [_one(f, n, _torchvision(f, n), args.repeat, torchinfo) for f, n in zoo() if not only or n in only]
    if transformers_zoo.load() is None:
        print("transformers is not installed (pip install -e '.[test]'): no Hugging Face models")
    else:
        rows += [_one(f"hf-{family}", n, _transformers(n), args.repeat, torchinfo)
                 for n, (family, *_) in transformers_zoo.cases().items() if not only or n in only]
    print(f"{'family':<16}{'tried':>7}{'estimated':>11}{'exact':>7}   median estimate / torchinfo on meta")
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        done = [r for r in mine if "failure" not in r]
        ours = [r["paramcalc_s"] for r in done]
        theirs = [r["torchinfo_s"] for r in done if r["torchinfo_s"]]
        speed = (f"{statistics.median(ours) * 1e3:.0f} ms / {statistics.median(theirs) * 1e3:.0f} ms"
                 if ours and theirs else "-")
        print(f"{family:<16}{len(mine):>7}{len(done):>11}{sum(r['exact'] for r in done):>7}   {speed}")
    failures = collections.Counter(r["failure"] for r in rows if "failure" in r)
    if failures:
        print("\nfailure classes, most common first:")
        for failure, count in failures.most_common():
            names = ", ".join(r["name"] for r in rows if r.get("failure") == failure)
            print(f"  {count:>3}  {failure}  ({names})")
    wrong = [r for r in rows if r.get("wrong")]
    for r in wrong:
        print(f"  WRONG {r['name']}: {', '.join(r['wrong'])}")
    slower = [r["name"] for r in rows if r.get("torchinfo_s") and r["paramcalc_s"] > r["torchinfo_s"]]
    print(f"\nslower than torchinfo: {len(slower)} of {len([r for r in rows if r.get('torchinfo_s')])}"
          f"{' (' + ', '.join(slower) + ')' if slower else ''}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
