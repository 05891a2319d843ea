"""Embedding: a lookup table (input_dim, output_dim); integer ids (..., ) -> vectors (..., output_dim)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, prod
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work, inputs_kept

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


@register_layer("reversible_embedding")
@dataclass(frozen=True)
class ReversibleEmbedding(Embedding):
    """KerasHub's ReversibleEmbedding(input_dim, output_dim, tie_weights): a lookup table called as an
    Embedding, or with ``reverse=True`` as the projection of vectors onto its rows, (..., output_dim) ->
    (..., input_dim): a causal LM's head, through the table itself (``tie_weights``) or a
    ``reverse_embeddings`` kernel (output_dim, input_dim) of its own. Both weights belong to the layer
    whichever call is made, so each call lists both; a second call with the other ``reverse`` is another
    paramcalc layer tied to the first.
    """

    tie_weights: bool = True
    reverse: bool = False

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        weights = [Weight("embeddings", (self.input_dim, self.output_dim))]
        if not self.tie_weights:
            weights.append(Weight("reverse_embeddings", (self.output_dim, self.input_dim)))
        if not self.reverse:
            looked_up = super().infer(inputs, ctx)
            return ctx.result(looked_up.outputs[0], weights=weights)
        x = ctx.single(inputs)
        ctx.require_equal(x.shape[-1], self.output_dim, f"{self.display_type} called in reverse projects vectors "
                          f"of {self.output_dim} features, received {ctx.format_shape(x.shape)}")
        macs = prod(x.shape[:-1]) * self.output_dim * self.input_dim
        return ctx.result(x.with_shape(x.shape[:-1] + (self.input_dim,)), weights=weights, macs=macs, flops=2 * macs)

    def work(self, call) -> Work:
        if not self.reverse:
            return super().work(call)
        x = call.input_shapes[0]
        return self.described(weight_products=((prod(x[:-1]), x[-1], call.output_shape[-1]),), host_ops=1)

    def saved(self, call, rules: SavingRules) -> list:
        if not self.reverse:
            return super().saved(call, rules)
        # the product's input, for the gradient of the table (or kernel) it projects onto
        return inputs_kept(call, rules)[:1] if any(self.trains(w) for w in call.weights) else []

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        if not self.reverse:
            return super().split_share(call, axes, parts, axis_of)
        return Layer.split_share(self, call, axes, parts, axis_of)


@register_layer("position_embedding")
@dataclass(frozen=True)
class PositionEmbedding(Layer):
    """KerasHub's PositionEmbedding(sequence_length): a trained table (sequence_length, features) whose
    first rows, one per position of the input (..., length, features), are broadcast to the input's
    shape (the input is read for its shape only). No FLOPs: a slice and a copy."""

    sequence_length: Dim = 1

    def __post_init__(self) -> None:
        self._set("sequence_length", self._size_arg("sequence_length", self.sequence_length))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if x.rank < 2:
            raise ctx.shape_error(f"{self.display_type} needs (..., length, features) inputs, received "
                                  f"{ctx.format_shape(x.shape)}")
        ctx.require_positive(self.sequence_length - x.shape[-2] + 1,
                             f"{self.display_type} holds {self.sequence_length} positions, the input has {x.shape[-2]}",
                             fix=f"raise sequence_length to {x.shape[-2]} or more, or pass shorter sequences")
        return ctx.result(x, weights=[Weight("embeddings", (self.sequence_length, x.shape[-1]))])

    def work(self, call) -> Work:
        return self.described(memory_elements=prod(call.output_shape), float_inputs=False)

    def saved(self, call, rules: SavingRules) -> list:
        return []  # the table's gradient is the output's, summed over the batch: nothing kept
