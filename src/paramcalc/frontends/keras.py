"""Keras models, read from their config: no weights are built, nothing is imported or executed.

Works on ``model.get_config()`` of a Sequential (Keras 3 ``batch_shape`` / ``build_input_shape`` and
the legacy Keras 2 ``batch_input_shape``), its serialized form ({"class_name": "Sequential",
"config": ...}), and on a live model object, built or not. A model too large to build can still be
estimated from its config. Class names are looked up in a table: a name that is not there is an error,
never an import.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ParamcalcError, SpecError, UnknownLayerError
from ..graph import Sequential
from ..layers import Activation, Dense, Dropout, Flatten, Identity, Permute, Reshape
from ..registry import keras_converter, register_keras_layer

MAX_NESTING = 64  # Sequential models inside Sequential models


def is_keras_config(doc: dict) -> bool:
    """A Keras config dict, as opposed to a paramcalc spec (whose layers say "kind")."""
    if "class_name" in doc and "config" in doc:
        return True
    layers = doc.get("layers")
    return isinstance(layers, list) and any(isinstance(x, dict) and "class_name" in x for x in layers)


def from_keras_model(model: object) -> Sequential:
    """A live Keras model: only its config is read."""
    class_name = type(model).__name__
    if class_name != "Sequential":
        raise SpecError(
            f"Keras model '{getattr(model, 'name', '?')}' is a {class_name}; paramcalc reads Sequential "
            "models so far",
            value=class_name, fix="pass a keras.Sequential model or its get_config()",
        )
    return from_keras_config(model.get_config())


def from_keras_config(doc: dict, where: str = "$", depth: int = 0) -> Sequential:
    if depth > MAX_NESTING:
        raise SpecError(f"nesting too deep (limit {MAX_NESTING}) at {where}", where=where)
    if "class_name" in doc and "config" in doc:
        if doc["class_name"] != "Sequential":
            raise SpecError(f"{where} is a Keras {doc['class_name']!r}; paramcalc reads Sequential models "
                            "so far", where=where, value=doc["class_name"])
        return from_keras_config(doc["config"], f"{where}.config", depth)
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise SpecError(f"{where}.layers must be a list, received {type(layers_doc).__name__}",
                        where=f"{where}.layers")
    name = doc.get("name") or "sequential"
    input_shape = _batch_shape_to_sample(doc.get("build_input_shape"))
    layers = []
    trainable_model = doc.get("trainable", True) is not False
    for i, item in enumerate(layers_doc):
        path = f"{where}.layers[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
            raise SpecError(f"{path} must be a Keras layer config with a class_name", where=path)
        class_name = item["class_name"]
        config = item.get("config") or {}
        if not isinstance(config, dict):
            raise SpecError(f"{path}.config must be an object", where=f"{path}.config")
        if class_name == "InputLayer":
            shape = config.get("batch_shape", config.get("batch_input_shape"))
            input_shape = _batch_shape_to_sample(shape) or input_shape
            continue
        if i == 0 and config.get("batch_input_shape") is not None:  # Keras 2 first-layer input shape
            input_shape = _batch_shape_to_sample(config["batch_input_shape"])
        if class_name == "Sequential":
            inner = from_keras_config(config, f"{path}.config", depth + 1)
            layers.extend(_prefixed(inner, trainable_model and config.get("trainable", True) is not False))
            if not layers_doc[:i] and inner.input_shape is not None and input_shape is None:
                input_shape = inner.input_shape
            continue
        layers.append(_convert(class_name, config, path, trainable_model, item.get("module")))
    dtype = _policy_name(doc.get("dtype")) or "float32"
    return Sequential(layers, input_shape=input_shape, name=name, framework="keras", dtype=dtype)


def _prefixed(inner: Sequential, trainable: bool) -> list:
    """Layers of a nested Sequential, named "outer_model/layer" so the hierarchy stays visible."""
    from dataclasses import replace

    out = []
    for layer in inner.layers:
        name = f"{inner.name}/{layer.name}" if layer.name else None
        out.append(replace(layer, name=name, trainable=layer.trainable if trainable else False))
    return out


def _batch_shape_to_sample(shape: object) -> tuple | None:
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    return tuple(shape[1:])


def _policy_name(dtype: object) -> str | None:
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict):
        config = dtype.get("config")
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            return config["name"]
    return None


def _convert(class_name: str, config: dict, path: str, trainable_model: bool, module: object):
    convert = keras_converter(class_name)
    layer_name = config.get("name") if isinstance(config.get("name"), str) else None
    if convert is None:
        origin = f"{module}.{class_name}" if isinstance(module, str) and module else class_name
        raise UnknownLayerError(
            f"unsupported layer class '{origin}' at {path}",
            layer=layer_name, value=class_name,
            fix=f"register a rule: paramcalc.register_keras_layer({class_name!r}, lambda config: "
                "paramcalc.Dense(...)) returning a paramcalc layer",
        )
    try:
        layer = convert(config)
    except ParamcalcError as err:
        raise err.with_layer(layer_name or path) from None
    except (KeyError, TypeError, ValueError) as err:
        raise SpecError(f"{path}: cannot read the {class_name} config ({err!r})", layer=layer_name,
                        where=path) from None
    trainable = trainable_model and config.get("trainable", True) is not False
    from dataclasses import replace

    return replace(layer, name=layer_name, type_name=class_name,
                   trainable=layer.trainable if trainable else False)


# -- built-in Keras classes ---------------------------------------------------------------------------------
def _activation_of(config: dict) -> str:
    act = config.get("activation", "linear")
    if isinstance(act, dict):  # a serialized function: only built-in names are known
        raise SpecError(f"activation {act.get('class_name') or act.get('config')!r} is a custom function",
                        value=act, fix="register a layer kind for it")
    return act


def _simple(kind: Callable) -> Callable:
    return lambda config: kind()


BUILTINS: dict[str, Callable] = {
    "Dense": lambda c: Dense(c["units"], activation=_activation_of(c), use_bias=c.get("use_bias", True)),
    "Flatten": lambda c: Flatten(),
    "Reshape": lambda c: Reshape(tuple(c["target_shape"])),
    "Permute": lambda c: Permute(tuple(c["dims"])),
    "Activation": lambda c: Activation(_activation_of(c)),
    "ReLU": lambda c: Activation("relu"),
    "LeakyReLU": lambda c: Activation("leaky_relu"),
    "ELU": lambda c: Activation("elu"),
    "Softmax": lambda c: Activation("softmax", axis=c.get("axis", -1) if isinstance(c.get("axis", -1), int) else -1),
    "Dropout": lambda c: Dropout(c.get("rate", 0.5)),
    "SpatialDropout1D": lambda c: Dropout(c.get("rate", 0.5)),
    "SpatialDropout2D": lambda c: Dropout(c.get("rate", 0.5)),
    "SpatialDropout3D": lambda c: Dropout(c.get("rate", 0.5)),
    "GaussianDropout": lambda c: Dropout(c.get("rate", 0.5)),
    "AlphaDropout": lambda c: Dropout(c.get("rate", 0.5)),
    "ActivityRegularization": _simple(Identity),
    "Identity": _simple(Identity),
}

for _name, _convert_fn in BUILTINS.items():
    register_keras_layer(_name, _convert_fn)
