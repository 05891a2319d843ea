"""Live Keras models: ``from_keras_model`` reads a Sequential or functional model from its config
(``frontends/keras.py``), and from the model object's functional graph what a config cannot say.

A functional model built inside a subclass's ``__init__`` (every KerasHub backbone and task model)
serializes its constructor arguments, not its layers; the live object still holds the graph: its input
and output tensors, and for each layer call the tensors it read (``_keras_history`` of each tensor
names the layer call that made it). That graph is walked from the outputs back to the inputs, so a
model is read whatever its class.

Layers of a class paramcalc has a rule for are read as the config path reads them (from
``get_config()``), as are the Keras operations with rules (``x[:, 0]``, ``ops.matmul``). A layer of any
other class is read as the layer and operation calls its ``call()`` makes (``keras_trace``), where each
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
    GraphBuilder,
    _keras_op,
    _policy_name,
    from_keras_config,
)
from paramcalc.frontends.keras_alike import Expanded, alike_key, clone
from paramcalc.frontends.keras_trace import (
    SublayerFails,
    snake_case,
    traced_call,
    weights_of_their_own,
)
from paramcalc.layers.foreign import ForeignLayer

# (batch, other free sizes) a traced call's placeholders take where its code needs numbers for them: two
# sets, whose expansions must be alike
STAND_INS = ((7, 11), (13, 17))
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


class _LiveBuilder(GraphBuilder):
    """Walks live functional graphs (nested models inlined) into graph nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.owner_of_variable: dict[int, str] = {}  # id of a built variable -> the layer counting it
        self.foreign_why: dict[str, str] = {}  # class -> why Keras infers its shapes
        self.layer_names: dict[int, str] = {}  # id of a Keras layer -> the name its paramcalc layer has
        self.renamed: dict[int, str] = {}  # id of an operation a traced call made -> its name there
        self.bound: dict[int, tuple] = {}  # id of a traced call's placeholder -> the tensor it stands for
        self.traces: list = []  # what traced calls made, kept alive: the ids above name them
        self.refused: dict[str, str] = {}  # class -> why its calls are not read as the calls they make
        self.needs_stand_ins: set[str] = set()  # classes whose calls are read at stand-in sizes
        self.expanded: dict[str, Expanded] = {}  # alike_key -> the first such call, read as its calls
        self.clones: dict[tuple, object] = {}  # (owner, id of the first block's layer) -> its rule's copy

    def model(self, model, prefix: str, outer_refs, depth: int, trainable: bool):
        if depth > MAX_NESTING:
            raise SpecError(f"models nested too deep (limit {MAX_NESTING}) at '{prefix}'", where=prefix)
        graph = live_graph_of(model)
        inputs = []
        for position, tensor in enumerate(graph.inputs):
            name = prefix + self.name_of(_history(tensor).operation)
            if outer_refs is None:
                inputs.append((name, tuple(tensor.shape[1:])))
                self.alias[(name, 0, 0)] = (name, 0)
            elif position < len(outer_refs):
                self.alias[(name, 0, 0)] = outer_refs[position]
            else:
                raise SpecError(f"nested model '{model.name}' input '{name}' receives no tensor", where=prefix)
        for operation, index, node in _nodes_reaching(graph.outputs):
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
        args = [self.ref(t, prefix) for t in _tensors(_data_arguments(operation, node.arguments.args))]
        if module.startswith(_KERAS_OPS):
            constants = tuple(a for a in node.arguments.args if not _tensors(a))
            try:
                return replace(_keras_op(class_name, module, len(args), name, constants, operation.get_config()),
                               name=name, type_name=class_name), args
            except ParamcalcError:  # no rule for this operation, or for these arguments: Keras says
                return None, None
        if keras_converter(class_name, module) is None:
            return None, None
        kwargs = node.arguments.kwargs
        refs = args + [self.ref(t, prefix) for key in _TENSOR_KWARGS if key in kwargs for t in _tensors(kwargs[key])]
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

    def expand(self, operation, call: tuple, node, node_name: str, prefix: str, depth: int, trainable: bool) -> bool:
        """Read a call of a layer without a rule as the calls its ``call()`` makes (``keras_trace``), named
        under the call's name as a nested model's layers are, where each call the outputs depend on has a
        rule (or is a layer read so in turn), and each weight of the layer is a weight of one of them: the
        layer is then exact. Otherwise, False and the builder as it was: the layer is estimated whole, and
        the reason goes in its note."""
        class_name = type(operation).__name__
        if type(operation).__module__.startswith(_KERAS_OPS) or _has_rule(operation) or depth >= MAX_NESTING:
            return False
        if class_name in self.refused:  # a class's calls are alike: one refusal is enough
            self.foreign_why.setdefault(class_name, self.refused[class_name])
            return False
        key = alike_key(operation, node, trainable)
        inputs = [self.resolve(self.ref(t, prefix), node_name) for t in {id(t): t for t in node.input_tensors}.values()]
        if key in self.expanded:  # a block like one read before: its rows, over this block's weights
            refs = clone(self.expanded[key], self, operation, inputs, node_name)
            if refs is not None:
                for position, ref in enumerate(refs):
                    self.alias[(*call, position)] = ref
                return True
        own = weights_of_their_own(operation, _has_rule)
        if own:
            layer, variable = own[0]
            why = (f"its weight {getattr(variable, 'path', None) or variable.name} is read by "
                   f"{'its' if layer is operation else type(layer).__name__ + chr(39) + 's'} own code, not by a layer "
                   "paramcalc has a rule for")
            self.refused[class_name] = self.foreign_why[class_name] = f"no paramcalc rule for this class, and {why}"
            return False
        state = self._state()
        try:
            if class_name in self.needs_stand_ins:  # its calls are alike: the free sizes would fail again
                raise _FreeSizes()
            refs = self._expand_once(operation, node, node_name, prefix, depth, trainable, state[0])
        except Exception as err:  # noqa: BLE001 - whatever the layer's code raised on placeholders, or a refusal
            self._restore(state)
            refs, err = self._expand_at_stand_ins(operation, node, node_name, prefix, depth, trainable, state, err)
            if refs is not None:
                self.needs_stand_ins.add(class_name)
            if refs is None:
                why = err.args[0] if isinstance(err, (_NotExpanded, SublayerFails)) else \
                    f"its call() fails on symbolic tensors ({type(err).__name__}: {(str(err) or '?').splitlines()[0][:160]})"
                self.refused[class_name] = self.foreign_why[class_name] = f"no paramcalc rule for this class, and {why}"
                return False
        for position, ref in enumerate(refs):
            self.alias[(*call, position)] = ref
        if key is not None:
            added = tuple(GraphNode(n.name, n.layer, tuple(self.resolve(r, n.name) for r in n.inbound))
                          for n in self.nodes[state[0]:])
            self.expanded.setdefault(key, Expanded(node_name, added, tuple(refs), tuple(inputs), tuple(
                operation._flatten_layers(include_self=False, recursive=True))))
        return True

    def _expand_once(self, operation, node, node_name: str, prefix: str, depth: int, trainable: bool, start: int,
                     stand_in: tuple | None = None) -> list:
        """The expansion's nodes, added from ``start``, and its output refs; an exception where it fails."""
        with traced_call(operation, node, _has_rule, stand_in) as (originals, inputs, outputs):
            self.traces.append((inputs, outputs))
            inner = f"{node_name}/"
            for original, tensor in zip(originals, inputs):
                self.bound[id(tensor)] = self.ref(original, prefix)
            if len(outputs) != len(node.output_tensors) or not all(map(_is_symbolic, outputs)):
                raise _NotExpanded(f"its call() returns {len(outputs)} values where Keras' call returned "
                                   f"{len(node.output_tensors)} tensors")
            reached = _nodes_reaching(outputs, roots={id(t) for t in inputs})
            self._rename(reached)
            for inner_op, inner_index, inner_node in reached:
                self.call(inner_op, inner_index, inner_node, inner, depth + 1,
                          trainable and bool(getattr(inner_op, "trainable", True)))
            refs = [self.resolve(self.ref(t, inner), node_name) for t in outputs]
            self._keep_reached(start, refs)
            self._check_expansion(operation, start)
        return refs

    def _expand_at_stand_ins(self, operation, node, node_name: str, prefix: str, depth: int, trainable: bool,
                             state: tuple, failed: Exception) -> tuple:
        """(refs, None) where the call, failing on sizes left free (the batch; code that builds a causal mask
        from ``ops.shape(x)[1]``), expands alike at two sets of stand-in sizes: what it reads of them then goes
        into no call paramcalc counts. (None, the reason) otherwise; the builder as it was."""
        if isinstance(failed, (_NotExpanded, SublayerFails)):
            return None, failed
        expansions = []
        try:
            for stand_in in STAND_INS:
                refs = self._expand_once(operation, node, node_name, prefix, depth, trainable, state[0], stand_in)
                expansions.append((refs, [(n.name, n.layer, n.inbound) for n in self.nodes[state[0]:]]))
                if len(expansions) < len(STAND_INS):
                    self._restore(state)
        except Exception as err:  # noqa: BLE001 - as in expand
            self._restore(state)
            return None, err if isinstance(err, (_NotExpanded, SublayerFails)) else failed
        if any(e != expansions[0] for e in expansions[1:]):
            self._restore(state)
            return None, _NotExpanded("its call() fails on sizes left free, and what it makes depends on the "
                                      "sizes it is given")
        return expansions[-1][0], None

    def _rename(self, reached: list) -> None:
        """Names for the operations of one traced call, by class (``add``, ``add_1``): Keras numbers them
        across the process."""
        taken: dict[str, int] = {}
        for op in [op for op, _, _ in reached if type(op).__module__.startswith(_KERAS_OPS)]:
            base = snake_case(type(op).__name__)
            count = taken.get(base, 0)
            taken[base] = count + 1
            self.renamed[id(op)] = base if count == 0 else f"{base}_{count}"

    def _keep_reached(self, start: int, refs: list) -> None:
        """Drop the nodes added since ``start`` that the refs do not read, directly or through others (a
        mask made for a sublayer's argument that no rule reads)."""
        added = self.nodes[start:]
        by_name = {n.name: n for n in added}
        reached, stack = set(), [r[0] for r in refs]
        while stack:
            name = stack.pop()
            if name in reached or name not in by_name:
                continue
            reached.add(name)
            stack.extend(self.resolve(r, name)[0] for r in by_name[name].inbound)
        self.nodes[start:] = [n for n in added if n.name in reached]

    def _check_expansion(self, operation, start: int) -> None:
        """Refuse an expansion holding an operation without a rule (its work would go uncounted), or
        leaving a weight of the layer to no layer in it (the layer's code reads it itself)."""
        unknown = sorted({n.layer.type_name for n in self.nodes[start:] if isinstance(n.layer, ForeignLayer)})
        if unknown:  # each with why it was not read as its own calls, where it was tried
            named = [f"{cls}: {self.refused[cls].split(', and ', 1)[-1]}" if cls in self.refused else cls
                     for cls in unknown]
            raise _NotExpanded(f"its call() calls layers or Keras operations paramcalc has no rule for "
                               f"({'; '.join(named)})")
        owners = {n.layer.name for n in self.nodes} - {None}
        loose = [v for v in operation.weights if self.owner_of_variable.get(id(v)) not in owners]
        if loose:
            raise _NotExpanded("its call() uses weights outside layer calls on its inputs ("
                               + ", ".join(str(getattr(v, "path", None) or v.name) for v in loose[:3])
                               + ": read directly, or by a layer called on constants)")

    def _state(self) -> tuple:
        return (len(self.nodes), dict(self.alias), dict(self.calls), dict(self.layers), dict(self.owner_of_variable),
                dict(self.layer_names), dict(self.foreign_why), dict(self.expanded), dict(self.clones))

    def _restore(self, state: tuple) -> None:
        """The builder as ``_state()`` saw it (copies again: a state may be restored more than once)."""
        start, *tables = state
        (self.alias, self.calls, self.layers, self.owner_of_variable, self.layer_names, self.foreign_why,
         self.expanded, self.clones) = map(dict, tables)
        del self.nodes[start:]

    def name_of(self, operation) -> str:
        return self.renamed.get(id(operation)) or operation.name

    def ref(self, tensor, prefix: str) -> tuple:
        bound = self.bound.get(id(tensor))
        if bound is not None:
            return bound
        history = _history(tensor)
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


