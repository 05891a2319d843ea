"""Repeated blocks, run once: a module called again in the same state, on tensors of the same shapes,
runs the same operations, so the operations its first call recorded are copied under the new call's
names instead of being run again (a 32-layer decoder runs one or three layers' forward on meta, not 32).

A call is copied when its *key* equals an earlier call's: the module's state (its class, mode,
attributes, parameter and buffer shapes and sharing, and those of every module under it) and the
tensors it is called on (shape, strides, dtype, whether autograd tracks them, which of them are the same
tensor or share storage, which are weights) with its other arguments. Calls whose state differs only in
integer attributes (a Hugging Face layer's ``layer_idx``) are not taken on trust: such calls run in
full until two of them recorded the same operations as the first, and are copied from then on. A module
with a plain tensor attribute, a call that returns tensors inside objects other than tuples, lists and
dicts, and a call autograd saves tensors across (from before it into it, or out of it) always run.

Known modules (those with a rule) are copied on an exact key only: the copy skips their forward, and
their row still comes from their rule and their own attributes, as for every call.
"""

from __future__ import annotations

import enum
import inspect
from collections import Counter
from dataclasses import dataclass, field, replace

from paramcalc.frontends.torch_batch_replay import (
    COPIED_RECORD,
    COPY,
    COPY_OUTPUTS,
    SAME_SHAPE,
)
from paramcalc.frontends.torch_modules import leaves

