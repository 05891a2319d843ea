"""torch modules read by running their forward on meta tensors and recording each ATen operation.

torch.fx cannot trace a forward that branches on sizes, iterates over tensors or calls functions a
library keeps whole; running the forward can, and on the meta device it allocates nothing. Modules
paramcalc knows stay one node each (their rule prices them, as in every other path); each ATen operation
run outside them becomes a :class:`~paramcalc.layers.captured.CapturedOp` named after the module that ran
it (``transformer.h.0.attn:addmm``), and each parameter or buffer the code reads directly becomes a
parameter node, counted once. What autograd saves for the backward is recorded with saved-tensor hooks.

The shapes come at two batch sizes: a size is then ``a + c * batch`` and the estimate keeps the batch
symbolic, as for any model. The forward runs at the first; the second replays its operations
(``torch_batch_replay``), or runs the forward again where the replay cannot follow it. Other sizes are
fixed: formulas in a size need a forward torch.fx can trace. torch is already imported when this runs:
the user handed in a module.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field, replace

from paramcalc.core.dims import symbol, symbols_of
from paramcalc.core.errors import ParamcalcError, SpecError
from paramcalc.core.graph import DeferredGraph, Graph, GraphNode
from paramcalc.core.instances import made
from paramcalc.frontends import torch_batch_replay
from paramcalc.frontends.torch_attention import fused_attention_mode
from paramcalc.frontends.torch_batch_replay import (
    OPERATION,
    RECORD,
    REGISTERED,
    SAME_SHAPE,
    NotReplayable,
    ReplayDiffers,
    batch_sizes,
)
from paramcalc.frontends.torch_meta_memo import MetaMemo, tensors_among, writes_in_place
from paramcalc.frontends.torch_modules import (
    _convert,
    attributes_kept,
    forward_parameters,
    leaves,
    module_rule,
    module_tree,
    unreached_parameters,
)
from paramcalc.frontends.torch_replay import Replayer, copy_record, module_states
from paramcalc.frontends.tracebacks import raising_line
from paramcalc.layers import Parameter
from paramcalc.layers.captured import BATCH, CapturedOp, family

REPLAY = True  # copy the records of repeated calls (torch_replay.py); False runs every call
# ... where a block repeats at least this often: below it, the keys cost more than running the calls again,
# whose kernels the meta memo and its shape rules answer (docs/accuracy.md: the break-even is between 4
# and 6 layers)
REPLAY_MIN_REPEATS = 5
META_MEMO = True  # answer meta kernels called again alike from memory (torch_meta_memo.py); False runs each
SUMMARY_DEPTH = 3  # a summary shows the module tree three levels down, as torchinfo does by default
BATCHES = (2, 3)  # two runs make every size a + c * batch; 1 is avoided, code special-cases it
# the second batch size's shapes from the first run's operations replayed (torch_batch_replay.py), the first
# run at a prime batch; False (or a forward that fails at that batch) runs the forward at each of BATCHES
BATCH_REPLAY = True
# operations whose output shape depends on tensor values, which meta tensors do not have
DATA_DEPENDENT = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive",
                  "nms", "repeat_interleave", "bincount", "histc")
_INTEGER_NAMES = ("ids", "indices", "index", "tokens", "token", "labels", "positions")
_MODULE_INPUTS = ("query", "key", "value", "memory", "tgt", "src")  # tensor keywords a known module reads
_VALUE_READ_FIX = ("take a path of the model that decides on sizes only (a Hugging Face model: attn_implementation="
                   "\"eager\"), estimate the part before it, or register a rule for that module "
                   "(paramcalc.register_torch_module)")
# Hugging Face's functions that read a tensor's values only to check the inputs: the ids for padding where
# no mask is given, and a given mask for whether it can be skipped
_IDS_READ = {"warn_if_padding_and_no_attention_mask"}
_MASK_READ = {"_ignore_causal_mask_sdpa", "_ignore_bidirectional_mask_sdpa", "flash_attention_mask"}


def deferred(module: object, name: str, build) -> DeferredGraph:
    """``module`` as a model whose graph ``build`` makes once the input shapes are known (called with
    (name, per-sample shape) pairs)."""
    parameters = [p for p in forward_parameters(module)
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in parameters if p.default is p.empty and p.kind != p.KEYWORD_ONLY]
    accepted = tuple(p.name for p in parameters) or ("input",)
    default = required or list(accepted[:1])
    return DeferredGraph(name, tuple((n, None) for n in default), accepted, build)


def capture(module: object, name: str, dtype: str, sample_shapes: tuple, reason: str = "") -> Graph:
    """The graph of ``module`` called on inputs of ``sample_shapes`` ((name, per-sample shape) pairs)."""
    for input_name, shape in sample_shapes:
        symbolic = [d for d in shape if symbols_of(d)]
        if symbolic:
            raise SpecError(
                f"{name} is read by running its forward ({reason or 'torch.fx cannot trace it'}), which needs "
                f"numbers: input '{input_name}' has the size {symbolic[0]}", value=str(symbolic[0]),
                where="input_shape", fix="pass the sizes as ints (the batch may stay unset); formulas in a size "
                                         "need a forward torch.fx can trace")
    integer = _integer_inputs(sample_shapes)
    try:
        runs = _runs(module, name, sample_shapes, integer)
    except _WrongDtype:
        integer = {n for n, _ in sample_shapes}
        runs = _runs(module, name, sample_shapes, integer)
    why = f", as torch.fx could not read it ({reason})" if reason else ""
    notes = [f"read by running its forward on meta tensors{why}; sizes other than the batch are fixed"]
    if integer:
        notes.append(f"input{'s' if len(integer) > 1 else ''} {', '.join(sorted(integer))} taken as integer "
                     "tensors (int64), as token ids are")
    return _merge(runs, sample_shapes, name, dtype, notes, integer)


def _runs(module: object, name: str, sample_shapes: tuple, integer: set) -> list:
    """The forward's runs at two batch sizes: at two primes, the second replayed from the first where it
    can be (``torch_batch_replay``); else, or where the forward fails at the first prime, at BATCHES (the
    user then sees the error of a run at those)."""
    replay = REPLAY and _most_repeated_block(module) >= REPLAY_MIN_REPEATS
    setup = dict(states=module_states(module) if replay else None, memo=MetaMemo() if META_MEMO else None,
                 replay=replay,
                 # taken before the first run sets the replayer's ``forward`` attributes: each run puts the
                 # modules' attributes back as they were, those attributes and whatever the forward cached gone
                 restore=attributes_kept(module))
    primes = batch_sizes(module, sample_shapes) if BATCH_REPLAY else None
    if primes is not None:
        try:
            return _runs_at(primes, module, name, sample_shapes, integer, logged=True, **setup)
        except (_WrongDtype, ReplayDiffers):
            raise
        except Exception:  # noqa: BLE001 - the forward fails at that batch: the small batches say how
            pass
    return _runs_at(BATCHES, module, name, sample_shapes, integer, logged=False, **setup)


def _runs_at(batches: tuple, module: object, name: str, sample_shapes: tuple, integer: set, *, logged: bool,
             states, memo, replay: bool, restore) -> list:
    """The forward run at the first of ``batches``, and at the second replayed from its operations where
    ``logged`` and the replay holds, else run as well: that run copies at once the calls the first found
    alike."""
    learned: dict = {}
    recorder = _Recorder(module, name)
    if logged:
        recorder.log = []
    first = recorder.run(sample_shapes, batches[0], integer, learned, states, memo, replay, restore=restore)
    second = None
    if logged:
        try:
            second = _replayed(first, recorder, batches[1], memo)
        except Exception:  # noqa: BLE001 - NotReplayable, or torch's kernel refused an integer read wrong
            pass
        recorder.log = None
    if second is None or torch_batch_replay.CHECK:
        again = _Recorder(module, name)
        again.layers_read = {r.name: (r.source, r.layer) for r in first.records if r.source is not None}
        full = again.run(sample_shapes, batches[1], integer, learned, states, memo, replay, restore=restore)
        if second is not None:
            _check_replay(second, full)
        second = full
    return [first, second]


def _replayed(first: _Run, recorder: _Recorder, batch: int, memo) -> _Run:
    """The run at ``batch``, from the first run's operations replayed (``torch_batch_replay.replay``)."""
    import torch

    inputs = {id(t): torch.zeros((batch, *t.shape[1:]), dtype=t.dtype, device="meta")
              for t in recorder.input_tensors}
    record_shapes, shapes = torch_batch_replay.replay(recorder.log, inputs, first.batch, batch, _kernel(memo))
    records = []
    for record in first.records:
        if record.layer is None:
            found = record_shapes.get(id(record))
            if found is None:
                raise NotReplayable(f"{record.name} was not replayed")
            record = copy_record(record, input_shapes=found[0], output_shapes=found[1])
        records.append(record)
    if shapes.keys() != first.shapes.keys():
        raise NotReplayable("tensors were registered that the replay did not see")
    return _Run(batch, records, first.outputs, shapes, first.used, first.memo, first.root)


