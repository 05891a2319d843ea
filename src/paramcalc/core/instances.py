"""Dataclass instances made without their ``__init__``.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, one call per field. A
model read by running it has thousands of nodes and rows, made from values already checked where they
were computed, so those are made here: a bare instance whose ``__dict__`` gets the defaults and the
values given. Only for classes with no ``__post_init__`` (nothing would check or derive a field).
"""

from __future__ import annotations

from dataclasses import MISSING, fields

_DEFAULTS: dict = {}  # class -> (field defaults, field default factories)


def made(cls: type, values: dict):
    """An instance of the dataclass ``cls`` with ``values`` (every field without a default among them),
    as ``cls(**values)`` would make it."""
    found = _DEFAULTS.get(cls)
    if found is None:
        if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__"):
            raise TypeError(f"{cls.__name__} derives or checks fields in __post_init__ or has slots: call it")
        found = _DEFAULTS[cls] = (
            {f.name: f.default for f in fields(cls) if f.default is not MISSING},
            tuple((f.name, f.default_factory) for f in fields(cls) if f.default_factory is not MISSING))
    defaults, factories = found
    instance = object.__new__(cls)
    state = instance.__dict__
    state.update(defaults)
    for name, factory in factories:
        state[name] = factory()
    state.update(values)
    return instance