MATCHES_TO_TRUST = 2  # full calls that must record what the first did before integer attributes are ignored
_MODULE_INTERNALS = frozenset({
    "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_backward_pre_hooks", "_backward_hooks",
    "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "training", "forward"})
_MAX_ITEMS = 256  # longer containers in attributes are compared by identity


class _Unreplayable(Exception):
    """The module's calls cannot be copied (it holds a plain tensor attribute)."""


@dataclass
class Block:
    """What one call of a module recorded, to copy for a later call with the same key."""

    path: str  # the module's name
    known: bool  # a module with a rule: its row is made by the recorder; only its outputs are copied
    records: list  # the records the call appended, in order
    inputs: list  # per tensor argument: (its reference, the reference of whoever made its storage, the tensor)
    own: dict  # id(tensor) -> name under the module, of its parameters and buffers as the call saw them
    submodules: dict  # id(module) -> name under the module
    output: object  # what the call returned
    outputs: dict  # id(output tensor) -> ("input", position) or ("made", reference, storage maker reference)
    entry_saves: list = field(default_factory=list)  # saves its first operations attached to the record before it
    # (position, reference, storage maker) of arguments a module inside named anew (an identity returns
    # its input, which the recorder then names after it), None where unchanged
    renamed: list = field(default_factory=list)
    matches: int = 0  # full calls under the same loose key that recorded the same operations
    # the call's arguments, kept alive: keys name other objects by identity, and an id is unique only
    # while its object lives
    arguments: tuple = field(default=(), repr=False)
    fingerprint: tuple | None = field(default=None, repr=False)


@dataclass
class _Plan:
    key: tuple
    loose: tuple | None
    start: int
    inputs: list
    own: dict
    submodules: dict
    before: int = 0  # saves the record before the call held when it began
    arguments: tuple = ()


class Replayer:
    """Decides, per call, whether to run a module's forward or copy an earlier call's records."""

    def __init__(self, recorder, root: object, learned: dict | None = None, states: dict | None = None) -> None:
        self.recorder = recorder
        # the modules' states, which a run leaves as it found them: read once for both runs
        self.states = module_states(root) if states is None else states
        self.blocks: dict = {}  # exact key -> Block, or None where the call cannot be copied
        self.loose: dict = {}  # loose key -> the first Block recorded under it, or None once calls differed
        self.order: dict = {}  # loose key -> the order in which it first came
        self.trees: dict = {}  # id(module) -> _Tree
        # what the run at another batch size learnt (``learn``): loose keys, by the order they came, whose
        # later full calls all recorded what the first did -> the module state they stand for
        self.learned = learned or {}

    def call(self, module: object, forward, args: tuple, kwargs: dict):
        """Run ``forward`` or copy an earlier call; the recorder's module hooks have entered ``module``."""
        rec = self.recorder
        state = self.states.get(id(module))
        if state is None or state[0] is None or rec.known_depth > 1 or rec.pending or rec.quiet:
            return forward(*args, **kwargs)
        try:
            arguments = _describe((args, kwargs), False, _CallTensors(rec).describe)
        except _Unreplayable:
            return forward(*args, **kwargs)
        known = rec.known_depth == 1
        key = (state[0], arguments)
        loose = None if known else (state[1], arguments)
        block = self.blocks.get(key)
        alike = False  # copied as a call alike to the first, not the same call again
        if block is None and key not in self.blocks and loose is not None:
            first = self.loose.get(loose)
            if first is not None and (first.matches >= MATCHES_TO_TRUST or self._learned(loose)):
                block, alike = first, True
        if block is not None:
            return self._copy(block, module, args, kwargs, alike)
        if key in self.blocks:  # seen, and not copyable
            return forward(*args, **kwargs)
        plan = _Plan(key, loose, len(rec.records), _tensor_inputs(rec, args, kwargs), {}, {},
                     len(rec.records[-1].saves) if rec.records else 0, (args, kwargs))
        if not known:
            tree = self._tree(module)
            plan.own, plan.submodules = tree.own, tree.submodules
        output = forward(*args, **kwargs)
        self._remember(plan, rec.stack[-1] if rec.stack else "", known, output)
        return output

    # -- recording -----------------------------------------------------------------------------------
    def _remember(self, plan: _Plan, path: str, known: bool, output) -> None:
        rec = self.recorder
        if plan.loose is not None:
            self.order.setdefault(plan.loose, len(self.order))
        outputs = _output_map(rec, output, plan.inputs, known)
        if outputs is None or rec.pending:
            self.blocks[plan.key] = None
            if plan.loose is not None:
                self.loose[plan.loose] = None
            return
        records = rec.records[plan.start:]
        if records:  # operations after the call attach what they save to its last record: keep it as it is now
            records[-1] = copy_record(records[-1], saves=list(records[-1].saves))
            if records[-1].layer is None:  # an operation's: the replay gives its shapes to the copy
                rec.logged(COPIED_RECORD, records[-1], rec.records[-1])
        made = {r.name for r in records}
        # an identity module inside returns its input, which the recorder then names after it
        renamed = []
        for i, (ref, maker, t) in enumerate(plan.inputs):
            now, storage = rec.refs.get(id(t)), rec.storage.get(_storage_id(t))
            if (now is not None and now != ref and now[0] in made) or \
                    (storage is not None and storage != maker and storage[0] in made):
                renamed.append((i, now if now != ref else None, storage if storage != maker else None))
        block = Block(path, known, records, plan.inputs, plan.own, plan.submodules, output, outputs,
                      list(rec.records[plan.start - 1].saves[plan.before:]) if plan.start else [], renamed,
                      arguments=plan.arguments)
        self.blocks[plan.key] = block
        if plan.loose is None:
            return
        if plan.loose not in self.loose:
            self.loose[plan.loose] = block
            return
        first = self.loose[plan.loose]
        if first is None or first is block:
            return
        if _fingerprint(first) == _fingerprint(block):
            first.matches += 1
        else:
            self.loose[plan.loose] = None

    def _tree(self, module: object) -> "_Tree":
        """``module``'s tensors and modules by name, read once per run (the forward changes neither; each
        run swaps in meta copies of its own)."""
        tree = self.trees.get(id(module))
        if tree is None:
            tree = self.trees[id(module)] = _Tree(module)
        return tree

    def learn(self) -> dict:
        """After a run, for the run at the other batch size: the loose keys (by the order they first came,
        which the same forward repeats) whose later full calls all recorded what their first did. That
        run copies their calls after the first at once, as this one did after MATCHES_TO_TRUST of them,
        and so records what this one did: a 2-layer decoder runs one layer's forward the second time."""
        return {self.order[loose]: loose[0] for loose, first in self.loose.items()
                if first is not None and first.matches >= 1}

    def _learned(self, loose: tuple) -> bool:
        index = self.order.get(loose)
        return index is not None and self.learned.get(index) == loose[0]

    # -- copying -------------------------------------------------------------------------------------
    def _copy(self, block: Block, module: object, args: tuple, kwargs: dict, alike: bool = False):
        """The records of ``block`` again, named after ``module``'s call, and outputs of the same shapes.
        ``alike``: another call of the block's kind, whose full calls each read tensors of their own that
        no module holds (a cache a layer makes), as the first did: the copy records them anew."""
        rec = self.recorder
        path = rec.stack[-1] if rec.stack else ""
        inputs = [t for t in leaves((args, kwargs)) if _is_tensor(t)]
        rec.logged(COPY, inputs, [t for _, _, t in block.inputs])
        made: list = []  # (the copy's output, the first call's it stands for), for the replay at another batch

        def fresh(t, refs=None):
            copied = _fresh(rec, t, block, inputs, refs)
            if copied is not t and block.outputs[id(t)][0] != "input":
                made.append((copied, t))
            return copied

        if block.known:
            output = _rebuild(block.output, fresh)
            rec.logged(COPY_OUTPUTS, made)
            return output
        refs = _Refs(rec, block, path, self._tree(module), inputs, alike)
        for ref, itemsize in block.entry_saves:
            entry = (refs.ref(ref), itemsize)
            if not rec.attach_save(entry):
                refs.leftover.append(entry)
        for record in block.records:
            refs.copy(record)
        refs.flush()
        rec.pending.extend(refs.leftover)  # a block with no operation: its saves wait for the next one
        for position, ref, storage in block.renamed:
            if ref is not None:
                rec.refs[id(inputs[position])] = refs.ref(ref)
            if storage is not None:
                rec.storage[_storage_id(inputs[position])] = refs.ref(storage)
        output = _rebuild(block.output, lambda t: fresh(t, refs))
        rec.logged(COPY_OUTPUTS, made)
        return output


class _Refs:
    """Maps the graph references of a block's first call to those of a copy."""

    def __init__(self, rec, block: Block, path: str, tree: "_Tree", inputs: list, alike: bool = False) -> None:
        self.rec, self.block, self.path, self.alike = rec, block, path, alike
        self.names: dict = {}  # record name in the first call -> in the copy
        self.fixed: dict = {}  # reference -> reference (inputs, their storage, parameters)
        self.leftover: list = []  # saves the first copied operation takes, as the first call's did
        for (ref, maker, _), tensor in zip(block.inputs, inputs):
            if ref is not None:
                self.fixed[ref] = _input_ref(rec, tensor)
            if maker is not None and maker not in self.fixed:
                self.fixed[maker] = rec.storage.get(_storage_id(tensor), maker)
        self.tensors, self.modules = tree.tensors, tree.modules
        # id of each argument of the first call -> the copy's: one read directly (a buffer of the module
        # that calls this one) is recorded inside the call
        self.arguments = {id(first): tensor for (_, _, first), tensor in zip(block.inputs, inputs)}
        self.queued: list = []  # records of tensors read directly, waiting for the call that reads them

    def flush(self) -> None:
        """Record the tensors read directly that the next call reads: the module's own as the copy's
        tensor of that name, an argument as the copy's argument; any other is the same tensor for every
        call, and its record stays the one made."""
        rec = self.rec
        for record in self.queued:
            name = self.block.own.get(record.tensor)
            if name is not None:
                self.fixed[(record.name, 0)] = rec._ref(self.tensors[name])
            elif record.tensor in self.arguments:
                self.fixed[(record.name, 0)] = _input_ref(rec, self.arguments[record.tensor])
            elif self.alike and record.tensor not in rec.tensor_names:
                self.fixed[(record.name, 0)] = rec.constant_like(record, self.module_path(record.module))
        self.queued = []

    def module_path(self, name: str) -> str:
        first = self.block.path
        if name == first or name.startswith(first + "."):
            return self.path + name[len(first):]
        return name

    def ref(self, ref: tuple) -> tuple:
        if ref in self.fixed:
            return self.fixed[ref]
        name = self.names.get(ref[0])
        return ref if name is None else (name, ref[1])

    def copy(self, record) -> None:
        rec = self.rec
        if record.tensor:  # a parameter, buffer or constant read directly: recorded with the next call
            self.queued.append(record)
            return
        if record.layer is not None:  # a known module
            self.flush()
            old = record.source
            relative = self.block.submodules.get(id(old))
            source = old if relative is None else self.modules[relative]
            from paramcalc.frontends.torch_modules import _convert

            path = self.module_path(record.module)
            layer = _convert(source, path, rec.memo, record.options)
            name = rec._unique(path)
            self.names[record.name] = name
            rec.records.append(copy_record(record, name=name, layer=layer, module=path, source=source,
                                           inbound=[self.ref(r) for r in record.inbound]))
            for position in record.positions:
                rec.shapes[(name, position)] = rec.shapes[(record.name, position)]
                rec.logged(SAME_SHAPE, (name, position), (record.name, position))
            return
        name = rec._unique(self._base(record))
        self.names[record.name] = name
        saves = []
        for entry in self.leftover + [(self.ref(r), s) for r, s in record.saves]:
            # autograd saves an operation's inputs before it runs: one the operation before made is that
            # operation's, as the recorder attaches it; the tensors it reads directly are recorded after
            if entry[0][0] == name or not rec.attach_save(entry):
                saves.append(entry)
        self.leftover = []
        self.flush()
        copied = copy_record(record, name=name, inbound=[self.ref(r) for r in record.inbound],
                             module=self.module_path(record.module), saves=saves)
        rec.records.append(copied)
        rec.logged(COPIED_RECORD, copied, record)
        for i, _ in enumerate(record.output_shapes):
            old, new = (record.name, i), (name, i)
            rec.shapes[new] = rec.shapes[old]
            rec.logged(SAME_SHAPE, new, old)
            if old in rec.from_weights:
                rec.from_weights.add(new)

    def _base(self, record) -> str:
        module = self.module_path(record.module)
        return f"{module}:{record.op.split('.')[-1]}" if module else record.op.split(".")[-1]


def copy_record(record, **changes):
    """A recorder's record with ``changes``, as ``dataclasses.replace`` makes it but without running
    __init__ again (a copied block makes thousands of them)."""
    copied = object.__new__(type(record))
    copied.__dict__.update(record.__dict__)
    copied.__dict__.update(changes)
    return copied


def _fresh(rec, t, block: Block, inputs: list, refs: _Refs | None):
    """The copy's tensor in place of ``t``, an output of the first call."""
    kind = block.outputs[id(t)]
    if kind[0] == "input":
        return inputs[kind[1]]
    import torch

    rec.quiet = True  # making it is not an operation of the model
    try:
        if t.requires_grad:  # made by an operation, as the first call's was: code may change it in place
            extent = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
            made = torch.empty(extent, dtype=t.dtype, device="meta", requires_grad=True).clone()
            fresh = made.as_strided(tuple(t.shape), tuple(t.stride()), 0)
        else:
            fresh = torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device="meta")
    finally:
        rec.quiet = False
    if refs is not None:  # a known module's outputs are registered by the recorder, as for any call
        _, ref, maker = kind
        rec.refs[id(fresh)] = refs.ref(ref)
        rec.keep.append(fresh)
        if maker is not None:
            rec.storage[_storage_id(fresh)] = refs.ref(maker)
    return fresh


def _output_map(rec, output, inputs: list, known: bool) -> dict | None:
    """id(tensor) -> where each output tensor comes from: ("input", position) or ("made", reference,
    reference of whoever made its storage); None where the output cannot be rebuilt."""
    tensors: list = []
    if not _rebuildable(output, tensors):
        return None
    input_ids = {id(t): i for i, (_, _, t) in enumerate(inputs)}
    found = {}
    for t in tensors:
        if id(t) in input_ids:
            found[id(t)] = ("input", input_ids[id(t)])
            continue
        ref = None if known else rec.refs.get(id(t))
        if ref is None and not known:
            return None  # a tensor the recorder never saw made
        found[id(t)] = ("made", ref, rec.storage.get(_storage_id(t)))
    return found


def _rebuildable(value, tensors: list, depth: int = 0) -> bool:
    if _is_tensor(value):
        tensors.append(value)
        return True
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth < 8 and type(value) in (tuple, list):
        return all(_rebuildable(v, tensors, depth + 1) for v in value)
    if depth < 8 and type(value) is dict:
        return all(_rebuildable(v, tensors, depth + 1) for v in value.values())
    return False


def _rebuild(value, fresh):
    if _is_tensor(value):
        return fresh(value)
    if type(value) in (tuple, list):
        return type(value)(_rebuild(v, fresh) for v in value)
    if type(value) is dict:
        return {k: _rebuild(v, fresh) for k, v in value.items()}
    return value


def _input_ref(rec, tensor) -> tuple:
    return rec.refs.get(id(tensor)) or rec._ref(tensor)


def _tensor_inputs(rec, args: tuple, kwargs: dict) -> list:
    """(reference, storage maker reference, tensor) per tensor argument, in order."""
    return [(rec.refs.get(id(t)), rec.storage.get(_storage_id(t)), t) for t in leaves((args, kwargs)) if _is_tensor(t)]




def _fingerprint(block: Block) -> tuple:
    """The block's records with every reference written relative to the block: what two calls of one kind
    must share to be the same computation."""
    if block.fingerprint is not None:
        return block.fingerprint
    index = {record.name: i for i, record in enumerate(block.records)}
    inputs = {maker: ("storage", i) for i, (_, maker, _) in enumerate(block.inputs) if maker is not None}
    inputs.update({ref: ("input", i) for i, (ref, _, _) in enumerate(block.inputs) if ref is not None})
    owned = {record.name: block.own.get(record.tensor) for record in block.records if record.tensor}

    def relative(ref: tuple):
        if ref in inputs:
            return inputs[ref]
        if owned.get(ref[0]):
            return ("own", owned[ref[0]])
        if ref[0] in index:
            return ("made", index[ref[0]], ref[1])
        return ("outside", ref)

    def one(record) -> tuple:
        layer = record.layer
        if layer is not None:
            layer = replace(layer, name="")
        return (layer, record.op, tuple(map(relative, record.inbound)), tuple(map(tuple, record.input_shapes)),
                tuple(map(tuple, record.output_shapes)), tuple(record.output_dtypes), record.weight_inputs, record.view,
                record.transposed, record.window, record.dims, owned.get(record.name))

    outputs = tuple(sorted((k[0], k[1] if k[0] == "input" else relative(k[1])) for k in block.outputs.values()))
    outputs += tuple((i, ref and relative(ref), storage and relative(storage)) for i, ref, storage in block.renamed)
    # what autograd saved, wherever the recorder attached it (that follows from the record before the call)
    saves = {(relative(r), s) for record in block.records for r, s in record.saves}
    saves.update((relative(r), s) for r, s in block.entry_saves)
    block.fingerprint = (tuple(one(r) for r in block.records), outputs, frozenset(saves))
    return block.fingerprint


# -- keys --------------------------------------------------------------------------------------------
def module_states(root: object) -> dict:
    """id(module) -> (exact, loose) digests of its state and that of every module under it; (None, None)
    for a module whose calls cannot be copied. The loose digest leaves out integer attributes."""
    import torch

    names_per_tensor = Counter(id(t) for t in _Tree(root).tensors.values())
    seen: dict = {}  # (id, loose) -> description of an object described by value (a config many modules hold)
    states: dict = {}
    for _, module in reversed(list(root.named_modules(remove_duplicate=True))):  # every module after its own
        try:
            exact = _own_state(module, False, seen)
            loose = _own_state(module, True, seen)
        except _Unreplayable:
            states[id(module)] = (None, None)
            continue
        tensors = [(n, t) for n, t in (*module._parameters.items(), *module._buffers.items()) if t is not None]
        children = [(k, states.get(id(c), (None, None))) for k, c in module._modules.items() if c is not None]
        # a tensor under two names (tied weights) ties the modules that hold it: theirs are not copied
        if any(s[0] is None for _, s in children) or any(names_per_tensor[id(t)] > 1 for _, t in tensors):
            states[id(module)] = (None, None)
            continue
        layout = tuple((n, tuple(t.shape), t.dtype, t.requires_grad, isinstance(t, torch.nn.Parameter)) for n, t in tensors)
        states[id(module)] = (hash((exact, layout, tuple((k, s[0]) for k, s in children))),
                              hash((loose, layout, tuple((k, s[1]) for k, s in children))))
    return states


def _own_state(module: object, loose: bool, seen: dict) -> tuple:
    def tensor(_):
        raise _Unreplayable()

    items = tuple((k, _describe(v, loose, tensor, by_value=seen)) for k, v in module.__dict__.items()
                  if k not in _MODULE_INTERNALS)
    return (type(module), module.training, items)


class _Tree:
    """A module's parameters and buffers, and the modules under it, by name and by id."""

    def __init__(self, module: object) -> None:
        # named_parameters, named_buffers and named_modules, all with remove_duplicate=False, in one walk
        parameters, buffers, self.modules = [], [], {}
        stack = [("", module)]
        while stack:
            path, m = stack.pop()
            self.modules[path] = m
            prefix = f"{path}." if path else ""
            parameters.extend((prefix + k, t) for k, t in m._parameters.items() if t is not None)
            buffers.extend((prefix + k, t) for k, t in m._buffers.items() if t is not None)
            stack.extend(reversed([(prefix + k, c) for k, c in m._modules.items() if c is not None]))
        named = parameters + buffers
        self.tensors = dict(named)
        self.own = {id(t): n for n, t in named}
        self.submodules = {id(m): n for n, m in self.modules.items()}


class _CallTensors:
    """Describes the tensors of one call: what decides the operations a forward runs on them."""

    def __init__(self, rec) -> None:
        self.rec = rec
        self.seen: dict = {}
        self.storages: dict = {}

    def describe(self, t) -> tuple:
        rec = self.rec
        ref = rec.refs.get(id(t))
        role = ("weight" if (ref in rec.from_weights if ref is not None else id(t) in rec.tensor_names)
                else "made" if ref is not None else "outside")
        return ("tensor", self.seen.setdefault(id(t), len(self.seen)),
                self.storages.setdefault(_storage_id(t), len(self.storages)), tuple(t.shape), tuple(t.stride()),
                t.storage_offset(), t.dtype, t.requires_grad, role)


def _describe(value, loose: bool, tensor, depth: int = 0, by_value: dict | None = None):
    """A hashable description of an attribute or argument: plain values by value (integers left out when
    ``loose``), containers item by item, tensors by ``tensor``, other objects by their attributes where
    ``by_value`` is given (a module's state; it keeps each object's description), else by identity (a
    call's arguments: one cache object passed to every layer)."""
    if value is None or isinstance(value, (bool, str, bytes, float, complex)):
        return value
    if isinstance(value, int):
        return "<int>" if loose else value
    if _is_tensor(value):
        return tensor(value)
    if isinstance(value, (tuple, list)) and depth < 4 and len(value) <= _MAX_ITEMS:
        return (type(value).__name__, tuple(_describe(v, loose, tensor, depth + 1, by_value) for v in value))
    if isinstance(value, dict) and depth < 4 and len(value) <= _MAX_ITEMS:
        return ("dict", tuple((_describe(k, loose, tensor, depth + 1, by_value), _describe(v, loose, tensor, depth + 1, by_value))
                              for k, v in value.items()))
    if isinstance(value, enum.Enum):
        return (type(value).__name__, value.name)
    if type(value).__module__ == "torch" and type(value).__name__ in ("dtype", "device", "memory_format", "layout"):
        return str(value)
    if isinstance(value, (set, frozenset)) and len(value) <= _MAX_ITEMS:
        return ("set", frozenset(_describe(v, loose, tensor, depth + 1, by_value) for v in value))
    state = getattr(value, "__dict__", None)
    if by_value is not None and depth < 4 and type(state) is dict and not inspect.isroutine(value) \
            and len(state) <= _MAX_ITEMS:
        # an attribute's object (a config, a helper): two modules with equal ones compute the same
        key = (id(value), loose)
        if key not in by_value:
            by_value[key] = (type(value), tuple((k, _describe(v, loose, tensor, depth + 1, by_value))
                                                for k, v in state.items()))
        return by_value[key]
    return ("object", id(value))


def _is_tensor(value) -> bool:
    return type(value).__name__ in ("Tensor", "Parameter") or _tensor_type(value)


def _tensor_type(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _storage_id(t) -> int:
    return t.untyped_storage()._cdata
