"""Window arithmetic shared by convolutions and pools: output lengths, exact and symbolic.

Keras names paddings ("valid", "same", "causal", "full"); torch gives explicit amounts per side (and
'same' for stride 1). Both become (before, after) amounts or the Keras 'same' rule. An output length
that is not positive is an error naming the numbers, never 0 or -1.
"""

from __future__ import annotations

from typing import Sequence

from paramcalc.core.dims import MAX_DIM, Dim, floordiv
from paramcalc.core.errors import LayerConfigError, shown
from paramcalc.core.layer import Context


def as_tuple(owner: str, field: str, value: object, rank: int, layer: str | None,
             minimum: int = 1) -> tuple:
    """An int or a sequence of ``rank`` ints, each >= ``minimum`` (kernel sizes, strides, dilations)."""
    values = (value,) * rank if type(value) is int else tuple(value) if isinstance(value, (list, tuple)) else None
    if values is None or len(values) != rank or any(type(v) is not int or not minimum <= v <= MAX_DIM for v in values):
        raise LayerConfigError(
            f"{owner} expects {field} to be an integer >= {minimum} (at most 2**63 - 1) or a tuple of {rank} of them. "
            f"Received: {field}={shown(value)}", layer=layer, value=value)
    return values


def padding_pairs(owner: str, padding: object, rank: int, layer: str | None) -> str | tuple:
    """A named padding ("valid", "same", "causal", "full") or ``rank`` (before, after) pairs."""
    if isinstance(padding, str):
        name = padding.lower()
        if name not in ("valid", "same", "causal", "full"):
            raise LayerConfigError(f"{owner} expects padding 'valid', 'same', 'causal' or amounts. "
                                   f"Received: padding={shown(padding)}", layer=layer, value=padding)
        return name
    if type(padding) is int:
        padding = (padding,) * rank
    if not isinstance(padding, (list, tuple)) or len(padding) != rank:
        raise LayerConfigError(f"{owner} expects {rank} padding amounts. Received: padding={shown(padding)}",
                               layer=layer, value=padding)
    pairs = []
    for p in padding:
        pair = (p, p) if type(p) is int else tuple(p) if isinstance(p, (list, tuple)) else None
        if pair is None or len(pair) != 2 or any(type(v) is not int or not 0 <= v <= MAX_DIM for v in pair):
            raise LayerConfigError(f"{owner} expects non-negative padding amounts. Received: padding={shown(padding)}",
                                   layer=layer, value=padding)
        pairs.append(pair)
    return tuple(pairs)


def window_length(ctx: Context, length: Dim, kernel: int, stride: int, dilation: int, padding,
                  axis: int, ceil_mode: bool = False) -> Dim:
    """Output length of a sliding window (convolution or pool) along one axis."""
    span = dilation * (kernel - 1) + 1
    if padding == "same":
        out = floordiv(length + stride - 1, stride)  # ceil(length / stride), Keras' rule
    else:
        if padding in ("valid", "causal"):
            before = span - 1 if padding == "causal" else 0
            after = 0
        elif padding == "full":
            before = after = span - 1
        else:
            before, after = padding
        padded = length + before + after
        # torch's ceil_mode counts a last window that starts inside the input and runs past it, so a window
        # longer than the input still gives one output (an AvgPool2d(2560, ceil_mode=True) on 18 x 18)
        ctx.require_positive(
            padded - span + (stride if ceil_mode else 1),
            f"output size would be non-positive on axis {axis}: input length {length} with padding "
            f"({before}, {after}) is smaller than the window ({span} = dilation {dilation} x "
            f"(kernel {kernel} - 1) + 1)",
            fix="use a smaller kernel, padding='same', or a larger input",
        )
        if ceil_mode:
            out = floordiv(padded - span + stride - 1, stride) + 1
            # torch: the last window must start inside the input or the left padding
            if type(out) is int and type(length) is int and (out - 1) * stride >= length + before:
                out -= 1
        else:
            out = floordiv(padded - span, stride) + 1
    return out


def transposed_length(ctx: Context, length: Dim, kernel: int, stride: int, dilation: int, padding,
                      output_padding: int | None) -> Dim:
    """Output length of a transposed convolution (Keras' deconv_output_length; torch's formula)."""
    span = dilation * (kernel - 1) + 1
    if isinstance(padding, str):
        if output_padding is None:
            if padding == "valid":
                return length * stride + max(span - stride, 0)
            if padding == "full":
                return length * stride - (stride + span - 2)
            return length * stride
        pad = {"same": span // 2, "valid": 0, "full": span - 1}[padding]
        return (length - 1) * stride + span - 2 * pad + output_padding
    before, after = padding
    return (length - 1) * stride - before - after + span + (output_padding or 0)


def spatial_axes(rank_total: int, rank: int, channels_last: bool) -> tuple[list[int], int]:
    """The spatial axes and the channel axis of an input of ``rank_total`` axes (batch included)."""
    if channels_last:
        return list(range(rank_total - 1 - rank, rank_total - 1)), rank_total - 1
    return list(range(rank_total - rank, rank_total)), rank_total - rank - 1


def check_rank(ctx: Context, owner: str, shape: Sequence, rank: int, channels_last: bool = True) -> None:
    """A layer over ``rank`` spatial axes reads a batch axis, those axes and a channel axis, in the
    framework's order (Keras: channels last; torch: channels first)."""
    if len(shape) != rank + 2:
        names = ["height", "width"] if rank == 2 else ["length"] if rank == 1 else ["depth", "height", "width"]
        layout = ["batch", *names, "channels"] if channels_last else ["batch", "channels", *names]
        raise ctx.shape_error(
            f"{owner} expects an input of rank {rank + 2} ({', '.join(layout)}), received {ctx.format_shape(shape)}")
