"""Convolutions: Conv1D/2D/3D (groups), transposed, depthwise and separable, channels last or first.

One kind per operation, any rank: ``rank`` is an argument. Keras puts channels last, torch first
(``channels_last=False``); the weight counts agree (kernel x in/groups x filters + bias), only the
layouts differ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from paramcalc.core.dims import Dim, exact_div, prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import (
    SavingRules,
    Work,
    inputs_kept,
    weight_casts,
)
from paramcalc.layers.elementwise import (
    ACTIVATION_FLOPS,
    activation_kernels,
    fused_activation_saved,
    normalize_activation,
)
from paramcalc.layers.spatial import (
    as_tuple,
    check_rank,
    padding_pairs,
    spatial_axes,
    transposed_length,
    window_length,
)


@dataclass(frozen=True, kw_only=True)
class _Windowed(Layer):
    """Arguments shared by the convolution kinds (keyword-only: each kind puts its own first, so
    ``Conv(32, 3)`` reads filters=32, kernel_size=3)."""

    strides: object = 1
    padding: object = "valid"
    dilation: object = 1
    rank: int = 2
    channels_last: bool = True
    use_bias: bool = True
    activation: str | None = None

    def _check_common(self) -> None:
        owner = self.display_type
        if self.rank not in (1, 2, 3):
            raise LayerConfigError(f"{owner} expects rank 1, 2 or 3. Received: rank={shown(self.rank)}",
                                   layer=self.name, value=self.rank)
        self._set("kernel_size", as_tuple(owner, "kernel_size", self.kernel_size, self.rank, self.name))
        self._set("strides", as_tuple(owner, "strides", self.strides, self.rank, self.name))
        self._set("dilation", as_tuple(owner, "dilation", self.dilation, self.rank, self.name))
        self._set("padding", padding_pairs(owner, self.padding, self.rank, self.name))
        self._set("activation", normalize_activation(self.activation, self.name))

    def _spatial(self, ctx: Context, x: TensorSpec) -> tuple[list[int], int, list[Dim]]:
        check_rank(ctx, self.display_type, x.shape, self.rank, self.channels_last)
        axes, channel_axis = spatial_axes(x.rank, self.rank, self.channels_last)
        lengths = []
        for i, axis in enumerate(axes):
            pad = self.padding if isinstance(self.padding, str) else self.padding[i]
            lengths.append(window_length(ctx, x.shape[axis], self.kernel_size[i], self.strides[i],
                                         self.dilation[i], pad, axis))
        return axes, channel_axis, lengths

    def _output(self, x: TensorSpec, axes: list[int], channel_axis: int, lengths: Sequence[Dim],
                channels: Dim) -> TensorSpec:
        shape = list(x.shape)
        for axis, length in zip(axes, lengths):
            shape[axis] = length
        shape[channel_axis] = channels
        return x.with_shape(tuple(shape))

    def _weights(self, kernels: list, outputs: Dim) -> list:
        """The kernels, then the bias of ``outputs`` units when the layer has one."""
        return kernels + ([Weight("bias", (outputs,))] if self.use_bias else [])

    def _tail_flops(self, out: TensorSpec) -> Dim:
        return (1 if self.use_bias else 0) * out.numel + ACTIVATION_FLOPS[self.activation] * out.numel

    # -- for the cost model ----------------------------------------------------------------------------
    def channels(self, call) -> tuple:
        """(input channels, output channels) of a call, channels last or first."""
        x, out = call.input_shapes[0], call.output_shape
        return (x[-1], out[-1]) if self.channels_last else (x[1], out[1])

    def _product_work(self, call, **fields) -> Work:
        """What every convolution shares: its activation, the bias inside the kernel, autocast's casts."""
        out = prod(call.output_shape)
        return self.described(kernels=activation_kernels(self.activation, out), fused_bias=True,
                              has_bias=any(w.name == "bias" for w in call.weights),
                              fused_activation=self.activation, autocast_casts=weight_casts(call), **fields)

    def _bias_elements(self, call) -> Dim:
        return prod(call.output_shape) if any(w.name == "bias" for w in call.weights) else 0

    def saved(self, call, rules: SavingRules) -> list:
        # its input, whichever gradients it makes: a convolution's backward takes it either way
        kept = inputs_kept(call, rules)[:1] + fused_activation_saved(call, self.activation, rules)
        return kept + self._channels_first_copy(call, rules)

    def _channels_first_copy(self, call, rules: SavingRules) -> list:
        """Keras on torch hands torch a channels-first copy of a channels-last input, which autograd keeps."""
        if rules.framework != "keras-torch" or not self.channels_last:
            return []
        return [((call.name, "channels_first_input"), prod(call.input_shapes[0]) * rules.activation_bytes)]


