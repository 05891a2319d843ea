"""ATen operations on meta tensors, answered from memory when called again alike.

Many of torch's meta kernels are Python references (``torch._refs``), slower than the Python that
records them (docs/accuracy.md gives the figures). A meta kernel's result depends only on what it is
given, with no values to read: the operation, each tensor argument's dtype, shape, strides and storage
offset, and the other arguments.
So an operation that writes nothing and returns fresh tensors (a *functional* one), called again on
arguments alike, gets new empty tensors with the dtypes, shapes and strides its first call returned, and
its kernel is not run again. The layers of a transformer repeat their shapes, so most calls are answered.

A first call whose answer is plain (``torch_meta_shapes``: tensors of one floating dtype through a layer
norm, a product, an elementwise operation) is answered by a rule without the kernel either; ``CHECK``
(which the tests set) runs the kernel too and fails where the two differ.

A call that failed is not remembered (the next one alike fails the same way, with torch's message); a
call with an argument that cannot be described (a generator, a tensor on another device) always runs.
"""

from __future__ import annotations

from paramcalc.frontends.torch_meta_shapes import shape_rules

CHECK = False  # run torch's kernel as well on every call a rule answers, and fail where they differ
_FUNCTIONAL: dict = {}  # operation -> whether it writes nothing and returns only new tensors
_SCALARS = (int, float, bool, str, type(None))


class _Indescribable(Exception):
    """An argument the memo cannot key on: the call runs its kernel."""


class MetaMemo:
    """Functional ATen operations' results on meta tensors, by the call's description."""

    def __init__(self) -> None:
        import torch

        self._tensor = torch.Tensor
        self._empty_strided = torch.empty_strided
        self._plain = (*_SCALARS, torch.dtype, torch.device, torch.layout, torch.memory_format)
        self.results: dict = {}  # key -> (single tensor returned, ((dtype, shape, strides), ...)) or None
        self.rules = shape_rules()
        self.hits = 0
        # operations seen returning a tensor of their input's storage, though their schema says nothing of
        # it (``_unsafe_view``): never remembered, so not described either
        self.aliasing: set = set()

    def call(self, func, args: tuple, kwargs: dict):
        """``func(*args, **kwargs)``, or fresh tensors like its first result on arguments alike."""
        if not _functional(func) or func in self.aliasing:
            return func(*args, **kwargs)
        try:
            key = (func, self._describe(args), self._describe(tuple(kwargs.items())) if kwargs else ())
        except _Indescribable:
            return func(*args, **kwargs)
        found = self.results.get(key, False)
        if found:
            self.hits += 1
            single, outputs = found
            made = [self._empty_strided(shape, strides, dtype=dtype, device="meta") for dtype, shape, strides in outputs]
            return made[0] if single else tuple(made)
        rule = self.rules.get(func) if found is False else None
        out = rule(args, kwargs) if rule is not None else None
        if out is None:
            out = func(*args, **kwargs)
        elif CHECK:
            _check(func, out, func(*args, **kwargs))
        if found is False:
            self.results[key] = self._result(func, out, args, kwargs)
        return out

    def _result(self, func, out, args: tuple, kwargs: dict):
        """What ``out`` is made of, or None where a later call must run (an output that is not a fresh
        meta tensor of its own storage)."""
        single = isinstance(out, self._tensor)
        outputs = [out] if single else list(out) if isinstance(out, tuple) else None
        if not outputs or not all(isinstance(t, self._tensor) and t.device.type == "meta" and t.storage_offset() == 0
                                  for t in outputs):
            return None
        storages = {t.untyped_storage()._cdata for t in outputs}
        if len(storages) != len(outputs):
            return None
        if storages & {t.untyped_storage()._cdata for t in tensors_among((*args, *kwargs.values()), self._tensor)}:
            self.aliasing.add(func)
            return None
        return single, tuple((t.dtype, tuple(t.shape), t.stride()) for t in outputs)

    def _describe(self, value):
        if isinstance(value, self._tensor):
            if value.device.type != "meta" or value.is_conj() or value.is_neg():
                raise _Indescribable
            return value.dtype, tuple(value.shape), value.stride(), value.storage_offset()
        if isinstance(value, (tuple, list)):
            return tuple(self._describe(v) for v in value)
        if isinstance(value, self._plain):
            return type(value), value  # 1, 1.0 and True are equal keys otherwise, and promote differently
        raise _Indescribable


def _check(func, ours, theirs) -> None:
    """Fail where a rule's answer differs from torch's kernel's in a dtype, a shape or a stride."""
    def described(out):
        return [(t.dtype, tuple(t.shape), t.stride()) for t in ((out,) if not isinstance(out, tuple) else out)]

    if described(ours) != described(theirs):
        raise AssertionError(f"the meta shape rule for {func} answered {described(ours)}, torch's kernel "
                             f"{described(theirs)}")


def _functional(func) -> bool:
    found = _FUNCTIONAL.get(func)
    if found is None:
        schema = func._schema
        found = _FUNCTIONAL[func] = (
            bool(schema.returns) and not schema.is_mutable
            and all(a.alias_info is None for a in schema.arguments)
            and all(r.alias_info is None and str(r.type) == "Tensor" for r in schema.returns))
    return found


_WRITES: dict = {}  # operation -> whether it writes an argument in place


def writes_in_place(func) -> bool:
    """Whether the ATen operation writes one of its arguments (``add_``, ``unsqueeze_``, an ``out=``)."""
    found = _WRITES.get(func)
    if found is None:
        found = _WRITES[func] = any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)
    return found


def tensors_among(values, tensor) -> list:
    """The tensors among an ATen operation's arguments (or outputs), in order: each a tensor, or a list
    of them (``Tensor[]``, ``Tensor?[]``), one level deep."""
    found = []
    for v in values:
        if isinstance(v, tensor):
            found.append(v)
        elif isinstance(v, (tuple, list)):
            found.extend(x for x in v if isinstance(x, tensor))
    return found