class _FreeSizes(Exception):
    """A call known to fail on free sizes: straight to the stand-ins."""


class _NotExpanded(Exception):
    """Why a layer's call is not read as the calls it makes."""


def _history(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise SpecError(f"tensor {getattr(tensor, 'name', tensor)!r} was made by no Keras layer call",
                        value=getattr(tensor, "name", None),
                        fix="build the model from keras.Input tensors and layer calls")
    return history


def _tensors(value) -> list:
    """The Keras tensors in a call argument (nested lists, tuples and dicts), in order."""
    if hasattr(value, "_keras_history"):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _data_arguments(operation, args: tuple) -> tuple:
    """A call's positional arguments less those its ``call()`` takes as a mask (``Softmax()(x, mask)``):
    rules read data, a mask changes no shape or count."""
    import inspect

    try:
        names = list(inspect.signature(operation.call).parameters)
    except (TypeError, ValueError):  # no signature to read: every argument is data
        return args
    return tuple(a for k, a in enumerate(args) if k >= len(names) or not names[k].endswith("mask"))


def _has_rule(layer) -> bool:
    return keras_converter(type(layer).__name__, type(layer).__module__) is not None


def _is_symbolic(value) -> bool:
    return hasattr(value, "_keras_history") or type(value).__name__ == "KerasTensor"


def _nodes_reaching(outputs, roots=frozenset()) -> list:
    """(operation, call index, node) of every layer call the outputs depend on, inputs first; the walk
    stops at the tensors whose ids are ``roots``."""
    order, state, stack = [], {}, [(t, False) for t in reversed(list(outputs)) if id(t) not in roots]
    while stack:
        tensor, expanded = stack.pop()
        history = _history(tensor)
        key = (id(history.operation), history.node_index)
        if expanded:
            if state.get(key) != "done":
                state[key] = "done"
                order.append((history.operation, history.node_index,
                              history.operation._inbound_nodes[history.node_index]))
            continue
        if key in state:
            continue
        state[key] = "open"
        node = history.operation._inbound_nodes[history.node_index]
        stack.append((tensor, True))
        stack.extend((t, False) for t in reversed(list(node.input_tensors)) if id(t) not in roots)
    return order


class _KerasOracle:
    """What Keras says of each call of one layer (by the call's node name): the output specs it infers
    for the input specs paramcalc propagates, and whether the call reads integer ids first. Symbolic sizes: the batch axis goes to Keras as None; a symbol elsewhere
    is probed at concrete sizes, and each output size is solved as a linear function of the symbols."""

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
