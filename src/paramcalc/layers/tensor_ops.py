"""Tensor operations that torch code calls directly (seen in traced graphs): view/reshape with the
batch axis, transpose/permute, (un)squeeze, indexing, reductions, matmul, arithmetic with a constant;
and PReLU, an activation with weights."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from paramcalc.core.dims import Dim, as_dim, floordiv, prod
from paramcalc.core.errors import DimensionError, LayerConfigError, SpecError
from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.splits import (
    per_element_share,
    permuted_split,
    product_split,
    regrouped_split,
)
from paramcalc.core.work import SavingRules, Work, inputs_kept
from paramcalc.layers.merge import broadcast, products_between_activations
from paramcalc.layers.reshape import _fill_inferred, _resolve_axis


@register_layer("view")
@dataclass(frozen=True)
class View(Layer):
    """torch ``x.view(shape)`` / ``reshape``: the whole shape, batch axis included, one -1 allowed.
    Entries may be symbolic (from ``x.size(0)``)."""

    shape: tuple = ()

    def __post_init__(self) -> None:
        dims = []
        for i, d in enumerate(self.shape):
            if (type(d) is int and d == -1) or (isinstance(d, tuple) and d[:1] == ("input",)):
                dims.append(d)  # -1, or a size computed in the graph (its inbound position)
                continue
            try:
                dims.append(as_dim(d, f"view shape[{i}]"))
            except DimensionError as err:
                raise LayerConfigError(err.message, layer=self.name, value=d) from None
        if dims.count(-1) > 1:
            raise LayerConfigError(f"only one dimension can be inferred. Received: shape={list(self.shape)}",
                                   layer=self.name, value=self.shape)
        self._set("shape", tuple(dims))

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        from paramcalc.layers.values import sizes_filled

        x = inputs[0]
        shape = sizes_filled(self.shape, inputs, ctx)
        message = f"shape '{[str(d) for d in shape]}' is invalid for input of size {x.numel}"
        dims = _fill_inferred(ctx, x.numel, shape, {"mismatch": message, "indivisible": message})
        return ctx.result(x.with_shape(dims))

    def work(self, call) -> Work:
        return self.view_work()

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return _reshaped_share(self, call, axes)


@register_layer("transpose")
@dataclass(frozen=True)
class Transpose(Layer):
    """torch ``permute(dims)`` (all axes, batch included) or ``transpose(a, b)`` (``swap=(a, b)``)."""

    dims: tuple | None = None
    swap: tuple | None = None

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.swap is not None:
            a, b = (_resolve_axis(ctx, d, x.rank, "transpose dim") for d in self.swap)
            order = list(range(x.rank))
            order[a], order[b] = order[b], order[a]
        else:
            order = [_resolve_axis(ctx, d, x.rank, "permute dim") for d in self.dims]
            if sorted(order) != list(range(x.rank)):
                raise ctx.shape_error(f"permute: dims {self.dims} are not a permutation of the {x.rank} axes")
        return ctx.result(x.with_shape(tuple(x.shape[i] for i in order)))

    def work(self, call) -> Work:
        return self.view_work()

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        if axes[0] is None:
            return (None,), self
        rank = len(call.input_shapes[0])
        order = list(range(rank))
        if self.swap is not None:
            a, b = (d % rank for d in self.swap)
            order[a], order[b] = order[b], order[a]
        else:
            order = [d % rank for d in self.dims]
        return permuted_split(axes[0], order), self


@register_layer("unsqueeze")
@dataclass(frozen=True)
class Unsqueeze(Layer):
    """torch ``unsqueeze(dim)``: a new axis of size 1."""

    dim: int = 1

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        axis = _resolve_axis(ctx, self.dim, x.rank + 1, "unsqueeze dim")
        return ctx.result(x.with_shape(x.shape[:axis] + (1,) + x.shape[axis:]))

    def work(self, call) -> Work:
        return self.view_work()

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return _reshaped_share(self, call, axes)


@register_layer("squeeze")
@dataclass(frozen=True)
class Squeeze(Layer):
    """torch ``squeeze(dim)``: drop axes of size 1 (``dim=None``: all of them)."""

    dim: object = None

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.dim is None:
            axes = {i for i, d in enumerate(x.shape) if type(d) is int and d == 1}
        else:
            dims = (self.dim,) if type(self.dim) is int else tuple(self.dim)
            axes = {_resolve_axis(ctx, d, x.rank, "squeeze dim") for d in dims}
            axes = {a for a in axes if type(x.shape[a]) is int and x.shape[a] == 1}
        return ctx.result(x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in axes)))

    def work(self, call) -> Work:
        return self.view_work()

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return _reshaped_share(self, call, axes)


@register_layer("index")
@dataclass(frozen=True)
class Index(Layer):
    """torch indexing ``x[...]`` with ints, slices (start, stop, step), None and Ellipsis.

    ``items`` holds ("int", i), ("slice", start, stop, step), ("none",) or ("ellipsis",).
    """

    items: tuple = ()

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        items = list(self.items)
        used = sum(1 for it in items if it[0] in ("int", "slice"))
        if any(it[0] == "ellipsis" for it in items):
            at = next(i for i, it in enumerate(items) if it[0] == "ellipsis")
            items[at:at + 1] = [("slice", None, None, None)] * (x.rank - used)
        if used > x.rank:
            raise ctx.shape_error(f"too many indices for a tensor of rank {x.rank}")
        shape, axis = [], 0
        for it in items:
            if it[0] == "none":
                shape.append(1)
                continue
            size = x.shape[axis]
            axis += 1
            if it[0] == "int":
                continue
            shape.append(_slice_length(ctx, size, it[1], it[2], it[3]))
        shape += list(x.shape[axis:])
        return ctx.result(x.with_shape(tuple(shape)))

    def work(self, call) -> Work:
        return self.view_work()


def index_items(key: Iterable) -> tuple:
    """``Index.items`` for the entries of a basic index (``x[:, 0, ..., None]``: slices, ints, None,
    Ellipsis); a SpecError naming any other entry (a tensor: advanced indexing)."""
    out = []
    for it in key:
        if it is None:
            out.append(("none",))
        elif it is Ellipsis:
            out.append(("ellipsis",))
        elif isinstance(it, slice):
            out.append(("slice", it.start, it.stop, it.step))
        elif type(it) is int:
            out.append(("int", it))
        else:
            raise SpecError(f"indexing with {it!r} is not modelled", value=repr(it),
                            fix="index with ints, slices, None and Ellipsis")
    return tuple(out)


def _slice_length(ctx: Context, size: Dim, start, stop, step) -> Dim:
    step = 1 if step is None else step
    if step <= 0:
        raise ctx.shape_error(f"slice step must be positive, received {step}")
    if type(size) is int:
        return len(range(*slice(start, stop, step).indices(size)))
    if (start in (None, 0)) and stop is None:
        return floordiv(size + step - 1, step)
    if stop is None and type(start) is int and start > 0:
        return floordiv(size - start + step - 1, step)
    if start in (None, 0) and type(stop) is int and stop > 0:
        return floordiv(stop + step - 1, step)
    raise ctx.shape_error(f"cannot slice a symbolic axis {size} with [{start}:{stop}:{step}]")


@register_layer("reduce")
@dataclass(frozen=True)
class Reduce(Layer):
    """torch ``mean/sum/amax/amin(dim, keepdim)``: one FLOP per input element."""

    op: str = "mean"
    dims: tuple | None = None
    keepdim: bool = False

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        axes = set(range(x.rank)) if self.dims is None else \
            {_resolve_axis(ctx, d, x.rank, f"{self.op} dim") for d in self.dims}
        if self.keepdim:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return ctx.result(x.with_shape(shape), flops=x.numel)


@register_layer("matmul")
@dataclass(frozen=True)
class MatMul(Layer):
    """torch ``matmul`` / ``bmm`` / ``@``: (..., n, k) @ (..., k, m) -> (..., n, m), leading axes broadcast."""

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) != 2:
            raise ctx.shape_error(f"matmul takes 2 inputs, received {len(inputs)}")
        a, b = inputs
        a_shape = a.shape if a.rank > 1 else (1,) + a.shape
        b_shape = b.shape if b.rank > 1 else b.shape + (1,)
        k = a_shape[-1]
        ctx.require_equal(b_shape[-2], k, lambda: f"matmul: shapes {ctx.format_shape(a.shape)} and "
                                          f"{ctx.format_shape(b.shape)} cannot be multiplied ({k} vs {b_shape[-2]})")
        lead = broadcast(ctx, [a_shape[:-2], b_shape[:-2]], "matmul") if (a_shape[:-2] or b_shape[:-2]) else ()
        shape = lead + (a_shape[-2], b_shape[-1])
        if a.rank == 1:
            shape = shape[:-2] + shape[-1:]
        if b.rank == 1:
            shape = shape[:-1]
        out = a.with_shape(shape)
        macs = prod(lead) * a_shape[-2] * b_shape[-1] * k
        return ctx.result(out, macs=macs, flops=2 * macs)

    def work(self, call) -> Work:
        out = call.output_shape
        return products_between_activations(call, out[-1] if out else 1)  # the output's last axis

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        out = product_split(call, axes) if any(a is not None for a in axes) else (None,)
        return None if out is None else (out, self)


@register_layer("scalar_op")
@dataclass(frozen=True)
class ScalarOp(Layer):
    """Arithmetic between a tensor and a constant (``x * 0.5``, ``x + 1``): one FLOP per element."""

    op: str = "mul"

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        return ctx.result(x, flops=x.numel)

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        return per_element_share(self, call, axes)


@register_layer("prelu")
@dataclass(frozen=True)
class PReLU(Layer):
    """PReLU: a learned negative slope. torch: ``num_parameters`` slopes (1, or one per channel, axis 1);
    Keras: one per input element except along ``shared_axes`` (counted from 1)."""

    num_parameters: int | None = None
    shared_axes: tuple = ()

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if self.num_parameters is not None:
            if self.num_parameters != 1:
                ctx.require_equal(x.shape[1] if x.rank > 1 else x.shape[0], self.num_parameters,
                                  f"PReLU has {self.num_parameters} parameters but the input has "
                                  f"{x.shape[1] if x.rank > 1 else x.shape[0]} channels")
            shape = (self.num_parameters,)
        else:
            shared = {a % x.rank for a in self.shared_axes}
            shape = tuple(1 if i in shared else d for i, d in enumerate(x.shape) if i > 0)
        return ctx.result(x, weights=[Weight("alpha", shape)], flops=2 * x.numel)

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)[:1]


def _reshaped_share(layer: Layer, call, axes: tuple) -> tuple | None:
    """A view's split: where the reshape puts the split's runs (the rank's view has the same kind; its
    shapes are the call's)."""
    if axes[0] is None:
        return (None,), layer
    out = regrouped_split(call.input_shapes[0], call.output_shape, axes[0])
    return None if out is None else (out, layer)


_EINSUM = re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]*)")


