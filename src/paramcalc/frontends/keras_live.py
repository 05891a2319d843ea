"""Live Keras models: ``from_keras_model`` reads a Sequential or functional model from its config
(``frontends/keras.py``), and from the model object's functional graph what a config cannot say.

A functional model built inside a subclass's ``__init__`` (every KerasHub backbone and task model)
serializes its constructor arguments, not its layers; the live object still holds the graph: its input
and output tensors, and for each layer call the tensors it read (``_keras_history`` of each tensor
names the layer call that made it). That graph is walked from the outputs back to the inputs, so a
model is read whatever its class.

Layers of a class paramcalc has a rule for are read as the config path reads them (from
``get_config()``), as are the Keras operations with rules (``x[:, 0]``, ``ops.matmul``). A layer of any
other class is read as the layer and operation calls its ``call()`` makes (``keras_expand``), where each
of those has a rule and holds the layer's weights: the layer is then exact. Any other layer or
operation becomes a :class:`~paramcalc.layers.foreign.ForeignLayer`: its weights counted exactly from
the built layer, its shapes inferred by Keras itself (``compute_output_spec``) for the shapes paramcalc
propagates, and its work estimated, which the estimate's notes and the row say (with why it was not read
as its calls). Keras is imported only here, and only for a live model the caller already built with it.
"""

from __future__ import annotations

from dataclasses import replace

from paramcalc.core.dims import as_dim, subs, symbol, symbols_of
from paramcalc.core.errors import ParamcalcError, SpecError
from paramcalc.core.graph import Graph, GraphNode
from paramcalc.core.layer import Weight
from paramcalc.core.registry import keras_converter
from paramcalc.frontends.keras import (
    _KERAS_OPS,
    _TENSOR_KWARGS,
    MAX_NESTING,
    MODEL_CLASSES,
    _keras_op,
    _policy_name,
    from_keras_config,
)
from paramcalc.frontends.keras_expand import (
    ExpandingBuilder,
    history_of,
    nodes_reaching,
    tensors_in,
)
from paramcalc.layers.foreign import ForeignLayer

# sizes a symbolic dimension takes while Keras is asked for the shapes an operation makes from it (one
# more than this, symbol by symbol, gives each output size's dependence on it)
PROBE_SIZES = (5, 7, 11, 13, 17, 19, 23, 29)


def live_graph_of(model: object):
    """The functional graph a live Keras model holds (a functional model, a subclass built as one, a
    built Sequential), or None."""
    if any(c.__name__ == "Functional" and c.__module__.startswith("keras.") for c in type(model).__mro__):
        return model
    functional = getattr(model, "_functional", None)  # a built Sequential runs through one
    return functional if functional is not None and live_graph_of(functional) is functional else None


def from_keras_model(model: object):
    """A live Keras model. A Sequential or functional model is read from its config (fast, and it needs
    no built weights); one whose config lists classes paramcalc has no rule for, and a functional model
    built inside a subclass (KerasHub backbones), are read from the live graph instead
    (``frontends/keras_live.py``), where Keras infers what such a layer makes."""
    class_name = type(model).__name__
    if class_name in MODEL_CLASSES:
        try:
            config = model.get_config()
        except Exception:  # noqa: BLE001 - a layer whose get_config() fails: the live graph still holds it
            config = None
            if live_graph_of(model) is None:
                raise
        try:
            return from_live_model(model) if config is None else from_keras_config(config)
        except ParamcalcError:  # a class without a rule, or a configuration a rule refuses: Keras says
            if config is None or live_graph_of(model) is None:
                raise
            return from_live_model(model)
    if live_graph_of(model) is not None:
        return from_live_model(model)
    raise SpecError(
        f"Keras model '{getattr(model, 'name', '?')}' is a subclassed {class_name} with no functional graph: "
        "its layers run from its call(), which paramcalc does not run", value=class_name,
        fix="build it as a functional model (keras.Input, layer calls, keras.Model(inputs, outputs)), or "
            "pass a keras.Sequential",
    )