def _check_groups(ctx: Context, owner: str, channels: Dim, filters: Dim, groups: int) -> Dim:
    per_group = exact_div(channels, groups)
    if per_group is None:
        raise ctx.shape_error(f"{owner}: the number of input channels must be evenly divisible by the "
                              f"number of groups. Received groups={groups}, but the input has {channels} channels")
    if exact_div(filters, groups) is None:
        raise ctx.shape_error(f"{owner}: filters must be evenly divisible by groups. "
                              f"Received filters={filters}, groups={groups}")
    return per_group


@register_layer("conv")
@dataclass(frozen=True)
class Conv(_Windowed):
    """``Conv(filters, kernel_size, rank=2)``: Keras Conv1D/2D/3D, torch Conv1d/2d/3d.

    ``in_channels`` is torch's declared input size (checked against the input); padding is "valid",
    "same", "causal" (rank 1) or explicit amounts per axis.
    """

    filters: Dim = 1
    kernel_size: object = 1
    groups: int = 1
    in_channels: Dim | None = None

    def __post_init__(self) -> None:
        self._check_common()
        self._set("filters", self._size_arg("filters", self.filters))
        if type(self.groups) is not int or self.groups < 1:
            raise LayerConfigError(f"{self.display_type} expects groups to be a positive integer. "
                                   f"Received: groups={shown(self.groups)}", layer=self.name, value=self.groups)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        axes, channel_axis, lengths = self._spatial(ctx, x)
        channels = x.shape[channel_axis]
        if self.in_channels is not None:
            ctx.require_equal(channels, self.in_channels,
                              lambda: f"{self.display_type} expects {self.in_channels} input channels, received "
                              f"{channels} (input shape {ctx.format_shape(x.shape)})")
        per_group = _check_groups(ctx, self.display_type, channels, self.filters, self.groups)
        out = self._output(x, axes, channel_axis, lengths, self.filters)
        kernel = prod(self.kernel_size)
        weights = self._weights([Weight("kernel", self.kernel_size + (per_group, self.filters))], self.filters)
        macs = out.numel * per_group * kernel
        return ctx.result(out, weights=weights, macs=macs, flops=2 * macs + self._tail_flops(out))

    def product(self, call) -> tuple:
        """The (positions, inputs per output, filters) product the convolution amounts to."""
        channels_in, filters = self.channels(call)
        return prod(call.output_shape) // filters, channels_in // self.groups * prod(self.kernel_size), filters

    def work(self, call) -> Work:
        product = self.product(call)
        # a dense 2-D convolution: timed whole where the device measured convolutions
        whole = product if self.groups == 1 and len(call.output_shape) == 4 else None
        work = self._product_work(call, weight_products=(product,), conv=whole,
                                  bias_elements=self._bias_elements(call))
        return _with_host_ops(work, 1 + len(work.kernels))


@register_layer("conv_transpose")
@dataclass(frozen=True)
class ConvTranspose(_Windowed):
    """Transposed convolution: Keras Conv1D/2D/3DTranspose, torch ConvTranspose1d/2d/3d."""

    filters: Dim = 1
    kernel_size: object = 1
    groups: int = 1
    output_padding: object = None
    in_channels: Dim | None = None

    def __post_init__(self) -> None:
        self._check_common()
        self._set("filters", self._size_arg("filters", self.filters))
        if self.output_padding is not None:
            self._set("output_padding", as_tuple(self.display_type, "output_padding", self.output_padding,
                                                 self.rank, self.name, minimum=0))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        check_rank(ctx, self.display_type, x.shape, self.rank, self.channels_last)
        axes, channel_axis = spatial_axes(x.rank, self.rank, self.channels_last)
        lengths = []
        for i, axis in enumerate(axes):
            pad = self.padding if isinstance(self.padding, str) else self.padding[i]
            extra = None if self.output_padding is None else self.output_padding[i]
            length = transposed_length(ctx, x.shape[axis], self.kernel_size[i], self.strides[i],
                                       self.dilation[i], pad, extra)
            ctx.require_positive(length, f"output size would be non-positive on axis {axis} ({length})")
            lengths.append(length)
        channels = x.shape[channel_axis]
        if self.in_channels is not None:
            ctx.require_equal(channels, self.in_channels,
                              f"{self.display_type} expects {self.in_channels} input channels, received {channels}")
        _check_groups(ctx, self.display_type, channels, self.filters, self.groups)
        out_per_group = exact_div(self.filters, self.groups)
        out = self._output(x, axes, channel_axis, lengths, self.filters)
        weights = self._weights([Weight("kernel", self.kernel_size + (out_per_group, channels))], self.filters)
        macs = x.numel * out_per_group * prod(self.kernel_size)  # every input element meets each tap
        return ctx.result(out, weights=weights, macs=macs, flops=2 * macs + self._tail_flops(out))

    def work(self, call) -> Work:
        channels_in, filters = self.channels(call)
        positions = prod(call.input_shapes[0]) // channels_in
        product = (positions, channels_in, filters // self.groups * prod(self.kernel_size))
        return self._product_work(call, weight_products=(product,), bias_elements=self._bias_elements(call))

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)[:1] + fused_activation_saved(call, self.activation, rules)


