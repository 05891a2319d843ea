"""torch modules, read from their attributes: no forward pass, no weights touched (meta device works).

``nn.Sequential`` is walked child by child (nested Sequentials are flattened, named "1.0" as
``named_modules`` names them). A module object used twice shares its weights: paramcalc maps it to one
layer, counted once. Classes are matched exactly, by name: a subclass may have its own forward, so it
needs its own rule (``paramcalc.register_torch_module``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..errors import ParamcalcError, SpecError, UnknownLayerError
from ..graph import Sequential
from ..layers import Activation, Dense, Dropout, Flatten, Identity, Unflatten
from ..registry import register_torch_module, torch_converter

MAX_NESTING = 64
_SEQUENTIAL = "torch.nn.modules.container.Sequential"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def from_torch_module(module: object) -> Sequential:
    """A torch module as a paramcalc Sequential (nn.Sequential, or one supported module alone)."""
    layers: list = []
    memo: dict[int, object] = {}
    if _qualname(type(module)) == _SEQUENTIAL:
        _walk(module, "", layers, memo)
    else:
        layers.append(_convert(module, type(module).__name__.lower(), memo))
    return Sequential(layers, name=type(module).__name__, framework="torch", dtype=_dtype_of(module))


def _walk(root: object, prefix: str, layers: list, memo: dict) -> None:
    """Append the leaves of nested Sequentials in order, iteratively (no recursion limit)."""
    stack = [(iter(root._modules.items()), prefix, 0)]
    while stack:
        children, base, depth = stack[-1]
        item = next(children, None)
        if item is None:
            stack.pop()
            continue
        key, child = item
        if child is None:
            continue
        name = f"{base}{key}"
        if _qualname(type(child)) == _SEQUENTIAL:
            if depth + 1 > MAX_NESTING:
                raise SpecError(f"nesting too deep (limit {MAX_NESTING}) at module '{name}'", where=name)
            stack.append((iter(child._modules.items()), f"{name}.", depth + 1))
            continue
        layers.append(_convert(child, name, memo))


def _convert(module: object, name: str, memo: dict):
    if id(module) in memo:  # the same module object again: shared weights
        return memo[id(module)]
    cls = type(module)
    convert = torch_converter(cls)
    if convert is None:
        raise UnknownLayerError(
            f"unsupported torch module class '{_qualname(cls)}' at '{name}'",
            layer=name, value=cls.__name__,
            fix=f"register a rule: paramcalc.register_torch_module({cls.__name__}, lambda m: "
                "paramcalc.Dense(...)) returning a paramcalc layer",
        )
    try:
        layer = convert(module)
    except ParamcalcError as err:
        raise err.with_layer(name) from None
    layer = replace(layer, name=name, type_name=cls.__name__, trainable=_trainable(module, layer))
    memo[id(module)] = layer
    return layer


# torch parameter names -> paramcalc weight names, where they differ
_WEIGHT_NAMES = {"weight": "kernel"}


def _trainable(module: object, layer) -> bool | tuple:
    params = list(module._parameters.items())
    flags = [p.requires_grad for _, p in params if p is not None]
    if all(flags):
        return layer.trainable
    if not any(flags):
        return False
    return tuple(_WEIGHT_NAMES.get(n, n) for n, p in params if p is not None and p.requires_grad)


def _dtype_of(module: object) -> str:
    for p in module.parameters():
        return str(p.dtype).replace("torch.", "")
    return "float32"


def _unflattened(sizes: object) -> tuple:
    sizes = tuple(sizes)
    if any(isinstance(s, tuple) for s in sizes):
        raise SpecError("named-tensor Unflatten (sizes given as (name, size) pairs) is not supported",
                        value=sizes, fix="use integer sizes")
    return sizes


def _activation(function: str, **extra) -> Callable:
    return lambda m: Activation(function, **{k: (getattr(m, v) if getattr(m, v) is not None else -1)
                                              for k, v in extra.items()})


BUILTINS: dict[str, Callable] = {
    "torch.nn.modules.linear.Linear": lambda m: Dense(m.out_features, in_features=m.in_features,
                                                      use_bias=m.bias is not None),
    "torch.nn.modules.linear.Identity": lambda m: Identity(),
    "torch.nn.modules.flatten.Flatten": lambda m: Flatten(m.start_dim, m.end_dim, strict=True),
    "torch.nn.modules.flatten.Unflatten": lambda m: Unflatten(m.dim, _unflattened(m.unflattened_size)),
    "torch.nn.modules.activation.Softmax": _activation("softmax", axis="dim"),
    "torch.nn.modules.activation.LogSoftmax": _activation("log_softmax", axis="dim"),
}
for _name in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"):
    BUILTINS[f"torch.nn.modules.dropout.{_name}"] = lambda m: Dropout(m.p)
for _name, _function in {
    "ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "ELU": "elu", "CELU": "celu",
    "SELU": "selu", "GELU": "gelu", "SiLU": "silu", "Mish": "mish", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign", "Hardtanh": "hard_tanh",
    "Hardsigmoid": "hard_sigmoid", "Hardswish": "hard_silu",
}.items():
    BUILTINS[f"torch.nn.modules.activation.{_name}"] = _activation(_function)

for _name, _convert_fn in BUILTINS.items():
    register_torch_module(_name, _convert_fn)