def from_live_model(model: object) -> Graph:
    """A live Keras model whose functional graph exists, as a paramcalc graph."""
    builder = _LiveBuilder()
    inputs, outputs = builder.model(model, prefix="", outer_refs=None, depth=0, trainable=bool(model.trainable))
    nodes = tuple(GraphNode(n.name, n.layer, tuple(builder.resolve(r, n.name) for r in n.inbound))
                  for n in builder.nodes)
    outputs = tuple(builder.resolve(r, "the model outputs") for r in outputs)
    dtype = _policy_name(getattr(getattr(model, "dtype_policy", None), "name", None)) or "float32"
    return Graph(tuple(inputs), nodes, outputs, name=model.name, framework="keras", dtype=dtype,
                 notes=builder.foreign_notes())


class _LiveBuilder(ExpandingBuilder):
    """Walks live functional graphs (nested models inlined) into graph nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.owner_of_variable: dict[int, str] = {}  # id of a built variable -> the layer counting it
        self.foreign_why: dict[str, str] = {}  # class -> why Keras infers its shapes
        self.layer_names: dict[int, str] = {}  # id of a Keras layer -> the name its paramcalc layer has

    def model(self, model, prefix: str, outer_refs, depth: int, trainable: bool):
        if depth > MAX_NESTING:
            raise SpecError(f"models nested too deep (limit {MAX_NESTING}) at '{prefix}'", where=prefix)
        graph = live_graph_of(model)
        inputs = []
        for position, tensor in enumerate(graph.inputs):
            name = prefix + self.name_of(history_of(tensor).operation)
            if outer_refs is None:
                inputs.append((name, tuple(tensor.shape[1:])))
                self.alias[(name, 0, 0)] = (name, 0)
            elif position < len(outer_refs):
                self.alias[(name, 0, 0)] = outer_refs[position]
            else:
                raise SpecError(f"nested model '{model.name}' input '{name}' receives no tensor", where=prefix)
        for operation, index, node in nodes_reaching(graph.outputs):
            if getattr(node, "is_input", False) and type(operation).__name__ == "InputLayer":
                continue
            self.call(operation, index, node, prefix, depth, trainable and bool(getattr(operation, "trainable", True)))
        return inputs, [self.ref(t, prefix) for t in graph.outputs]

    def call(self, operation, index: int, node, prefix: str, depth: int, trainable: bool) -> None:
        name = prefix + self.name_of(operation)
        node_name = name if index == 0 else f"{name}@{index}"
        if live_graph_of(operation) is not None:  # a model called as a layer: inlined
            refs = [self.ref(t, prefix) for t in node.input_tensors]
            _, outs = self.model(operation, f"{node_name}/", refs, depth + 1, trainable)
            for t, out in enumerate(outs):
                self.alias[(name, index, t)] = out
            return
        # one paramcalc layer per Keras layer, named where first met, even where a nested model and its
        # outer model both call it (a task model's head reusing its backbone's embedding)
        owner = self.layer_names.setdefault(id(operation), name)
        layer, refs = self.known(operation, owner, node, prefix, trainable)
        if layer is None and self.expand(operation, (name, index), node, node_name, prefix, depth, trainable):
            return
        if layer is None:
            layer = self.foreign(operation, owner, node_name, node, trainable)
            refs = [self.ref(t, prefix) for t in node.input_tensors]
        self.nodes.append(GraphNode(node_name, layer, tuple(refs)))
        self.calls[(name, index)] = node_name

    def known(self, operation, name: str, node, prefix: str, trainable: bool):
        """(layer, input refs) where paramcalc has a rule for the call; (None, None) otherwise."""
        class_name, module = type(operation).__name__, type(operation).__module__
        args = [self.ref(t, prefix) for t in tensors_in(_data_arguments(operation, node.arguments.args))]
        if module.startswith(_KERAS_OPS):
            constants = tuple(a for a in node.arguments.args if not tensors_in(a))
            try:
                given = frozenset(k for k, v in node.arguments.kwargs.items() if tensors_in(v))
                op = _keras_op(class_name, module, len(args), name, constants, operation.get_config(), given)
                return replace(op, name=name, type_name=class_name), args
            except ParamcalcError:  # no rule for this operation, or for these arguments: Keras says
                return None, None
        if keras_converter(class_name, module) is None:
            return None, None
        kwargs = node.arguments.kwargs
        refs = args + [self.ref(t, prefix) for key in _TENSOR_KWARGS if key in kwargs for t in tensors_in(kwargs[key])]
        try:
            config = operation.get_config()
        except Exception as err:  # noqa: BLE001 - a class of that name whose get_config fails (KerasHub's
            # Gemma RMSNormalization): no configuration for the rule to read, Keras says instead
            self.foreign_why.setdefault(class_name, f"its get_config() fails ({type(err).__name__}), so paramcalc's "
                                                    "rule for the class name has no configuration to read")
            return None, None
        try:
            layer = self._layer(name, class_name, config, name, trainable, module, kwargs)
        except ParamcalcError as err:  # a rule that refuses this configuration: Keras says instead
            self.foreign_why.setdefault(class_name, f"paramcalc's rule refused it: {err.message}")
            return None, None
        for variable in operation.weights:
            self.owner_of_variable.setdefault(id(variable), name)
        return layer, refs

    def foreign(self, operation, name: str, node_name: str, node, trainable: bool) -> ForeignLayer:
        class_name = type(operation).__name__
        if name not in self.layers:
            trained = {id(v) for v in getattr(operation, "trainable_weights", ())}
            weights, tied = [], []
            for position, variable in enumerate(getattr(operation, "weights", ())):
                owner = self.owner_of_variable.setdefault(id(variable), name)
                if owner != name:
                    tied.append(position)
                weights.append(Weight(str(getattr(variable, "path", None) or variable.name),
                                      tuple(int(d) for d in variable.shape), trainable=id(variable) in trained))
            oracle = _KerasOracle()
            layer = ForeignLayer(name=name, type_name=class_name, trainable=trainable, tied=tuple(tied),
                                 origin=f"{type(operation).__module__}.{class_name}", built_weights=tuple(weights),
                                 oracle=oracle)
            self.layers[name] = layer
            self.foreign_why.setdefault(class_name, "no paramcalc rule for this class")
        layer = self.layers[name]  # every call is one layer object: its weights count once
        layer.oracle.add(node_name, operation, node)
        return layer

    def name_of(self, operation) -> str:
        return self.renamed.get(id(operation)) or operation.name

    def ref(self, tensor, prefix: str) -> tuple:
        bound = self.bound.get(id(tensor))
        if bound is not None:
            return bound
        history = history_of(tensor)
        return ("?", prefix + self.name_of(history.operation), history.node_index, history.tensor_index)

    def foreign_notes(self) -> tuple:
        """One note per class read by Keras' shape inference: why, and how its cost is estimated."""
        notes = []
        for cls, why in self.foreign_why.items():
            calls = [n for n in self.nodes if isinstance(n.layer, ForeignLayer) and n.layer.type_name == cls]
            if not calls:
                continue
            bases = sorted({n.layer.basis(n.name) for n in calls})
            notes.append(f"{cls} ({len(calls)} call{'s' if len(calls) != 1 else ''}): {why}; shape from Keras, "
                         f"cost estimated as {'; and as '.join(bases)}")
        return tuple(notes)


