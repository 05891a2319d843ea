"""Normalisation: batch, layer, group and RMS norms, and Keras' Normalization preprocessing layer.

Keras keeps BatchNormalization's moving mean and variance as non-trainable weights; torch keeps
running_mean, running_var and num_batches_tracked (one element) as buffers. ``stats`` chooses.

FLOPs per element in training: batch/layer/group norm 8 (mean 1, variance 3, normalise 2, scale and
shift 2); RMS norm 4 (square and sum 2, normalise 1, scale 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, exact_div, prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.splits import per_element_share
from paramcalc.core.work import SavingRules, Work, inputs_kept, kernel

# Bytes per element of the statistics a norm's forward keeps: float32 whatever the input's dtype
STATISTICS_BYTES = 4


class _Norm(Layer):
    """What the normalisations share for the cost model: one per-element kernel, and what their backward
    keeps (the input, the statistics), in float32 under Keras' mixed precision."""

    kernel_name = "layer_norm"  # the per-element kernel calibrations time it as

    def work(self, call) -> Work:
        return self.described(kernels=(kernel(self.kernel_name, prod(call.output_shape)),))

    def statistics(self, call) -> Dim:
        """Elements of the statistics the forward keeps for the backward (0: none)."""
        return 0

    def saved(self, call, rules: SavingRules) -> list:
        kept = inputs_kept(call, rules)[:1]
        statistics = self.statistics(call)
        if type(statistics) is not int or statistics:  # a formula in the batch is not 0
            kept.append(((call.name, "statistics"), statistics * STATISTICS_BYTES))
        kept += self.framework_copies(call, rules)
        if rules.mixed and rules.framework in ("keras", "keras-torch"):
            kept = _upcast_to_float32(call, kept, rules.activation_bytes)
        return kept

    def framework_copies(self, call, rules: SavingRules) -> list:
        """Tensors beyond torch's that the training framework's own operations keep."""
        return []


