"""estimate(): propagate a model and aggregate its rows into an Estimate.

The Estimate is data: exact ints or symbolic expressions, never floats, never formatted on its own
(``summary()`` hands it to :mod:`paramcalc.interfaces.render`). FLOPs count one multiply-add as 2 FLOPs; MACs
count multiply-accumulates; both are per sample unless the name says per batch.
"""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from paramcalc.core.assumptions import Assumption
from paramcalc.core.dims import Dim, Sym, as_dim, format_dim, symbol, symbols_of, total
from paramcalc.core.errors import ParamcalcError, ShapeError, SpecError
from paramcalc.core.graph import DeferredGraph, Node, lookup, normalize_shape, propagate
from paramcalc.core.instances import made
from paramcalc.core.layer import Layer, format_shape
from paramcalc.core.spec import TensorSpec, dtype_bytes
from paramcalc.core.units import FLOP_CONVENTION

DEFAULT_BATCH_SYMBOL = "B"


@dataclass(frozen=True)
class LayerRow:
    """One layer call: shapes (batch axis first), parameters and forward work.

    ``params`` = trainable + non-trainable parameters; torch ``buffers`` are counted apart.
    A layer whose weights are shared with an earlier row (``shared_with``) counts 0 parameters here:
    its weights are the earlier row's.
    """

    name: str
    type: str
    kind: str
    input_shapes: tuple
    output_shape: tuple
    params: Dim
    trainable_params: Dim
    non_trainable_params: Dim
    buffers: Dim
    macs: Dim
    flops: Dim
    macs_per_batch: Dim
    flops_per_batch: Dim
    weights: tuple = ()
    shared_with: str | None = None
    output_shapes: tuple = ()  # every output of the call, the first included (RNN states, scores)
    inbound: tuple = ()  # (name, output index) of each tensor it reads: a layer's or a model input's
    layer: Layer | None = field(default=None, compare=False, repr=False)
    module: str | None = None  # the user's module it runs in (torch: a named_modules path; "" the model)


