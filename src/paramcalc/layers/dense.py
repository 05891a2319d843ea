"""Dense (Keras) / Linear (torch): a kernel applied on the LAST axis, for inputs of any rank >= 2.

On an input (batch, d1, ..., dk, d) the kernel is (d, units) and it is applied at each of the
d1*...*dk positions separately: output (batch, d1, ..., dk, units). This is the rule behind the seed
case: on (None, 20020, 1) a Dense(300) has 600 parameters and outputs (None, 20020, 300). Keras'
EinsumDense generalises it: the equation names which axes the kernel meets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, Weight, format_shape
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work, inputs_kept, weight_casts
from paramcalc.layers.elementwise import (
    ACTIVATION_FLOPS,
    activation_kernels,
    fused_activation_saved,
    normalize_activation,
)


@register_layer("dense")
@dataclass(frozen=True)
class Dense(Layer):
    """``Dense(300, activation="relu")``. ``in_features`` is torch's declared input size: when set,
    the input's last axis must match it (Keras infers it instead).

    >>> from paramcalc import estimate, Sequential, Dense
    >>> estimate(Sequential([Dense(300)]), input_shape=(20020, 1)).params
    600
    """

    units: Dim = 0
    activation: str | None = None
    use_bias: bool = True
    in_features: Dim | None = None

    def __post_init__(self) -> None:
        self._set("units", self._size_arg("units", self.units))
        if self.in_features is not None:
            self._set("in_features", self._size_arg("in_features", self.in_features))
        self._set("activation", normalize_activation(self.activation, self.name))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank < 2:
            raise ctx.shape_error(
                f"{self.display_type} needs an input with a feature axis after the batch axis, "
                f"received shape {format_shape(x.shape)}",
                fix="give input_shape at least one axis, e.g. (20020,)",
            )
        features = x.shape[-1]
        if self.in_features is not None:
            ctx.require_equal(
                features, self.in_features,
                f"{self.display_type} expects {self.in_features} input features on the last axis, "
                f"received {features} (input shape {format_shape(x.shape)})",
                fix=f"set in_features={features}, or reshape the input so its last axis has "
                    f"{self.in_features} features",
            )
        units = self.units
        positions = prod(x.shape[:-1])  # batch axis included: every position gets the same kernel
        outputs = positions * units
        weights = [Weight("kernel", (features, units))]
        flops = 2 * positions * features * units + ACTIVATION_FLOPS[self.activation] * outputs
        if self.use_bias:
            weights.append(Weight("bias", (units,)))
            flops = flops + outputs
        return ctx.result(x.with_shape(x.shape[:-1] + (units,)), weights=weights,
                          macs=positions * features * units, flops=flops)

    def work(self, call) -> Work:
        x, out = call.input_shapes[0], call.output_shape
        activation = activation_kernels(self.activation, prod(out))
        has_bias = any(w.name == "bias" for w in call.weights)
        return self.described(weight_products=((prod(x[:-1]), x[-1], out[-1]),), kernels=activation,
                              host_ops=1 + len(activation), bias_elements=prod(out) if has_bias else 0,
                              has_bias=has_bias, fused_bias=True, fused_activation=self.activation, autocast_casts=weight_casts(call))

    def split_weights(self, weights: tuple, style: str, ranks: int) -> tuple | None:
        """Colwise: the kernel's output columns and the bias split; rowwise: the kernel's input rows split,
        the bias whole (added once, after the sum). torch stores the kernel transposed: (out, in)."""
        from dataclasses import replace

        out = []
        for w in weights:
            if w.name == "kernel":
                rows, cols = w.shape
                out.append(replace(w, shape=(rows, cols // ranks) if style == "colwise" else (rows // ranks, cols)))
            elif w.name == "bias" and style == "colwise":
                out.append(replace(w, shape=(w.shape[0] // ranks,)))
            else:
                out.append(w)
        stored = tuple((o.shape[1], o.shape[0]) if o.name == "kernel" else o.shape for o in out if not o.buffer)
        return tuple(out), stored

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        """A split of the rows (the sequence, under sequence parallelism): each rank multiplies its rows
        by the whole kernel. A split of the features sums partial products: that needs ``rowwise``."""
        split = axes[0] if axes else None
        if split is None or split.axis == len(call.input_shapes[0]) - 1:
            return super().split_share(call, axes, parts, axis_of)
        return (split,), self

    def saved(self, call, rules: SavingRules) -> list:
        return _kernel_layer_saved(self, call, rules)


def _kernel_layer_saved(layer, call, rules: SavingRules) -> list:
    """What a Dense or EinsumDense keeps: its input, for the kernel's gradient only (a frozen kernel is read
    for the input gradient, and counted apart; a bias gradient needs neither), and what its activation keeps."""
    kernel_trains = any(layer.trains(w) for w in call.weights if w.name != "bias")
    return (inputs_kept(call, rules)[:1] if kernel_trains else []) + fused_activation_saved(call, layer.activation,
                                                                                            rules)


_EINSUM_FORMS = (  # Keras' three forms: no ellipsis, one on the left of input and output, one on the right
    (re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)"), None),
    (re.compile(r"\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)"), "left"),
    (re.compile(r"([a-zA-Z]{2,})\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\."), "right"),
)


def einsum_parts(equation: str) -> tuple | None:
    """(input letters, kernel letters, output letters, where "..." stands: None, "left" or "right") of an
    EinsumDense equation, or None where it is none of Keras' forms."""
    for form, ellipsis in _EINSUM_FORMS:
        found = form.fullmatch(equation.replace(" ", ""))
        if found:
            return (*found.groups(), ellipsis)
    return None