def _check_replay(replayed: _Run, run: _Run) -> None:
    """Fail where the replay's shapes differ from the forward's run at the same batch size (``CHECK``)."""
    for a, b in zip(replayed.records, run.records):
        if (a.name, a.input_shapes, a.output_shapes) != (b.name, b.input_shapes, b.output_shapes):
            raise ReplayDiffers(f"the replay at batch {run.batch} gives {a.name} {a.input_shapes} -> "
                                 f"{a.output_shapes}; the run {b.name} {b.input_shapes} -> {b.output_shapes}")
    differ = [ref for ref in run.shapes if replayed.shapes.get(ref) != run.shapes[ref]]
    if len(replayed.records) != len(run.records) or differ:
        raise ReplayDiffers(f"the replay at batch {run.batch} differs from the run: {len(replayed.records)} "
                             f"against {len(run.records)} records, tensors {differ[:5]}")


def _most_repeated_block(module: object) -> int:
    """How often the most repeated outermost block repeats (a decoder's layers): what copying repeated
    calls can save. Blocks are modules holding others, alike by class and parameter count; a block inside
    a repeated one (each layer's attention) is not counted again."""
    modules = list(module.modules())
    sizes: dict = {}

    def size(m) -> int:  # parameters under ``m``, a module shared by two parents counted in each
        found = sizes.get(id(m))
        if found is None:
            found = sizes[id(m)] = sum(p.numel() for p in m._parameters.values() if p is not None) + sum(
                size(c) for c in m._modules.values() if c is not None)
        return found

    kinds = {id(m): (type(m), size(m)) for m in modules if m._modules}
    counts: dict = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    outermost: dict = {}
    for m in modules:
        if id(m) in kinds and counts[kinds[id(m)]] > 1:
            for c in m._modules.values():
                if c is not None and id(c) in kinds:
                    outermost[id(c)] = False
    return max((counts[kind] for key, kind in kinds.items() if outermost.get(key, True)), default=0)


