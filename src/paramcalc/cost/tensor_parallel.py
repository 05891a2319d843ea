"""Tensor parallelism, as torch's ``parallelize_module`` runs it: one rank's share of the model.

``Parallel(tensor=t, tensor_plan={"mlp.fc": "colwise", "mlp.proj": "rowwise"})`` mirrors a plan of
``ColwiseParallel`` and ``RowwiseParallel``. A colwise layer keeps 1/t of its outputs (its kernel's output
columns, its bias) and makes 1/t of its output; the calls that read only such split tensors (an
activation between the two Linears of an MLP) work on their 1/t; a rowwise layer reads the split tensor
with 1/t of its kernel's input rows and its whole bias, and the ranks' partial outputs are summed by an
all-reduce in the forward. In the backward, the gradient of a colwise layer's input is all-reduced (where
an earlier layer needs it).

The rank's share is an estimate of its own (rows with its shapes, weights and FLOPs), so every part of
the cost model (memory, FLOPs, time, data parallelism over the tensor-parallel groups) prices it
unchanged. Sequence parallelism and attention blocks split by heads are not modelled yet.
"""

from __future__ import annotations

from dataclasses import replace

from paramcalc.core.dims import exact_div, prod
from paramcalc.core.errors import ParamcalcError

STYLES = ("colwise", "rowwise")


def rank_share(est, parallel):
    """The estimate of one tensor-parallel rank (``est`` itself without tensor parallelism)."""
    t, plan = parallel.tensor, parallel.tensor_plan
    if t == 1:
        return est
    rows = {row.module or row.name: row for row in est.layers}
    missing = [path for path in plan if path not in rows]
    if missing:
        raise ParamcalcError(f"tensor_plan names '{missing[0]}', which is no layer of model '{est.name}'",
                             value=missing[0], fix="name layers as the estimate's rows do (row.module, else "
                                                   f"row.name): {', '.join(list(rows)[:6])}, ...")
    split: set = set()  # calls whose output holds 1/t of its last axis
    out = []
    for row in est.layers:
        style = plan.get(row.module or row.name)
        reads_split = [ref[0] in split for ref in row.inbound]
        if style == "colwise":
            if any(reads_split):
                raise ParamcalcError(f"colwise layer '{row.name}' reads a tensor already split by tensor "
                                     "parallelism", layer=row.name, fix="make the layer before it rowwise")
            row = _share(row, style, t, split_input=False)
            split.add(row.name)
        elif style == "rowwise":
            if not reads_split or not all(reads_split):
                raise ParamcalcError(f"rowwise layer '{row.name}' reads a whole tensor: its input must come from "
                                     "a colwise layer", layer=row.name,
                                     fix="make the layer that feeds it colwise, as Megatron pairs them")
            row = _share(row, style, t, split_input=True)
        elif reads_split and all(reads_split):
            if row.weights:  # its weights expect the whole axis
                raise ParamcalcError(f"'{row.name}' has weights and reads a tensor split by tensor parallelism",
                                     layer=row.name, fix=f'name it in tensor_plan ("{row.module or row.name}": '
                                                         '"rowwise"), or end the split before it')
            row = _scaled(row, t, name=row.name)  # per-element work: on the rank's part
            split.add(row.name)
        elif any(reads_split):
            raise ParamcalcError(f"'{row.name}' reads a tensor split by tensor parallelism beside a whole one",
                                 layer=row.name, fix="end the split with a rowwise layer before it")
        out.append(row)
    leaked = [name for name in est.output_names if name.split(":")[0] in split]
    if leaked:
        raise ParamcalcError(f"the model's output '{leaked[0]}' is split by tensor parallelism", layer=leaked[0],
                             fix="end the split with a rowwise layer")
    totals = dict(params=0, trainable=0, non_trainable=0, flops=0, macs=0)
    for row in out:
        totals["params"] += row.params
        totals["trainable"] += row.trainable_params
        totals["non_trainable"] += row.non_trainable_params
        totals["flops"] += row.flops_per_batch
        totals["macs"] += row.macs_per_batch
    return replace(est, layers=tuple(out), params=totals["params"], trainable_params=totals["trainable"],
                   non_trainable_params=totals["non_trainable"], flops_per_batch=totals["flops"],
                   macs_per_batch=totals["macs"])


def _last_split(shape: tuple, t: int, name: str) -> tuple:
    part = exact_div(shape[-1], t)
    if part is None or type(part) is not int:
        raise ParamcalcError(f"'{name}': its last axis ({shape[-1]}) does not split into {t} equal parts",
                             layer=name, value=shape[-1], fix=f"use a tensor-parallel degree that divides {shape[-1]}")
    return tuple(shape[:-1]) + (part,)


def _scaled(row, t: int, name: str, split_input: bool = True, split_output: bool = True):
    inputs = tuple(_last_split(s, t, name) for s in row.input_shapes) if split_input else row.input_shapes
    output = _last_split(row.output_shape, t, name) if split_output else row.output_shape
    outputs = (output,) + tuple(_last_split(s, t, name) if split_output else s for s in row.output_shapes[1:])
    return replace(row, input_shapes=inputs, output_shape=output, output_shapes=outputs,
                   flops_per_batch=row.flops_per_batch // t, macs_per_batch=row.macs_per_batch // t,
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
    row = _scaled(row, t, row.name, split_input=split_input, split_output=(style == "colwise"))
    if bias_adds:  # every rank adds the whole bias (to its partial sum): that work is not split
        per_sample = prod(whole.output_shape[1:])
        row = replace(row, flops_per_batch=(whole.flops_per_batch - bias_adds) // t + bias_adds,
                      flops=(whole.flops - per_sample) // t + per_sample)
    return replace(row, layer=layer, weights=weights, params=total, trainable_params=trainable,
                   non_trainable_params=total - trainable)


def collectives(est, parallel, activation_bytes: int, reads_grad) -> list:
    """(name, calls, payload bytes, purpose) of tensor parallelism's collectives in one step, per rank:
    a rowwise layer's forward all-reduce of its output, a colwise layer's backward all-reduce of its
    input's gradient (where ``reads_grad(row)``)."""
    if parallel.tensor == 1:
        return []
    out = []
    for row in est.layers:
        style = parallel.tensor_plan.get(row.module or row.name)
        if style == "rowwise":
            out.append(("forward", prod(row.output_shape) * activation_bytes))
        elif style == "colwise" and reads_grad(row):
            out.append(("backward", prod(row.input_shapes[0]) * activation_bytes))
    return out
