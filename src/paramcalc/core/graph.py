"""Models as paramcalc sees them, and the walk that propagates shapes through them.

A :class:`Graph` is a DAG: named inputs, nodes that each call a layer on the outputs of earlier nodes,
and named outputs. A :class:`Sequential` is the chain special case. Propagation visits nodes in
topological order with plain loops (a 10,000-layer chain needs no recursion). A layer object called by
several nodes shares its weights: its parameters are counted once, its work at every call.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from paramcalc.core.dims import Dim, as_dim, symbol, symbols_of
from paramcalc.core.errors import ParamcalcError, ShapeError, SpecError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.spec import TensorSpec

# A reference to a tensor: (name of an input or node, index of that node's output).
Ref = tuple


@dataclass(frozen=True)
class GraphNode:
    """One call of ``layer`` on the tensors ``inbound`` refers to. ``module``: the path of the user's
    module the call runs in (``transformer.h.0.attn``, as torch's ``named_modules`` names it; "" for the
    model itself), where the model has a module tree; None reads as the node's own name."""

    name: str
    layer: Layer
    inbound: tuple = ()
    module: str | None = None


@dataclass(frozen=True)
class Graph:
    """A DAG model: ``inputs`` are (name, per-sample shape or None) pairs, ``outputs`` are refs.

    >>> from paramcalc import Graph, GraphNode, Dense, Concatenate, estimate
    >>> g = Graph(inputs=(("a", (10,)), ("b", (5,))),
    ...           nodes=(GraphNode("d", Dense(4), (("a", 0),)),
    ...                  GraphNode("cat", Concatenate(), (("d", 0), ("b", 0)))),
    ...           outputs=(("cat", 0),))
    >>> estimate(g).output_shape[1:]
    (9,)
    """

    inputs: tuple
    nodes: tuple
    outputs: tuple
    name: str = "model"
    framework: str | None = None
    dtype: str = "float32"
    notes: tuple = field(default=(), compare=False)
    # (path, class name) of each module of the user's module tree, in named_modules order; and how deep
    # a summary shows that tree unless told (None: one row per node)
    modules: tuple = field(default=(), compare=False)
    summary_depth: int | None = field(default=None, compare=False)
    # inputs that are not of ``dtype`` (token ids: "int64"), by name
    input_dtypes: dict = field(default_factory=dict, compare=False)
    # the mode a torch forward was read in ("train" or "eval": code that checks ``self.training``, such as
    # functional dropout, ran as that mode runs it); None where no forward was read
    forward_mode: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not all(isinstance(i, (list, tuple)) and len(i) == 2 and isinstance(i[0], str) for i in self.inputs):
            raise SpecError(f"graph inputs must be (name, shape) pairs with string names; received {shown(self.inputs)}",
                            where="inputs", value=self.inputs)
        object.__setattr__(self, "inputs", tuple((n, s) for n, s in self.inputs))
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        outputs = tuple(_as_ref(r, f"outputs[{i}]") for i, r in enumerate(self.outputs))
        if not outputs:
            raise SpecError(f"model '{self.name}' has no outputs", where="outputs",
                            fix="name the layers whose tensors the model returns")
        object.__setattr__(self, "outputs", outputs)
        seen: dict[str, str] = {}
        for name, _ in self.inputs:
            seen[name] = "input"
        for i, node in enumerate(nodes):
            if not isinstance(node, GraphNode) or not isinstance(node.layer, Layer) or not isinstance(node.name, str):
                raise SpecError(f"graph node {i} must be a GraphNode named by a string, holding a paramcalc layer",
                                where=f"nodes[{i}]", value=node)
            if node.name in seen:
                raise SpecError(
                    f"duplicate layer name '{node.name}': node {i} and an earlier {seen[node.name]} are "
                    f"both called '{node.name}'", layer=node.name, fix="give each layer a unique name")
            seen[node.name] = "node"
            inbound = node.inbound
            if type(inbound) is not tuple or not all(_is_ref(r) for r in inbound):
                # the message names where it fails, so it is written only for references to convert
                inbound = tuple(_as_ref(r, f"layer '{node.name}' inbound[{j}]") for j, r in enumerate(inbound))
            object.__setattr__(node, "inbound", inbound)

    def graph(self) -> "Graph":
        return self


