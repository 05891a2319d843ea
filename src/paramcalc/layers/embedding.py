"""Embedding: a lookup table (input_dim, output_dim); integer ids (..., ) -> vectors (..., output_dim)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, prod
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work

INDEX_BYTES = 8  # the int64 ids its backward reads


@register_layer("embedding")
@dataclass(frozen=True)
class Embedding(Layer):
    """Keras Embedding(input_dim, output_dim) / torch nn.Embedding(num_embeddings, embedding_dim).

    A gather, not arithmetic: 0 FLOPs.
    """

    input_dim: Dim = 1
    output_dim: Dim = 1

    def __post_init__(self) -> None:
        self._set("input_dim", self._size_arg("input_dim", self.input_dim))
        self._set("output_dim", self._size_arg("output_dim", self.output_dim))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        out = TensorSpec(x.shape + (self.output_dim,), "float32" if x.dtype.startswith("int") else x.dtype)
        return ctx.result(out, weights=[Weight("embeddings", (self.input_dim, self.output_dim))])

    def work(self, call) -> Work:
        # a gather: reads a row of the table and writes it, per output element
        return self.described(memory_elements=2 * prod(call.output_shape), float_inputs=False)

    def saved(self, call, rules: SavingRules) -> list:
        return [(call.inbound[0], prod(call.input_shapes[0]) * INDEX_BYTES)]

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        # a lookup per index: ids split along an axis (the sequence) give rows split along the same axis;
        # the table stays whole on every rank
        return (axes[0],), self