@register_layer("einsum_dense")
@dataclass(frozen=True)
class EinsumDense(Layer):
    """Keras ``EinsumDense(equation, output_shape, bias_axes=None, activation=None)``: the input times a
    kernel whose axes the equation names, such as ``"abc,cd->abd"`` (a Dense on the last axis) or
    ``"abc,cde->abde"`` (attention's query heads). Each kernel axis takes its size from the output's
    axis of the same letter, or else from the input's. ``output_shape`` excludes the batch, and a None
    in it takes the input's size of that letter. "..." stands for the axes the equation does not name.

    >>> from paramcalc import estimate, Sequential, EinsumDense
    >>> estimate(Sequential([EinsumDense("abc,cde->abde", (None, 8, 16), bias_axes="de")]), input_shape=(10, 64)).params
    8320
    """

    equation: str = "ab,bc->ac"
    output_shape: tuple = ()
    bias_axes: str | None = None
    activation: str | None = None

    def __post_init__(self) -> None:
        parts = einsum_parts(self.equation)
        if parts is None:
            raise LayerConfigError("EinsumDense equations are of the forms ab,bc->ac, ...ab,bc->...ac or "
                                   f"ab...,bc->ac...; received {shown(self.equation)}", layer=self.name,
                                   value=self.equation)
        outputs = self.output_shape if isinstance(self.output_shape, (tuple, list)) else (self.output_shape,)
        self._set("output_shape", tuple(outputs))
        unknown = [c for c in self.bias_axes or "" if c not in parts[2]]
        if unknown:
            raise LayerConfigError(f"bias axis {unknown[0]!r} is not an axis of the output {parts[2]!r}",
                                   layer=self.name, value=self.bias_axes)
        self._set("activation", normalize_activation(self.activation, self.name))

    def _sizes(self, x: TensorSpec, ctx: Context) -> tuple:
        """(the output's shape, each letter's size, the kernel's shape)."""
        ins, kernel, outs, ellipsis = einsum_parts(self.equation)
        elided = x.rank - len(ins)
        if elided < 0 or (ellipsis is None and elided) or (ellipsis == "left" and not elided):
            raise ctx.shape_error(f"{self.equation!r} names {len(ins)} input axes, batch included; the input is "
                                  f"{ctx.format_shape(x.shape)}", fix="pass an input of that rank, or use '...'")
        # the output as Keras lays it out: the batch, then output_shape; the axes "..." stands for after the
        # batch (left) or at the end (right); the output's letters start after the left ones
        shift = elided if ellipsis == "left" else 0
        named = len(outs) - (0 if ellipsis == "left" else 1)
        if len(self.output_shape) != named:
            raise ctx.shape_error(f"output_shape {self.output_shape} gives {len(self.output_shape)} sizes where "
                                  f"{self.equation!r} names {named} output axes after the batch")
        out = [x.shape[0], *self.output_shape]
        if ellipsis == "left":
            out[1:1] = x.shape[1:elided]
        elif ellipsis == "right":
            out.extend(x.shape[x.rank - elided:])
        size = {letter: x.shape[i + shift] for i, letter in enumerate(ins)}
        for i, letter in enumerate(outs):
            given = out[i + shift]
            if letter in size:
                if given is not None:
                    ctx.require_equal(given, size[letter], f"output_shape gives axis {letter!r} the size {given}, "
                                                           f"the input {size[letter]}")
            elif given is None:
                raise ctx.shape_error(f"output_shape leaves axis {letter!r} unset, and the input does not name it")
            else:
                size[letter] = given
            out[i + shift] = size[letter]
        missing = [c for c in kernel if c not in size]
        if missing:
            raise ctx.shape_error(f"kernel axis {missing[0]!r} of {self.equation!r} is neither an input nor an "
                                  "output axis")
        return tuple(out), size, tuple(size[c] for c in kernel)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        out, size, kernel = self._sizes(x, ctx)
        ins, letters, outs, ellipsis = einsum_parts(self.equation)
        weights = [Weight("kernel", kernel)]
        contracted = prod(size[c] for c in letters if c not in outs)
        macs = prod(out) * contracted
        flops = 2 * macs + ACTIVATION_FLOPS[self.activation] * prod(out)
        if self.bias_axes:
            first = min(outs.find(c) for c in self.bias_axes)
            bias = [size[c] if c in self.bias_axes else 1 for c in outs[first:]]
            if ellipsis != "left":
                bias += [1] * (x.rank - len(ins))
            weights.append(Weight("bias", tuple(bias)))
            flops = flops + prod(out)
        return ctx.result(x.with_shape(out), weights=weights, macs=macs, flops=flops)

    def work(self, call) -> Work:
        out = call.output_shape
        _, letters, outs, _ = einsum_parts(self.equation)
        kernel = next(w.shape for w in call.weights if w.name == "kernel")
        columns = prod(d for c, d in zip(letters, kernel) if c in outs)  # the kernel's axes the output keeps
        rows = prod(out) // columns
        activation = activation_kernels(self.activation, prod(out))
        has_bias = any(w.name == "bias" for w in call.weights)
        return self.described(weight_products=((rows, prod(kernel) // columns, columns),), kernels=activation,
                              host_ops=1 + len(activation), bias_elements=prod(out) if has_bias else 0,
                              has_bias=has_bias, fused_activation=self.activation, autocast_casts=weight_casts(call))

    def saved(self, call, rules: SavingRules) -> list:
        return _kernel_layer_saved(self, call, rules)