@dataclass(frozen=True)
class Estimate:
    """What a model will be: per-layer rows, totals, diagnostics and the assumptions behind them.

    >>> import paramcalc
    >>> est = paramcalc.estimate(paramcalc.seed_model("reshaped_flatten"), input_shape=("n", 1))
    >>> est.params
    Sym('90000*n + 31101')
    >>> est.subs(n=20020).params
    1801831101
    """

    name: str
    framework: str | None
    dtype: str
    input_shape: tuple
    batch_size: Dim | None
    batch_symbol: str
    layers: tuple
    params: Dim
    trainable_params: Dim
    non_trainable_params: Dim
    buffers: Dim
    macs: Dim
    flops: Dim
    macs_per_batch: Dim
    flops_per_batch: Dim
    output_shape: tuple
    target_shape: tuple | None = None
    inputs: tuple = ()  # (name, per-sample shape) of every model input
    input_dtypes: dict = field(default_factory=dict, compare=False)  # inputs not of the model's dtype (token ids)
    output_shapes: tuple = ()  # every model output, batch axis first
    output_names: tuple = ()  # the layer (with ":index" past its first output) each output comes from
    diagnostics: tuple = ()
    assumptions: tuple = ()
    notes: tuple = ()
    training: Any = None  # a TrainingCost when optimizer, dtype or device was given
    training_setup: Any = field(default=None, compare=False, repr=False)  # a cost.TrainingSetup
    training_notes: tuple = field(default=(), compare=False, repr=False)  # the notes about training
    modules: tuple = field(default=(), compare=False, repr=False)  # (path, class name) of the module tree
    summary_depth: int | None = field(default=None, compare=False, repr=False)  # summary()'s default depth
    forward_mode: str | None = field(default=None, compare=False, repr=False)  # a torch forward read as "eval" or "train"

    # -- derived figures --------------------------------------------------------------------------------
    @property
    def param_bytes(self) -> Dim:
        """Bytes the parameters take in the model's dtype (weights only, no gradients or optimizer)."""
        return self.params * dtype_bytes(self.dtype)

    @property
    def symbols(self) -> frozenset:
        """Symbols left in the estimate (the batch symbol included while batch_size is unset)."""
        found: set = set()
        for value in (self.params, self.flops_per_batch, *self.output_shape, *self.input_shape):
            found |= symbols_of(value)
        for row in self.layers:
            for value in (row.params, row.flops_per_batch, *row.output_shape):
                found |= symbols_of(value)
        return frozenset(found)

    def by_module(self, depth: int = 3) -> tuple:
        """Rows per module of the user's module tree, down to ``depth`` levels (as torchinfo's ``depth``):
        each with the parameters and work of everything it runs, its submodules' included.

        >>> import torch
        >>> import paramcalc
        >>> class Block(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.proj = torch.nn.Linear(8, 8)
        ...     def forward(self, x):
        ...         return self.proj(x) * x.sigmoid()
        >>> model = torch.nn.Sequential(Block(), Block())
        >>> [(r.name, r.type, r.params) for r in paramcalc.estimate(model, input_shape=(8,)).by_module(1)]
        [('0', 'Block', 72), ('1', 'Block', 72)]
        """
        from paramcalc.analysis.modules import module_rows

        return module_rows(self, depth)

    def row(self, name: str) -> LayerRow:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r}; layers: {[r.name for r in self.layers]}")

    def format_dim(self, value: Dim | None) -> str:
        """A dimension as shown to users: the unset batch axis reads ``None``, as in Keras."""
        if self.batch_size is None and isinstance(value, Sym) and value == symbol(self.batch_symbol):
            return "None"
        return format_dim(value)

    def format_shape(self, shape: tuple) -> str:
        inner = ", ".join(self.format_dim(d) for d in shape)
        return f"({inner},)" if len(shape) == 1 else f"({inner})"

    # -- substitution ----------------------------------------------------------------------------------
    def subs(self, values: Mapping[str, Dim] | None = None, /, **kwargs: Dim) -> "Estimate":
        """The same estimate with symbols replaced by values (``subs(n=20020)``; ``B`` = batch size).

        Assumptions are checked again: one that the values break raises a ShapeError naming its layer.
        """
        mapping = {**(values or {}), **kwargs}
        for key, value in mapping.items():
            mapping[key] = as_dim(value, f"subs({key}=...)")
        return _substitute(self, mapping)

    # -- output ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data: ints stay exact ints, symbolic values become strings, the unset batch is None."""
        return _to_dict(self)

    def to_json(self, **kwargs: Any) -> str:
        """JSON with exact integers (Python's json never rounds ints)."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self, **kwargs: Any) -> str:
        """The table a Keras ``summary()`` or torchinfo user expects, as text (``color=True`` for ANSI;
        ``depth=2`` for the module tree two levels down, ``depth=0`` for every layer call)."""
        from paramcalc.interfaces.render import render_text

        return render_text(self, **kwargs)

    def __repr__(self) -> str:
        return (f"<Estimate {self.name!r}: {len(self.layers)} layers, params={format_dim(self.params)}, "
                f"output={self.format_shape(self.output_shape)}>")


# -- estimate() ---------------------------------------------------------------------------------------------
def estimate(model: object, *, input_shape: object = None, batch_size: object = None,
             target_shape: object = None, optimizer: str | None = None, dtype: str | None = None,
             device: object = None, keras_backend: str | None = None, parallel: object = None,
             loss: str | None = None) -> Estimate:
    """Shapes, parameters and FLOPs of ``model``, without building it or allocating a weight.

    ``model``: a paramcalc :class:`Sequential`, a spec dict / JSON string, a Keras ``Sequential``
    (built or not) or its ``get_config()``, or a torch ``nn.Sequential`` (meta device welcome).
    ``input_shape``: one sample's shape, batch axis excluded; ints or symbol names (``("n", 1)``).
    Overrides the shape the model declares. ``batch_size``: an int or a symbol name; unset, per-batch
    figures are expressions in ``B`` and the batch axis shows as None. ``target_shape``: one sample's
    target (``()`` for a scalar per sample), checked against the output for loss broadcasting.

    Training cost (``est.training``, see :mod:`paramcalc.cost`) is added when ``optimizer``
    ("adam", "adamw", "sgd", "momentum", "rmsprop", "adagrad"), ``dtype`` ("float32", "tfloat32",
    "mixed_bfloat16", "mixed_float16", "bfloat16", "float16") or ``device`` (a built-in name such as
    "h100-sxm", "h100-sxm-torch" (measured), "cpu", a calibration JSON path, or a DeviceProfile) is
    given: memory by part and peak, FLOPs by phase, and with a device the step time. Memory follows the
    framework that trains: for a Keras model, ``keras_backend`` ("tensorflow", "jax" or "torch";
    unset, the backend of the Keras imported in this process, else TensorFlow) unless a calibrated
    ``device`` names its own. ``parallel`` (a :class:`~paramcalc.Parallel`: DDP, ZeRO stages 1-3 as
    torch runs them, gradient accumulation) makes the training cost one rank's: its memory by part
    and the collectives it runs; ``batch_size`` is then each rank's micro-batch. ``loss``
    ("cross_entropy" over the output's last axis, "mse"; unset: none counted) adds what torch's loss on
    the first output keeps and makes to the training memory (a language model's log-softmax over its
    vocabulary, for one).

    >>> import paramcalc
    >>> est = paramcalc.estimate(paramcalc.seed_model("flat"), input_shape=(20020,))
    >>> est.params
    6126801
    """
    with _collector_paused():
        return _estimate(model, input_shape, batch_size, target_shape, optimizer, dtype, device, keras_backend,
                         parallel, loss)


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while an estimate runs: an estimate makes many small objects
    and no cycles worth collecting midway, and each full pass walks every object the frameworks loaded (a
    third of the time of a captured torch model)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _estimate(model, input_shape, batch_size, target_shape, optimizer, dtype, device, keras_backend,
              parallel, loss) -> Estimate:
    from paramcalc.frontends import to_model

    graph = to_model(model)
    deferred = graph if isinstance(graph, DeferredGraph) else None
    if deferred is not None and isinstance(input_shape, dict):
        graph = deferred = deferred.named(input_shape)
    graph = graph if deferred is not None else graph.graph()
    notes = list(getattr(graph, "notes", ()))

    batch_symbol = DEFAULT_BATCH_SYMBOL
    batch: Dim | None = None
    if batch_size is not None:
        batch = as_dim(batch_size, "batch_size")
        if isinstance(batch, Sym):
            if len(batch.symbols) != 1 or batch != symbol(next(iter(batch.symbols))):
                raise SpecError(f"batch_size must be an int or one symbol name, received {batch_size!r}",
                                where="batch_size", value=batch_size)
            batch_symbol = next(iter(batch.symbols))

    sample_shapes = _resolve_inputs(graph, input_shape, batch_symbol, notes)
    if deferred is not None:  # a module read by running it: its graph needs the shapes first
        graph = deferred.build(sample_shapes)
        notes.extend(graph.notes)
    targets = None
    if target_shape is not None:
        targets = normalize_shape(target_shape, "target_shape", reserved=batch_symbol)

    assumptions: list = []
    batch_dim = symbol(batch_symbol)
    specs = {name: TensorSpec((batch_dim,) + shape, graph.dtype) for name, shape in sample_shapes}
    unset = batch_dim if batch is None else None
    try:
        calls, values = propagate(graph, specs, assumptions, unset_batch=unset)
    except ShapeError as error:
        raise _with_batch_axis_hint(error, graph, sample_shapes, batch_dim, batch, unset) from None
    outputs = tuple(lookup(values, ref).shape for ref in graph.outputs)

    concrete = batch if type(batch) is int else None
    result = _aggregate(graph, calls, sample_shapes, outputs, batch_symbol, targets, assumptions, notes, concrete)
    result = replace(result, output_names=tuple(name if index == 0 else f"{name}:{index}"
                                                for name, index in graph.outputs))
    if concrete is not None:
        result = _substitute(result, {batch_symbol: batch}, diagnosed=False, rows_at_it=True)
    elif batch is not None:
        result = replace(result, batch_size=batch)
    if optimizer is not None or dtype is not None or device is not None or parallel is not None or loss is not None:
        if device is not None:  # read a profile once: the cost, its notes and later subs() share it
            from paramcalc.cost.devices import resolve

            device = resolve(device)
        from paramcalc.cost.training import TrainingSetup

        setup = TrainingSetup(optimizer, dtype or "float32", device, keras_backend,  # no optimizer: Adam, noted
                              parallel, loss)
        cost = _training(result, setup)
        result = _with_training_notes(replace(result, training_setup=setup, training=cost))
    return _with_diagnostics(result)  # once, from the finished estimate (they read its batch and training)


def _with_batch_axis_hint(error: ShapeError, graph, sample_shapes: tuple, batch_dim, batch, unset) -> ShapeError:
    """The error, with a hint when the input shapes look like they carry the batch axis (torchinfo's
    ``input_size`` does; ``input_shape`` is one sample's): the same model propagates without it."""
    if not all(len(shape) >= 2 for _, shape in sample_shapes):
        return error
    trimmed = {name: TensorSpec((batch_dim,) + shape[1:], graph.dtype) for name, shape in sample_shapes}
    try:
        propagate(graph, trimmed, [], unset_batch=unset)
    except ParamcalcError:
        return error  # not the batch axis: the model fails without it too
    leading = sample_shapes[0][1][0]
    shapes = " and ".join(format_shape(shape[1:]) for _, shape in sample_shapes)
    batch_text = "" if batch is not None else f", batch_size={format_dim(leading)}"
    return ShapeError(
        f"{error.message}. The input shape {format_shape(sample_shapes[0][1])} looks like it includes the batch "
        f"axis ({format_dim(leading)}): input_shape is one sample's shape, as in Keras' Input(shape=...) "
        "(torchinfo's input_size includes the batch; paramcalc's does not)",
        layer=error.layer, value=error.value, where=error.where,
        fix=f"pass input_shape={shapes}{batch_text}")


def _with_training_notes(est: Estimate) -> Estimate:
    """The estimate with the notes about its training cost (what it waits for, what it could not
    measure) in place of earlier ones: a substitution may have settled them."""
    notes = tuple(n for n in est.notes if n not in est.training_notes)
    setup = est.training_setup
    device, precision = setup.device, setup.precision
    if est.training is None:
        pending = sorted(est.symbols - {est.batch_symbol})
        added = (f"training cost needs concrete sizes: call subs({pending[0]}=...) to see it",)
    elif device is not None and est.training.step_seconds is None:
        added = (f"step time needs a concrete batch size: pass batch_size=... or call "
                 f"subs({est.batch_symbol}=...)",)
    elif device is not None:
        from paramcalc.core.machine import this_machine
        from paramcalc.cost.devices import machine_notes

        added = _uncalibrated_dtype_notes(device, precision) + machine_notes(device, this_machine())
    else:
        added = ()
    added = _undescribed_kinds(est) + _eval_mode_notes(est) + added + _parallel_notes(est.training, device)
    if setup.optimizer is None:
        added = (f"no optimizer given: training memory and time assume {setup.optimizer_name.capitalize()} "
                 "(pass optimizer=..., or --optimizer)",) + added
    return replace(est, notes=notes + added, training_notes=added)


def _eval_mode_notes(est: Estimate) -> tuple:
    """A note where a torch forward was read in eval mode: training runs ``model.train()``'s forward, in
    which code that checks ``self.training`` (functional dropout on attention probabilities, stochastic
    depth) keeps what it keeps there (a BERT's saved activations are 16% more)."""
    if est.forward_mode != "eval":
        return ()
    return ("the model is in eval mode, and its forward was read as eval runs it: code that checks "
            "self.training (functional dropout, stochastic depth) ran as in evaluation, and training memory and "
            "time count what that forward keeps; call model.train() before estimate() for the forward a training "
            "step runs",)


def _parallel_notes(cost, device) -> tuple:
    """What an estimate on several ranks could not time, or timed from datasheet figures."""
    if cost is None or cost.parallel is None or not cost.collectives or device is None:
        return ()
    if cost.communication_seconds is None:
        return (f"communication is not timed: the profile {device.name!r} does not know its interconnect "
                "(link_bandwidth, network_bandwidth); the step time is one rank's compute",)
    return (f"communication timed on datasheet interconnect figures ({cost.communication_link}), not calibrated",)


def _undescribed_kinds(est: Estimate) -> tuple:
    """A note for each kind registered outside paramcalc that states neither its work nor what it keeps:
    the cost model then prices it as a memory pass and keeps nothing for it, which it should say."""
    from paramcalc.core.layer import Layer

    found: dict = {}
    for row in est.layers:
        cls = type(row.layer)
        if (cls.work is Layer.work and cls.saved is Layer.saved
                and not cls.__module__.startswith("paramcalc.layers.")):
            found.setdefault(row.kind, []).append(row.name)
    return tuple(f"kind '{kind}' ({', '.join(repr(n) for n in names[:3])}) does not describe its work: its training "
                 "cost is a memory pass over its tensors, keeping nothing for the backward; give its class work() "
                 "and saved() (docs/design.md, 'Adding a kind')" for kind, names in found.items())


def _uncalibrated_dtype_notes(device, precision: str) -> tuple:
    """A note where a calibrated profile measured no matrix products of the precision's dtype: its
    products are then priced from a datasheet curve, not from this machine."""
    from paramcalc.cost.step import precision_named

    profile, dtype = device, precision_named(precision).product_dtype  # resolved by estimate()
    if profile.source == "datasheet" or dtype in profile.matmul or not profile.matmul:
        return ()
    measured = ",".join(sorted(profile.matmul))
    peak = dtype if dtype in profile.peak_flops else "float32"
    return (f"the {profile.name} profile measured {measured} matrix products, not {dtype}: their time is a curve "
            f"to its {peak} peak, not a measurement (for torch, paramcalc calibrate --dtypes {measured},{dtype})",)


def _training(est: Estimate, setup):
    """The training cost for ``setup``; None while sizes other than the batch are still symbolic."""
    from paramcalc.cost.training import training_cost

    if est.symbols - {est.batch_symbol}:
        return None
    return training_cost(est, optimizer=setup.optimizer_name, precision=setup.precision, device=setup.device,
                         keras_backend=setup.keras_backend, parallel=setup.parallel, loss=setup.loss)


def _resolve_inputs(graph, input_shape: object, batch_symbol: str, notes: list) -> tuple:
    """(name, per-sample shape) for each model input, from ``input_shape`` or the declared shapes.

    ``input_shape`` is one shape for a one-input model; for several inputs, a list of shapes in input
    order or a dict by input name.
    """
    names = [name for name, _ in graph.inputs]
    if input_shape is None:
        given: dict = {}
    elif isinstance(input_shape, dict):
        unknown = set(input_shape) - set(names)
        if unknown:
            raise SpecError(f"input_shape names no input {sorted(unknown)[0]!r}; the model's inputs: "
                            f"{', '.join(names)}", where="input_shape", value=sorted(unknown)[0])
        given = dict(input_shape)
    elif len(names) > 1:
        shapes = list(input_shape) if isinstance(input_shape, (list, tuple)) else []
        if len(shapes) != len(names) or not all(isinstance(s, (list, tuple)) for s in shapes):
            example = {name: format_shape(declared) if declared is not None else "(...)"
                       for name, declared in graph.inputs}
            raise SpecError(
                f"model '{graph.name}' has {len(names)} inputs ({', '.join(names)}), received input_shape="
                f"{input_shape!r}", where="input_shape", value=input_shape,
                fix="pass input_shape as a list of shapes in that order or a dict by name ("
                    + ", ".join(f"{name!r}: {shape}" for name, shape in example.items())
                    + "); on the command line, --input once per input: "
                    + " ".join(f"--input {name}={shape.strip('()').replace(' ', '').rstrip(',')}"
                               for name, shape in example.items()))
        given = dict(zip(names, shapes))
    else:
        given = {names[0]: input_shape}
    resolved = []
    for i, (name, declared) in enumerate(graph.inputs):
        where = "input_shape" if len(names) == 1 else f"input_shape[{name!r}]"
        if name not in given and declared is None:
            raise SpecError(
                f"model '{graph.name}' declares no input shape" + (f" for input '{name}'" if len(names) > 1 else ""),
                where=where, fix="pass input_shape=(...) for one sample, e.g. input_shape=(20020,)",
            )
        shape = normalize_shape(given.get(name, declared), where, reserved=batch_symbol)
        if name in given and declared is not None:
            declared_shape = normalize_shape(declared, "model input")
            if declared_shape != shape:
                notes.append(f"{where} {format_shape(shape)} replaces the model's declared input "
                             f"{format_shape(declared_shape)}")
        resolved.append((name, shape))
    return tuple(resolved)


def _aggregate(graph, nodes: list[Node], inputs: tuple, outputs: tuple, batch_symbol: str, targets,
               assumptions, notes, batch: int | None = None) -> Estimate:
    """The estimate's rows and totals from the propagated ``nodes``; ``batch``: the rows' shapes and
    FLOPs are made at that batch size (the totals stay in the batch symbol, for ``_substitute``)."""
    per_sample = {batch_symbol: 1}
    per_row: dict = {}  # a repeated block's rows share their FLOP counts
    at = _At({batch_symbol: batch}) if batch is not None else None
    per_inferred: dict = {}  # id(Inferred) -> its row values (kept alive by ``nodes``)
    rows = []
    sums: dict = {name: [] for name in ("params", "trainable", "non_trainable", "buffers", "macs_b", "flops_b")}
    module_of = {n.name: n.module for n in getattr(graph, "nodes", ()) if getattr(n, "module", None) is not None}
    for node in nodes:
        if getattr(node.layer, "is_value", False):
            continue  # sizes and size arithmetic: no weights, no tensor work, no row
        trainable = non_trainable = buffers = 0
        if node.shared_with is None:
            for position, weight in enumerate(node.inferred.weights):
                if position in node.layer.tied:
                    continue  # tied to a weight another layer owns and counts
                if weight.buffer:
                    buffers = buffers + weight.numel
                elif node.layer.trains(weight):
                    trainable = trainable + weight.numel
                else:
                    non_trainable = non_trainable + weight.numel
        inferred = node.inferred
        input_shapes = tuple([spec.shape for spec in node.inputs if isinstance(spec, TensorSpec)])
        # what follows from the inference alone, shared by the rows of a repeated block's calls
        found = per_inferred.get(id(inferred))
        if found is None:
            output_shapes = tuple([o.shape for o in inferred.outputs])
            macs, flops, weights = inferred.macs, inferred.flops, inferred.weights
            if at is not None:
                output_shapes, macs, flops = tuple(map(at, output_shapes)), at(macs), at(flops)
                weights = at.weights(weights)
            found = per_inferred[id(inferred)] = (output_shapes, macs, flops, weights,
                                                  _subs(inferred.macs, per_sample, per_row),
                                                  _subs(inferred.flops, per_sample, per_row))
        output_shapes, macs, flops, weights, sample_macs, sample_flops = found
        if at is not None:
            input_shapes = tuple(map(at, input_shapes))
            if not all(type(count) is int for count in (trainable, non_trainable, buffers)):
                trainable, non_trainable, buffers = at(trainable), at(non_trainable), at(buffers)
        row = made(LayerRow, dict(
            name=node.name, type=node.layer.display_type, kind=node.layer.kind,
            input_shapes=input_shapes, output_shape=output_shapes[0],
            params=trainable + non_trainable, trainable_params=trainable,
            non_trainable_params=non_trainable, buffers=buffers,
            macs=sample_macs, flops=sample_flops, macs_per_batch=macs, flops_per_batch=flops,
            weights=weights, shared_with=node.shared_with, layer=node.layer,
            output_shapes=output_shapes,
            inbound=tuple(ref for ref, spec in zip(node.inbound, node.inputs) if isinstance(spec, TensorSpec)),
            module=module_of.get(node.name),
        ))
        rows.append(row)
        sums["params"].append(row.params)
        sums["trainable"].append(trainable)
        sums["non_trainable"].append(non_trainable)
        sums["buffers"].append(buffers)
        sums["macs_b"].append(inferred.macs)
        sums["flops_b"].append(inferred.flops)
    totals = {name: total(values) for name, values in sums.items()}
    est = Estimate(
        name=graph.name, framework=graph.framework, dtype=graph.dtype, input_shape=inputs[0][1],
        inputs=inputs, output_shapes=outputs, input_dtypes=dict(getattr(graph, "input_dtypes", {})),
        batch_size=None, batch_symbol=batch_symbol, layers=tuple(rows),
        params=totals["params"], trainable_params=totals["trainable"],
        non_trainable_params=totals["non_trainable"], buffers=totals["buffers"],
        macs=_subs(totals["macs_b"], per_sample), flops=_subs(totals["flops_b"], per_sample),
        macs_per_batch=totals["macs_b"], flops_per_batch=totals["flops_b"],
        output_shape=outputs[0],
        target_shape=targets, assumptions=tuple(assumptions), notes=tuple(notes),
        modules=getattr(graph, "modules", ()), summary_depth=getattr(graph, "summary_depth", None),
        forward_mode=getattr(graph, "forward_mode", None),
    )
    return est


class _At:
    """Values with ``mapping`` substituted, each worked out once: the rows of a repeated block share
    their shape and FLOP objects (the propagation's memo), so those are remembered by identity."""

    def __init__(self, mapping: Mapping[str, Dim]) -> None:
        self.mapping = mapping
        self.by_id: dict = {}
        self.done: dict = {}
        self.kept: list = []  # the values remembered by id: an id stays theirs while they live

    def __call__(self, value: Any) -> Any:
        if type(value) is int:
            return value
        found = self.by_id.get(id(value))
        if found is None:
            found = self.by_id[id(value)] = _subs(value, self.mapping, self.done)
            self.kept.append(value)
        return found

    def weights(self, weights: tuple) -> tuple:
        return tuple(w if all(type(d) is int for d in w.shape) else replace(w, shape=self(w.shape)) for w in weights)


def _with_diagnostics(est: Estimate) -> Estimate:
    from paramcalc.analysis.diagnostics import diagnose

    return replace(est, diagnostics=tuple(diagnose(est)))


# -- substitution -------------------------------------------------------------------------------------------
def _subs(value: Any, mapping: Mapping[str, Dim], done: dict | None = None) -> Any:
    """``value`` (a Dim or nested tuples of them) with ``mapping`` substituted; ``done`` remembers
    expressions already substituted (a repeated block's rows share theirs)."""
    kind = type(value)
    if kind is int:
        return value
    if kind is Sym:
        if done is None:
            return value.subs(mapping)
        found = done.get(value)
        if found is None:
            found = done[value] = value.subs(mapping)
        return found
    if kind is tuple:
        if done is None:
            return tuple([_subs(v, mapping, done) for v in value])
        try:
            found = done.get(value)  # rows repeat their shapes
        except TypeError:  # something unhashable inside: nothing to remember it by
            return tuple([_subs(v, mapping, done) for v in value])
        if found is None:
            found = done[value] = tuple([_subs(v, mapping, done) for v in value])
        return found
    return value


_ROW_VALUES = tuple(f.name for f in fields(LayerRow)
                    if f.name not in ("name", "type", "kind", "weights", "shared_with", "layer", "inbound", "module"))


def _subs_row(row: LayerRow, mapping: Mapping[str, Dim], done: dict | None = None) -> LayerRow:
    values = row.__dict__
    # the row's copy, made without its __init__: its values were checked when it was made, and a model
    # read by running it has thousands of rows
    copied = object.__new__(LayerRow)
    copied.__dict__.update(values)
    copied.__dict__.update({name: _subs(values[name], mapping, done) for name in _ROW_VALUES})
    copied.__dict__["weights"] = tuple(replace(w, shape=_subs(w.shape, mapping, done)) for w in row.weights)
    return copied


def _substitute(est: Estimate, mapping: Mapping[str, Dim], diagnosed: bool = True,
                rows_at_it: bool = False) -> Estimate:
    """``est`` with ``mapping`` substituted; ``diagnosed``: its diagnostics made anew (``estimate()`` makes
    them once, at its end); ``rows_at_it``: its rows were made with ``mapping`` substituted already."""
    kept = []
    for assumption in est.assumptions:
        checked = Assumption(assumption.layer, assumption.relation,
                             _subs(assumption.left, mapping), _subs(assumption.right, mapping))
        verdict = checked.holds()
        if verdict is False:
            values = ", ".join(f"{k}={v}" for k, v in mapping.items())
            raise ShapeError(f"with {values}, the model's assumption {assumption} fails: {checked} is false",
                             layer=assumption.layer)
        if verdict is None:
            kept.append(checked)
    batch = est.batch_size
    if batch is None and est.batch_symbol in mapping:
        batch = mapping[est.batch_symbol]
    elif batch is not None:
        batch = _subs(batch, mapping)
    scalar = ("params", "trainable_params", "non_trainable_params", "buffers", "macs", "flops",
              "macs_per_batch", "flops_per_batch", "input_shape", "output_shape", "target_shape",
              "output_shapes")
    done: dict = {}
    layers = est.layers if rows_at_it else tuple(_subs_row(r, mapping, done) for r in est.layers)
    est = replace(est, batch_size=batch, layers=layers,
                  training=None,
                  inputs=tuple((name, _subs(shape, mapping)) for name, shape in est.inputs),
                  assumptions=tuple(kept), **{name: _subs(getattr(est, name), mapping) for name in scalar})
    if est.training_setup is not None:
        est = _with_training_notes(replace(est, training=_training(est, est.training_setup)))
    return _with_diagnostics(est) if diagnosed else est


# -- plain data ---------------------------------------------------------------------------------------------
def _to_dict(est: Estimate) -> dict:
    def dim(value: Any) -> Any:
        if value is None or type(value) is int:
            return value
        if est.batch_size is None and value == symbol(est.batch_symbol):
            return None
        return str(value)

    def shape(values: tuple | None) -> list | None:
        return None if values is None else [dim(v) for v in values]

    return {
        "name": est.name,
        "framework": est.framework,
        "dtype": est.dtype,
        "input_shape": shape(est.input_shape),
        "inputs": {name: shape(s) for name, s in est.inputs},
        "batch_size": dim(est.batch_size) if est.batch_size is not None else None,
        "batch_symbol": est.batch_symbol,
        "output_shape": shape(est.output_shape),
        "output_shapes": [shape(s) for s in est.output_shapes],
        "outputs": {name: shape(s) for name, s in zip(est.output_names, est.output_shapes)},
        "target_shape": shape(est.target_shape),
        "flop_convention": FLOP_CONVENTION,
        "totals": {
            "params": dim(est.params),
            "trainable_params": dim(est.trainable_params),
            "non_trainable_params": dim(est.non_trainable_params),
            "buffers": dim(est.buffers),
            "param_bytes": dim(est.param_bytes),
            "flops_per_sample": dim(est.flops),
            "macs_per_sample": dim(est.macs),
            "flops_per_batch": dim(est.flops_per_batch),
            "macs_per_batch": dim(est.macs_per_batch),
        },
        "layers": [
            {
                "name": row.name, "type": row.type, "kind": row.kind,
                "input_shapes": [shape(s) for s in row.input_shapes],
                "output_shape": shape(row.output_shape),
                "params": dim(row.params), "trainable_params": dim(row.trainable_params),
                "non_trainable_params": dim(row.non_trainable_params), "buffers": dim(row.buffers),
                "flops_per_sample": dim(row.flops), "macs_per_sample": dim(row.macs),
                "weights": [{"name": w.name, "shape": shape(w.shape), "trainable": w.trainable,
                             "buffer": w.buffer} for w in row.weights],
                "shared_with": row.shared_with,
                "connected_to": [name if index == 0 else f"{name}:{index}" for name, index in row.inbound],
                "module": row.module,
            }
            for row in est.layers
        ],
        "diagnostics": [d.to_dict() for d in est.diagnostics],
        "assumptions": [{"layer": a.layer, "statement": str(a)} for a in est.assumptions],
        "notes": list(est.notes),
        "training": est.training.to_dict() if est.training is not None else None,
    }
