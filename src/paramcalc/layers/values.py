"""Graph nodes that compute values rather than tensors, as traced torch code does: sizes, arithmetic
on sizes, parameters read directly (``self.cls_token``), and ``expand`` with sizes from the graph.

Rows of value nodes are left out of tables: they hold no weights and do no tensor work.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import equal, floordiv, is_positive
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec, ValueSpec
from paramcalc.core.work import Work
from paramcalc.layers.reshape import _resolve_axis


def value_of(ctx: Context, spec: object):
    if isinstance(spec, ValueSpec):
        return spec.value
    raise ctx.shape_error(f"{ctx.layer_type} expected a size value, received a tensor")


def fill(entries: tuple, inputs: Sequence, ctx: Context) -> tuple:
    """Entries that are ints, or ("input", k) placeholders for sizes computed in the graph."""
    out = []
    for e in entries:
        if isinstance(e, tuple) and e and e[0] == "input":
            out.append(value_of(ctx, inputs[e[1]]))
        else:
            out.append(e)
    return tuple(out)


def sizes_filled(entries: tuple, inputs: Sequence, ctx: Context) -> tuple:
    """Sizes given as entries (``x.view(b, -1, h)``), or as one tuple of sizes computed in the graph
    (``x.view(x.size()[:-1] + (heads, width))``, ``x.expand(y.shape)``)."""
    sizes = fill(entries, inputs, ctx)
    return sizes[0] if len(sizes) == 1 and isinstance(sizes[0], tuple) else sizes


def _is_items(operand) -> bool:
    """A tuple of entries (a literal tuple of sizes), not one ("input", k) entry."""
    return isinstance(operand, tuple) and not (operand and operand[0] == "input")


@register_layer("size")
@dataclass(frozen=True)
class SizeOf(Layer):
    """``x.size(dim)`` / ``x.shape[dim]`` (one size) or ``x.size()`` / ``x.shape`` (all); ``x.dim()``."""

    dim: int | None = None
    rank_only: bool = False
    is_value = True

    def infer(self, inputs: Sequence, ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.rank_only:
            return ctx.result(ValueSpec(x.rank))
        if self.dim is None:
            return ctx.result(ValueSpec(tuple(x.shape)))
        return ctx.result(ValueSpec(x.shape[_resolve_axis(ctx, self.dim, x.rank, "size dim")]))


@dataclass(frozen=True)
class Comparison:
    """``a op b`` between sizes, kept whole: traced code compares sizes to assert them
    (``torch._assert(h == self.image_size, ...)``), and with symbolic sizes the answer may depend on the
    symbols, so the check that reads it decides, or records the assumption."""

    op: str
    left: object
    right: object

    def margin(self):
        """(test, value): ``equal`` or ``is_positive`` applied to ``value`` says whether the comparison holds."""
        a, b = self.left, self.right
        return {"eq": (equal, (a, b)), "ne": (equal, (a, b)), "lt": (is_positive, (b - a,)),
                "le": (is_positive, (b - a + 1,)), "gt": (is_positive, (a - b,)),
                "ge": (is_positive, (a - b + 1,))}[self.op]

    def holds(self) -> bool | None:
        test, args = self.margin()
        result = test(*args)
        return (not result if result is not None else None) if self.op == "ne" else result


COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
_VALUE_OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "floordiv": floordiv,
              "mod": lambda a, b: a - b * floordiv(a, b), "getitem": None, "concat": None,
              **{op: None for op in COMPARISONS}}


@register_layer("value_op")
@dataclass(frozen=True)
class ValueOp(Layer):
    """Arithmetic on sizes (``h * w``, ``n // 2``), picking one from a tuple of sizes, or joining two
    tuples of sizes (``"concat"``: ``x.size()[:-1] + (heads, width)``).

    ``operands``: ints, ("input", k) for the k-th inbound value, or for ``"concat"`` tuples of those.
    """

    op: str = "mul"
    operands: tuple = ()
    is_value = True

    def __post_init__(self) -> None:
        if self.op not in _VALUE_OPS:
            raise LayerConfigError(f"value op must be one of {', '.join(_VALUE_OPS)}. Received: {shown(self.op)}",
                                   layer=self.name, value=self.op)

    def infer(self, inputs: Sequence, ctx: Context) -> Inferred:
        if self.op == "concat":
            parts = [fill(o, inputs, ctx) if _is_items(o) else fill((o,), inputs, ctx)[0] for o in self.operands]
            if not all(isinstance(p, tuple) for p in parts):
                raise ctx.shape_error(f"cannot join {' and '.join(shown(p) for p in parts)}: not tuples of sizes")
            return ctx.result(ValueSpec(tuple(v for p in parts for v in p)))
        a, b = fill(self.operands, inputs, ctx)
        if self.op == "getitem":
            return ctx.result(ValueSpec(a[b]))
        if self.op in COMPARISONS:
            return ctx.result(ValueSpec(Comparison(self.op, a, b)))
        if type(b) is not int and not hasattr(b, "subs"):
            raise ctx.shape_error(f"cannot compute {self.op} of sizes {shown(a)} and {shown(b)}")
        return ctx.result(ValueSpec(_VALUE_OPS[self.op](a, b)))


@register_layer("check")
@dataclass(frozen=True)
class Check(Layer):
    """A traced model's own check on sizes (``torch._assert(cond, message)``): its message as paramcalc's
    error when the sizes break it; an assumption, as any, when that depends on the symbols."""

    message: str = ""
    is_value = True

    def infer(self, inputs: Sequence, ctx: Context) -> Inferred:
        condition = value_of(ctx, inputs[0])
        if isinstance(condition, Comparison):
            holds = condition.holds()
            if holds is None and condition.op == "eq":
                ctx.assume_equal(condition.left, condition.right)
            elif holds is None and condition.op != "ne":
                ctx.require_positive(condition.margin()[1][0], self.message)
        else:
            holds = bool(condition)
        if holds is False:
            raise ctx.shape_error(f"the model's own check fails: {self.message or 'assertion'}",
                                  fix="give the input the sizes the model checks for (input_shape=...)")
        return ctx.result(ValueSpec(None))


@register_layer("expand")
@dataclass(frozen=True)
class Expand(Layer):
    """torch ``x.expand(*sizes)``: broadcast axes of size 1; -1 keeps an axis. A view: no work."""

    sizes: tuple = ()

    def infer(self, inputs: Sequence, ctx: Context) -> Inferred:
        x = inputs[0]
        sizes = sizes_filled(self.sizes, inputs, ctx)
        lead = len(sizes) - x.rank
        if lead < 0:
            raise ctx.shape_error(f"expand: {len(sizes)} sizes for a tensor of rank {x.rank}")
        shape = []
        for i, size in enumerate(sizes):
            if type(size) is int and size == -1:
                shape.append(x.shape[i - lead])
            else:
                shape.append(size)
        return ctx.result(TensorSpec(tuple(shape), x.dtype))

    def work(self, call) -> Work:
        return self.view_work()


@register_layer("parameter")
@dataclass(frozen=True)
class Parameter(Layer):
    """A parameter or buffer that code reads directly (``self.cls_token``): its own shape, no batch axis."""

    shape: tuple = ()
    buffer: bool = False

    def infer(self, inputs: Sequence, ctx: Context) -> Inferred:
        weight = Weight("value", tuple(self.shape), buffer=self.buffer)
        return ctx.result(TensorSpec(tuple(self.shape)), weights=[weight])

    def work(self, call) -> Work:
        # the parameter itself: no device work, and no new storage beyond the weight counted apart
        return self.described(device_free=True, is_weight=True, host_ops=0.5)
