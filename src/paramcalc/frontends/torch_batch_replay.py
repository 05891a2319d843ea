"""The run at the second batch size, without running the forward again: the first run's ATen operations
replayed, in order, on the second batch's tensors.

A captured model's sizes are ``a + c * batch``, read from the shapes it makes at two batch sizes. Every
tensor the forward makes comes from an ATen operation the first run dispatched, so calling those
operations again on the inputs of the second batch gives every shape a second run would record, without
the model's Python, the module hooks or the autograd graph (a fifth to a tenth of a run's time).

What the forward passed those operations as plain integers (``view``'s sizes, ``arange``'s end) it may
have computed from the batch in Python, which the operations do not show. The first run is at a prime
batch size that divides no size of the model's inputs, parameters or buffers (``batch_sizes``); the replay
takes an integer argument the prime divides as a multiple of the batch (291 = 3 x 97 at batch 97 is
3 x 101 at batch 101), and any other integer as it was. An integer read wrong (a size computed as
``batch + 1``, a constant that happens to be a multiple of the prime) gives shapes that no longer fit
together, which torch's kernels refuse: the replay then gives up (:class:`NotReplayable`) and the forward
runs again at the second batch size. ``CHECK`` (the tests set it) runs that forward every time and fails
where the two differ.

An operation that writes an input in place (``unsqueeze_`` changes its shape) gives its record the shapes
it was given.

Calls the first run copied (``torch_replay``) dispatched nothing: their outputs at the second batch are
laid out as their first call's outputs are there, once the copy's tensor arguments are seen to be alike
at the second batch as well (else the replay gives up).
"""

from __future__ import annotations

from paramcalc.frontends.torch_meta_memo import tensors_among, writes_in_place

CHECK = False  # also run the forward at the second batch size, and fail where the replay differs from it
# the events a run logs, in the order they happen
OPERATION = 0  # (OPERATION, func, args, kwargs, out): an ATen operation dispatched
RECORD = 1  # (RECORD, record, input tensors, output tensors): an operation's record, after it ran
REGISTERED = 2  # (REGISTERED, reference, tensor): a tensor given a graph reference
SAME_SHAPE = 3  # (SAME_SHAPE, reference, reference of the same shape): a copied call's tensor
COPY = 4  # (COPY, the copy's tensor arguments, its first call's): a call copied instead of run
COPIED_RECORD = 5  # (COPIED_RECORD, record, the first call's record it copies)
COPY_OUTPUTS = 6  # (COPY_OUTPUTS, [(the copy's output tensor, the first call's output it stands for)])
# batch sizes for the first run: primes that the sizes of few models are multiples of, and that divide no
# integer torch uses as a marker (2**63 - 1 is 7 x 7 x 73 x 127 x 337 x 92737 x 649657)
_PRIMES = (97, 101, 103, 107, 109, 113, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193, 199)
_LIMIT = 2 ** 53  # larger integers are markers (a slice to the end), never sizes computed from the batch


class NotReplayable(Exception):
    """The first run's operations cannot be replayed at the second batch size: it runs the forward."""


class ReplayDiffers(AssertionError):
    """Under ``CHECK``: the replay's shapes differ from the forward's at the second batch size."""


def batch_sizes(module: object, sample_shapes: tuple) -> tuple | None:
    """The two batch sizes to run at: the two smallest of ``_PRIMES`` that divide no size of the inputs,
    parameters and buffers and no integer attribute of a module (or of the model's ``config``), where
    the constants a forward computes come from; None where no two do (the runs then take small batches
    and no replay)."""
    sizes = {int(d) for _, shape in sample_shapes for d in shape if isinstance(d, int)}
    for t in (*module.parameters(), *module.buffers()):
        sizes.update(t.shape)
    for m in module.modules():
        _integers(vars(m), sizes)
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "__dict__"):
        _integers(vars(config), sizes)
    sizes = {abs(s) for s in sizes if s and abs(s) < _LIMIT}
    free = [p for p in _PRIMES if all(s % p for s in sizes)]
    return (free[0], free[1]) if len(free) >= 2 else None