def _data_arguments(operation, args: tuple) -> tuple:
    """A call's positional arguments less those its ``call()`` takes as a mask (``Softmax()(x, mask)``):
    rules read data, a mask changes no shape or count."""
    import inspect

    try:
        names = list(inspect.signature(operation.call).parameters)
    except (TypeError, ValueError):  # no signature to read: every argument is data
        return args
    return tuple(a for k, a in enumerate(args) if k >= len(names) or not names[k].endswith("mask"))


class _KerasOracle:
    """What Keras says of each call of one layer (by the call's node name): the output specs it infers
    for the input specs paramcalc propagates, and whether the call reads integer ids first. Symbolic
    sizes: the batch axis goes to Keras as None; a symbol elsewhere is probed at concrete sizes, and each
    output size is solved as a linear function of the symbols."""

    def __init__(self) -> None:
        self.calls: dict = {}  # node name -> (operation, Keras node)

    def add(self, node_name: str, operation, node) -> None:
        self.calls[node_name] = (operation, node)

    def looks_up(self, node_name: str) -> bool:
        _, node = self.calls.get(node_name) or next(iter(self.calls.values()))
        first = node.input_tensors[0] if node.input_tensors else None
        return first is not None and not str(first.dtype).startswith(("float", "bfloat"))

    def shapes(self, specs: list, ctx) -> list:
        from paramcalc.core.spec import TensorSpec

        operation, node = self.calls.get(ctx.layer_name) or next(iter(self.calls.values()))
        originals = list(node.input_tensors)

        def run(shapes: list) -> list:
            import keras

            values = {id(kt): keras.KerasTensor(shape, dtype=kt.dtype) for kt, shape in zip(originals, shapes)}
            args, kwargs = node.arguments.fill_in(values)
            spec = operation.compute_output_spec(*args, **kwargs)
            return [(tuple(t.shape), str(t.dtype)) for t in keras.tree.flatten(spec)]

        try:
            return [TensorSpec(shape, dtype) for shape, dtype in _solve(run, [s.shape for s in specs])]
        except ParamcalcError:
            raise
        except Exception as err:  # whatever the layer's own code raised, with its message
            raise ctx.shape_error(f"Keras could not infer what {type(operation).__name__} makes from inputs "
                                  f"{', '.join(ctx.format_shape(s.shape) for s in specs)}: {err}",
                                  fix="check the input shapes this layer receives") from None


