"""torchvision's models for the coverage tests and benchmarks/coverage.py, built with no weights.

Importing torchvision beside the CPU build of torch:

The torchvision release that pins torch 2.13.0 on PyPI ships compiled operators built against a CUDA
torch: they do not load beside the CPU build, and torchvision's import then fails on
``torch.library.register_fake("torchvision::nms")`` ("operator torchvision::nms does not exist").
Declaring the two operators it registers unconditionally (``nms``, ``qnms``) lets the import finish;
every model builds from Python modules, and a model that would call NMS (detection) fails at that call
with torch's own "no kernel" error, which is what a shape tool should report for a data-dependent op.

"""

from __future__ import annotations

import contextlib

SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
           "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY = []  # the declarations live as long as this library object


def load():
    """torchvision, imported; None where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return None
    import torch

    if not _LIBRARY and not _declared(torch, "nms"):
        try:
            import torchvision  # a build whose operators load needs nothing more
            return torchvision
        except RuntimeError as error:
            if "torchvision::nms" not in str(error):
                raise
            _forget_partial_import()
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in SCHEMAS:
            library.define(schema)
        _LIBRARY.append(library)
    import torchvision

    return torchvision


def _declared(torch, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _forget_partial_import() -> None:
    import sys

    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]


FAMILIES = ("classification", "segmentation", "video")


def zoo() -> list:
    """(family, name) of every model torchvision lists for the families the coverage covers."""
    models = load().models
    modules = {"classification": models, "segmentation": models.segmentation, "video": models.video}
    return [(family, name) for family in FAMILIES for name in models.list_models(module=modules[family])]


def input_shape(family: str, name: str) -> tuple:
    """One sample's shape, without the batch axis: what each model is built for."""
    if family == "video":
        return (3, 16, 224, 224) if name in ("mvit_v1_b", "mvit_v2_s", "s3d") else (3, 8, 112, 112)
    return (3, 299, 299) if name == "inception_v3" else (3, 224, 224)


@contextlib.contextmanager
def weights_on_meta():
    """Every parameter and buffer moves to the meta device as its module registers it, before any
    initialisation touches it; unlike ``with torch.device("meta")``, the model's own computations on
    plain tensors (regnet's widths) still run on the CPU."""
    import torch

    nn = torch.nn
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer(module, name, tensor, persistent=True):
        register_buffer(module, name, tensor.to("meta") if tensor is not None else None, persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def build(family: str, name: str):
    extra = {"weights_backbone": None} if family == "segmentation" else {}
    if name in ("googlenet", "inception_v3"):
        extra["init_weights"] = False  # scipy's truncated normal, which the meta device cannot run
    with weights_on_meta():
        model = load().models.get_model(name, weights=None, **extra)
    return model.eval()




def truth(model, shape: tuple) -> tuple:
    """What torch says of one sample through ``model`` on the meta device: (output shape, forward FLOPs as
    FlopCounterMode counts them), the main output of a dict of outputs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(torch.empty(1, *shape, device="meta"))
    out = out["out"] if isinstance(out, dict) else out
    return tuple(out.shape), counter.get_total_flops()