@dataclass(frozen=True)
class DeferredGraph:
    """A model whose graph exists only once its input shapes do: a torch module read by running its
    forward (the operations it runs depend on the sizes it is given).

    ``inputs``: (name, None) pairs of the inputs it takes unless told otherwise; ``accepted``: every
    input name it can take (a forward's optional arguments); ``build``: called with (name, per-sample
    shape) pairs, returns the :class:`Graph`.
    """

    name: str
    inputs: tuple
    accepted: tuple
    build: Callable = field(compare=False, repr=False)

    def named(self, names: Iterable[str]) -> "DeferredGraph":
        """The same model taking the inputs ``names`` (a dict ``input_shape`` names them)."""
        unknown = [n for n in names if n not in self.accepted]
        if unknown:
            raise SpecError(f"input_shape names no input {unknown[0]!r}; the model's forward takes: "
                            f"{', '.join(self.accepted)}", where="input_shape", value=unknown[0])
        return DeferredGraph(self.name, tuple((n, None) for n in names), self.accepted, self.build)


def _names_output(ref) -> bool:
    """Whether the list or tuple ``ref`` is (a name, a non-negative output index)."""
    return len(ref) == 2 and isinstance(ref[0], str) and type(ref[1]) is int and ref[1] >= 0


def _is_ref(ref: object) -> bool:
    """Whether ``ref`` is already a tensor reference as graphs keep them: a (name, output index) tuple."""
    return type(ref) is tuple and _names_output(ref)


def _as_ref(ref: object, where: str = "a reference") -> Ref:
    """A tensor reference: a name, or (name, output index)."""
    if isinstance(ref, str):
        return (ref, 0)
    if isinstance(ref, (list, tuple)) and _names_output(ref):
        return (ref[0], ref[1])
    raise SpecError(f"{where} must be a layer or input name, or (name, output index); received {shown(ref)}",
                    where=where, value=ref)


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

    def graph(self) -> Graph:
        """The chain as a Graph; unnamed layers get Keras-style names, a repeated object is shared."""
        names = assign_names(self.layers)
        input_name = "input"
        while input_name in names:
            input_name += "_"
        nodes, previous, calls = [], (input_name, 0), {}
        for layer, name in zip(self.layers, names):
            count = calls.get(name, 0)
            calls[name] = count + 1
            node_name = name if count == 0 else f"{name}@{count}"
            nodes.append(GraphNode(node_name, layer, (previous,)))
            previous = (node_name, 0)
        return Graph(((input_name, self.input_shape),), tuple(nodes), (previous,), name=self.name,
                     framework=self.framework, dtype=self.dtype, notes=self.notes)


@dataclass(frozen=True, slots=True)
class Node:
    """One layer call as propagated."""

    name: str
    layer: Layer
    inputs: tuple[TensorSpec, ...]
    inferred: Inferred
    shared_with: str | None = None  # the first call's name when the layer object was called before
    inbound: tuple = ()  # the (name, output index) refs it read


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


