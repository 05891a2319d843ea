"""A live Keras layer without a rule read as the calls its ``call()`` makes: the expansion that
``frontends/keras_live.py``'s builder tries before it estimates a layer whole.

The call is traced on placeholders (``keras_trace``) and its nodes walked as a nested model's, under
the call's name. The outcome is kept only where it is exact (each call the outputs depend on has a rule,
each weight of the layer is a weight of one of them); code that needs numbers for sizes left free is
read at two sets of stand-in sizes and kept where both give equal rows; blocks alike are traced once and
copied (``keras_alike``). Otherwise the builder is put back as it was, and the reason kept for the
layer's note.
"""

from __future__ import annotations

from paramcalc.core.errors import SpecError
from paramcalc.core.graph import GraphNode
from paramcalc.core.registry import keras_converter
from paramcalc.frontends.keras import _KERAS_OPS, MAX_NESTING, GraphBuilder
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


class ExpandingBuilder(GraphBuilder):
    """The expansion's part of the live builder: its state, and the methods that read a call as its
    calls. The builder provides ``call``, ``ref``, ``foreign_why``, ``owner_of_variable`` and
    ``layer_names``."""

    def __init__(self) -> None:
        super().__init__()
        self.renamed: dict[int, str] = {}  # id of an operation a traced call made -> its name there
        self.bound: dict[int, tuple] = {}  # id of a traced call's placeholder -> the tensor it stands for
        self.traces: list = []  # what traced calls made, kept alive: the ids above name them
        self.refused: dict[str, str] = {}  # class -> why its calls are not read as the calls they make
        self.needs_stand_ins: set[str] = set()  # classes whose calls are read at stand-in sizes
        self.expanded: dict[str, Expanded] = {}  # alike_key -> the first such call, read as its calls
        self.clones: dict[tuple, object] = {}  # (owner, id of the first block's layer) -> its rule's copy

    def expand(self, operation, call: tuple, node, node_name: str, prefix: str, depth: int, trainable: bool) -> bool:
        """Read a call of a layer without a rule as the calls its ``call()`` makes (``keras_trace``), named
        under the call's name as a nested model's layers are, where each call the outputs depend on has a
        rule (or is a layer read so in turn), and each weight of the layer is a weight of one of them: the
        layer is then exact. Otherwise, False and the builder as it was: the layer is estimated whole, and
        the reason goes in its note."""
        class_name = type(operation).__name__
        if type(operation).__module__.startswith(_KERAS_OPS) or has_rule(operation) or depth >= MAX_NESTING:
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
        own = weights_of_their_own(operation, has_rule)
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
                    f"its call() fails on symbolic tensors ({type(err).__name__}: {_first_line(err)})"
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
        with traced_call(operation, node, has_rule, stand_in) as (originals, inputs, outputs):
            self.traces.append((inputs, outputs))
            inner = f"{node_name}/"
            for original, tensor in zip(originals, inputs):
                self.bound[id(tensor)] = self.ref(original, prefix)
            if len(outputs) != len(node.output_tensors) or not all(map(is_symbolic, outputs)):
                raise _NotExpanded(f"its call() returns {len(outputs)} values where Keras' call returned "
                                   f"{len(node.output_tensors)} tensors")
            reached = nodes_reaching(outputs, roots={id(t) for t in inputs})
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

def _first_line(err: Exception) -> str:
    return (str(err) or "?").splitlines()[0][:160]


class _FreeSizes(Exception):
    """A call known to fail on free sizes: straight to the stand-ins."""


class _NotExpanded(Exception):
    """Why a layer's call is not read as the calls it makes."""


def history_of(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise SpecError(f"tensor {getattr(tensor, 'name', tensor)!r} was made by no Keras layer call",
                        value=getattr(tensor, "name", None),
                        fix="build the model from keras.Input tensors and layer calls")
    return history


def tensors_in(value) -> list:
    """The Keras tensors in a call argument (nested lists, tuples and dicts), in order."""
    if hasattr(value, "_keras_history"):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in tensors_in(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def has_rule(layer) -> bool:
    return keras_converter(type(layer).__name__, type(layer).__module__) is not None


def is_symbolic(value) -> bool:
    return hasattr(value, "_keras_history") or type(value).__name__ == "KerasTensor"


def nodes_reaching(outputs, roots=frozenset()) -> list:
    """(operation, call index, node) of every layer call the outputs depend on, inputs first; the walk
    stops at the tensors whose ids are ``roots``."""
    order, state, stack = [], {}, [(t, False) for t in reversed(list(outputs)) if id(t) not in roots]
    while stack:
        tensor, expanded = stack.pop()
        history = history_of(tensor)
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


