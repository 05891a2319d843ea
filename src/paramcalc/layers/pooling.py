"""Pools: windowed max/average (1D/2D/3D), global pools, and torch's adaptive pools.

FLOPs: one per input element a window reads (a comparison for max, an addition for average), counted
per output element as the window size; adaptive and global pools read each input element once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import Kernel, SavingRules, Work, inputs_kept
from paramcalc.layers.spatial import (
    as_tuple,
    check_rank,
    padding_pairs,
    spatial_axes,
    window_length,
)

INDEX_BYTES = 8  # a max pool keeps the int64 position of each maximum


def _max_indices(call, op: str, rules: SavingRules) -> list:
    """What a max pool keeps: its input and the positions of the maxima; nothing for an average pool
    (whose layer says what its framework's backward reads)."""
    if op != "max":
        return []
    return inputs_kept(call, rules)[:1] + [((call.name, "indices"), prod(call.output_shape) * INDEX_BYTES)]


def _check_op(owner: str, op: str, layer: str | None) -> None:
    if op not in ("max", "avg"):
        raise LayerConfigError(f"{owner} expects op 'max' or 'avg'. Received: op={shown(op)}", layer=layer, value=op)


@register_layer("pool")
@dataclass(frozen=True)
class Pool(Layer):
    """Max or average pooling over ``rank`` spatial axes; ``strides`` default to ``pool_size``.

    Keras paddings are "valid"/"same"; torch gives amounts, ``dilation`` (max pools) and ``ceil_mode``.
    ``whole_window``: the kernel refuses an input axis shorter than the window before padding, as torch's
    3-D average pool does (its 1-D and 2-D ones, and every max pool, pad first).
    """

    op: str = "max"
    pool_size: object = 2
    strides: object = None
    padding: object = "valid"
    dilation: object = 1
    ceil_mode: bool = False
    rank: int = 2
    channels_last: bool = True
    whole_window: bool = False

    def __post_init__(self) -> None:
        owner = self.display_type
        _check_op(owner, self.op, self.name)
        self._set("pool_size", as_tuple(owner, "pool_size", self.pool_size, self.rank, self.name))
        strides = self.pool_size if self.strides is None else self.strides
        self._set("strides", as_tuple(owner, "strides", strides, self.rank, self.name))
        self._set("dilation", as_tuple(owner, "dilation", self.dilation, self.rank, self.name))
        self._set("padding", padding_pairs(owner, self.padding, self.rank, self.name))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        check_rank(ctx, self.display_type, x.shape, self.rank, self.channels_last)
        axes, _ = spatial_axes(x.rank, self.rank, self.channels_last)
        shape = list(x.shape)
        for i, axis in enumerate(axes):
            pad = self.padding if isinstance(self.padding, str) else self.padding[i]
            if self.whole_window:
                ctx.require_positive(x.shape[axis] - self.pool_size[i] + 1,
                                     f"input length {x.shape[axis]} on axis {axis} is smaller than the window "
                                     f"{self.pool_size[i]}, which {self.display_type} refuses before padding",
                                     fix="use a smaller kernel or a larger input")
            shape[axis] = window_length(ctx, x.shape[axis], self.pool_size[i], self.strides[i],
                                        self.dilation[i], pad, axis, self.ceil_mode)
        out = x.with_shape(tuple(shape))
        return ctx.result(out, flops=out.numel * prod(self.pool_size))

    def work(self, call) -> Work:
        if self.rank != 2:
            return super().work(call)
        read = prod(call.input_shapes[0])
        # timed per input element where calibrated; else a pass over the input and the output, whose
        # ratio is the same per sample (the batch axis is the first of both)
        per_read, per_written = prod(call.input_shapes[0][1:]), prod(call.output_shape[1:])
        if type(per_read) is int and type(per_written) is int and per_read:
            passes = 1 + per_written / per_read
        else:  # sizes that are formulas: a time is priced only once they are numbers (Estimate.subs)
            passes = 2.0
        return self.described(kernels=(Kernel(f"{self.op}_pool", read, passes),))

    def saved(self, call, rules: SavingRules) -> list:
        if self.op == "avg":  # torch's backward reads its input; TensorFlow's only the shape
            return inputs_kept(call, rules)[:1] if rules.framework == "torch" else []
        kept = _max_indices(call, self.op, rules)
        if rules.framework == "keras-torch" and self.channels_last:
            # Keras on torch hands torch a channels-first copy, which autograd keeps in place of the input
            copy = ((call.name, "channels_first_input"), prod(call.input_shapes[0]) * rules.activation_bytes)
            return [copy] + kept[1:]
        return kept


@register_layer("global_pool")
@dataclass(frozen=True)
class GlobalPool(Layer):
    """Keras GlobalMax/AveragePooling1D/2D/3D: reduce every spatial axis; ``keepdims`` keeps them as 1."""

    op: str = "avg"
    rank: int = 2
    channels_last: bool = True
    keepdims: bool = False

    def __post_init__(self) -> None:
        _check_op(self.display_type, self.op, self.name)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        check_rank(ctx, self.display_type, x.shape, self.rank, self.channels_last)
        axes, channel_axis = spatial_axes(x.rank, self.rank, self.channels_last)
        if self.keepdims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = (x.shape[0], x.shape[channel_axis])
        return ctx.result(x.with_shape(shape), flops=x.numel)

    def saved(self, call, rules: SavingRules) -> list:
        return _max_indices(call, self.op, rules)


@register_layer("adaptive_pool")
@dataclass(frozen=True)
class AdaptivePool(Layer):
    """torch AdaptiveAvg/MaxPool1d/2d/3d and Keras AdaptiveAverage/MaxPooling1D/2D/3D: fixed output sizes
    (None keeps an axis), channels first (torch) or where ``channels_last`` says (Keras' data_format)."""

    op: str = "avg"
    output_size: object = 1
    rank: int = 2
    channels_last: bool = False

    def __post_init__(self) -> None:
        _check_op(self.display_type, self.op, self.name)
        size = self.output_size
        values = (size,) * self.rank if (type(size) is int or size is None) else tuple(size)
        if len(values) != self.rank or any(v is not None and (type(v) is not int or v < 1) for v in values):
            raise LayerConfigError(f"{self.display_type} expects output_size of {self.rank} positive ints "
                                   f"(or None). Received: output_size={shown(size)}", layer=self.name, value=size)
        self._set("output_size", values)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank not in (self.rank + 1, self.rank + 2):
            raise ctx.shape_error(f"{self.display_type} expects an input of rank {self.rank + 2}, "
                                  f"received {ctx.format_shape(x.shape)}")
        first = 1 if self.channels_last else x.rank - self.rank
        spatial = x.shape[first:first + self.rank]
        out = tuple(d if s is None else s for d, s in zip(spatial, self.output_size))
        return ctx.result(x.with_shape(x.shape[:first] + out + x.shape[first + self.rank:]), flops=x.numel)

    def saved(self, call, rules: SavingRules) -> list:
        """torch's adaptive average pool to one value per channel is a mean, which keeps nothing; to any
        other size it runs ``_adaptive_avg_pool2d`` (3d), whose backward formula reads the input, so
        autograd keeps it."""
        if self.op == "avg":
            first = 1 if self.channels_last else len(call.output_shape) - self.rank
            global_mean = all(size == 1 for size in call.output_shape[first:first + self.rank])
            return [] if global_mean else inputs_kept(call, rules)[:1]
        return _max_indices(call, self.op, rules)