def _integers(attributes: dict, found: set) -> None:
    """The integers among ``attributes``' values, and in their tuples and lists, one level deep."""
    for value in attributes.values():
        if type(value) is int:
            found.add(value)
        elif type(value) in (tuple, list) and len(value) <= 64:
            found.update(v for v in value if type(v) is int)


def replay(events: list, inputs: dict, first: int, second: int, kernel) -> tuple[dict, dict]:
    """The shapes at batch ``second`` of what the run at batch ``first`` logged in ``events``: id(record) ->
    (input shapes, output shapes) of each operation's record, and reference -> shape of every tensor
    registered. ``inputs``: id(first run's input) -> the second batch's; ``kernel`` runs an operation as
    the first run did (the memo, the CPU's rules)."""
    import torch

    tensor = torch.Tensor
    at_second: dict = dict(inputs)  # id(a first-run tensor) -> the replay's tensor in its place
    found = at_second.get

    def argument(value):
        kind = type(value)
        if kind is int:
            return value // first * second if value % first == 0 and value and -_LIMIT < value < _LIMIT else value
        if kind is list or kind is tuple:
            return kind([argument(v) for v in value])
        if isinstance(value, tensor):
            return found(id(value), value)  # one the run did not make is the same for any batch
        return value

    def shape(t) -> tuple:
        return tuple(found(id(t), t).shape)

    before: dict = {}  # id(a first-run tensor) -> its shape before the last operation, which wrote it in place

    record_shapes: dict = {}
    shapes: dict = {}
    with torch.no_grad():  # shapes only: no autograd graph to build
        for event in events:
            kind = event[0]
            if kind == REGISTERED:
                shapes[event[1]] = shape(event[2])
            elif kind == OPERATION:
                _, func, args, kwargs, out = event
                before = {id(t): shape(t) for t in tensors_among((*args, *kwargs.values()), tensor)} \
                    if writes_in_place(func) else {}
                result = kernel(func, argument(args), {k: argument(v) for k, v in kwargs.items()} if kwargs else {})
                if type(out) is tensor:
                    if not isinstance(result, tensor):
                        raise NotReplayable("an operation returned other than a tensor")
                    at_second[id(out)] = result
                else:
                    _pair(out, result, at_second, tensor)
            elif kind == RECORD:
                _, record, ins, outs = event
                if before:
                    record_shapes[id(record)] = ([before.get(id(t)) or shape(t) for t in ins], [shape(t) for t in outs])
                else:
                    record_shapes[id(record)] = ([shape(t) for t in ins], [shape(t) for t in outs])
            elif kind == SAME_SHAPE:
                if event[2] not in shapes:
                    raise NotReplayable(f"{event[2]} has no shape")
                shapes[event[1]] = shapes[event[2]]
            elif kind == COPY:
                _, copy_inputs, first_inputs = event
                if [_layout(found(id(t), t)) for t in copy_inputs] != [_layout(found(id(t), t)) for t in first_inputs]:
                    raise NotReplayable("a copied call's arguments differ from its first call's at the second batch")
            elif kind == COPIED_RECORD:
                copied = record_shapes.get(id(event[2]))
                if copied is None:
                    raise NotReplayable(f"{event[2].name} has no shapes")
                record_shapes[id(event[1])] = copied
            else:  # COPY_OUTPUTS
                for fresh, original in event[1]:
                    source = found(id(original))
                    if source is None:
                        raise NotReplayable("a copied call's output was not made by an operation")
                    at_second[id(fresh)] = torch.empty_strided(source.shape, source.stride(), dtype=source.dtype,
                                                               device=source.device)
    return record_shapes, shapes


def _pair(out, result, at_second: dict, tensor) -> None:
    """Map each tensor of an operation's first-run output to the replay's."""
    if isinstance(out, tensor):
        if not isinstance(result, tensor):
            raise NotReplayable("an operation returned other than a tensor")
        at_second[id(out)] = result
    elif isinstance(out, (tuple, list)):
        if not isinstance(result, (tuple, list)) or len(result) != len(out):
            raise NotReplayable("an operation returned another structure")
        for o, r in zip(out, result):
            _pair(o, r, at_second, tensor)


def _layout(t) -> tuple:
    return t.dtype, tuple(t.shape), t.stride(), t.storage_offset()
