"""Layers that resize or repeat without weights: padding, cropping, upsampling, pixel shuffling,
RepeatVector, Rescaling, Keras' preprocessing and augmentation layers; and the TimeDistributed wrapper."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Sequence

from paramcalc.core.dims import Dim, exact_div, floordiv
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, inputs_kept
from paramcalc.layers.values import sizes_filled


def _pairs(owner: str, pads: object, layer: str | None, negative: bool = False) -> tuple:
    """((axis, before, after), ...) of ints, non-negative unless ``negative``; axes count with the batch
    axis at 0."""
    try:
        out = tuple((int(a), int(b), int(c)) for a, b, c in pads)
    except (TypeError, ValueError):
        out = None
    if out is None or any((not negative and (b < 0 or c < 0)) or type(a) is not int for a, b, c in out):
        kind = "ints" if negative else "non-negative ints"
        raise LayerConfigError(f"{owner} expects (axis, before, after) triples of {kind}. "
                               f"Received: {shown(pads)}", layer=layer, value=pads)
    return out


@register_layer("pad")
@dataclass(frozen=True)
class Pad(Layer):
    """Keras ZeroPadding1D/2D/3D, torch ZeroPad/ConstantPad/ReflectionPad/ReplicationPad: grow axes.

    ``pads``: (axis, before, after) triples; negative axes count from the end; a negative amount removes
    elements, as torch's padding modules do (``nn.ZeroPad2d((-1, 1, -1, 1))``).
    """

    pads: tuple = ()

    def __post_init__(self) -> None:
        self._set("pads", _pairs(self.display_type, self.pads, self.name, negative=True))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        shape = list(x.shape)
        for axis, before, after in self.pads:
            if not -x.rank < axis < x.rank or axis % x.rank == 0:
                raise ctx.shape_error(f"{self.display_type} pads axis {axis}, out of range for input "
                                      f"{ctx.format_shape(x.shape)}")
            shape[axis] = shape[axis] + before + after
            if before < 0 or after < 0:
                ctx.require_positive(shape[axis], f"padding ({before}, {after}) leaves nothing of axis {axis} of "
                                                  f"{ctx.format_shape(x.shape)}")
        return ctx.result(x.with_shape(tuple(shape)))


@register_layer("crop")
@dataclass(frozen=True)
class Crop(Layer):
    """Keras Cropping1D/2D/3D: remove (before, after) elements on axes; nothing left is an error."""

    crops: tuple = ()

    def __post_init__(self) -> None:
        self._set("crops", _pairs(self.display_type, self.crops, self.name))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        shape = list(x.shape)
        for axis, before, after in self.crops:
            length = shape[axis] - before - after
            ctx.require_positive(length, f"output size would be non-positive on axis {axis}: cropping "
                                         f"({before}, {after}) from {shape[axis]}")
            shape[axis] = length
        return ctx.result(x.with_shape(tuple(shape)))


@register_layer("upsample")
@dataclass(frozen=True)
class UpSample(Layer):
    """Keras UpSampling1D/2D/3D (integer ``factors``), torch nn.Upsample (``factors`` or ``sizes``).

    ``axes`` are the spatial axes (batch = 0). torch floors ``length * scale_factor``; fractional
    factors are kept exact as fractions of the float given.
    """

    axes: tuple | None = (1, 2)
    factors: object = None
    sizes: object = None
    interpolation: str = "nearest"

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = inputs[0]
        shape = list(x.shape)
        axes = self.axes if self.axes is not None else tuple(range(2, x.rank))  # torch: after N, C
        sizes = (self.sizes,) * len(axes) if type(self.sizes) is int else self.sizes
        if sizes is not None:  # sizes the traced program computed (``x.shape[-2:]``) arrive as inputs
            sizes = sizes_filled(tuple(sizes), inputs, ctx)
            if len(sizes) != len(axes):
                raise ctx.shape_error(f"{self.display_type}: {len(sizes)} sizes for {len(axes)} spatial axes "
                                      f"of an input {ctx.format_shape(x.shape)}")
        factors = (self.factors,) * len(axes) if isinstance(self.factors, (int, float)) else self.factors
        for i, axis in enumerate(axes):
            if sizes is not None:
                shape[axis] = sizes[i]
            else:
                factor = Fraction(factors[i])
                shape[axis] = floordiv(shape[axis] * factor.numerator, factor.denominator)
        out = x.with_shape(tuple(shape))
        per_element = 0 if self.interpolation == "nearest" else 4 * len(axes)  # lerp: 2 mul + 2 add per axis
        return ctx.result(out, flops=per_element * out.numel)


@register_layer("pixel_shuffle")
@dataclass(frozen=True)
class PixelShuffle(Layer):
    """torch nn.PixelShuffle(r): (*, C*r*r, H, W) -> (*, C, H*r, W*r); ``inverse``: nn.PixelUnshuffle(r),
    the way back. Moves elements, computes nothing."""

    factor: int = 2
    inverse: bool = False

    def __post_init__(self) -> None:
        if type(self.factor) is not int or self.factor < 1:
            raise LayerConfigError(f"{self.display_type} expects a positive integer factor. Received: "
                                   f"{shown(self.factor)}", layer=self.name, value=self.factor)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank < 4:
            raise ctx.shape_error(f"{self.display_type} expects (batch, channels, height, width), received "
                                  f"{ctx.format_shape(x.shape)}")
        *lead, c, h, w = x.shape
        r = self.factor
        if not self.inverse:
            channels = exact_div(c, r * r)
            if channels is None:
                raise ctx.shape_error(f"{self.display_type}({r}) needs channels divisible by {r * r}, received "
                                      f"{c} (input {ctx.format_shape(x.shape)})")
            return ctx.result(x.with_shape((*lead, channels, h * r, w * r)))
        height, width = exact_div(h, r), exact_div(w, r)
        if height is None or width is None:
            raise ctx.shape_error(f"{self.display_type}({r}) needs height and width divisible by {r}, received "
                                  f"{h} x {w} (input {ctx.format_shape(x.shape)})")
        return ctx.result(x.with_shape((*lead, c * r * r, height, width)))


@register_layer("repeat_vector")
@dataclass(frozen=True)
class RepeatVector(Layer):
    """Keras RepeatVector(n): (batch, d) -> (batch, n, d)."""

    n: Dim = 1

    def __post_init__(self) -> None:
        self._set("n", self._size_arg("n", self.n))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank != 2:
            raise ctx.shape_error(f"RepeatVector expects a 2-D input, received {ctx.format_shape(x.shape)}")
        return ctx.result(x.with_shape((x.shape[0], self.n, x.shape[1])))


@register_layer("rescale")
@dataclass(frozen=True)
class Rescale(Layer):
    """Keras Rescaling(scale, offset): x * scale + offset, 2 FLOPs per element."""

    scale: float = 1.0
    offset: float = 0.0

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        return ctx.result(x, flops=2 * x.numel)


@register_layer("augment")
@dataclass(frozen=True)
class Augment(Layer):
    """A Keras preprocessing or augmentation layer (RandomFlip, RandomRotation, RandomContrast, ...,
    GaussianNoise). In training it changes each sample and keeps its shape. With ``size`` (height,
    width) it resizes or crops the images to that size instead: Resizing, CenterCrop, RandomCrop.
    ``channels_last`` is the images' data format.

    It has no weights. Its cost is a pass over its memory. It counts no FLOPs, as no counter defines
    them for image operations. It keeps nothing for the backward: such layers read the data, which
    needs no gradient, and a noise or a flip has a gradient without saved tensors.
    """

    size: tuple | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or not all(type(d) is int and d > 0 for d in self.size)):
            raise LayerConfigError(f"{self.display_type} needs a size of two positive ints (height, width). "
                                   f"Received: {shown(self.size)}", layer=self.name, value=self.size)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.size is None:
            return ctx.result(x)
        if x.rank != 4:
            raise ctx.shape_error(f"{self.display_type} expects batches of images, (batch, height, width, channels)"
                                  f" or channels first; received {ctx.format_shape(x.shape)}")
        first = 1 if self.channels_last else 2
        shape = list(x.shape)
        shape[first:first + 2] = self.size
        return ctx.result(x.with_shape(tuple(shape)))


@register_layer("time_distributed")
@dataclass(frozen=True)
class TimeDistributed(Layer):
    """Keras TimeDistributed(layer): ``layer`` applied to every step of (batch, time, ...), its weights
    shared across steps."""

    layer: Layer | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, Layer):
            raise LayerConfigError("TimeDistributed wraps a paramcalc layer", layer=self.name, value=self.layer)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank < 3:
            raise ctx.shape_error(f"TimeDistributed expects (batch, time, ...), received {ctx.format_shape(x.shape)}")
        steps = x.shape[1]
        inner = self.layer.infer((x.with_shape((x.shape[0],) + x.shape[2:]),), ctx)
        out = inner.output.with_shape((inner.output.shape[0], steps) + inner.output.shape[1:])
        weights = [w if self.layer.trains(w) or w.buffer else replace(w, trainable=False) for w in inner.weights]
        return ctx.result(out, weights=weights, macs=steps * inner.macs, flops=steps * inner.flops)

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)[:1]


@register_layer("repeat")
@dataclass(frozen=True)
class Repeat(Layer):
    """``keras.ops.repeat(x, repeats, axis)`` (torch ``repeat_interleave`` with an int): each element
    repeated ``repeats`` times along ``axis`` (batch = 0, negatives from the end); a copy, no FLOPs."""

    repeats: int = 1
    axis: int = -1

    def __post_init__(self) -> None:
        if type(self.repeats) is not int or self.repeats < 1 or type(self.axis) is not int:
            raise LayerConfigError(f"repeat needs a positive int repeats and an int axis. Received: repeats="
                                   f"{shown(self.repeats)}, axis={shown(self.axis)}", layer=self.name)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if not -x.rank <= self.axis < x.rank:
            raise ctx.shape_error(f"repeat axis {self.axis} is out of range for {ctx.format_shape(x.shape)}")
        axis = self.axis % x.rank
        return ctx.result(x.with_shape(x.shape[:axis] + (x.shape[axis] * self.repeats,) + x.shape[axis + 1:]))
