"""Elementwise kinds: activations, dropout and identity. Shape in = shape out, no weights.

FLOPs per element count each arithmetic or transcendental operation of the textbook formula as one
FLOP (exp, erf, tanh, log each 1). These are the conventions of paramcalc's docs
(docs/conventions.md); the step-time model, not these counts, is what is calibrated against hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.splits import per_element_share
from paramcalc.core.work import SavingRules, Work, inputs_kept, kernel, output_kept

# function name -> FLOPs per element, with the formula counted
ACTIVATION_FLOPS: dict[str, int] = {
    "linear": 0,  # identity
    "relu": 1,  # max(x, 0)
    "relu6": 2,  # min(max(x, 0), 6)
    "leaky_relu": 2,  # x if x > 0 else a*x: compare, multiply
    "prelu": 2,
    "elu": 3,  # x if x > 0 else a*(exp(x) - 1)
    "celu": 4,  # max(0,x) + min(0, a*(exp(x/a) - 1))
    "selu": 4,  # scale * elu(x)
    "sigmoid": 4,  # 1 / (1 + exp(-x))
    "hard_sigmoid": 4,  # relu6(x + 3) / 6
    "tanh": 1,
    "hard_tanh": 2,  # min(max(x, -1), 1)
    "softplus": 3,  # log(1 + exp(x))
    "softsign": 3,  # x / (1 + |x|)
    "silu": 5,  # x * sigmoid(x)
    "hard_silu": 5,  # x * hard_sigmoid(x)
    "gelu": 5,  # 0.5 * x * (1 + erf(x / sqrt(2)))
    "mish": 5,  # x * tanh(softplus(x))
    "exponential": 1,
    "softmax": 5,  # max, subtract, exp, sum, divide
    "log_softmax": 5,  # max, subtract, exp, sum, log-subtract
}

# Other spellings the frameworks use for the same functions.
ACTIVATION_ALIASES: dict[str, str] = {
    "swish": "silu",
    "hard_swish": "hard_silu",
    "hardswish": "hard_silu",
    "hardsigmoid": "hard_sigmoid",
    "hardtanh": "hard_tanh",
    "leakyrelu": "leaky_relu",
    "logsoftmax": "log_softmax",
    "identity": "linear",
    "exp": "exponential",
}


# Activations whose backward reads their output (the others read their input): torch's ELU, ReLU6 and
# hardtanh read the input, TensorFlow's ELU and ReLU6 gradients the output (checked against torch's
# saved-tensor hooks and TensorFlow's registered gradients, nn_grad.py)
OUTPUT_SAVERS = {"relu", "sigmoid", "tanh", "softmax", "log_softmax"}
TF_OUTPUT_SAVERS = OUTPUT_SAVERS | {"elu", "relu6"}


def activation_kernels(function: str, elements) -> tuple:
    """The per-element kernel an activation runs, priced as a softmax, a tanh (slow on CPUs) or a
    ReLU-like pass."""
    if function == "linear":
        return ()
    return (kernel(function if function in ("softmax", "tanh") else "relu", elements),)


def keeps_output(function: str, rules: SavingRules) -> bool:
    """Whether the framework's gradient of ``function`` reads its output rather than its input."""
    return function in (TF_OUTPUT_SAVERS if rules.tensorflow else OUTPUT_SAVERS)


def fused_activation_saved(call, function: str, rules: SavingRules) -> list:
    """What a layer's own activation (Keras' ``activation=``) keeps: its output, or the pre-activation too."""
    if function == "linear":
        return []
    out = output_kept(call, rules)
    return out if keeps_output(function, rules) else output_kept(call, rules, "pre") + out


def normalize_activation(function: object, layer: str | None = None) -> str:
    """The canonical name of an activation, or an error listing the known ones."""
    if function is None:
        return "linear"
    if type(function) is str:
        key = function.lower()
        key = ACTIVATION_ALIASES.get(key, key)
        if key in ACTIVATION_FLOPS:
            return key
    known = ", ".join(sorted(ACTIVATION_FLOPS))
    raise LayerConfigError(
        f"unknown activation {shown(function)}; known: {known}",
        layer=layer, value=function,
        fix="use one of these names, or register a layer kind for a custom activation",
    )


