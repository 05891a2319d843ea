"""Layers that move elements without computing: Flatten, Reshape, Unflatten, Permute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from paramcalc.core.dims import (
    Dim,
    as_dim,
    equal,
    exact_div,
    floordiv,
    format_dim,
    prod,
)
from paramcalc.core.errors import DimensionError, LayerConfigError, shown
from paramcalc.core.layer import Context, Inferred, Layer, format_shape
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import Work


def _resolve_axis(ctx: Context, axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise ctx.shape_error(
            f"{what}: dimension out of range (expected to be in range of [{-rank}, {rank - 1}], "
            f"but got {axis}) for an input of rank {rank}"
        )
    return axis + rank if axis < 0 else axis


@register_layer("flatten")
@dataclass(frozen=True)
class Flatten(Layer):
    """Merge the axes ``start_dim..end_dim`` (batch axis = 0, negatives count from the end).

    The default merges everything after the batch axis, as Keras' Flatten and torch's nn.Flatten()
    do. ``strict=True`` follows torch on an input with nothing after the batch axis (an error);
    otherwise it gives one axis of size 1, as Keras does.
    """

    start_dim: int = 1
    end_dim: int = -1
    strict: bool = False

    def __post_init__(self) -> None:
        for field_name in ("start_dim", "end_dim"):
            value = getattr(self, field_name)
            if type(value) is not int:
                raise LayerConfigError(
                    f"Flatten expects {field_name} to be an integer axis. Received: {field_name}={shown(value)}",
                    layer=self.name, value=value,
                )

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        rank = x.rank
        if rank == 1 and not self.strict and (self.start_dim, self.end_dim) == (1, -1):
            return ctx.result(x.with_shape(x.shape + (1,)))
        start = _resolve_axis(ctx, self.start_dim, rank, "Flatten start_dim")
        end = _resolve_axis(ctx, self.end_dim, rank, "Flatten end_dim")
        if start > end:
            raise ctx.shape_error(
                f"Flatten has invalid args: start_dim cannot come after end_dim "
                f"(start_dim={self.start_dim}, end_dim={self.end_dim} on rank {rank})"
            )
        merged = prod(x.shape[start:end + 1])
        return ctx.result(x.with_shape(x.shape[:start] + (merged,) + x.shape[end + 1:]))

    def work(self, call) -> Work:
        return self.view_work()


def _target_dims(owner: str, values: object, layer: str | None, allow_infer: bool = True) -> tuple:
    """Validate a target shape: sizes (or symbols), with -1 for the one inferred axis."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise LayerConfigError(f"{owner} expects a tuple of sizes. Received: {shown(values)}", layer=layer,
                               value=values)
    dims = []
    for i, value in enumerate(values):
        if allow_infer and type(value) is int and value == -1:
            dims.append(-1)
            continue
        try:
            dims.append(as_dim(value, f"{owner}[{i}]"))
        except DimensionError as err:
            raise LayerConfigError(err.message, layer=layer, value=value) from None
    return tuple(dims)


def _fill_inferred(ctx: Context, total: Dim, dims: tuple, errors: dict) -> tuple:
    """Replace the one -1 in ``dims`` so that the product equals ``total``; check the product otherwise.

    ``errors`` holds the framework's own wording: 'mismatch' and 'indivisible'.
    """
    known = prod(d for d in dims if not (type(d) is int and d == -1))
    if -1 not in dims:
        same = equal(total, known)
        if same is False:
            raise ctx.shape_error(errors["mismatch"])
        if same is None:
            ctx.assume_equal(total, known)
        return dims
    if type(known) is int and known == 0:
        raise ctx.shape_error(errors["mismatch"] + " (the -1 axis is ambiguous when another axis is 0)")
    inferred = exact_div(total, known)
    if inferred is None:
        if type(total) is int and type(known) is int:
            raise ctx.shape_error(errors["indivisible"])
        ctx.assume_divisible(total, known)
        inferred = floordiv(total, known)
    return tuple(inferred if (type(d) is int and d == -1) else d for d in dims)