def topological_order(graph: Graph) -> list[GraphNode]:
    """Nodes so that each comes after the nodes it reads; declaration order breaks ties.

    A reference to a missing name and a cycle are errors that name the nodes involved.
    """
    index = {node.name: i for i, node in enumerate(graph.nodes)}
    inputs = {name for name, _ in graph.inputs}
    waiting = [0] * len(graph.nodes)
    readers: list[list[int]] = [[] for _ in graph.nodes]
    for i, node in enumerate(graph.nodes):
        for source, _ in node.inbound:
            if source in index:
                waiting[i] += 1
                readers[index[source]].append(i)
            elif source not in inputs:
                raise SpecError(
                    f"layer '{node.name}' takes input from '{source}', which does not exist "
                    f"(inputs: {', '.join(sorted(inputs)) or 'none'})",
                    layer=node.name, value=source,
                )
    for source, _ in graph.outputs:
        if source not in index and source not in inputs:
            raise SpecError(f"model output '{source}' names no layer or input", value=source)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(graph.nodes[i])
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(graph.nodes):
        raise SpecError(f"cycle: {' -> '.join(_find_cycle(graph, index, waiting))}",
                        fix="a layer cannot (indirectly) take its own output as input")
    return order


def _find_cycle(graph: Graph, index: dict, waiting: list) -> list[str]:
    """Names along one cycle among the nodes Kahn's walk could not order, in data-flow order."""
    start = next(i for i, w in enumerate(waiting) if w > 0)
    path, position = [], {}
    current = start
    while current not in position:
        position[current] = len(path)
        path.append(current)
        # follow an inbound edge that stays among the unordered nodes
        current = next(index[s] for s, _ in graph.nodes[current].inbound if s in index and waiting[index[s]] > 0)
    cycle = path[position[current]:] + [current]
    return [graph.nodes[i].name for i in reversed(cycle)]


def propagate(graph: Graph, input_specs: dict, assumptions: list,
              unset_batch: Dim | None = None) -> tuple[list[Node], dict]:
    """Run each layer's rule on its inbound tensors in topological order; errors gain the layer's name.

    Returns the calls in order and every tensor produced, by name (a tuple of outputs per name).
    """
    values: dict[str, tuple] = {name: (spec,) for name, spec in input_specs.items()}
    calls: list[Node] = []
    first_call: dict[int, Node] = {}
    memo: dict = {}  # Context.memo
    # a shared layer's weights belong to its first call as the model declares it ("layer", not "layer@1"),
    # even where another call comes first in topological order
    owner: dict[int, str] = {}
    for node in graph.nodes:
        owner.setdefault(id(node.layer), node.name)
    for node in topological_order(graph):
        try:
            inputs = tuple([values[name][index] for name, index in node.inbound])
        except IndexError:  # an output the node it names does not have: the error says which
            inputs = tuple(lookup(values, ref, node.name) for ref in node.inbound)
        ctx = Context(node.name, node.layer.display_type, assumptions, unset_batch, memo)
        try:
            inferred = node.layer.infer(inputs, ctx)
        except ParamcalcError as err:
            raise err.with_layer(node.name) from None
        previous = first_call.get(id(node.layer))
        if previous is not None:
            shapes = [w.shape for w in inferred.weights]
            if [w.shape for w in previous.inferred.weights] != shapes:
                raise ShapeError(
                    f"shared layer '{previous.name}' is called again at '{node.name}' on inputs that need "
                    f"other weight shapes ({[w.shape for w in previous.inferred.weights]} vs {shapes})",
                    layer=node.name,
                )
        first_owner = owner[id(node.layer)]
        call = Node(node.name, node.layer, inputs, inferred, inbound=node.inbound,
                    shared_with=None if first_owner == node.name else first_owner)
        first_call.setdefault(id(node.layer), call)
        calls.append(call)
        values[node.name] = inferred.outputs
    return calls, values


def lookup(values: dict, ref: Ref, reader: str | None = None) -> TensorSpec:
    """The tensor ``ref`` names among ``values`` (name -> outputs), read by layer ``reader`` (None: the
    model's outputs)."""
    name, index = ref
    outputs = values[name]
    if not 0 <= index < len(outputs):
        who = f"layer '{reader}' takes" if reader is not None else "the model's outputs name"
        raise SpecError(f"{who} output {index} of '{name}', which has {len(outputs)} output(s)",
                        layer=reader or name, value=index,
                        fix=f"name an output of '{name}' from 0 to {len(outputs) - 1}")
    return outputs[index]
