"""Where tensor parallelism's split of a tensor goes through a call: the rules layer kinds share.

A kind's ``Layer.split_share`` says where a split of its inputs lands in its outputs; most kinds are one
of a few patterns (per-element work, a matrix product, a reshape, a transpose), written here once.
Each rule takes the call's whole (unsplit) shapes and a :class:`TensorSplit` or None per input, and
returns one per output, or None where the call cannot compute on the ranks' parts alone (it reduces over
the split axis, or mixes the split axis with a whole tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

from paramcalc.core.dims import Dim, prod


@dataclass(frozen=True)
class TensorSplit:
    """How tensor parallelism splits a tensor among ranks: along ``axis``, whose elements fall in runs of
    ``inner`` (whole-tensor counting) that go to the ranks in turn. A plain split (a colwise layer's
    output, the sequence) has ``inner`` = the axis' size / ranks: each rank holds one block. When a
    reshape merges that axis with others (batch x heads) the runs repeat inside the merged axis, and
    ``inner`` says where the split sits, so a reshape back finds it again. Splits of the features and of
    the sequence never meet in one call."""

    axis: int
    inner: Dim
    sequence: bool = False  # sequence parallelism's split of the tokens, not a split of the features

    def moved(self, axis: int, inner: Dim | None = None) -> TensorSplit:
        return TensorSplit(axis, self.inner if inner is None else inner, self.sequence)


def per_element_split(call, axes: tuple, reduced: tuple = ()) -> tuple | None:
    """A call that computes each output element from the elements at the same place of its (broadcast)
    inputs: the split inputs must agree on one output axis, not among ``reduced`` (axes it reduces over,
    softmax's), and a whole input must broadcast along it (size 1 there, or no such axis)."""
    out_rank = len(call.output_shape)
    found = None
    for shape, split in zip(call.input_shapes, axes):
        if split is not None:
            moved = split.moved(out_rank - len(shape) + split.axis)
            if found is not None and moved != found:
                return None
            found = moved
    if found is None:
        return (None,) * len(call.output_shapes)
    if found.axis in {a % out_rank for a in reduced}:
        return None
    for shape, split in zip(call.input_shapes, axes):
        at = found.axis - (out_rank - len(shape))
        if split is None and at >= 0 and shape[at] != 1:
            return None
    return tuple(found if len(s) == out_rank else None for s in call.output_shapes)


def per_element_share(layer, call, axes: tuple, reduced: tuple = ()) -> tuple | None:
    """``Layer.split_share`` of a per-element kind (:func:`per_element_split`): the layer runs unchanged on
    its part."""
    out = per_element_split(call, axes, reduced)
    return None if out is None else (out, layer)


def product_split(call, axes: tuple) -> tuple | None:
    """A matrix product (the last two inputs are its factors; a first one, addmm's and baddbmm's, the
    term added): split along the batch axes of both factors, or the rows of the first, or the columns of
    the second; a split of the summed axis leaves partial sums (None)."""
    shapes = call.input_shapes
    a, b = axes[-2], axes[-1]
    a_rank, b_rank, out_rank = len(shapes[-2]), len(shapes[-1]), len(call.output_shape)
    if a_rank < 2 or b_rank < 2:
        return None
    if a is not None and b is not None:
        found = a if a.axis < a_rank - 2 and a == b and a_rank == b_rank else None
    elif a is not None:
        found = a.moved(out_rank - 2) if a.axis == a_rank - 2 else (a if a.axis < a_rank - 2 and b_rank == 2 else None)
    else:
        found = b.moved(out_rank - 1) if b.axis == b_rank - 1 else None
    if found is None:
        return None
    if len(shapes) == 3:  # the term added: whole and broadcast, or split alike
        term, split = shapes[0], axes[0]
        offset = out_rank - len(term)
        if split is None and found.axis - offset >= 0 and term[found.axis - offset] != 1:
            return None
        if split is not None and split.moved(split.axis + offset) != found:
            return None
    return (found,)


def permuted_split(split: TensorSplit, order: list) -> tuple:
    """A transpose or permute putting input axis ``order[i]`` at output axis ``i``."""
    return (split.moved(order.index(split.axis)),)


def regrouped_split(source: tuple, target: tuple, split: TensorSplit, outputs: int = 1) -> tuple | None:
    """Where a reshape from ``source`` to ``target`` puts ``split``: the axes of both shapes fall in
    groups of equal products; within its group the runs of ``split.inner`` elements sit at one place,
    which names the target axis they fall in (a width split into heads and their size: the heads; batch x
    heads merged for a batched product and split again: the heads). A symbolic size (the batch) must
    stay an axis of its own; where it is merged, None."""
    i = j = 0
    while i < len(source) and j < len(target):
        start_i, start_j = i, j
        left, right = source[i], target[j]
        i, j = i + 1, j + 1
        while left != right:
            if type(left) is not int or type(right) is not int:
                return None
            if (left < right and i < len(source)) or j >= len(target):
                left, i = left * source[i], i + 1
            else:
                right, j = right * target[j], j + 1
        if not start_i <= split.axis < i:
            continue
        below = split.inner * prod(source[split.axis + 1:i])  # elements of the group under one run
        if type(below) is not int or not all(type(size) is int for size in target[start_j:j]):
            return None
        for axis in range(start_j, j):
            under = prod(target[axis + 1:j])
            if under <= below < under * target[axis]:
                inner, rest = divmod(below, under)
                return (split.moved(axis, inner),) + (None,) * (outputs - 1) if not rest else None
        return None
    return None
