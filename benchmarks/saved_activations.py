"""What autograd keeps in a real CPU forward against what paramcalc predicts it keeps, for real models:
the Hugging Face architectures of tests/transformers_zoo.py (small configs, batch 4), a list of
torchvision models (batch 2; video models at 8 frames of 64x64 where they allow it) and one timm model per
timm model module up to 100 M parameters and 512x512 inputs (batch 2, the input size of its pretrained
config), each built
with random weights on the CPU, in training mode.

Real: the bytes of every storage saved-tensor hooks see once (parameters and buffers left out: they are
counted as weights), and of the input batch, which the training loop holds whether autograd keeps it or
not. Predicted: ``est.training.memory.activations + input_batch`` with the CPU's rules.

    python benchmarks/saved_activations.py [--only bert,vit_b_16] [--skip torchvision,timm] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests import transformers_zoo  # noqa: E402
from tests.autograd_kept import kept_by_autograd  # noqa: E402
from tests.torchvision_zoo import input_shape, load  # noqa: E402

TORCHVISION = ("classification:swin_t", "classification:maxvit_t", "classification:vit_b_16",
               "classification:convnext_tiny", "classification:efficientnet_b0", "classification:mobilenet_v3_small",
               "classification:resnet18", "classification:densenet121", "classification:googlenet",
               "classification:inception_v3", "classification:regnet_y_400mf", "classification:shufflenet_v2_x1_0",
               "classification:swin_v2_t", "classification:efficientnet_v2_s", "video:r3d_18", "video:swin3d_t",
               "video:s3d", "segmentation:fcn_resnet50", "segmentation:lraspp_mobilenet_v3_large")


def predicted(model, shape, batch: int) -> int:
    import paramcalc

    est = paramcalc.estimate(model.to("meta"), input_shape=shape, batch_size=batch, optimizer="sgd", device="cpu")
    return est.training.memory.activations + est.training.memory.input_batch


def _transformers_row(name: str) -> dict:
    import torch

    transformers = transformers_zoo.load()
    _, cls, config_cls, arguments, shapes = transformers_zoo.cases()[name]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(getattr(transformers, config_cls)(**arguments)).train()
    data = {n: torch.randint(0, 100, (4, *s)) if n.endswith("_ids") else torch.randn(4, *s) for n, s in shapes.items()}
    real = kept_by_autograd(model, lambda: model(**data), list(data.values()))
    return {"name": name, "real": real, "predicted": predicted(model, shapes, 4)}


def _torchvision_row(spec: str) -> dict:
    import torch

    family, name = spec.split(":")
    shape = input_shape(family, name)
    if family == "video" and name != "s3d":
        shape = (3, 8, 64, 64)
    extra = {"weights_backbone": None} if family == "segmentation" else {}
    if name in ("googlenet", "inception_v3"):
        extra["init_weights"] = False
    torch.manual_seed(0)
    model = load().models.get_model(name, weights=None, **extra).train()
    x = torch.randn(2, *shape)
    return {"name": name, "real": kept_by_autograd(model, lambda: model(x), [x]), "predicted": predicted(model, shape, 2)}


TIMM_MAX_PARAMETERS = 100_000_000  # larger ones take minutes and gigabytes to run on this CPU
TIMM_MAX_INPUT = 3 * 512 * 512  # SAM's 1024x1024 images need more memory for training than this CPU has


def _timm_row(name: str) -> dict:
    import torch

    from tests import timm_zoo

    timm = timm_zoo.load()
    meta, shape = timm_zoo.build(timm, name)
    size = sum(p.numel() for p in meta.parameters())
    if size > TIMM_MAX_PARAMETERS:
        return {"name": name, "error": f"skipped: {size:,} parameters"}
    if math.prod(shape) > TIMM_MAX_INPUT:
        return {"name": name, "error": f"skipped: input {shape}"}
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).train()
    x = torch.randn(2, *shape)
    return {"name": name, "real": kept_by_autograd(model, lambda: model(x), [x]), "predicted": predicted(model, shape, 2)}


PER_PROCESS = 8  # models run in one child process: the heap a CPU training forward leaves grows by
# 100-150 MiB per model (glibc keeps it), and a whole sweep in one process runs out of memory


def _jobs(skip: str) -> list:
    jobs = []
    if "transformers" not in skip and transformers_zoo.load() is not None:
        jobs += [("transformers", n) for n in transformers_zoo.cases()]
    if "torchvision" not in skip:
        jobs += [("torchvision", s) for s in TORCHVISION]
    if "timm" not in skip:
        from tests import timm_zoo

        timm = timm_zoo.load()
        jobs += [("timm", n) for n in (timm_zoo.names(timm) if timm is not None else [])]
    return jobs


def _run(jobs: list) -> list:
    makers = {"transformers": _transformers_row, "torchvision": _torchvision_row, "timm": _timm_row}
    rows = []
    for family, name in jobs:
        try:
            row = makers[family](name)
        except Exception as err:  # a model this torch cannot run on the CPU or paramcalc cannot read: say so
            row = {"name": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"}
        rows.append(row)
    return rows


def _in_children(jobs: list):
    """Rows of ``jobs``, PER_PROCESS models to a fresh child process, as each child ends."""
    import subprocess
    import tempfile

    for start in range(0, len(jobs), PER_PROCESS):
        chunk = jobs[start:start + PER_PROCESS]
        with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(chunk), "--json", out.name],
                                  capture_output=True, text=True)
            rows = json.load(open(out.name)) if done.returncode == 0 else [
                {"name": name, "error": f"the child process ended with {done.returncode}"} for _, name in chunk]
        yield from rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--skip", default="", help="transformers, torchvision and/or timm")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # (family, name) pairs to run here
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.child is not None:
        with open(args.json, "w") as f:
            json.dump(_run([tuple(job) for job in json.loads(args.child)]), f)
        return
    only = {n for n in args.only.split(",") if n}
    jobs = [(family, name) for family, name in _jobs(args.skip) if not only or name.split(":")[-1] in only]
    rows = []
    for row in _in_children(jobs):
        rows.append(row)
        if "error" in row:
            print(f"{row['name']:28s} {row['error']}", flush=True)
        else:
            diff = row["predicted"] - row["real"]
            print(f"{row['name']:28s} real {row['real']:>13,d}  predicted {row['predicted']:>13,d}  "
                  f"{diff:>+11,d} bytes ({diff / row['real']:+.4%})", flush=True)
    done = [r for r in rows if "error" not in r]
    exact = sum(r["predicted"] == r["real"] for r in done)
    print(f"\n{exact} of {len(done)} exact; {len(rows) - len(done)} not run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
