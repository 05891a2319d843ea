"""ChannelAffine: ``x * weight + bias`` along one channel axis, with the weight and bias read as parameters
elsewhere in the program. Traced torch code calls the functional norms (``F.batch_norm``,
``F.group_norm``, ``F.layer_norm``) with a module's own ``weight`` and ``bias``; the normalisation is its
own kind, and this applies the affine terms, each a (C,) tensor broadcast along ``axis`` (torch's channel
axis 1; the last axis for a layer norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules
from paramcalc.layers.reshape import _resolve_axis


@register_layer("channel_affine")
@dataclass(frozen=True)
class ChannelAffine(Layer):
    """Inputs: the tensor, then one (C,) tensor per term in ``terms`` ("weight" multiplies, "bias" adds)."""

    axis: int = 1
    terms: tuple = ("weight", "bias")

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) != 1 + len(self.terms):
            raise ctx.shape_error(f"{self.display_type} takes the tensor and its {', '.join(self.terms)}, "
                                  f"received {len(inputs)} inputs")
        x = inputs[0]
        channels = x.shape[_resolve_axis(ctx, self.axis, x.rank, "channel axis")]
        for term, spec in zip(self.terms, inputs[1:]):
            if len(spec.shape) != 1:
                raise ctx.shape_error(f"{self.display_type}: the {term} must have one axis, received "
                                      f"{ctx.format_shape(spec.shape)}")
            ctx.require_equal(spec.shape[0], channels, f"{self.display_type}: a {term} of {spec.shape[0]} for "
                              f"{channels} channels")
        return ctx.result(x, flops=len(self.terms) * x.numel)

    def saved(self, call, rules: SavingRules) -> list:
        # torch applies the terms inside the norm's own kernel, whose backward makes the normalised
        # values again from the input and the statistics the norm keeps: nothing more is kept
        return []
