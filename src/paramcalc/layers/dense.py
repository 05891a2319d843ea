"""Dense (Keras) / Linear (torch): a kernel applied on the LAST axis, for inputs of any rank >= 2.

On an input (batch, d1, ..., dk, d) the kernel is (d, units) and it is applied at each of the
d1*...*dk positions separately: output (batch, d1, ..., dk, units). This is the rule behind the seed
case: on (None, 20020, 1) a Dense(300) has 600 parameters and outputs (None, 20020, 300).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, prod
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
        # its input, for the kernel's gradient only: a frozen Dense reads its weights (counted apart) for
        # the input gradient, and a bias gradient needs neither
        kernel_trains = any(self.trains(w) for w in call.weights if w.name != "bias")
        return (inputs_kept(call, rules)[:1] if kernel_trains else []) + fused_activation_saved(call, self.activation,
                                                                                               rules)
