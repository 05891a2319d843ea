"""Split (torch ``x.chunk(n, dim)``, ``torch.split(x, [sizes], dim)``): pieces of the input along one
axis, each a view of it. No weights, no work.

torch's chunk gives pieces of ``ceil(size / n)`` with a smaller last one, and fewer than ``n`` pieces
when that size leaves nothing for the last ones; the traced program has already unpacked ``n`` pieces, so
a size that yields another count is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import Dim, exact_div, floordiv
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import Work
from paramcalc.layers.reshape import _resolve_axis
from paramcalc.layers.values import fill


@register_layer("split")
@dataclass(frozen=True)
class Split(Layer):
    """``Split(axis, chunks=n)`` or ``Split(axis, sizes=(a, b, ...))``; ``axis`` counts the batch axis as 0.

    >>> from paramcalc import estimate, Sequential, Split
    >>> est = estimate(Sequential([Split(axis=-1, chunks=2)]), input_shape=(8,))
    >>> est.output_shape[1:]
    (4,)
    """

    axis: int = -1
    chunks: int | None = None
    sizes: tuple | None = None

    def __post_init__(self) -> None:
        if (self.chunks is None) == (self.sizes is None):
            raise LayerConfigError(f"{self.display_type} takes chunks or sizes, one of them. Received: "
                                   f"chunks={shown(self.chunks)}, sizes={shown(self.sizes)}", layer=self.name)
        if self.chunks is not None and (type(self.chunks) is not int or self.chunks < 1):
            raise LayerConfigError(f"{self.display_type} expects chunks to be a positive int. Received: "
                                   f"{shown(self.chunks)}", layer=self.name, value=self.chunks)
        if self.sizes is not None:  # sizes, or ("input", k): the k-th inbound value, a size the program computed
            self._set("sizes", tuple(s if isinstance(s, tuple) else self._size_arg("sizes", s) for s in self.sizes))

    @property
    def output_structure(self) -> tuple:
        return tuple(range(self.chunks if self.chunks is not None else len(self.sizes)))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = inputs[0]
        axis = _resolve_axis(ctx, self.axis, x.rank, "split axis")
        if axis == 0:
            raise ctx.shape_error(f"{self.display_type} along the batch axis is not modelled")
        sizes = None if self.sizes is None else fill(self.sizes, inputs, ctx)
        pieces = self._pieces(ctx, x.shape[axis], sizes)
        outs = [x.with_shape(x.shape[:axis] + (p,) + x.shape[axis + 1:]) for p in pieces]
        return ctx.result(outs[0], extra_outputs=outs[1:])

    def _pieces(self, ctx: Context, length: Dim, sizes: tuple | None) -> tuple:
        if sizes is not None:
            total = sum(sizes[1:], sizes[0]) if sizes else 0
            ctx.require_equal(total, length, lambda: f"{self.display_type}: sizes {ctx.format_shape(sizes)} add up to "
                              f"{total}, the axis has {length}")
            return sizes
        even = exact_div(length, self.chunks)
        if even is not None:
            return (even,) * self.chunks
        if type(length) is not int:
            ctx.assume_divisible(length, self.chunks)
            return (floordiv(length, self.chunks),) * self.chunks
        piece = -(-length // self.chunks)
        pieces = [piece] * (length // piece) + ([length % piece] if length % piece else [])
        if len(pieces) != self.chunks:
            raise ctx.shape_error(f"chunk({self.chunks}) of an axis of {length} gives {len(pieces)} pieces "
                                  f"({', '.join(map(str, pieces))}), and the model uses {self.chunks}",
                                  fix="give the axis a size that splits into that many pieces")
        return tuple(pieces)

    def work(self, call) -> Work:
        return self.view_work()
