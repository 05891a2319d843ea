"""Tensor parallelism, as torch's ``parallelize_module`` runs it: one rank's share of the model.

``Parallel(tensor=t, tensor_plan={"mlp.fc": "colwise", "mlp.proj": "rowwise"})`` mirrors a plan of
``ColwiseParallel`` and ``RowwiseParallel``. A colwise layer keeps 1/t of its outputs (its kernel's output
columns, its bias) and makes 1/t of its output's last axis; a rowwise layer reads such a tensor with 1/t
of its kernel's input rows and its whole bias, and the ranks' partial outputs are summed by an all-reduce
in the forward. In the backward, the gradient of a colwise layer's input is all-reduced (where an earlier
layer needs it).

Between them, every call works on the rank's part: each kind says where a split of its inputs lands in
its outputs (``Layer.split_share``), so the split follows the tensor through reshapes and transposes (a
projection's width split into heads splits the heads), per-element work, matrix products and attention
over the heads; a call that would reduce over the split axis or mix it with a whole tensor is refused by
name, as torch's DTensor would need a collective there.

``Parallel(sequence=True)`` adds sequence parallelism (torch's ``SequenceParallel`` and ``Shard(1)``
layouts): the model's inputs and every rowwise layer's output are split along the sequence (the axis after
the batch), so norms, dropout and residual additions work on 1/t of the tokens; a rowwise layer's output
is reduce-scattered instead of all-reduced, and a colwise layer's input is all-gathered (once per tensor,
as a ``PrepareModuleInput`` on the block does), which the layer keeps whole for its weight gradient as
torch's autograd does (the paper by Korthikanti et al. keeps the split one and gathers it again).

The rank's share is an estimate of its own (rows with its shapes, weights and FLOPs), so every part of
the cost model (memory, FLOPs, time, data parallelism over the tensor-parallel groups) prices it
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from paramcalc.core.dims import Dim, exact_div, prod
from paramcalc.core.errors import ParamcalcError
from paramcalc.core.splits import TensorSplit

STYLES = ("colwise", "rowwise")
SEQUENCE_AXIS = 1  # the axis after the batch: torch's Shard(1) for (batch, sequence, features)


@dataclass(frozen=True)
class Exchange:
    """One tensor-parallel collective of a micro-batch on one rank: ``elements`` of the whole tensor it
    moves, the call it serves, and whether it runs only where that call makes an input gradient."""

    name: str  # "all_reduce", "all_gather" or "reduce_scatter"
    call: str
    elements: Dim
    backward: bool
    for_input_gradient: bool = False
    held: Dim = 0  # elements of its buffers alive while the call runs, beyond the call's own tensors


def rank_share(est, parallel) -> tuple:
    """(the estimate of one tensor-parallel rank, its collectives as Exchanges); ``est`` itself and none
    without tensor parallelism."""
    t, plan = parallel.tensor, parallel.tensor_plan
    if t == 1:
        return est, ()
    rows = {row.module or row.name: row for row in est.layers}
    missing = [path for path in plan if path not in rows]
    if missing:
        raise ParamcalcError(f"tensor_plan names '{missing[0]}', which is no layer of model '{est.name}'",
                             value=missing[0], fix="name layers as the estimate's rows do (row.module, else "
                                                   f"row.name): {', '.join(list(rows)[:6])}, ...")
    walk = _Walk(est, t, parallel.sequence, plan, auto=False)
    totals = dict(params=0, trainable=0, non_trainable=0, flops=0, macs=0)
    for row in walk.rows:
        totals["params"] += row.params
        totals["trainable"] += row.trainable_params
        totals["non_trainable"] += row.non_trainable_params
        totals["flops"] += row.flops_per_batch
        totals["macs"] += row.macs_per_batch
    shared = replace(est, layers=tuple(walk.rows), inputs=walk.inputs, params=totals["params"],
                     trainable_params=totals["trainable"], non_trainable_params=totals["non_trainable"],
                     flops_per_batch=totals["flops"], macs_per_batch=totals["macs"])
    return shared, tuple(walk.exchanges)


def megatron_plan(est, t: int, sequence: bool = False) -> dict:
    """A tensor plan found in the model, as Megatron splits a transformer: the Linear layers that read the
    same tensor (an attention's query, key and value; an MLP's gate and up projections) split colwise
    together, and each Linear that reads their split output rowwise. A group whose split cannot reach a
    rowwise layer (it would be reduced over, meet a whole tensor, or leave the model: a causal LM's head)
    stays whole. {} where nothing splits."""
    if est.batch_size is None:  # any batch finds the same plan; a reshape merging a symbolic one cannot
        est = est.subs({est.batch_symbol: 2})
    groups: dict = {}
    for row in est.layers:
        if row.layer is not None and row.weights and row.inbound and \
                row.layer.split_weights(row.weights, "colwise", t) is not None:
            groups.setdefault(row.inbound[0], []).append(row.module or row.name)
    whole: set = set()  # groups left whole
    for _ in range(len(groups) + 1):
        plan = {path: "colwise" for source, paths in groups.items() if source not in whole for path in paths}
        try:
            return _Walk(est, t, sequence, plan, auto=True, origins={
                path: source for source, paths in groups.items() for path in paths}).styles
        except _Blocked as blocked:
            if not blocked.origins or blocked.origins <= whole:
                raise blocked.error from None
            whole |= blocked.origins
    return {}


class _Blocked(Exception):
    """A split that cannot go on: ``origins``, the colwise groups whose split reached the call."""

    def __init__(self, origins: set, error: ParamcalcError):
        super().__init__(str(error))
        self.origins, self.error = origins, error


class _Walk:
    """The rows of one rank, in order: each call's share given where its inputs are split. ``auto``: a
    Linear reading a tensor split along its features is rowwise (a plan being found), and a call the split
    cannot go through raises _Blocked naming the colwise groups (``origins``: path -> group) behind it."""

    def __init__(self, est, t: int, sequence: bool, plan: dict, auto: bool, origins: dict | None = None):
        self.rows: list = []
        self.exchanges: list = []
        self.styles: dict = {}  # path -> the style applied
        split: dict = {}  # graph reference -> its TensorSplit among the ranks
        origin: dict = {}  # graph reference -> the colwise group whose split it carries
        self.inputs = est.inputs
        if sequence:  # each rank is handed its part of the sequence (SequenceParallel's Shard(1))
            self.inputs = tuple((name, _split_at(shape, SEQUENCE_AXIS - 1, t, name)) for name, shape in est.inputs)
            split.update({(name, 0): TensorSplit(SEQUENCE_AXIS, shape[SEQUENCE_AXIS - 1], sequence=True)
                          for name, shape in self.inputs})
        gathered: set = set()
        for row in est.layers:
            path = row.module or row.name
            style = plan.get(path)
            axes = tuple(split.get(ref) for ref in row.inbound)
            if auto and axes and axes[0] is not None and not axes[0].sequence and \
                    axes[0].axis == len(row.input_shapes[0]) - 1 and \
                    row.layer is not None and row.weights and \
                    row.layer.split_weights(row.weights, "rowwise", t) is not None:
                style = "rowwise"  # the partner of the colwise layer that split its input
            came_from = next((origin[ref] for ref in row.inbound if ref in origin), None)
            try:
                row, made = self._call(row, style, axes, t, sequence, gathered, split)
            except ParamcalcError as err:
                if not auto:
                    raise
                raise _Blocked({origin[ref] for ref in row.inbound if ref in origin}, err) from None
            if style is not None:
                self.styles[path] = style
            for i, axis in enumerate(made):
                if axis is not None:
                    split[(row.name, i)] = axis
                    # a colwise output carries its group's split; a rowwise one the sequence's (no group's)
                    source = (origins or {}).get(path) if style == "colwise" else (
                        None if style == "rowwise" else came_from)
                    if source is not None:
                        origin[(row.name, i)] = source
            self.rows.append(row)
        leaked = [name for name in est.output_names
                  if (name.split(":")[0], 0) in split and not split[(name.split(":")[0], 0)].sequence]
        if leaked:
            error = ParamcalcError(f"the model's output '{leaked[0]}' is split by tensor parallelism",
                                   layer=leaked[0], fix="end the split with a rowwise layer")
            if not auto:
                raise error
            raise _Blocked({origin[(name.split(":")[0], 0)] for name in leaked
                            if (name.split(":")[0], 0) in origin}, error)

    def _call(self, row, style, axes: tuple, t: int, sequence: bool, gathered: set, split: dict) -> tuple:
        """The row as the rank runs it and the TensorSplit of each of its outputs."""
        if style == "colwise":
            row = _colwise(row, axes, t, sequence, self.exchanges, gathered)
            return row, (TensorSplit(len(row.output_shape) - 1, row.output_shape[-1]),)
        if style == "rowwise":
            if not axes or axes[0] is None or axes[0].sequence or axes[0].axis != len(row.input_shapes[0]) - 1 or \
                    any(a is not None for a in axes[1:]):
                raise ParamcalcError(f"rowwise layer '{row.name}' reads a whole tensor: its input must come from "
                                     "a colwise layer", layer=row.name,
                                     fix="make the layer that feeds it colwise, as Megatron pairs them")
            row = _share(row, style, t, split_input=True)
            whole = prod(row.output_shape)
            if sequence:  # the partial sums reduce-scattered along the sequence
                row = _localized(row, (), (SEQUENCE_AXIS,), t, work=False)
                # DTensor moves the sequence axis first for its collectives: the forward holds the partial
                # sums whole and a copy of them so arranged while it scatters them; the backward gathers the
                # output's gradient whole and copies it back into the sequence axis, both alive through
                # the layer's backward
                self.exchanges += [Exchange("reduce_scatter", row.name, whole, False, held=2 * whole),
                                   Exchange("all_gather", row.name, whole, True, held=2 * whole)]
                return row, (TensorSplit(SEQUENCE_AXIS, row.output_shape[SEQUENCE_AXIS], sequence=True),)
            # a functional all-reduce is out of place: the partial sums and their sum both exist
            self.exchanges.append(Exchange("all_reduce", row.name, whole, False, held=whole))
            return row, ()
        return _follow(row, axes, t, split)


def _colwise(row, axes: tuple, t: int, sequence: bool, exchanges: list, gathered: set):
    """A colwise layer's share; a sequence-split input is all-gathered first (once per tensor)."""
    if any(a is not None for a in axes[1:]) or (axes and axes[0] is not None and not (
            sequence and axes[0].sequence)):
        raise ParamcalcError(f"colwise layer '{row.name}' reads a tensor already split by tensor "
                             "parallelism", layer=row.name, fix="make the layer before it rowwise")
    if axes and axes[0] is not None:
        source = row.inbound[0]
        if source not in gathered:
            gathered.add(source)
            whole = prod(row.input_shapes[0])
            # the input gradient's partial sums, whole, are copied with the sequence axis first to be scattered
            exchanges += [Exchange("all_gather", row.name, whole, False),
                          Exchange("reduce_scatter", row.name, whole, True, for_input_gradient=True, held=whole)]
    else:  # out of place: the input gradient's partial sums and their sum
        whole = prod(row.input_shapes[0])
        exchanges.append(Exchange("all_reduce", row.name, whole, True, for_input_gradient=True, held=whole))
    return _share(row, "colwise", t, split_input=False)


def _follow(row, axes: tuple, t: int, split: dict):
    """A call outside the plan, on the rank's parts of what it reads."""
    shared = row.layer.split_share(row, axes, t, split.get) if row.layer is not None else (
        ((None,) * len(row.output_shapes), None) if all(a is None for a in axes) else None)
    if shared is None:
        if row.weights and any(a is not None for a in axes):
            raise ParamcalcError(f"'{row.name}' has weights and reads a tensor split by tensor parallelism",
                                 layer=row.name, fix=f'name it in tensor_plan ("{row.module or row.name}": '
                                                     '"rowwise"), or end the split before it')
        split_inputs = [f"input {i} on axis {a.axis}" for i, a in enumerate(axes) if a is not None]
        raise ParamcalcError(f"'{row.name}' ({row.type}) cannot compute on the parts of a tensor split by tensor "
                             f"parallelism ({', '.join(split_inputs)}): it reduces over that axis or mixes it with "
                             "a whole tensor", layer=row.name, value=axes,
                             fix="end the split with a rowwise layer before it, or split by another axis "
                                 "(attention by heads)")
    out_axes, layer = shared
    if all(a is None for a in (*axes, *out_axes)):
        return (row if layer is row.layer else replace(row, layer=layer)), out_axes
    return replace(_localized(row, [a and a.axis for a in axes], [a and a.axis for a in out_axes], t),
                   layer=layer), out_axes


def _split_at(shape: tuple, axis: int, t: int, name: str) -> tuple:
    part = exact_div(shape[axis], t) if axis < len(shape) else None
    if part is None or type(part) is not int:
        size = shape[axis] if axis < len(shape) else "none"
        raise ParamcalcError(f"'{name}': its axis {axis} ({size}) does not split into {t} equal parts",
                             layer=name, value=size, fix=f"use a tensor-parallel degree that divides {size}")
    return tuple(shape[:axis]) + (part,) + tuple(shape[axis + 1:])


def _localized(row, in_axes: tuple, out_axes: tuple, t: int, work: bool = True):
    """``row`` with the split axes of its inputs and outputs holding 1/t, and (``work``) its work on the
    rank's part."""
    inputs = tuple(s if a is None else _split_at(s, a, t, row.name)
                   for s, a in zip(row.input_shapes, tuple(in_axes) + (None,) * len(row.input_shapes)))
    outputs = tuple(s if a is None else _split_at(s, a, t, row.name)
                    for s, a in zip(row.output_shapes, tuple(out_axes) + (None,) * len(row.output_shapes)))
    row = replace(row, input_shapes=inputs, output_shape=outputs[0], output_shapes=outputs)
    if not work:
        return row
    return replace(row, flops_per_batch=row.flops_per_batch // t, macs_per_batch=row.macs_per_batch // t,
                   flops=row.flops // t, macs=row.macs // t)


def _share(row, style: str, t: int, split_input: bool):
    shared = row.layer.split_weights(row.weights, style, t) if row.layer is not None else None
    if shared is None:
        raise ParamcalcError(f"'{row.name}' ({row.type}) cannot be split {style}: paramcalc splits Linear layers",
                             layer=row.name, value=row.type, fix="name Linear layers in tensor_plan")
    weights, stored = shared
    for before, after in zip(row.weights, weights):
        if prod(after.shape) * t != prod(before.shape) and after.shape != before.shape:
            raise ParamcalcError(f"'{row.name}': weight {before.name} {before.shape} does not split into {t} equal "
                                 "parts", layer=row.name, fix="use a tensor-parallel degree that divides it")
    layer = replace(row.layer, stored_shapes=stored)
    trainable = sum((prod(w.shape) for w in weights if layer.trains(w)), 0)
    total = sum((prod(w.shape) for w in weights if not w.buffer), 0)
    bias_adds = prod(row.output_shape) if style == "rowwise" and any(w.name == "bias" for w in weights) else 0
    whole = row
    row = _localized(row, tuple(len(shape) - 1 for shape in row.input_shapes) if split_input else (),
                     tuple(len(shape) - 1 for shape in row.output_shapes) if style == "colwise" else (), t)
    if not (type(bias_adds) is int and bias_adds == 0):  # every rank adds the whole bias (to its partial sum): that work is not split
        per_sample = prod(whole.output_shape[1:])
        row = replace(row, flops_per_batch=(whole.flops_per_batch - bias_adds) // t + bias_adds,
                      flops=(whole.flops - per_sample) // t + per_sample)
    return replace(row, layer=layer, weights=weights, params=total, trainable_params=trainable,
                   non_trainable_params=total - trainable)