@register_layer("depthwise_conv")
@dataclass(frozen=True)
class DepthwiseConv(_Windowed):
    """Keras DepthwiseConv1D/2D: each channel convolved alone, ``depth_multiplier`` outputs per channel."""

    kernel_size: object = 1
    depth_multiplier: int = 1

    def __post_init__(self) -> None:
        self._check_common()
        self._set("depth_multiplier", self._size_arg("depth_multiplier", self.depth_multiplier))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        axes, channel_axis, lengths = self._spatial(ctx, x)
        channels = x.shape[channel_axis]
        out = self._output(x, axes, channel_axis, lengths, channels * self.depth_multiplier)
        weights = self._weights([Weight("kernel", self.kernel_size + (channels, self.depth_multiplier))],
                                channels * self.depth_multiplier)
        macs = out.numel * prod(self.kernel_size)
        return ctx.result(out, weights=weights, macs=macs, flops=2 * macs + self._tail_flops(out))

    def work(self, call) -> Work:
        # memory-bound: each output reads a small window of its own channel
        return self._product_work(call, memory_elements=prod(call.input_shapes[0]) + prod(call.output_shape))


@register_layer("separable_conv")
@dataclass(frozen=True)
class SeparableConv(_Windowed):
    """Keras SeparableConv1D/2D: a depthwise convolution, then a 1x1 convolution to ``filters``."""

    filters: Dim = 1
    kernel_size: object = 1
    depth_multiplier: int = 1

    def __post_init__(self) -> None:
        self._check_common()
        self._set("filters", self._size_arg("filters", self.filters))
        self._set("depth_multiplier", self._size_arg("depth_multiplier", self.depth_multiplier))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        axes, channel_axis, lengths = self._spatial(ctx, x)
        channels = x.shape[channel_axis]
        middle = channels * self.depth_multiplier
        out = self._output(x, axes, channel_axis, lengths, self.filters)
        weights = self._weights([Weight("depthwise_kernel", self.kernel_size + (channels, self.depth_multiplier)),
                                 Weight("pointwise_kernel", (1,) * self.rank + (middle, self.filters))], self.filters)
        positions = exact_div(out.numel, self.filters) if self.filters != 0 else 0
        macs = positions * middle * prod(self.kernel_size) + positions * middle * self.filters
        return ctx.result(out, weights=weights, macs=macs, flops=2 * macs + self._tail_flops(out))

    def _middle_elements(self, call) -> Dim:
        """Elements of the depthwise stage's output: every output position, channels x depth_multiplier."""
        channels_in, filters = self.channels(call)
        return prod(call.output_shape) // filters * channels_in * self.depth_multiplier

    def work(self, call) -> Work:
        # two stages, as TensorFlow runs it: the depthwise one is memory-bound (each output reads a small
        # window of its own channel), the pointwise one a product of every position with the 1x1 kernel
        channels_in, filters = self.channels(call)
        middle = self._middle_elements(call)
        product = (prod(call.output_shape) // filters, channels_in * self.depth_multiplier, filters)
        work = self._product_work(call, weight_products=(product,),
                                  memory_elements=prod(call.input_shapes[0]) + middle)
        return _with_host_ops(work, 1 + len(work.kernels))

    def saved(self, call, rules: SavingRules) -> list:
        # its input and the depthwise stage's output, which the pointwise product reads
        middle = ((call.name, "depthwise"), self._middle_elements(call) * rules.activation_bytes)
        return (inputs_kept(call, rules)[:1] + [middle] + fused_activation_saved(call, self.activation, rules)
                + self._channels_first_copy(call, rules))


def _with_host_ops(work: Work, ops: int) -> Work:
    return replace(work, host_ops=ops)
