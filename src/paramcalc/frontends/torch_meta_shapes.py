"""Output shapes of the ATen operations whose meta kernels are slow, where the answer is plain.

torch's meta kernels for layer and batch norm, ``addmm``, softmax, reductions and elementwise operations
are Python references that work out strides, type promotion and broadcasting in general, slowly. On the
calls a model makes most (tensors of one floating dtype, Python numbers as the other operands) the answer
is plain: a new tensor of that dtype, of the broadcast shape (elementwise: contiguous where the operands
are, else in the order torch's reference computes from their strides), of the shape with reduced axes
dropped or kept (reductions), or of the product's shape (contiguous). Each rule answers only such a call
and returns None for anything else, which then runs torch's own kernel (and raises its own error where
the call is wrong). The tests compare every answer given here with torch's kernel, by property tests and
on every model they read (``torch_meta_memo.CHECK``).
"""

from __future__ import annotations

from functools import cache

# floating operations that return their inputs' dtype and broadcast shape, whatever their other arguments
_ELEMENTWISE = ("add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "relu", "gelu", "silu", "sigmoid", "tanh",
                "exp", "log", "rsqrt", "sqrt", "pow", "clamp", "abs", "erf", "sin", "cos", "hardtanh", "hardswish",
                "hardsigmoid", "leaky_relu", "elu", "softplus", "mish", "maximum", "minimum", "square", "clamp_min",
                "clamp_max")
# of those, the ones that keep an integer dtype on integer tensors and integer Python numbers (division,
# roots and exponentials make floats of them)
_INTEGER_KEPT = ("add", "sub", "rsub", "mul", "neg", "abs", "clamp", "clamp_min", "clamp_max", "maximum", "minimum",
                 "floor_divide", "remainder")
_COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")  # a boolean of the broadcast shape, from any real dtypes
_BITWISE = ("bitwise_and", "bitwise_or", "bitwise_xor", "logical_and", "logical_or")  # booleans in, a boolean out
_FLOATING = ("float16", "bfloat16", "float32", "float64")
_INTEGERS = ("int32", "int64")
_NUMBERS = (int, float, bool, str, type(None))  # a scalar operand, an approximation's name, a rounding mode
_WHOLE = (int, bool, type(None))  # the numbers an integer tensor keeps its dtype with (and clamp's missing bound)
_REAL = (int, float, bool)


