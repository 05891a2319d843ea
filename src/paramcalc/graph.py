"""Models as paramcalc sees them, and the walk that propagates shapes through them.

A :class:`Sequential` is a list of layers applied in order. Propagation is a plain loop (a 10,000-layer
chain needs no recursion), and a layer object that appears twice shares its weights: its parameters are
counted once, its work at every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .dims import Dim, as_dim, symbol, symbols_of
from .errors import ParamcalcError, SpecError
from .layers.base import Context, Inferred, Layer
from .spec import TensorSpec


@dataclass(frozen=True)
class Sequential:
    """paramcalc's own model: layers in order, with an optional per-sample ``input_shape``.

    >>> from paramcalc import Sequential, Dense, Flatten, estimate
    >>> model = Sequential([Dense(300), Flatten(), Dense(300)], input_shape=("n", 1))
    >>> estimate(model).params
    Sym('90000*n + 900')

    ``framework`` ("keras" or "torch") says whose conventions the model follows; front-ends set it, and
    diagnostics word their advice for it.
    """

    layers: tuple = ()
    input_shape: tuple | None = None
    name: str = "sequential"
    framework: str | None = None
    dtype: str = "float32"
    notes: tuple = field(default=(), compare=False)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise SpecError(
                    f"Sequential layer {i} must be a paramcalc layer (e.g. paramcalc.Dense(300)), "
                    f"received {type(layer).__name__}",
                    where=f"layers[{i}]", value=layer,
                )
        object.__setattr__(self, "layers", layers)


@dataclass(frozen=True, slots=True)
class Node:
    """One call of a layer during propagation."""

    name: str
    layer: Layer
    inputs: tuple[TensorSpec, ...]
    inferred: Inferred
    shared_with: str | None = None  # the first call's name when the layer object was seen before


def assign_names(layers: Sequence[Layer]) -> list[str]:
    """Keras-style names for unnamed layers ("dense", "dense_1", ...); duplicates are an error."""
    names: list[str] = []
    by_object: dict[int, str] = {}
    taken = {layer.name for layer in layers if layer.name is not None}
    counters: dict[str, int] = {}
    seen: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if id(layer) in by_object:
            names.append(by_object[id(layer)])
            continue
        name = layer.name
        if name is None:
            base = layer.kind or type(layer).__name__.lower()
            while True:
                count = counters.get(base, 0)
                counters[base] = count + 1
                name = base if count == 0 else f"{base}_{count}"
                if name not in taken:
                    break
            taken.add(name)
        elif name in seen:
            raise SpecError(
                f"duplicate layer name '{name}': layers {seen[name]} and {i} are both called '{name}'",
                layer=name, where=f"layers[{i}]", fix="give each layer a unique name",
            )
        seen[name] = i
        by_object[id(layer)] = name
        names.append(name)
    return names


def normalize_shape(shape: object, where: str, reserved: str | None = None) -> tuple[Dim, ...]:
    """A user's per-sample shape: ints, symbol names, or None (an unknown size, given a symbol)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        shape = (shape,)
    dims = []
    for i, value in enumerate(shape):
        if value is None:
            dims.append(symbol(f"d{i + 1}"))
            continue
        dim = as_dim(value, f"{where}[{i}]")
        if reserved is not None and reserved in symbols_of(dim):
            raise SpecError(
                f"'{reserved}' names the batch axis, received it in {where}[{i}]",
                where=f"{where}[{i}]", value=value,
                fix=f"choose another symbol name, or pass batch_size='{reserved}' alone",
            )
        dims.append(dim)
    return tuple(dims)


def propagate(layers: Sequence[Layer], names: Sequence[str], first: TensorSpec,
              assumptions: list, unset_batch: Dim | None = None) -> list[Node]:
    """Run each layer's rule on the previous output, iteratively; errors gain the layer's name."""
    nodes: list[Node] = []
    first_call: dict[int, Node] = {}
    current = first
    for layer, name in zip(layers, names):
        ctx = Context(name, layer.display_type, assumptions, unset_batch)
        try:
            inferred = layer.infer((current,), ctx)
        except ParamcalcError as err:
            raise err.with_layer(name) from None
        previous = first_call.get(id(layer))
        if previous is None:
            node = Node(name, layer, (current,), inferred)
            first_call[id(layer)] = node
        else:
            if [w.shape for w in previous.inferred.weights] != [w.shape for w in inferred.weights]:
                raise ParamcalcError(
                    f"shared layer '{name}' is called on inputs that need different weight shapes "
                    f"({[w.shape for w in previous.inferred.weights]} vs {[w.shape for w in inferred.weights]})",
                    layer=name,
                )
            node = Node(name, layer, (current,), inferred, shared_with=previous.name)
        nodes.append(node)
        current = inferred.output
    return nodes
