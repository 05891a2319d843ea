"""Learned and fixed scalings that Keras' own applications define as layer classes: ConvNeXt's
``LayerScale`` (each channel times a trained ``gamma``) and InceptionResNetV2's ``CustomScaleLayer``
(``a + b * scale``, the residual branch scaled by a constant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, inputs_kept
from paramcalc.layers.merge import broadcast


@register_layer("layer_scale")
@dataclass(frozen=True)
class LayerScale(Layer):
    """``x * gamma``, ``gamma`` one trained value per channel of the last axis (``projection_dim``).

    >>> from paramcalc import estimate, Sequential, LayerScale
    >>> estimate(Sequential([LayerScale(projection_dim=96)]), input_shape=(56, 56, 96)).params
    96
    """

    projection_dim: int | None = None

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        channels = x.shape[-1]
        if self.projection_dim is not None:
            ctx.require_equal(channels, self.projection_dim, f"{self.display_type} scales {self.projection_dim} "
                              f"channels, the input has {channels}")
        return ctx.result(x, weights=[Weight("gamma", (channels,))], flops=x.numel)

    def saved(self, call, rules: SavingRules) -> list:
        # gamma's gradient reads the input
        return inputs_kept(call, rules)[:1]


@register_layer("scaled_sum")
@dataclass(frozen=True)
class ScaledSum(Layer):
    """``inputs[0] + inputs[1] * scale``: no weights; the constant's product saves nothing for the backward."""

    scale: float = 1.0

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) != 2:
            raise ctx.shape_error(f"{self.display_type} takes 2 inputs (the block's input and its residual), "
                                  f"received {len(inputs)}")
        out = inputs[0].with_shape(broadcast(ctx, [t.shape for t in inputs], self.display_type))
        return ctx.result(out, flops=2 * out.numel)
