"""timm architectures for the coverage test: the first model timm lists of each of its model modules
(one per family: ViTs, ResNets, EfficientNets, ConvNeXts, Swins, hybrids, ...), built with no weights
on the meta device, at the input size its pretrained config names.

timm imports torchvision; ``load()`` goes through torchvision_zoo first (see there for why torchvision
needs two operators declared beside the CPU build of torch).
"""

from __future__ import annotations


def load():
    """timm, imported; None where it is not installed."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return None
    from .torchvision_zoo import load as load_torchvision

    load_torchvision()
    import timm

    return timm


def names(timm) -> list:
    """One model name per timm model module, in module order."""
    first: dict = {}
    for name in timm.list_models():
        first.setdefault(str(timm.models._registry._model_to_module.get(name)), name)
    return [first[module] for module in sorted(first)]


def build(timm, name: str):
    """The model, with its parameters and buffers on the meta device, in eval mode, and one sample's
    input shape."""
    from .torchvision_zoo import weights_on_meta

    with weights_on_meta():
        model = timm.create_model(name, pretrained=False).eval()
    return model, tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