def _solve(run, shapes: list) -> list:
    names = sorted({name for shape in shapes for size in shape for name in symbols_of(size)})
    batch_only = all(type(size) is int for shape in shapes for size in shape[1:])
    if batch_only:
        batches = {shape[0] for shape in shapes if shape}
        outputs = run([(None if names else shape[0],) + tuple(shape[1:]) if shape else shape for shape in shapes])
        if not names or len(batches) == 1:
            batch = next(iter(batches), None)
            solved = [(tuple(batch if (axis == 0 and size is None) else size for axis, size in enumerate(shape)), dtype)
                      for shape, dtype in outputs]
            if all(size is not None for shape, _ in solved for size in shape):
                return [(tuple(as_dim(s, "a size Keras inferred") for s in shape), dtype) for shape, dtype in solved]
    if len(names) > len(PROBE_SIZES):
        raise SpecError(f"{len(names)} symbols in one layer's input shapes: too many to probe", value=names)
    base = dict(zip(names, PROBE_SIZES))
    concrete = run([tuple(subs(size, base) for size in shape) for shape in shapes])
    slopes = {}
    for name in names:
        moved = run([tuple(subs(size, {**base, name: base[name] + 1}) for size in shape) for shape in shapes])
        slopes[name] = moved
    solved = []
    for k, (shape, dtype) in enumerate(concrete):
        sizes = []
        for axis, size in enumerate(shape):
            if size is None:
                raise SpecError(f"Keras infers no size for axis {axis} of output {k}", value=shape)
            terms = {name: slopes[name][k][0][axis] - size for name in names}
            constant = size - sum(slope * base[name] for name, slope in terms.items())
            sizes.append(constant + sum(slope * symbol(name) for name, slope in terms.items() if slope))
        solved.append((tuple(sizes), dtype))
    return solved