def _keywords(module: object) -> set:
    """Names forward takes by keyword."""
    return {p.name for p in forward_parameters(module) if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _integer_inputs(sample_shapes: tuple) -> set:
    """Inputs taken as integer tensors by their name (``input_ids``, ``token_type_ids``, ``labels``)."""
    return {n for n, _ in sample_shapes if any(n == w or n.endswith("_" + w) for w in _INTEGER_NAMES)}


class _WrongDtype(Exception):
    """The forward refused floating inputs where it indexes with them (an embedding)."""


@dataclass
class _Record:
    """One node of a run: a known module's call, an ATen operation or a tensor read directly."""

    name: str
    layer: object  # a Layer for modules and tensors read directly; None for an operation
    inbound: list
    module: str = ""  # the path of the module it ran in
    op: str = ""
    input_shapes: list = field(default_factory=list)
    output_shapes: list = field(default_factory=list)
    output_dtypes: list = field(default_factory=list)
    weight_inputs: tuple = ()
    view: bool = False
    saves: list = field(default_factory=list)  # (ref, itemsize or None)
    transposed: bool = False
    window: int = 0
    dims: tuple = ()
    source: object = None  # a known module's object
    positions: tuple = ()  # a known module's output positions
    tensor: int = 0  # id of the tensor a parameter, buffer or constant record stands for
    options: dict = field(default_factory=dict)  # a known module's call's keyword arguments
    writes: tuple = ()  # an in-place operation: the references of the storages it wrote
    # an input requires grad, so autograd may keep what the operation made (its outputs get their
    # requires_grad only once the dispatch returns)
    grad: bool = True
    made: tuple = ()  # an operation's output tensors: whether they carry a gradient is read after the run


@dataclass
class _Run:
    batch: int
    records: list
    outputs: list
    shapes: dict  # ref -> concrete shape of every tensor made
    used: set  # ids of parameters and buffers read directly
    memo: dict
    root: object


class _Recorder:
    """Runs the forward once at one batch size, recording nodes in the order they run."""

    def __init__(self, root: object, name: str) -> None:
        self.root = root
        self.model_name = name
        self.records: list[_Record] = []
        self.refs: dict = {}  # id(tensor) -> ref
        self.keep: list = []  # every tensor seen, alive so that ids stay unique
        self.storage: dict = {}  # storage id -> ref of the tensor that made it
        self.shapes: dict = {}  # ref -> shape
        self.from_weights: set = set()  # refs of parameters and views of them
        self.stack: list = []  # names of the modules running, innermost last
        self.known_depth = 0  # > 0 while a module paramcalc knows runs: its operations are its own
        self.frames: list = []
        self.counts: dict = {}
        self.memo: dict = {}
        self.tensor_names: dict = {}  # id(meta copy) -> (name, is_parameter, trainable, id(original))
        self.used: set = set()
        self.current = None  # the operation running, for errors
        # (operation, its exception, the modules running) of the last operation that failed, while the
        # run lasts (the exception's traceback holds the run's frames, which hold the recorder)
        self.failed_op: tuple | None = None
        self.pending: list = []  # tensors autograd saved for the operation about to run
        self.quiet = False  # True while the recorder itself makes tensors
        self.constants = 0  # tensors read that no module holds as a parameter or buffer
        self.entered: dict = {}  # id(module) -> calls running that its hooks entered
        # node name -> (module, its layer) of the known modules' calls an earlier run read: the run at
        # the second batch size calls them again in the same order, and only the first run's layers are kept
        self.layers_read: dict = {}
        self.log: list | None = None  # the events torch_batch_replay replays, where it will
        self.input_tensors: list = []  # the forward's inputs, in order

    def logged(self, *event) -> None:
        """Log an event for the replay at the second batch size, where one will follow."""
        if self.log is not None:
            self.log.append(event)

    # -- the run -------------------------------------------------------------------------------------
    def run(self, sample_shapes: tuple, batch: int, integer: set, learned: dict | None = None,
            states: dict | None = None, memo: MetaMemo | None = None, replay: bool = True, *,
            restore) -> _Run:
        """The forward at ``batch``. ``learned``: what the run at another batch size found of calls alike
        (read, then filled in by this run); ``states``: the modules' states (``module_states``), where
        already read; ``memo``: meta kernels' results, where kept across runs; ``replay``: whether
        repeated calls are copied; ``restore``: puts the modules' attributes back as they were before
        the runs (``attributes_kept``), called when this one ends."""
        import torch

        recorder = self
        kernel = _kernel(memo)
        originals = {}
        tensors = {}
        for names, is_param in ((self.root.named_parameters(remove_duplicate=False), True),
                                (self.root.named_buffers(remove_duplicate=False), False)):
            for tensor_name, t in names:
                if id(t) not in originals:
                    originals[id(t)] = _meta_copy(t).requires_grad_(bool(is_param and t.requires_grad))
                    self.tensor_names[id(originals[id(t)])] = (tensor_name, is_param, bool(is_param and t.requires_grad), id(t))
                tensors[tensor_name] = originals[id(t)]
        module_names = {}
        for module_name, m in self.root.named_modules(remove_duplicate=False):
            module_names.setdefault(id(m), module_name)

        args, kwargs = [], {}
        keywords = _keywords(self.root)
        for input_name, shape in sample_shapes:
            int_input = input_name in integer
            t = torch.zeros((batch, *shape), dtype=torch.int64 if int_input else _torch_dtype(self.root), device="meta")
            self._register(t, (input_name, 0))
            self.input_tensors.append(t)
            if input_name in keywords:  # by name: a dict input_shape may skip arguments (attention_mask)
                kwargs[input_name] = t
            else:
                args.append(t)

        def pre(module, args_, kwargs_):
            recorder.enter(module, module_names.get(id(module), ""), args_, kwargs_)

        def post(module, args_, kwargs_, output):
            recorder.leave(module, output)

        # What autograd's graph holds lives as long as the run's tensors, which the recorder holds: a
        # strong reference to the recorder in the hook, or to an operation's own output kept, would be a
        # cycle through autograd's C++ graph that no collector frees, leaking every run. The graph keeps
        # weak references, and the recorder the tensors while the forward runs, for a backward the
        # forward runs itself (a PINN's derivatives).
        weak = weakref.ref(self)

        def pack(t):
            running = weak()
            running.saved(t)
            running.keep.append(t)
            return weakref.ref(t)

        handles = []
        replayer = Replayer(self, self.root, dict(learned or {}), states) if replay else None
        for m in self.root.modules():
            if m is not self.root:
                handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(m.register_forward_hook(post, with_kwargs=True, always_call=True))
                if replayer is not None:
                    m.forward = self._forward(m, m.forward, replayer)
        try:
            # tensors the forward makes without a device (torch.zeros(16)) are made on meta too
            with torch.autograd.graph.saved_tensors_hooks(pack, _unpacked), _recording_mode()(self, kernel), \
                    fused_attention_mode("meta"):
                output = torch.func.functional_call(self.root, tensors, tuple(args), kwargs, tie_weights=False)
        except ParamcalcError:
            raise
        except Exception as err:  # the user's forward runs here: any failure is reported with its operation
            raise self._failure(err, [*args, *kwargs.values()], masked=any("mask" in k for k in kwargs)) from None
        finally:
            self.failed_op = None
            for h in handles:
                h.remove()
            restore()
        if replayer is not None and learned is not None and not learned:
            learned.update(replayer.learn())
        outputs = [self._ref(t) for t in leaves(output) if isinstance(t, torch.Tensor)]
        # the known modules' rules read the meta copies: their ids become the originals' again
        originals_of = {copy: named[3] for copy, named in self.tensor_names.items()}
        self.memo["parameters"] = {originals_of.get(i, i) for i in self.memo.get("parameters", ())}
        if not outputs:
            raise SpecError(f"the forward of {self.model_name} returned no tensor ({type(output).__name__})",
                            value=type(output).__name__)
        return _Run(batch, self.records, outputs, self.shapes, self.used, self.memo, self.root)

    def _failure(self, err: Exception, args: list, masked: bool = False) -> SpecError:
        """The error to raise for ``err``, raised while the forward ran on ``args``; ``masked``: one of
        them is a mask the user named."""
        in_operation = self.failed_op is not None and _raised_from(err, self.failed_op[1])
        func, _, running = self.failed_op if in_operation else (self.current, None, [])
        op = getattr(getattr(func, "_overloadpacket", None), "__name__", str(func))
        where = running[-1] if running else self._raising_module(err) or self.model_name
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if op == "_local_scalar_dense":
            line = raising_line(err)
            return SpecError(
                f"{where} reads the value of a tensor (Tensor.item(), or a Python branch on a tensor such as "
                f"`if mask.all()`), which meta tensors do not have ({type(err).__name__}: {text})"
                + (f", at {line}" if line is not None else ""), layer=where, value=str(func),
                fix=_value_read_fix(line.function if line is not None else "", masked))
        if any(op == d or op.endswith("::" + d) or f"{d}()" in text for d in DATA_DEPENDENT) or "data-dependent" in text:
            return SpecError(
                f"{where} calls {func}, whose output's shape depends on the values of a tensor, which meta tensors "
                f"do not have ({type(err).__name__}: {text})", layer=where, value=str(func),
                fix="estimate the part before it (a detection model's backbone: model.backbone), or wrap the "
                    "data-dependent code in a module with a registered rule (paramcalc.register_torch_module)")
        import torch

        if any(t.dtype.is_floating_point for t in args) and ("indices" in text or "Long" in text or "Int" in text):
            raise _WrongDtype() from None
        # an operation that failed, or the forward's own Python code (after the last operation it ran)
        at = (f"at {func}" if in_operation else
              f"in its Python code, after {func}" if func is not None else "in its Python code, before any operation")
        return SpecError(f"running the forward of {self.model_name} on meta tensors failed in {where} {at}: "
                         f"{type(err).__name__}: {text}", layer=where,
                         value=str(func) if in_operation else type(err).__name__,
                         fix="check input_shape against what the forward expects; a model that runs on real "
                             f"tensors of that shape but not on torch's meta device ({torch.__version__}) needs a rule "
                             "for that module (paramcalc.register_torch_module)")

    def _raising_module(self, err: Exception) -> str:
        """The name of the innermost module whose forward the exception passed through, from its traceback
        (the hooks that track the running modules have unwound by then); "" where none."""
        names = {id(m): name for name, m in self.root.named_modules() if name}
        tb, found = err.__traceback__, ""
        while tb is not None:
            module = tb.tb_frame.f_locals.get("self")
            if id(module) in names and tb.tb_frame.f_code.co_name == "forward":
                found = names[id(module)]
            tb = tb.tb_next
        return found

    def _forward(self, module, forward, replayer):
        """``module``'s forward, through the replayer when its call hooks entered it (code that calls
        ``module.forward`` directly runs it as is)."""
        entered = self.entered

        def call(*args, **kwargs):
            if not entered.get(id(module)):
                return forward(*args, **kwargs)
            return replayer.call(module, forward, args, kwargs)

        return call

    # -- hooks -----------------------------------------------------------------------------------------
    def enter(self, module, name: str, args, kwargs) -> None:
        self.stack.append(name)
        self.entered[id(module)] = self.entered.get(id(module), 0) + 1
        if self.known_depth:
            self.known_depth += 1
            return
        if module_rule(module) is None or getattr(module, "inplace", False) is True:
            # an in-place module (ReLU(inplace=True)) writes its input's storage: its operations are
            # recorded, so that what autograd keeps of that storage is counted once
            return
        import torch

        tensors = [a for a in leaves(args) if isinstance(a, torch.Tensor)]
        tensors += [v for k, v in kwargs.items() if k in _MODULE_INPUTS and isinstance(v, torch.Tensor)]
        if any(t.dtype.is_floating_point and not t.is_contiguous() for t in tensors):
            # a rule prices the kernel on the layout it takes without a copy; on a strided input (a
            # permuted or expanded tensor) torch's kernel may copy it and keep the copy (a Linear
            # flattening a permuted input to 2-D, a GroupNorm): its operations are recorded, so that
            # saved-tensor hooks say what it keeps
            return
        self.frames.append(([self._ref(t) for t in tensors], kwargs))
        self.known_depth = 1

    def leave(self, module, output) -> None:
        name = self.stack.pop()
        self.entered[id(module)] -= 1
        if self.known_depth > 1:
            self.known_depth -= 1
            return
        if not self.known_depth:
            return
        self.known_depth = 0
        inbound, options = self.frames.pop()
        node_name = self._unique(name)
        read = self.layers_read.get(node_name)
        layer = read[1] if read is not None and read[0] is module else _convert(module, name, self.memo, options)
        structure = getattr(layer, "output_structure", None)
        positions = list(_flatten_structure(structure)) if structure is not None else [0]
        record = _Record(node_name, layer, inbound, module=name, source=module, options=dict(options))
        self.records.append(record)
        import torch

        registered = []
        for t, position in zip(leaves(output, keep_none=True), positions):
            if isinstance(t, torch.Tensor):
                self._register(t, (node_name, position))
                registered.append(position)
        record.positions = tuple(registered)

    def saved(self, t) -> None:
        """autograd keeps ``t`` for a backward. It saves an operation's inputs before the operation runs
        and its outputs after: a tensor the last operation made is that operation's; any other waits for
        the next operation."""
        if self.known_depth:
            return  # a known module's rule says what it keeps
        ref = self.storage.get(_storage_id(t))
        if ref is None or ref in self.from_weights:
            return  # weights are counted as weights, not as activations
        entry = (ref, None if t.dtype.is_floating_point else t.element_size())
        if not self.attach_save(entry) and entry not in self.pending:
            self.pending.append(entry)

    def attach_save(self, entry: tuple) -> bool:
        """Give a saved tensor to the last operation where that operation made it; False otherwise
        (the next operation takes it). An operation none of whose outputs requires grad has no backward,
        so what it made is kept by the next one (integer positions an Embedding reads)."""
        last = self.records[-1] if self.records else None
        if last is None or last.layer is not None or not last.grad:
            return False
        if entry[0][0] != last.name and entry[0] not in last.writes:
            return False
        if entry not in last.saves:
            last.saves.append(entry)
        return True

    # -- operations ------------------------------------------------------------------------------------
    def operation(self, func, args, kwargs, out, before: list | None = None) -> None:
        """Record an operation that ran; ``before``: its inputs' shapes before it ran, where it writes one
        in place (``unsqueeze_`` changes its input's shape)."""
        import torch

        tensor = torch.Tensor
        inputs = _inputs(args, kwargs)
        outputs = [out] if isinstance(out, tensor) else tensors_among(out, tensor) if isinstance(out, (tuple, list)) else []
        if not outputs:
            return
        inbound = [self._ref(t) for t in inputs]
        op, view, in_place = _operator(func)
        module = self.stack[-1] if self.stack else ""
        name = self._unique(f"{module}:{op}" if module else op)
        record = _Record(name, None, inbound, module=module, op=f"aten.{op}",
                         input_shapes=before or [_shape(t) for t in inputs],
                         output_shapes=[_shape(t) for t in outputs], output_dtypes=[_dtype(t) for t in outputs],
                         weight_inputs=tuple(i for i, r in enumerate(inbound) if r in self.from_weights), view=view,
                         transposed=bool(op == "convolution" and len(args) > 6 and args[6]), window=_window(op, args),
                         dims=_dims(func, args, kwargs), grad=any(t.requires_grad for t in inputs),
                         made=tuple(outputs))
        if in_place and inputs and _storage_id(outputs[0]) == _storage_id(inputs[0]):  # not an out= argument
            record.writes = tuple(self.storage[_storage_id(t)] for t in outputs if _storage_id(t) in self.storage)
        record.saves, self.pending = self.pending, []
        self.records.append(record)
        if self.log is not None:
            self.log.append((RECORD, record, inputs, outputs))
        for i, t in enumerate(outputs):
            ref = (name, i)
            # an in-place operation's output is its input's storage, still keyed by whoever made it
            self._register(t, ref, view=view or in_place)
            if view and inbound and inbound[0] in self.from_weights:
                self.from_weights.add(ref)

    def _register(self, t, ref: tuple, view: bool = False) -> None:
        self.refs[id(t)] = ref
        self.keep.append(t)
        self.shapes[ref] = _shape(t)
        if self.log is not None:
            self.log.append((REGISTERED, ref, t))
        if not view:  # a view's storage is its base's: kept tensors are keyed by whoever made the storage
            self.storage[_storage_id(t)] = ref

    def _ref(self, t) -> tuple:
        ref = self.refs.get(id(t))
        if ref is not None:
            return ref
        named = self.tensor_names.get(id(t))
        if named is None:  # a tensor made before the forward ran (a plain attribute): a constant
            self.constants += 1
            tensor_name, is_param, trainable, original = f"constant_{self.constants}", False, False, None
        else:
            tensor_name, is_param, trainable, original = named
            self.used.add(original)
        # ids of the meta copies, as the known modules' rules see them while functional_call runs
        owned = self.memo.setdefault("parameters", set())
        tied = named is not None and id(t) in owned
        layer = Parameter(shape=_shape(t), buffer=not is_param, trainable=trainable,
                          type_name="Parameter" if is_param else "buffer",
                          tied=(0,) if tied or named is None else ())
        owned.add(id(t))
        node_name = self._unique(tensor_name)
        owner = tensor_name.rpartition(".")[0] if named is not None else (self.stack[-1] if self.stack else "")
        self.records.append(_Record(node_name, layer, [], module=owner, tensor=id(t)))
        ref = (node_name, 0)
        self._register(t, ref)
        self.from_weights.add(ref)
        return ref

    def constant_like(self, record: _Record, module: str) -> tuple:
        """A record of a tensor no module holds, as ``record`` was, for a copied call whose full run would
        have read a tensor of its own there (a cache each layer makes)."""
        self.constants += 1
        name = self._unique(f"constant_{self.constants}")
        self.records.append(copy_record(record, name=name, module=module))
        ref = (name, 0)
        self.shapes[ref] = self.shapes[(record.name, 0)]
        self.logged(SAME_SHAPE, ref, (record.name, 0))
        self.from_weights.add(ref)
        return ref

    def _unique(self, name: str) -> str:
        count = self.counts.get(name, 0)
        self.counts[name] = count + 1
        return name if count == 0 else f"{name}_{count}"


def _value_read_fix(function: str, masked: bool) -> str:
    """What to do about a forward that read a tensor's value in ``function``; ``masked``: a mask was given."""
    if function in _IDS_READ:
        return ("pass the attention mask too: Hugging Face looks for padding in the ids when none is given, e.g. "
                "input_shape={\"input_ids\": (128,), \"attention_mask\": (128,)}")
    if function in _MASK_READ and masked:
        return ("leave the mask out of input_shape: Hugging Face reads its values to decide whether it can skip "
                "it; without one the forward takes the path of a batch with no padding")
    return _VALUE_READ_FIX


def _kernel(memo):
    """What runs an ATen operation on meta tensors: the CPU kernel's answer where the meta kernel refuses
    what the CPU runs (``torch_meta_cpu``), else the memo, else the meta kernel."""
    from paramcalc.frontends.torch_meta_cpu import cpu_rules

    rules = cpu_rules()
    run = memo.call if memo is not None else lambda func, args, kwargs: func(*args, **kwargs)

    def kernel(func, args, kwargs):
        rule = rules.get(func)
        out = rule(args, kwargs) if rule is not None else None
        return run(func, args, kwargs) if out is None else out

    return kernel


def _raised_from(err: BaseException, origin: BaseException) -> bool:
    """Whether ``err`` is ``origin`` or was raised while handling it (torch and libraries wrap errors)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if err is origin:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _unpacked(kept: weakref.ref):
    """A saved tensor, for a backward the forward runs itself (alive: the recorder keeps it)."""
    return kept()


@functools.cache
def _recording_mode() -> type:
    """The dispatch mode that records each ATen operation for a recorder, its class made once: a class
    made per run lives in a reference cycle, and would keep the run's records and tensors alive until
    Python's garbage collector walks them."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordingMode(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # torch wraps a mode's __torch_dispatch__ to keep torch.compile out of it: four eval-frame
            # switches on every operation, for a forward that runs eagerly on meta tensors anyway
            return False

        def __init__(self, recorder: _Recorder, kernel) -> None:
            super().__init__()
            self.recorder, self.kernel = recorder, kernel

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            recorder = self.recorder
            if recorder.quiet:
                return func(*args, **kwargs)
            recorder.current = func
            # an operation that writes an input in place may change its shape: its record takes the shapes
            # it was given
            before = [_shape(t) for t in _inputs(args, kwargs)] if writes_in_place(func) else None
            try:
                out = self.kernel(func, args, kwargs)
            except Exception as err:
                recorder.failed_op = (func, err, list(recorder.stack))  # the hooks unwind the stack
                raise
            if recorder.log is not None:
                recorder.log.append((OPERATION, func, args, kwargs, out))
            if not recorder.known_depth:
                recorder.operation(func, args, kwargs, out, before)
            return out

    return RecordingMode


def _merge(runs: list, sample_shapes: tuple, name: str, dtype: str, notes: list, integer: set) -> Graph:
    """One graph from the runs: every size as ``a + c * batch`` from its values at the two batches."""
    first, second = runs
    nodes = []
    known_forms: dict = {}  # (shape at the first batch, at the second) -> form: blocks repeat their shapes
    first_shapes, second_shapes = first.shapes, second.shapes
    batches = first.batch, second.batch
    unknown: dict = {}  # operations whose arithmetic paramcalc does not know -> calls

    def form_of(x: tuple, y: tuple) -> tuple:
        found = known_forms.get((x, y))
        if found is None:
            found = known_forms[(x, y)] = _form(x, y, *batches)
        return found

    for a, b in zip(first.records, second.records):
        if a.name != b.name or a.inbound != b.inbound:
            raise _branching(name, first, second, a.name)
        if a.layer is not None:  # the same object for each call of one module: its weights are shared
            layer = a.layer if a.layer.name else replace(a.layer, name=a.name)
            nodes.append(GraphNode(a.name, layer, tuple(a.inbound), module=a.module))
            continue
        input_forms = tuple([form_of(x, y) for x, y in zip(a.input_shapes, b.input_shapes)])
        output_forms = tuple([form_of(x, y) for x, y in zip(a.output_shapes, b.output_shapes)])
        inbound = tuple(a.inbound)
        saves = tuple([(ref, form_of(first_shapes[ref], second_shapes[ref]), itemsize) for ref, itemsize in a.saves])
        # a form holds the batch where the two runs' shapes differ
        if a.input_shapes == b.input_shapes and (a.output_shapes != b.output_shapes or any(
                first_shapes[ref] != second_shapes[ref] for ref, _ in a.saves)):
            inbound += ((sample_shapes[0][0], 0),)  # read for the batch size only (arange(x.size(0)))
        op = a.op
        type_name = op[op.rfind(".") + 1:]
        if family(type_name) == "unknown":
            unknown[op] = unknown.get(op, 0) + 1
        layer = made(CapturedOp, dict(
            name=a.name, type_name=type_name, op=op, input_forms=input_forms, output_forms=output_forms,
            output_dtypes=tuple(a.output_dtypes), reads=len(a.inbound), weight_inputs=a.weight_inputs, view=a.view,
            in_place=bool(a.writes), saves=saves, transposed=a.transposed, window=a.window, dims=a.dims,
            no_gradient=not any(t.requires_grad for t in a.made)))
        nodes.append(made(GraphNode, dict(name=a.name, layer=layer, inbound=inbound, module=a.module)))
    if len(first.records) != len(second.records):
        raise _branching(name, first, second, "its end")
    if unknown:
        notes.append("paramcalc does not know the arithmetic of " + ", ".join(
            f"{op} ({count} call{'s' if count > 1 else ''})" for op, count in unknown.items())
            + ": each is priced as one pass over its memory, with no FLOPs")
    unused, unused_notes = unreached_parameters(first.root, first.memo, first.used)
    for tensor_name, layer in unused:
        nodes.append(GraphNode(tensor_name, replace(layer, name=tensor_name), (),
                               module=tensor_name.rpartition(".")[0]))
    return Graph(tuple((n, None) for n, _ in sample_shapes), tuple(nodes), tuple(first.outputs), name=name,
                 framework="torch", dtype=dtype, notes=tuple(notes) + tuple(unused_notes),
                 modules=module_tree(first.root), summary_depth=SUMMARY_DEPTH,
                 input_dtypes={n: "int64" for n in sorted(integer)},
                 forward_mode="train" if first.root.training else "eval")


def _branching(name: str, first: _Run, second: _Run, where: str) -> SpecError:
    """The error for a forward that ran other operations at the two batch sizes, first at ``where``."""
    return SpecError(f"the forward of {name} runs other operations at batch {first.batch} than at batch "
                    f"{second.batch} (first at {where}): it branches on the batch size", value=where,
                    fix="estimate it with torch.fx (a forward without Python branches on sizes), or report the model")


_DIM_ARGUMENTS: dict = {}  # operation -> (position, name, default) of its arguments that name axes


def _dims(func, args: tuple, kwargs: dict) -> tuple:
    """The axes an operation's arguments name (``dim``, ``dims``, ``dim0``/``dim1``; a norm's
    ``normalized_shape`` as that many trailing axes), as written: negative ones count from the end."""
    found = _DIM_ARGUMENTS.get(func)
    if found is None:
        found = _DIM_ARGUMENTS[func] = tuple(
            (i, a.name, a.default_value if a.has_default_value() else None)
            for i, a in enumerate(func._schema.arguments) if a.name in ("dim", "dims", "dim0", "dim1", "normalized_shape"))
    dims: list = []
    for position, name, default in found:
        value = args[position] if position < len(args) else kwargs.get(name, default)
        if name == "normalized_shape":
            dims.extend(range(-len(value), 0))
        elif isinstance(value, int):
            dims.append(value)
        elif isinstance(value, (list, tuple)):
            dims.extend(int(v) for v in value)
    return tuple(dims)


def _window(op: str, args: tuple) -> int:
    """A pool's kernel size in elements (its second argument); 0 for anything else."""
    if "pool" not in op or "adaptive" in op or len(args) < 2:
        return 0
    kernel = args[1]
    sizes = [kernel] if isinstance(kernel, int) else list(kernel)
    rank = {"1d": 1, "2d": 2, "3d": 3}.get(next((r for r in ("1d", "2d", "3d") if r in op), "2d"))
    sizes = sizes * rank if len(sizes) == 1 else sizes
    window = 1
    for size in sizes:
        window *= int(size)
    return window


def _form(a: tuple, b: tuple, batch_a: int, batch_b: int) -> tuple:
    """Each size as an int, or ``a + c * BATCH`` where it changes with the batch."""
    form = []
    for x, y in zip(a, b):
        if x == y:
            form.append(x)
            continue
        per, rest = divmod(y - x, batch_b - batch_a)
        if rest:
            raise SpecError(f"a size goes from {x} to {y} between batch {batch_a} and {batch_b}: it does not grow "
                            "with the batch in proportion", value=(x, y))
        form.append(symbol(BATCH) * per + (x - per * batch_a))
    return tuple(form)


def _flatten_structure(structure) -> list:
    if isinstance(structure, tuple):
        return [p for s in structure for p in _flatten_structure(s)]
    return [structure]


_OPERATORS: dict = {}  # func -> (its name, every output a view of an input, an output written in place)


def _operator(func) -> tuple:
    found = _OPERATORS.get(func)
    if found is None:
        returns = func._schema.returns
        view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        in_place = any(r.alias_info is not None and r.alias_info.is_write for r in returns)
        found = _OPERATORS[func] = (func._overloadpacket.__name__, view, in_place)
    return found


def _inputs(args: tuple, kwargs: dict) -> list:
    """An ATen operation's tensor arguments, in order."""
    import torch

    return tensors_among(args, torch.Tensor) + (tensors_among(kwargs.values(), torch.Tensor) if kwargs else [])


def _shape(t) -> tuple:
    return tuple(t.shape)  # plain ints: meta tensors here have no symbolic sizes


_DTYPES: dict = {}


def _dtype(t) -> str:
    name = _DTYPES.get(t.dtype)
    if name is None:
        name = _DTYPES[t.dtype] = str(t.dtype).replace("torch.", "")
    return name


def _meta_copy(t):
    """An empty meta tensor laid out as ``t`` (torch.empty_like runs a Python reference on meta)."""
    import torch

    if t.is_contiguous():
        return torch.empty(t.shape, dtype=t.dtype, device="meta")
    return torch.empty_like(t, device="meta")


def _storage_id(t) -> int:
    return t.untyped_storage()._cdata


def _torch_dtype(module: object):
    import torch

    for t in module.parameters():
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.float32
