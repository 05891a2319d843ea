"""Rotary position embeddings (RoPE): each pair of features of each position rotated by an angle that
grows with the position, as Llama-family attention applies them to its queries and keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import floordiv
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules


@register_layer("rotary_embedding")
@dataclass(frozen=True)
class RotaryEmbedding(Layer):
    """KerasHub's RotaryEmbedding(sequence_axis=1, feature_axis=-1): the input's shape kept, no weights.
    FLOPs, one per arithmetic operation of ``x * cos + rotate_half(x) * sin``: 3 per element, and the
    negation of half of them; the angles, their sines and cosines, 3 per (position, feature pair). Its
    backward reads the cosines and sines."""

    sequence_axis: int = 1
    feature_axis: int = -1

    def __post_init__(self) -> None:
        for name in ("sequence_axis", "feature_axis"):
            if type(getattr(self, name)) is not int:
                raise LayerConfigError(f"{name} must be an int. Received: {shown(getattr(self, name))}",
                                       layer=self.name, value=getattr(self, name))

    def _sizes(self, shape: tuple) -> tuple:
        return shape[self.sequence_axis], shape[self.feature_axis]

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        for axis in (self.sequence_axis, self.feature_axis):
            if not -x.rank <= axis < x.rank:
                raise ctx.shape_error(f"{self.display_type} axis {axis} is out of range for "
                                      f"{ctx.format_shape(x.shape)}")
        positions, features = self._sizes(x.shape)
        if type(features) is int and features % 2:
            raise ctx.shape_error(f"{self.display_type} rotates pairs of features: {features} is odd")
        return ctx.result(x, flops=3 * x.numel + floordiv(x.numel, 2) + 3 * positions * floordiv(features, 2))

    def saved(self, call, rules: SavingRules) -> list:
        positions, features = self._sizes(call.input_shapes[0])
        return [((call.name, "cos and sin"), 2 * positions * features * rules.activation_bytes)]

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        x = call.input_shapes[0]
        kept = {self.sequence_axis % len(x), self.feature_axis % len(x)}
        if all(a is None or a.axis not in kept for a in axes):
            return tuple(axes[:1]), self  # heads or batch split: each rank rotates its own
        return None