@register_layer("activation")
@dataclass(frozen=True)
class Activation(Layer):
    """An elementwise activation: ``Activation("relu")``; torch ``nn.ReLU()`` maps here too.

    ``axis`` matters for softmax-like functions only (it changes no shape).
    """

    function: str = "linear"
    axis: int = -1

    def __post_init__(self) -> None:
        self._set("function", normalize_activation(self.function, self.name))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        return ctx.result(x, flops=ACTIVATION_FLOPS[self.function] * x.numel)

    def work(self, call) -> Work:
        return self.described(kernels=activation_kernels(self.function, prod(call.output_shape)))

    def saved(self, call, rules: SavingRules) -> list:
        if self.function == "linear":
            return []
        if self.function == "softsign" and not rules.tensorflow:  # torch's x / (1 + |x|), composite: the divisor too
            return inputs_kept(call, rules)[:1] + output_kept(call, rules, "divisor")
        return output_kept(call, rules) if keeps_output(self.function, rules) else inputs_kept(call, rules)[:1]

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        across = (self.axis,) if self.function in ("softmax", "log_softmax") else ()
        return per_element_share(self, call, axes, across)


@register_layer("dropout")
@dataclass(frozen=True)
class Dropout(Layer):
    """Dropout (and its noise cousins): identity in shape; in training it scales by a random mask,
    counted as one FLOP per element. ``noise_axes``: the axes the noise varies along, where it is drawn
    once per sample and channel (torch's Dropout1d/2d/3d: ``(0, 1)``) or once per sample (stochastic
    depth by row: ``(0,)``; by batch: ``()``) and broadcast over the rest; None: one value per element."""

    rate: float = 0.5
    noise_axes: tuple | None = None

    def __post_init__(self) -> None:
        rate = self.rate
        if type(rate) not in (int, float) or not 0 <= rate <= 1:
            raise LayerConfigError(
                f"Dropout expects rate to be a float value between 0 and 1. Received: rate={shown(rate)}",
                layer=self.name, value=rate,
            )

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        return ctx.result(x, flops=0 if self.rate == 0 else x.numel)

    def work(self, call) -> Work:
        # a rate of 0 hands its input back unchanged
        return self.described(kernels=(kernel("dropout", prod(call.output_shape)),) if self.rate else (),
                              aliases_input=not self.rate)

    def saved(self, call, rules: SavingRules) -> list:
        if not self.rate:
            return []
        shape = call.input_shapes[0]
        if self.noise_axes is not None:  # a noise tensor of the input's dtype, as small as its axes
            return [((call.name, "mask"), prod([shape[a] for a in self.noise_axes]) * rules.activation_bytes)]
        # a one-byte mask; on CPUs torch multiplies by a noise tensor of the input's dtype and keeps it
        per_element = rules.activation_bytes if rules.framework == "torch" and rules.cpu else 1
        return [((call.name, "mask"), prod(shape) * per_element)]

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return per_element_share(self, call, axes)


@register_layer("identity")
@dataclass(frozen=True)
class Identity(Layer):
    """Passes its input through unchanged: no weights, no work."""

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        return ctx.result(ctx.single(inputs))

    def work(self, call) -> Work:
        return self.view_work()

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return tuple(axes[:1]) * len(call.output_shapes), self


@register_layer("opaque")
@dataclass(frozen=True)
class Opaque(Layer):
    """A layer whose code paramcalc never runs (a Keras Lambda): its output shape must be declared
    (``output_shape``, one sample's shape); it is taken as having no weights and no work."""

    output_shape: tuple | None = None
    origin: str = ""

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.output_shape is None:
            raise ctx.shape_error(
                f"{self.display_type} is opaque (its code is never decoded or run{', ' + self.origin if self.origin else ''}): "
                "its output shape is unknown",
                fix="give the layer an output_shape, or register a rule for it with register_keras_layer")
        from paramcalc.core.graph import normalize_shape

        return ctx.result(x.with_shape((x.shape[0],) + normalize_shape(self.output_shape, "output_shape")))
