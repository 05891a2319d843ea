"""Layers that combine several tensors: elementwise merges (with broadcasting), Concatenate, Dot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, exact_div, prod
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.splits import per_element_share
from paramcalc.core.work import SavingRules, Work, inputs_kept

# merges whose gradient with respect to one input reads the others
READS_INPUTS = ("multiply", "divide", "maximum", "minimum")

MERGE_OPS = ("add", "subtract", "multiply", "divide", "average", "maximum", "minimum")


def broadcast(ctx: Context, shapes: Sequence[tuple], owner: str) -> tuple:
    """numpy broadcasting of shapes (aligned on the right); undecidable sizes become assumptions."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        sizes = [d for d in dims if not (type(d) is int and d == 1)]
        if not sizes:
            out.append(1)
            continue
        first = sizes[0]
        for other in sizes[1:]:
            ctx.require_equal(other, first,
                              lambda: f"{owner} cannot broadcast shapes {', '.join(ctx.format_shape(s) for s in shapes)}: "
                              f"axis {i - rank} has sizes {first} and {other}")
        out.append(first)
    return tuple(out)


@register_layer("merge")
@dataclass(frozen=True)
class Merge(Layer):
    """Elementwise merge of 2+ tensors: Keras Add/Subtract/Multiply/Average/Maximum/Minimum, torch +,
    -, *, / (shapes broadcast). FLOPs: one per output element per extra input (Average one more)."""

    op: str = "add"

    def __post_init__(self) -> None:
        if self.op not in MERGE_OPS:
            raise LayerConfigError(f"merge op must be one of {', '.join(MERGE_OPS)}. Received: {shown(self.op)}",
                                   layer=self.name, value=self.op)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) < 2 or (self.op in ("subtract", "divide") and len(inputs) != 2):
            need = "exactly 2" if self.op in ("subtract", "divide") else "at least 2"
            raise ctx.shape_error(f"{self.display_type} takes {need} inputs, received {len(inputs)}")
        shape = broadcast(ctx, [t.shape for t in inputs], self.display_type)
        out = inputs[0].with_shape(shape)
        per = len(inputs) - 1 + (1 if self.op == "average" else 0)
        return ctx.result(out, flops=per * out.numel)

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules) if self.op in READS_INPUTS else []

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return per_element_share(self, call, axes)


@register_layer("concatenate")
@dataclass(frozen=True)
class Concatenate(Layer):
    """Keras Concatenate(axis=-1) / torch.cat(dim): sizes add up on ``axis`` (batch = 0), the other
    axes must agree."""

    axis: int = -1

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if not inputs:
            raise ctx.shape_error("Concatenate takes at least one input")
        rank = inputs[0].rank
        if any(t.rank != rank for t in inputs):
            raise ctx.shape_error("Concatenate needs inputs of one rank, received "
                                  + ", ".join(ctx.format_shape(t.shape) for t in inputs))
        if not -rank <= self.axis < rank:
            raise ctx.shape_error(f"Concatenate axis {self.axis} is out of range for rank {rank}")
        axis = self.axis % rank
        total: Dim = 0
        for t in inputs:
            for i in range(rank):
                if i != axis:
                    ctx.require_equal(t.shape[i], inputs[0].shape[i],
                                      lambda: "Concatenate needs matching shapes except on the concat axis, "
                                      "received " + ", ".join(ctx.format_shape(s.shape) for s in inputs))
            total = total + t.shape[axis]
        shape = inputs[0].shape[:axis] + (total,) + inputs[0].shape[axis + 1:]
        return ctx.result(inputs[0].with_shape(shape))


@register_layer("dot")
@dataclass(frozen=True)
class Dot(Layer):
    """Keras Dot(axes): batched dot product of two tensors over ``axes`` (one per input, batch = 0).

    (B, n, d) . (B, m, d) on axes (2, 2) -> (B, n, m); a result with only the batch axis left gets a
    trailing axis of 1, as in Keras.
    """

    axes: tuple = (-1, -1)
    normalize: bool = False

    def __post_init__(self) -> None:
        axes = (self.axes, self.axes) if type(self.axes) is int else tuple(self.axes)
        if len(axes) != 2 or any(type(a) is not int for a in axes):
            raise LayerConfigError(f"Dot expects axes to be an int or a pair. Received: {shown(self.axes)}",
                                   layer=self.name, value=self.axes)
        self._set("axes", axes)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) != 2:
            raise ctx.shape_error(f"Dot takes 2 inputs, received {len(inputs)}")
        x, y = inputs
        ax = [a % t.rank for a, t in zip(self.axes, inputs)]
        if 0 in ax:
            raise ctx.shape_error("Dot cannot contract the batch axis")
        contracted = x.shape[ax[0]]
        ctx.require_equal(y.shape[ax[1]], contracted,
                          lambda: f"Dot: axis sizes differ ({contracted} vs {y.shape[ax[1]]}) for inputs "
                          f"{ctx.format_shape(x.shape)} and {ctx.format_shape(y.shape)}")
        shape = tuple(d for i, d in enumerate(x.shape) if i != ax[0]) + \
            tuple(d for i, d in enumerate(y.shape) if i not in (0, ax[1]))
        if len(shape) == 1:
            shape = shape + (1,)
        out = x.with_shape(shape)
        macs = out.numel * contracted
        norm = 3 * (x.numel + y.numel) if self.normalize else 0
        return ctx.result(out, macs=macs, flops=2 * macs + norm)

    def work(self, call) -> Work:
        return products_between_activations(call)

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)


def products_between_activations(call, columns: Dim = 1) -> Work:
    """A product of two activations (no weight): ``columns`` output columns, the last input axis inner."""
    out = prod(call.output_shape)
    inner = call.input_shapes[0][-1]
    rows = out // max(columns, 1) if type(columns) is int else exact_div(out, columns)
    return call.layer.described(activation_products=((rows, inner, columns),),
                                activation_macs=call.macs_per_batch)

