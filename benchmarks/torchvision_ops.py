"""Import torchvision beside the CPU build of torch.

The torchvision release that pins torch 2.13.0 on PyPI ships compiled operators built against a CUDA
torch: they do not load beside the CPU build, and torchvision's import then fails on
``torch.library.register_fake("torchvision::nms")`` ("operator torchvision::nms does not exist").
Declaring the two operators it registers unconditionally (``nms``, ``qnms``) lets the import finish;
every model builds from Python modules, and a model that would call NMS (detection) fails at that call
with torch's own "no kernel" error, which is what a shape tool should report for a data-dependent op.

Used by the coverage tests and benchmarks/coverage.py: ``import torchvision_ops; tv = torchvision_ops.load()``.
"""

from __future__ import annotations

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
