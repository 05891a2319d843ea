"""Where layer kinds and front-end translations are registered, so that tests and docs can enumerate them.

Three tables, all framework-free:
- layer kinds: ``@register_layer("dense")`` on a :class:`paramcalc.layers.Layer` subclass;
- Keras classes: ``register_keras_layer("MyLayer", convert)``, ``convert(config: dict) -> Layer``;
- torch modules: ``register_torch_module(MyModule, convert)``, ``convert(module) -> Layer``.
"""

from __future__ import annotations

from typing import Callable, TypeVar

_LAYER_KINDS: dict[str, type] = {}
_KERAS_CLASSES: dict[str, Callable] = {}
_TORCH_MODULES: dict[object, Callable] = {}  # keyed by class or by "module.QualName"

T = TypeVar("T", bound=type)


def register_layer(kind: str) -> Callable[[T], T]:
    """Class decorator: make a Layer subclass available under ``kind`` (specs use this name).

    >>> from paramcalc import Layer, register_layer
    >>> @register_layer("doubler")
    ... class Doubler(Layer):
    ...     def infer(self, inputs, ctx):
    ...         (x,) = inputs
    ...         return ctx.result(x.with_shape(x.shape[:-1] + (2 * x.shape[-1],)))
    """
    if type(kind) is not str or not kind.replace("_", "").isalnum():
        raise ValueError(f"a layer kind must be a short identifier such as 'dense', received {kind!r}")

    def decorate(cls: T) -> T:
        previous = _LAYER_KINDS.get(kind)
        if previous is not None and previous is not cls and previous.__qualname__ != cls.__qualname__:
            raise ValueError(f"layer kind '{kind}' is already registered by {previous.__qualname__}")
        cls.kind = kind
        _LAYER_KINDS[kind] = cls
        return cls

    return decorate


def layer_kinds() -> dict[str, type]:
    """Every registered layer kind, by name (the built-in kinds register when ``paramcalc.layers`` is
    imported, as ``import paramcalc`` does)."""
    return dict(_LAYER_KINDS)


def layer_classes() -> list[type]:
    """The classes registered so far (no import: the layers package uses it while it registers them)."""
    return list(_LAYER_KINDS.values())


def lookup_kind(kind: str) -> type | None:
    return _LAYER_KINDS.get(kind)


def register_keras_layer(class_name: str, convert: Callable) -> None:
    """Teach the Keras front-end a layer class: ``convert(config_dict) -> paramcalc Layer``. Where the
    layer depends on a plain keyword argument of the call, name it in ``convert.call_options`` and take
    it as a keyword argument with its default: ``convert(config, reverse=False)`` (KerasHub's
    ReversibleEmbedding: a lookup, or with ``reverse=True`` the projection onto its rows)."""
    _KERAS_CLASSES[class_name] = convert


def keras_converter(class_name: str, module: object = None) -> Callable | None:
    """The rule for a Keras class name. A rule for a library's class (``convert.modules``: the module
    prefixes it is for, ``("keras_hub.",)``) is not one for a user's class of the same name elsewhere;
    a config that does not say its module takes it."""
    convert = _KERAS_CLASSES.get(class_name)
    only = getattr(convert, "modules", None)
    if only and isinstance(module, str) and module and not module.startswith(tuple(only)):
        return None
    return convert


def keras_classes() -> dict[str, Callable]:
    return dict(_KERAS_CLASSES)


def register_torch_module(module_class: object, convert: Callable) -> None:
    """Teach the torch front-end a module class: ``convert(module) -> paramcalc Layer``. Where the layer
    depends on a plain keyword argument of the call, name it in ``convert.call_options`` (a tuple of
    names) and take it as a keyword argument with its default: ``convert(module, need_weights=False)``.

    ``module_class`` is the class itself or its dotted name ("torch.nn.modules.linear.Linear"), so
    built-in rules can be declared without importing torch.
    """
    _TORCH_MODULES[module_class] = convert


def torch_converter(module_class: type) -> Callable | None:
    """The rule for a module class: its own, or that of the nearest known base class when the subclass
    keeps the base's ``forward`` (torchvision's ``Conv3DSimple(nn.Conv3d)`` only changes ``__init__``).
    A subclass with its own ``forward`` has none: it is traced through."""
    convert = _exact_torch_converter(module_class)
    if convert is not None:
        return convert
    forward = getattr(module_class, "forward", None)
    for base in getattr(module_class, "__mro__", ())[1:]:
        convert = _exact_torch_converter(base)
        if convert is not None:
            return convert if getattr(base, "forward", None) is forward else None
    return None


def _exact_torch_converter(module_class: type) -> Callable | None:
    convert = _TORCH_MODULES.get(module_class)
    if convert is None:
        convert = _TORCH_MODULES.get(f"{module_class.__module__}.{module_class.__qualname__}")
    return convert


def torch_modules() -> dict[object, Callable]:
    return dict(_TORCH_MODULES)


def chosen_call_options(convert: Callable, options: dict | None) -> tuple | None:
    """The (name, value) of each call option ``convert`` reads (``convert.call_options``), the call's
    plain value or the rule's default, so a call that leaves one out and a call that passes the default
    are one layer; None for a rule that reads none. A layer called again with other options is another
    paramcalc layer over the same weights (tied to the first)."""
    names = getattr(convert, "call_options", ())
    if not names:
        return None
    import inspect

    defaults = inspect.signature(convert).parameters
    given = {k: v for k, v in (options or {}).items() if isinstance(v, (bool, int, float, str))}
    # an option the rule reads as "given or not" (``convert.tensor_options``): a tensor passed, or None
    passed = {k: (options or {}).get(k) is not None for k in getattr(convert, "tensor_options", ())}
    return tuple((n, passed[n] if n in passed else given.get(n, defaults[n].default)) for n in sorted(names))