@register_layer("reshape")
@dataclass(frozen=True)
class Reshape(Layer):
    """Keras ``Reshape(target_shape)``: the shape of each sample (batch axis excluded), one -1 allowed."""

    target_shape: tuple = ()

    def __post_init__(self) -> None:
        dims = _target_dims("Reshape target_shape", self.target_shape, self.name)
        if sum(1 for d in dims if type(d) is int and d == -1) > 1:
            raise LayerConfigError(
                f"There must be at most one unknown dimension (-1) in target_shape. "
                f"Received: target_shape={format_shape(dims)}",
                layer=self.name, value=self.target_shape,
            )
        self._set("target_shape", dims)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        received = f"input_shape={format_shape(x.sample_shape)}, target_shape={format_shape(self.target_shape)}"
        dims = _fill_inferred(ctx, prod(x.sample_shape), self.target_shape, {
            "mismatch": f"The total size of the tensor must be unchanged. Received: {received}",
            "indivisible": "The total size of the tensor must be unchanged, however, the input size "
                           f"cannot be divided by the specified dimensions in target_shape. Received: {received}",
        })
        return ctx.result(x.with_shape((x.shape[0],) + dims))

    def work(self, call) -> Work:
        return self.view_work()


@register_layer("unflatten")
@dataclass(frozen=True)
class Unflatten(Layer):
    """torch ``nn.Unflatten(dim, sizes)``: split axis ``dim`` (batch = 0) into ``sizes``, one -1 allowed."""

    dim: int = 1
    sizes: tuple = ()

    def __post_init__(self) -> None:
        if type(self.dim) is not int:
            raise LayerConfigError(f"Unflatten expects dim to be an integer axis. Received: dim={shown(self.dim)}",
                                   layer=self.name, value=self.dim)
        dims = _target_dims("Unflatten sizes", self.sizes, self.name)
        if sum(1 for d in dims if type(d) is int and d == -1) > 1:
            raise LayerConfigError(f"unflatten: only one dimension can be inferred. Received: sizes={list(dims)}",
                                   layer=self.name, value=self.sizes)
        if not dims:
            raise LayerConfigError("unflatten: sizes must be non-empty", layer=self.name, value=self.sizes)
        self._set("sizes", dims)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        axis = _resolve_axis(ctx, self.dim, x.rank, "Unflatten dim")
        size = x.shape[axis]
        message = (f"unflatten: Provided sizes {list(self.sizes)} don't multiply up to the size of dim "
                   f"{self.dim} ({format_dim(size)}) in the input tensor")
        dims = _fill_inferred(ctx, size, self.sizes, {"mismatch": message, "indivisible": message})
        return ctx.result(x.with_shape(x.shape[:axis] + dims + x.shape[axis + 1:]))

    def work(self, call) -> Work:
        return self.view_work()


@register_layer("permute")
@dataclass(frozen=True)
class Permute(Layer):
    """Keras ``Permute(dims)``: reorder the axes of each sample; ``dims`` counts from 1 (batch excluded)."""

    dims: tuple = ()

    def __post_init__(self) -> None:
        dims = tuple(self.dims) if hasattr(self.dims, "__iter__") else self.dims
        if (not isinstance(dims, tuple) or any(type(d) is not int for d in dims)
                or sorted(dims) != list(range(1, len(dims) + 1))):
            raise LayerConfigError(
                "Invalid permutation argument `dims` for Permute Layer. The set of indices in `dims` "
                f"must be consecutive and start from 1. Received dims={shown(self.dims)}",
                layer=self.name, value=self.dims,
            )
        self._set("dims", dims)

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        x = ctx.single(inputs)
        if len(self.dims) != x.rank - 1:
            raise ctx.shape_error(
                f"Permute dims={self.dims} reorders {len(self.dims)} axes, but each sample of the input "
                f"{ctx.format_shape(x.shape)} has {x.rank - 1}"
            )
        return ctx.result(x.with_shape((x.shape[0],) + tuple(x.shape[d] for d in self.dims)))

    def work(self, call) -> Work:
        return self.view_work()
