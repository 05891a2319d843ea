"""Front-ends translate what the user hands in into a paramcalc model; they never compute.

The framework is recognised from the object's class hierarchy (module names), so no framework is
imported here: a Keras model is read through its own ``get_config()``, a torch module through its
attributes, and their modules are only touched once the user has imported them.
"""

from __future__ import annotations

from paramcalc.core.errors import SpecError
from paramcalc.core.graph import Graph, Sequential
from paramcalc.core.layer import Layer


def framework_of(obj: object) -> str | None:
    """'keras', 'torch' or None, from the module names of the object's classes."""
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        if module.startswith("torch.nn"):
            return "torch"
        if module.startswith(("keras.", "tf_keras.")) or module == "keras":
            return "keras"
    return None


def to_model(obj: object) -> Sequential | Graph:
    """Whatever ``estimate()`` accepts, as a paramcalc model (both have ``.graph()``)."""
    if isinstance(obj, (Sequential, Graph)):
        return obj
    if isinstance(obj, Layer):
        return Sequential([obj], name=obj.name or "model")
    if isinstance(obj, (list, tuple)) and all(isinstance(x, Layer) for x in obj):
        return Sequential(obj)
    if isinstance(obj, dict):
        from paramcalc.frontends.keras import from_keras_config, is_keras_config
        from paramcalc.frontends.spec import from_spec

        return from_keras_config(obj) if is_keras_config(obj) else from_spec(obj)
    if isinstance(obj, str):
        from paramcalc.frontends.spec import load_spec_text

        return to_model(load_spec_text(obj, "<string>"))
    if isinstance(obj, type):
        name = f"{obj.__module__}.{obj.__qualname__}"
        raise SpecError(
            f"received the class {name}, not a model: paramcalc estimates a model object", value=obj,
            fix=f"pass an instance, {obj.__qualname__}(...), or a function that returns one; on the command "
                f"line, {obj.__module__}:{obj.__qualname__}() calls it with no arguments")
    framework = framework_of(obj)
    if framework == "keras":
        from paramcalc.frontends.keras_live import from_keras_model

        return from_keras_model(obj)
    if framework == "torch":
        from paramcalc.frontends.torch import from_torch_module

        return from_torch_module(obj)
    raise SpecError(
        f"cannot estimate an object of type {type(obj).__module__}.{type(obj).__qualname__}",
        value=obj,
        fix="pass a paramcalc.Sequential or Graph, a spec dict or JSON text, a Keras model or its "
            "get_config(), or a torch nn.Module",
    )
