"""torch modules, read from their attributes and, beyond nn.Sequential, a torch.fx trace.

No forward pass runs on data and no weight is touched (the meta device works). ``nn.Sequential``
trees of known modules are walked directly (nested ones flattened, named "1.0" as ``named_modules``
names them). Anything else is traced with torch.fx, keeping every module paramcalc knows as one node;
the traced functions and methods (flatten, view, permute, cat, +, matmul, F.relu, size, ...) become
paramcalc layers. What torch.fx cannot trace (Python branches on sizes, iteration over tensors,
functions a library keeps whole, Hugging Face models) is read by running the forward on meta tensors
(``torch_capture.py``) once the input shapes are known. A module object called twice shares its weights;
parameters read directly (``self.cls_token``) count as weights once. Classes are matched by name; a subclass is read as its known
base only when it keeps the base's forward (one with its own forward is traced through).
"""

from __future__ import annotations

from dataclasses import replace

from paramcalc.core.errors import ParamcalcError, SpecError
from paramcalc.core.graph import Graph, GraphNode, Sequential
from paramcalc.frontends.torch_modules import (
    _convert,
    _dtype_of,
    _qualname,
    forward_parameters,
    module_rule,
)

MAX_NESTING = 64
_SEQUENTIAL = "torch.nn.modules.container.Sequential"
_TRANSFORMER = "torch.nn.modules.transformer.Transformer"


def from_torch_module(module: object):
    """A torch module as a paramcalc model: a Sequential when it is one of known modules, else traced with
    torch.fx, else a DeferredGraph that runs the forward on meta tensors; a forward with arguments that
    default to None is read once input_shape says which of them are inputs."""
    name = type(module).__name__
    _refuse_lazy(module, name)
    dtype = _dtype_of(module)
    if module_rule(module) is not None:
        layer = _convert(module, name.lower(), {})
        arguments = _tensor_arguments(module)
        if len(arguments) == 1:
            return Sequential([layer], name=name, framework="torch", dtype=dtype)
        return Graph(tuple((a, None) for a in arguments), (GraphNode(layer.name, layer, tuple((a, 0) for a in arguments)),),
                     ((layer.name, 0),), name=name, framework="torch", dtype=dtype)
    if _qualname(type(module)) == _TRANSFORMER and _all_known(module):
        return _transformer(module, name, dtype)
    if _qualname(type(module)) == _SEQUENTIAL and _all_known(module):
        layers: list = []
        _walk(module, "", layers, {})
        return Sequential(layers, name=name, framework="torch", dtype=dtype)
    from paramcalc.frontends.torch_capture import deferred
    from paramcalc.frontends.torch_fx import traced

    if _optional_arguments(module):  # which of them are inputs is known once input_shape names them
        return deferred(module, name, lambda shapes: _read(module, name, dtype, shapes))
    try:
        return traced(module, name, dtype)
    except ParamcalcError as err:
        reason = err.message.splitlines()[0]
        return deferred(module, name, lambda shapes: _captured(module, name, dtype, shapes, reason))


def _refuse_lazy(module: object, name: str) -> None:
    """A lazy module's parameters (``nn.LazyLinear``) have no shape until a forward on real data sets it."""
    from torch.nn.parameter import is_lazy

    for tensor_name, t in (*module.named_parameters(), *module.named_buffers()):
        if is_lazy(t):
            owner = tensor_name.rpartition(".")[0]
            kind = type(module.get_submodule(owner)).__name__
            raise SpecError(f"{name}.{tensor_name} is not initialized ({kind} is a lazy module: the first "
                            "forward on real data sets its shape)", value=tensor_name, where=tensor_name,
                            fix="call the model once on a real batch before estimating it, or give the layer "
                                "its input size (nn.Linear(in_features, out_features))")


def _read(module: object, name: str, dtype: str, sample_shapes: tuple) -> Graph:
    """torch.fx's trace with the named inputs as tensors; where it cannot, the forward run on meta tensors."""
    from paramcalc.frontends.torch_fx import traced

    try:
        return traced(module, name, dtype, inputs=tuple(n for n, _ in sample_shapes))
    except ParamcalcError as err:
        return _captured(module, name, dtype, sample_shapes, err.message.splitlines()[0])


def _captured(module: object, name: str, dtype: str, sample_shapes: tuple, reason: str) -> Graph:
    from paramcalc.frontends.torch_capture import capture

    return capture(module, name, dtype, sample_shapes, reason)


def _optional_arguments(module: object) -> list[str]:
    """forward's arguments that default to None (``attention_mask=None``): inputs when input_shape names them."""
    return [p.name for p in forward_parameters(module)
            if p.default is None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _transformer(module: object, name: str, dtype: str) -> Graph:
    """nn.Transformer(src, tgt): the encoder stack on ``src``, the decoder stack on ``tgt`` and the
    encoder's output. Its forward checks sizes in Python branches, which torch.fx cannot trace; the
    two stacks are all it computes."""
    memo: dict = {}
    # shapes batch first whatever the module's layout: src and tgt differ in length, so neither length
    # can stand in the batch axis's place; the work is the same either way
    encoder = replace(_convert(module.encoder, "encoder", memo), batch_first=True)
    decoder = replace(_convert(module.decoder, "decoder", memo), batch_first=True)
    nodes = (GraphNode("encoder", encoder, (("src", 0),)), GraphNode("decoder", decoder, (("tgt", 0), ("encoder", 0))))
    notes = () if module.batch_first else (
        "nn.Transformer(batch_first=False) takes (length, batch, features) tensors: pass input_shape=[(src_len, "
        "d_model), (tgt_len, d_model)] and batch_size; its shapes are shown batch first",)
    return Graph((("src", None), ("tgt", None)), nodes, (("decoder", 0),), name=name, framework="torch",
                 dtype=dtype, notes=notes)


def _tensor_arguments(module: object) -> list[str]:
    """The required positional arguments of ``forward``: the tensors a lone module is called on
    (query, key, value for attention; tgt, memory for a decoder layer)."""
    names = [p.name for p in forward_parameters(module) if p.default is p.empty
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names or ["input"]


def _all_known(root: object) -> bool:
    stack = [root]
    while stack:
        m = stack.pop()
        for child in m._modules.values():
            if child is None:
                continue
            if _qualname(type(child)) == _SEQUENTIAL:
                stack.append(child)
            elif module_rule(child) is None:
                return False
    return True


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