@register_layer("einsum")
@dataclass(frozen=True)
class Einsum(Layer):
    """``keras.ops.einsum(equation, a, b)`` on two tensors, letters only (``"aecd,abcd->acbe"``, an
    attention's scores): each letter's size from the inputs (a letter in both must agree), the output's
    from its letters. MACs: the product of every letter's size; 2 FLOPs per MAC where a letter is summed
    over, 1 (a product) where none is."""

    equation: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.equation, str) or not _EINSUM.fullmatch(self.equation.replace(" ", "")):
            raise LayerConfigError(f"einsum equation {self.equation!r}: paramcalc reads two operands written in "
                                   "letters (\"abc,acd->abd\"), no ellipsis", layer=self.name, value=self.equation)

    def _letters(self) -> tuple:
        return _EINSUM.fullmatch(self.equation.replace(" ", "")).groups()

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        if len(inputs) != 2:
            raise ctx.shape_error(f"einsum {self.equation!r} takes 2 inputs, received {len(inputs)}")
        first, second, out = self._letters()
        sizes: dict = {}
        for letters, spec in zip((first, second), inputs):
            if len(letters) != spec.rank:
                raise ctx.shape_error(f"einsum {self.equation!r}: {letters!r} names {len(letters)} axes of an input "
                                      f"of shape {ctx.format_shape(spec.shape)}")
            for letter, size in zip(letters, spec.shape):
                if letter in sizes:
                    ctx.require_equal(size, sizes[letter], lambda: f"einsum {self.equation!r}: axis {letter!r} is "
                                      f"{sizes[letter]} in one input and {size} in the other")
                else:
                    sizes[letter] = size
        if set(out) - set(sizes):
            raise ctx.shape_error(f"einsum {self.equation!r}: output axes {sorted(set(out) - set(sizes))} are in no input")
        macs = prod(sizes.values())
        summed = set(sizes) - set(out)
        return ctx.result(inputs[0].with_shape(tuple(sizes[letter] for letter in out)), macs=macs,
                          flops=2 * macs if summed else macs)

    def work(self, call) -> Work:
        first, second, out = self._letters()
        sizes = dict(zip(first, call.input_shapes[0])) | dict(zip(second, call.input_shapes[1]))
        inner = prod(sizes[letter] for letter in sizes if letter not in out)
        columns = sizes[out[-1]] if out else 1
        rows = prod(sizes[letter] for letter in out[:-1])
        return self.described(activation_products=((rows, inner, columns),), activation_macs=call.macs_per_batch)

    def saved(self, call, rules: SavingRules) -> list:
        return inputs_kept(call, rules)