def _upcast_to_float32(call, saved: list, activation_bytes: int) -> list:
    """Keras' norms compute in float32 whatever the policy: under mixed precision they keep the float32 copy
    of their input in place of the input, and their other tensors in float32 too."""
    upcast = []
    for key, nbytes in saved:
        if key == (call.name, "statistics"):  # float32 already
            upcast.append((key, nbytes))
            continue
        if key == call.inbound[0]:
            key = (call.name, "float32_input")
        upcast.append((key, nbytes * 4 // activation_bytes))
    return upcast


def _axis(ctx: Context, axis: int, rank: int, owner: str) -> int:
    if not -rank <= axis < rank or axis % rank == 0:
        raise ctx.shape_error(f"{owner}: axis {axis} is out of range for an input of rank {rank} "
                              "(the batch axis cannot be normalised over)")
    return axis % rank


@register_layer("batch_norm")
@dataclass(frozen=True)
class BatchNorm(_Norm):
    """BatchNormalization / BatchNorm1d/2d/3d over the channel ``axis`` (Keras -1, torch 1).

    ``stats``: "weights" (Keras: moving mean/variance as non-trainable weights), "buffers" (torch:
    running mean/var and num_batches_tracked), or "none" (torch track_running_stats=False).
    ``per_sample``: statistics per sample and channel, torch's InstanceNorm1d/2d/3d (the same weights
    and buffers, by its affine and track_running_stats).
    """

    axis: int = -1
    center: bool = True
    scale: bool = True
    stats: str = "weights"
    num_features: Dim | None = None
    per_sample: bool = False

    def __post_init__(self) -> None:
        if self.stats not in ("weights", "buffers", "none"):
            raise LayerConfigError(f"BatchNorm expects stats 'weights', 'buffers' or 'none'. Received: "
                                   f"stats={shown(self.stats)}", layer=self.name, value=self.stats)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        channels = x.shape[_axis(ctx, self.axis, x.rank, self.display_type)]
        if self.num_features is not None:
            ctx.require_equal(channels, self.num_features,
                              lambda: f"{self.display_type} expects {self.num_features} features on axis {self.axis}, "
                              f"received {channels} (input shape {ctx.format_shape(x.shape)})")
        weights = []
        if self.scale:
            weights.append(Weight("gamma", (channels,)))
        if self.center:
            weights.append(Weight("beta", (channels,)))
        if self.stats == "weights":
            weights += [Weight("moving_mean", (channels,), trainable=False),
                        Weight("moving_variance", (channels,), trainable=False)]
        elif self.stats == "buffers":
            weights += [Weight("running_mean", (channels,), buffer=True),
                        Weight("running_var", (channels,), buffer=True),
                        Weight("num_batches_tracked", (), buffer=True, itemsize=8)]
        return ctx.result(x, weights=weights, flops=8 * x.numel)

    kernel_name = "batch_norm"

    def statistics(self, call) -> Dim:
        """A mean and an inverse deviation per channel; per sample and channel for InstanceNorm, which
        runs BatchNorm over the batch folded into the channels and keeps its weight and running
        statistics repeated per sample too."""
        x = call.input_shapes[0]
        if self.per_sample:
            repeated = int(self.scale) + (2 if self.stats == "buffers" else 0)
            return (2 + repeated) * x[0] * x[self.axis]
        return 2 * x[self.axis]

    def framework_copies(self, call, rules: SavingRules) -> list:
        # Keras on torch builds it from elementwise operations: the centred input (x - mean) is kept
        if rules.framework != "keras-torch":
            return []
        return [((call.name, "centred"), prod(call.input_shapes[0]) * rules.activation_bytes)]


@register_layer("layer_norm")
@dataclass(frozen=True)
class LayerNorm(_Norm):
    """LayerNormalization / nn.LayerNorm: statistics over the last ``len(normalized_shape)`` axes
    (torch) or over ``axes`` (Keras); gamma and beta have the normalised axes' shape."""

    axes: tuple = (-1,)
    normalized_shape: tuple | None = None
    center: bool = True
    scale: bool = True
    rms: bool = False  # Keras rms_scaling: no centring, gamma only

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.normalized_shape is not None:
            shape = tuple(self.normalized_shape)
            _require_tail(ctx, self.display_type, x, shape)
        else:
            axes = sorted({_axis(ctx, a, x.rank, self.display_type) for a in self.axes})
            shape = tuple(x.shape[a] for a in axes)
        weights = []
        if self.scale or self.rms:  # Keras: rms_scaling always keeps gamma
            weights.append(Weight("gamma", shape))
        if self.center and not self.rms:
            weights.append(Weight("beta", shape))
        return ctx.result(x, weights=weights, flops=(4 if self.rms else 8) * x.numel)

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        # statistics per row: a split along the rows (sequence parallelism) keeps each row whole
        rank = len(call.input_shapes[0])
        across = (tuple(range(rank - len(self.normalized_shape), rank)) if self.normalized_shape is not None
                  else self.axes)
        return per_element_share(self, call, axes, across)

    def statistics(self, call) -> Dim:
        """A mean and an inverse deviation per normalised row."""
        x = call.input_shapes[0]
        normalized = (prod(self.normalized_shape) if self.normalized_shape is not None
                      else prod(x[a] for a in self.axes))
        return 2 * exact_div(prod(x), normalized)


def _require_tail(ctx: Context, owner: str, x: TensorSpec, shape: tuple) -> None:
    """The input must end in ``shape`` (torch's normalized_shape), after the batch axis."""
    message = f"{owner} expects the input to end in {shape}, received {ctx.format_shape(x.shape)}"
    if len(shape) >= x.rank:
        raise ctx.shape_error(message)
    for got, want in zip(x.shape[x.rank - len(shape):], shape):
        ctx.require_equal(got, want, message)


@register_layer("group_norm")
@dataclass(frozen=True)
class GroupNorm(_Norm):
    """GroupNormalization / nn.GroupNorm: ``groups`` groups of channels on ``axis``; gamma, beta (C,)."""

    groups: int = 32
    axis: int = -1
    center: bool = True
    scale: bool = True
    num_channels: Dim | None = None

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        channels = x.shape[_axis(ctx, self.axis, x.rank, self.display_type)]
        if self.num_channels is not None:
            ctx.require_equal(channels, self.num_channels,
                              f"{self.display_type} expects {self.num_channels} channels, received {channels}")
        if exact_div(channels, self.groups) is None:
            raise ctx.shape_error(f"{self.display_type}: the number of channels ({channels}) must be a "
                                  f"multiple of the number of groups ({self.groups})")
        weights = ([Weight("gamma", (channels,))] if self.scale else []) + \
                  ([Weight("beta", (channels,))] if self.center else [])
        return ctx.result(x, weights=weights, flops=8 * x.numel)

    def statistics(self, call) -> Dim:
        """A mean and an inverse deviation per sample and group (Keras' groups=-1: a group per channel)."""
        x = call.input_shapes[0]
        return 2 * x[0] * (x[self.axis] if self.groups == -1 else self.groups)


@register_layer("rms_norm")
@dataclass(frozen=True)
class RMSNorm(_Norm):
    """RMSNormalization / nn.RMSNorm: scale by the root mean square over the last axes; one scale vector."""

    normalized_shape: tuple | None = None  # torch; None: the last axis (Keras axis=-1)
    scale: bool = True

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        shape = (x.shape[-1],) if self.normalized_shape is None else tuple(self.normalized_shape)
        _require_tail(ctx, self.display_type, x, shape)
        weights = [Weight("scale", shape)] if self.scale else []
        return ctx.result(x, weights=weights, flops=4 * x.numel)

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        rank = len(call.input_shapes[0])
        across = tuple(range(rank - (1 if self.normalized_shape is None else len(self.normalized_shape)), rank))
        return per_element_share(self, call, axes, across)


@register_layer("normalization")
@dataclass(frozen=True)
class Normalization(Layer):
    """Keras' Normalization preprocessing: (x - mean) / sqrt(variance) with adapted, non-trainable
    mean, variance (the ``axes`` kept) and a count; none when mean and variance are given as constants."""

    axes: tuple = (-1,)
    adapted: bool = True

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        weights = []
        if self.adapted:
            axes = sorted({_axis(ctx, a, x.rank, self.display_type) for a in self.axes})
            shape = tuple(x.shape[a] for a in axes)
            weights = [Weight("mean", shape, trainable=False), Weight("variance", shape, trainable=False),
                       Weight("count", (), trainable=False)]
        return ctx.result(x, weights=weights, flops=2 * x.numel)