@cache  # built once per process: the rules close over torch's operations
def shape_rules() -> dict:
    """ATen operation -> rule(args, kwargs) giving its outputs, or None where the rule does not answer."""
    import torch

    aten = torch.ops.aten
    floating = {getattr(torch, name) for name in _FLOATING}
    integers = {getattr(torch, name) for name in _INTEGERS}
    real = floating | integers | {torch.bool}
    tensor = torch.Tensor
    meta = torch.device("meta")

    def empty(shape, dtype):
        return torch.empty(shape, dtype=dtype, device="meta")

    def plain(t) -> bool:
        """A meta tensor laid out as torch.empty would lay it out."""
        if t.device.type != "meta":
            return False
        stride, expected = t.stride(), 1
        for size, step in zip(reversed(t.shape), reversed(stride)):
            if step != expected:
                return False
            expected *= max(size, 1)
        return True

    def elementwise(args, kwargs, dtypes=floating, numbers=_NUMBERS, out=None):
        """Tensors of one dtype among ``dtypes`` and Python values of the types ``numbers``: a tensor of
        that dtype (or of ``out``) and of their broadcast shape."""
        tensors, dtype = [], None
        for value in (*args, *kwargs.values()):
            if isinstance(value, tensor):
                if dtype is None:
                    dtype = value.dtype
                if value.dtype != dtype or value.device.type != "meta":
                    return None
                tensors.append(value)
            elif type(value) not in numbers:
                return None
        if dtype not in dtypes:
            return None
        dtype = out or dtype
        shape = _broadcast([t.shape for t in tensors])
        if shape is None:
            return None
        if all(plain(t) for t in tensors):
            return empty(shape, dtype)
        # left to the kernels, which differ there (TensorIterator's or the Python reference's order): axes of
        # length one in the output, and an operand already expanded along an axis of its own
        if 1 in shape or 0 in shape or any(step == 0 and size > 1 for t in tensors
                                           for size, step in zip(t.shape, t.stride())):
            return None
        strides = [_expanded(tuple(t.shape), t.stride(), shape) for t in tensors]
        return torch.empty_permuted(shape, _output_order(shape, strides), dtype=dtype, device="meta")

    def integer(args, kwargs):  # integer tensors with integer Python numbers keep their dtype
        return elementwise(args, kwargs, integers, _WHOLE)

    def comparison(args, kwargs):  # a boolean, from tensors of one real dtype and Python numbers
        return elementwise(args, kwargs, real, _REAL, torch.bool)

    def bitwise(args, kwargs):
        return elementwise(args, kwargs, {torch.bool}, (bool,))

    def roll(args, kwargs):  # roll(x, shifts, dims=()): torch's reference selects along each axis into a new tensor
        x = args[0] if args else None
        shifts = args[1] if len(args) > 1 else kwargs.get("shifts")
        dims = args[2] if len(args) > 2 else kwargs.get("dims", ())
        if len(args) > 3 or set(kwargs) - {"shifts", "dims"} or not (isinstance(x, tensor) and x.device.type == "meta"):
            return None
        shifts, dims = ([v] if type(v) is int else v for v in (shifts, dims))
        if not isinstance(shifts, (list, tuple)) or not isinstance(dims, (list, tuple)) or x.numel() == 0:
            return None  # an empty tensor is cloned, keeping its layout
        axes = [_axis(d, x.dim()) for d in dims] if x.dim() else [None] * len(dims)
        if not all(type(v) is int for v in shifts) or None in axes or \
                not (len(shifts) == len(dims) >= 1 or (len(shifts) == 1 and not dims)):
            return None
        return empty(x.shape, x.dtype)

    def clone(args, kwargs):  # clone(x, *, memory_format=None)
        x = args[0] if len(args) == 1 else None
        layout = kwargs.get("memory_format")
        if set(kwargs) - {"memory_format"} or not (isinstance(x, tensor) and x.device.type == "meta"):
            return None
        if layout is torch.contiguous_format or (layout in (None, torch.preserve_format) and plain(x)):
            return empty(x.shape, x.dtype)
        return None  # another layout kept or asked for

    def vector_norm(args, kwargs):  # linalg_vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None)
        names = ("x", "ord", "dim", "keepdim")
        call = {"ord": 2, "dim": None, "keepdim": False, **dict(zip(names, args)), **kwargs}
        x, dims, keep = call.get("x"), call["dim"], call["keepdim"]
        if len(args) > 4 or set(call) - {*names, "dtype"} or call.get("dtype") is not None:
            return None
        if not (isinstance(x, tensor) and x.device.type == "meta" and x.dtype in floating) \
                or type(call["ord"]) not in (int, float) or not isinstance(keep, bool) or x.dim() == 0:
            return None
        named = [_axis(d, x.dim()) for d in (range(x.dim()) if dims is None else [dims] if type(dims) is int else dims)]
        axes = set(named)
        # reducing only axes of length one, torch returns a view or a copy of the input's absolute value
        if not axes or None in axes or len(axes) != len(named) or all(x.shape[i] == 1 for i in axes) \
                or any(x.shape[i] == 0 for i in axes):
            return None
        return empty([1 if i in axes else n for i, n in enumerate(x.shape) if keep or i not in axes], x.dtype)

    def products(args, kwargs):  # mm(a, b), bmm(a, b): a new contiguous product
        if kwargs or len(args) != 2:
            return None
        a, b = args
        if not all(isinstance(t, tensor) and t.device.type == "meta" and t.dtype == a.dtype for t in args) \
                or a.dtype not in floating or a.dim() != b.dim() or a.dim() not in (2, 3):
            return None
        if a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
            return None
        return empty((*a.shape[:-1], b.shape[-1]), a.dtype)

    def arange(args, kwargs):  # arange(end), arange(start, end), arange(start, end, step): integers only
        if not 1 <= len(args) <= 3 or not all(type(v) is int for v in args) or kwargs.get("device") != meta:
            return None
        if kwargs.get("layout") not in (None, torch.strided) or \
                set(kwargs) - {"dtype", "layout", "device", "pin_memory"}:
            return None
        start, end, step = (0, args[0], 1) if len(args) == 1 else (*args, 1) if len(args) == 2 else args
        dtype = kwargs.get("dtype") or torch.int64
        if step == 0 or (end - start) * step < 0 or dtype not in real - {torch.bool}:
            return None
        return empty((-((start - end) // step),), dtype)

    def embedding(args, kwargs):  # embedding(weight, indices, ...): the rows selected, in a new tensor
        if kwargs or len(args) < 2:
            return None
        weight, indices = args[:2]
        if not (isinstance(weight, tensor) and weight.device.type == "meta" and weight.dim() == 2) or \
                not (isinstance(indices, tensor) and indices.device.type == "meta" and indices.dtype in integers):
            return None
        return empty((*indices.shape, weight.shape[1]), weight.dtype)

    def masked_fill(args, kwargs):  # masked_fill(x, mask, number): a contiguous copy, filled where masked
        if kwargs or len(args) != 3:
            return None
        x, mask, value = args
        if not (isinstance(x, tensor) and x.device.type == "meta" and x.dtype in floating) or type(value) not in _REAL \
                or not (isinstance(mask, tensor) and mask.device.type == "meta" and mask.dtype == torch.bool):
            return None
        # the mask broadcast to the input's shape; a copy made contiguous, which keeps the strides an
        # elementwise output had on axes of length one unless both operands are plain
        if _broadcast([x.shape, mask.shape]) != tuple(x.shape) or \
                not ((plain(x) and plain(mask)) or (1 not in x.shape and 0 not in x.shape)):
            return None
        return empty(x.shape, x.dtype)

    def expanded_plain(t) -> bool:
        """A meta tensor laid out by torch.empty, or such a tensor expanded (stride 0 on the axes it was
        broadcast along): a mask made for one sample, then for the batch."""
        expected = 1
        for size, step in zip(reversed(t.shape), reversed(t.stride())):
            if step == 0 and size > 1:
                continue
            if step != expected:
                return False
            expected *= max(size, 1)
        return t.device.type == "meta"

    def where(args, kwargs):  # plain or expanded operands: torch's reference makes a contiguous output
        if kwargs or len(args) != 3 or not all(isinstance(t, tensor) and expanded_plain(t) for t in args):
            return None
        condition, x, y = args
        if condition.dtype != torch.bool or x.dtype != y.dtype or x.dtype not in floating | integers:
            return None
        shape = _broadcast([t.shape for t in args])
        return None if shape is None or 0 in shape else empty(shape, x.dtype)

    def addmm(args, kwargs):
        if len(args) != 3 or any(k not in ("beta", "alpha") for k in kwargs):
            return None
        bias, left, right = args  # any layouts: the product is made contiguous (linear's weight comes transposed)
        if not all(isinstance(t, tensor) and t.device.type == "meta" and t.dtype == left.dtype for t in args) \
                or left.dtype not in floating:
            return None
        if left.dim() != 2 or right.dim() != 2 or left.shape[1] != right.shape[0]:
            return None
        shape = (left.shape[0], right.shape[1])
        if _broadcast([bias.shape, shape]) != shape:
            return None
        return empty(shape, left.dtype)

    def layer_norm(args, kwargs):
        if kwargs or len(args) != 5:
            return None
        x, normalized, weight, bias = args[:4]
        if not (isinstance(x, tensor) and x.device.type == "meta" and x.dtype in (torch.float32, torch.float64)):
            return None  # half inputs keep float32 statistics on meta, other devices their own dtype
        # the kernel makes its input contiguous first, which copies a strided one to a plain layout; a tensor
        # torch calls contiguous already keeps its strides on axes of length one, whatever they are
        if x.is_contiguous() and not plain(x):
            return None
        axis = x.dim() - len(normalized)
        if not normalized or axis < 0 or tuple(x.shape[axis:]) != tuple(normalized):
            return None
        for t in (weight, bias):
            if t is not None and not (isinstance(t, tensor) and plain(t) and t.dtype == x.dtype
                                      and tuple(t.shape) == tuple(normalized)):
                return None
        statistics = (*x.shape[:axis], *([1] * len(normalized)))
        return empty(x.shape, x.dtype), empty(statistics, x.dtype), empty(statistics, x.dtype)

    def batch_norm(args, kwargs):  # native_batch_norm(x, weight, bias, mean, var, training, momentum, eps)
        if kwargs or len(args) != 8:
            return None
        x, training = args[0], args[5]
        if not (isinstance(x, tensor) and plain(x) and x.dtype in (torch.float32, torch.float64) and x.dim() >= 2):
            return None  # half inputs keep float32 statistics
        channels = (x.shape[1],)
        for t in args[1:5]:
            if t is not None and not (isinstance(t, tensor) and t.device.type == "meta" and t.dtype == x.dtype
                                      and tuple(t.shape) == channels):
                return None
        if not isinstance(training, bool) or (not training and (args[3] is None or args[4] is None)):
            return None
        if training and x.numel() <= channels[0]:  # one value per channel: torch refuses to train on it
            return None
        return empty(x.shape, x.dtype), empty(channels, x.dtype), empty(channels, x.dtype)

    def softmax(args, kwargs):  # _softmax(x, dim, half_to_float), _safe_softmax(x, dim, dtype=None)
        if len(args) < 2 or not (isinstance(args[0], tensor) and plain(args[0]) and args[0].dtype in floating):
            return None
        if any(a not in (None, False) for a in args[2:]) or any(v is not None for v in kwargs.values()):
            return None
        return empty(args[0].shape, args[0].dtype) if _axis(args[1], args[0].dim()) is not None else None

    def triangle(args, kwargs):  # tril, triu
        x = args[0] if args else None
        if kwargs or not (isinstance(x, tensor) and plain(x) and x.dim() >= 2):
            return None
        return empty(x.shape, x.dtype) if all(isinstance(a, int) for a in args[1:]) else None

    def reduction(args, kwargs):  # mean.dim, sum.dim_IntList (x, dims, keepdim=False, *, dtype=None)
        if not args or any(v is not None for v in kwargs.values() if not isinstance(v, bool)):
            return None
        x, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if not (isinstance(x, tensor) and plain(x) and x.dtype in floating) or len(args) > 3 or not isinstance(keep, bool):
            return None
        rank = x.dim()
        named = [_axis(d, rank) for d in ([dims] if isinstance(dims, int) else dims or ())]
        axes = set(named)
        if not axes or None in axes or len(axes) != len(named) or rank == 0:
            return None
        shape = [1 if i in axes else s for i, s in enumerate(x.shape) if keep or i not in axes]
        return empty(shape, x.dtype)

    def cat(args, kwargs):
        if kwargs or not args or not isinstance(args[0], (list, tuple)) or not args[0]:
            return None
        tensors = args[0]
        if not all(isinstance(t, tensor) for t in tensors):
            return None
        # torch skips empty 1-D tensors among others (a cache that starts empty, ``cat([past, new])``); the
        # memory format they suggest is contiguous
        kept = [t for t in tensors if t.dim() != 1 or t.numel() != 0] or tensors
        if len(kept) < len(tensors) and (kept[0].dim() == 1 or any(t.dtype != kept[0].dtype or t.device.type != "meta"
                                                                   for t in tensors)):
            return None
        tensors, skipped = kept, len(kept) < len(tensors)
        first = tensors[0]
        dim = _axis(args[1] if len(args) > 1 else 0, first.dim())
        if dim is None or not all(isinstance(t, tensor) and t.device.type == "meta" and t.dtype == first.dtype
                                  and t.dim() == first.dim() and t.numel() > 0 for t in tensors):
            return None
        if any(t.shape[:dim] != first.shape[:dim] or t.shape[dim + 1:] != first.shape[dim + 1:] for t in tensors):
            return None
        shape = list(first.shape)
        shape[dim] = sum(t.shape[dim] for t in tensors)
        # the output takes the inputs' suggested memory format where they all suggest the same one: channels
        # last where each 4-D or 5-D input's strides are, else contiguous
        if first.dim() in (4, 5) and not skipped and \
                all(_like_channels_last(tuple(t.shape), t.stride()) for t in tensors):
            layout = torch.channels_last if first.dim() == 4 else torch.channels_last_3d
            return torch.empty(shape, dtype=first.dtype, device="meta", memory_format=layout)
        return empty(shape, first.dtype)

    rules: dict = {}
    # every functional overload of each operation named; one named twice (add on floats, then on integers)
    # takes the first rule that answers
    for names, rule in ((_ELEMENTWISE, elementwise), (_INTEGER_KEPT, integer), (_COMPARISONS, comparison),
                        (_BITWISE, bitwise)):
        for name in names:
            packet = getattr(aten, name, None)
            for overload in packet.overloads() if packet is not None else ():
                op = getattr(packet, overload)
                returns = op._schema.returns
                if not op._schema.is_mutable and len(returns) == 1 and str(returns[0].type) == "Tensor":
                    rules[op] = _either(rules[op], rule) if op in rules else rule
    rules.update({aten.roll.default: roll, aten.clone.default: clone, aten.linalg_vector_norm.default: vector_norm,
                  aten.mm.default: products, aten.bmm.default: products, aten.arange.default: arange,
                  aten.arange.start: arange, aten.arange.start_step: arange, aten.embedding.default: embedding,
                  aten.masked_fill.Scalar: masked_fill})
    rules.update({aten.where.self: where, aten.addmm.default: addmm, aten.native_layer_norm.default: layer_norm,
                  aten.native_batch_norm.default: batch_norm,
                  aten._softmax.default: softmax, aten._safe_softmax.default: softmax, aten.tril.default: triangle,
                  aten.triu.default: triangle, aten.mean.dim: reduction, aten.sum.dim_IntList: reduction,
                  aten.cat.default: cat})
    return rules


def _either(first, second):
    """A rule answering as ``first``, or as ``second`` where ``first`` declines (floating and integer
    tensors through one operation)."""
    def rule(args, kwargs):
        out = first(args, kwargs)
        return second(args, kwargs) if out is None else out

    return rule


def _like_channels_last(shape: tuple, strides: tuple) -> bool:
    """torch's ``is_channels_last_strides_2d`` / ``_3d`` (c10's, which the cat kernel's suggested memory
    format reads) on plain integers: whether a 4-D or 5-D tensor's strides order its axes as channels last
    does (N, H, W, C)."""
    order = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}.get(len(shape))
    if order is None or strides[1] == 0:
        return False
    least = 0
    for axis in order:
        if shape[axis] == 0 or strides[axis] < least:
            return False
        if axis == 0 and least == strides[1]:
            return False
        least = strides[axis]
        if shape[axis] > 1:
            least *= shape[axis]
    return True


def _broadcast(shapes: list):
    """The shape ``shapes`` broadcast to, or None where they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        for i, size in enumerate(shape, rank - len(shape)):
            if size != out[i]:
                if out[i] != 1 and size != 1:
                    return None
                if size != 1:
                    out[i] = size
    return tuple(out)


def _expanded(shape: tuple, strides: tuple, to: tuple) -> tuple:
    """The strides of a tensor expanded to the shape ``to``: 0 on the axes it is broadcast along."""
    lead = len(to) - len(shape)
    return (0,) * lead + tuple(step if size == target else 0 for size, step, target in zip(shape, strides, to[lead:]))


def _output_order(shape: tuple, strides: list) -> list:
    """The order in memory of an elementwise output's axes (outermost first), from its operands' strides
    (each expanded to ``shape``): torch's ``compute_elementwise_output_logical_to_physical_perm``, which
    the meta kernels use, on plain integers."""
    rank = len(shape)
    if rank < 2:
        return list(range(rank))
    contiguous = all(_contiguous(shape, s) for s in strides)
    channels_last = rank == 4 and all(_channels_last(shape, s) for s in strides)
    if contiguous and not channels_last:
        return list(range(rank))
    if channels_last and not contiguous:
        return [0, *range(2, rank), 1]

    def at_least(a: int, b: int) -> bool:
        return True if b == 0 else False if a == 0 else a >= b or a % b == 0

    def swap(a: int, b: int) -> int:
        for step in strides:
            step_a, step_b = step[a], step[b]
            if step_a == 0 or step_b == 0:
                continue
            if step_a == step_b:
                if at_least(shape[b], shape[a]):
                    continue
                return 1
            if at_least(step_b, step_a):
                return -1
            if at_least(step_a, step_b):
                return 1
        return 0

    order = list(reversed(range(rank)))  # innermost first while sorting
    for i in range(1, rank):
        moving = i
        for before in reversed(range(i)):
            verdict = swap(order[before], order[moving])
            if verdict > 0:
                order[before], order[moving] = order[moving], order[before]
                moving = before
            elif verdict < 0:
                break
    return list(reversed(order))


def _contiguous(shape: tuple, strides: tuple) -> bool:
    """torch's is_contiguous: fewer than two elements, or strides nested as a row-major layout's (axes of
    length one skipped)."""
    count = 1
    for size in shape:
        count *= size
    if count < 2:
        return True
    expected = expected_max = 1
    for size, step in zip(reversed(shape), reversed(strides)):
        if size == 1:
            continue
        if step != expected and step != expected_max:
            return False
        expected_max *= max(size, 1)
        expected *= size
    return True


def _channels_last(shape: tuple, strides: tuple) -> bool:
    """torch's channels-last test of a 4-D tensor (N, C, H, W laid out N, H, W, C)."""
    expected = 1
    for axis in (1, 3, 2, 0):
        if shape[axis] == 1:
            continue
        if strides[axis] != expected:
            return False
        expected *= shape[axis]
    return True


def _axis(dim, rank: int):
    """``dim`` counted from the front, or None where it is not an axis of a tensor of that rank."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        return None
    if -max(rank, 1) <= dim < max(rank, 1):
        return dim % max(rank, 1)
    return None
