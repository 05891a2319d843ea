"""Keras models, read from their config: no weights are built, nothing is imported or executed.

Reads ``model.get_config()`` of a Sequential or a functional model (Keras 3 ``inbound_nodes`` with
``keras_history``, and the legacy Keras 2 lists) and their serialized form ({"class_name": ...,
"config": ...}); a live Sequential or functional model goes through its config too, built or not, so a
model too large to build still gets its answer (``frontends/keras_live.py`` reads what a config cannot
say: models built inside a subclass, classes without a rule). Nested models are inlined with names
"inner/layer"; a layer called several times is one layer (weights counted once) with calls named
"layer", "layer@1", ... Class names are looked up in a table: a name that is not there is an error,
never an import.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from paramcalc.core.errors import ParamcalcError, SpecError, UnknownLayerError, shown
from paramcalc.core.graph import Graph, GraphNode
from paramcalc.core.layer import ALL_TIED
from paramcalc.core.registry import (
    chosen_call_options,
    keras_converter,
    register_keras_layer,
)
from paramcalc.frontends.keras_trace import snake_case
from paramcalc.layers import (
    Activation,
    AdaptivePool,
    Augment,
    BatchNorm,
    Concatenate,
    Conv,
    ConvLSTM,
    ConvTranspose,
    Crop,
    Dense,
    DepthwiseConv,
    Dot,
    DotProductAttention,
    Dropout,
    Einsum,
    EinsumDense,
    Embedding,
    Flatten,
    GlobalPool,
    GroupNorm,
    Identity,
    Index,
    LayerNorm,
    LayerScale,
    MatMul,
    Merge,
    MultiHeadAttention,
    Normalization,
    Opaque,
    Pad,
    Permute,
    Pool,
    PositionEmbedding,
    PReLU,
    Recurrent,
    Repeat,
    RepeatVector,
    Rescale,
    Reshape,
    ReversibleEmbedding,
    RMSNorm,
    RotaryEmbedding,
    ScalarOp,
    ScaledSum,
    ScoreAttention,
    SeparableConv,
    TimeDistributed,
    Transpose,
    Unsqueeze,
    UpSample,
    View,
)
from paramcalc.layers.elementwise import ACTIVATION_ALIASES, ACTIVATION_FLOPS
from paramcalc.layers.tensor_ops import index_items

MAX_NESTING = 64  # models inside models
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def is_keras_config(doc: dict) -> bool:
    """A Keras config dict, as opposed to a paramcalc spec (whose layers say "kind")."""
    if "class_name" in doc and "config" in doc:
        return True
    layers = doc.get("layers")
    return isinstance(layers, list) and any(isinstance(x, dict) and "class_name" in x for x in layers)


def from_keras_config(doc: dict, where: str = "$"):
    """A Sequential or functional config (or its serialized wrapper) as a paramcalc model."""
    if not isinstance(doc, dict):
        raise SpecError(f"{where} must be a Keras model config (an object), received {type(doc).__name__}",
                        where=where)
    if "class_name" in doc and "config" in doc:
        if not isinstance(doc["class_name"], str) or doc["class_name"] not in MODEL_CLASSES:
            raise SpecError(f"{where} is a Keras {doc['class_name']!r}, not a model", where=where,
                            value=doc["class_name"])
        graph = from_keras_config(doc["config"], f"{where}.config")
        # the archive's compile_config (losses, metrics) sits beside the model config
        extra = tuple(f"code at {path} (a serialized Python lambda) is never decoded or run"
                      for path in find_lambdas({k: v for k, v in doc.items() if k != "config"}, where))
        return replace(graph, notes=graph.notes + extra) if extra else graph
    builder = GraphBuilder()
    trainable = doc.get("trainable", True) is not False
    inputs, outputs = builder.model(doc, where, prefix="", outer_refs=None, depth=0, trainable=trainable)
    nodes = tuple(GraphNode(n.name, n.layer, tuple(builder.resolve(r, n.name) for r in n.inbound))
                  for n in builder.nodes)
    outputs = tuple(builder.resolve(r, "the model outputs") for r in outputs)
    dtype = _policy_name(doc.get("dtype")) or "float32"
    notes = tuple(f"code at {path} (a serialized Python lambda) is never decoded or run"
                  for path in find_lambdas(doc, where))
    return Graph(tuple(inputs), nodes, outputs, name=doc.get("name") or "model", framework="keras", dtype=dtype,
                 notes=notes)


def find_lambdas(doc: object, where: str = "$", limit: int = 100_000) -> list[str]:
    """JSON paths of serialized lambdas anywhere in a config (layers, wrappers, compile_config), walked
    iteratively with a cap on the nodes visited."""
    found, stack, visited = [], [(doc, where)], 0
    while stack and visited < limit:
        value, path = stack.pop()
        visited += 1
        if isinstance(value, dict):
            if value.get("class_name") == "__lambda__":
                found.append(path)
            stack.extend((v, f"{path}.{k}") for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return sorted(found)


def _is_functional(doc: dict) -> bool:
    layers = doc.get("layers")
    return "input_layers" in doc or (isinstance(layers, list) and any(
        isinstance(x, dict) and x.get("inbound_nodes") for x in layers))


def _is_model(class_name: str, config: dict) -> bool:
    return class_name in MODEL_CLASSES or (keras_converter(class_name) is None and "layers" in config)


class GraphBuilder:
    """Accumulates graph nodes while walking (possibly nested) model configs.

    References stay raw, ("?", qualified layer name, call, tensor), until every config has been read:
    a nested model's input is an outer tensor, and its outputs are read by outer layers.
    """

    def __init__(self) -> None:
        self.nodes: list[GraphNode] = []
        self.layers: dict[str, object] = {}  # qualified name -> the one Layer of that Keras layer
        self.alias: dict[tuple, tuple] = {}  # (qualified name, call, tensor) -> ref (inputs, nested models)
        self.calls: dict[tuple, str] = {}  # (qualified name, call) -> node name

    def model(self, doc: dict, where: str, prefix: str, outer_refs, depth: int, trainable: bool):
        if depth > MAX_NESTING:
            raise SpecError(f"nesting too deep (limit {MAX_NESTING}) at {where}", where=where)
        if _is_functional(doc):
            return self.functional(doc, where, prefix, outer_refs, depth, trainable)
        return self.sequential(doc, where, prefix, outer_refs, depth, trainable)

    def sequential(self, doc: dict, where: str, prefix: str, outer_refs, depth: int, trainable: bool):
        input_name = prefix + "input"
        input_shape = _batch_shape_to_sample(doc.get("build_input_shape"))
        current = outer_refs[0] if outer_refs else (input_name, 0)
        for i, item in enumerate(_layers_of(doc, where)):
            path = f"{where}.layers[{i}]"
            class_name, config = _class_and_config(item, path)
            if class_name == "InputLayer":
                shape = config.get("batch_shape", config.get("batch_input_shape"))
                input_shape = _batch_shape_to_sample(shape) or input_shape
                continue
            if i == 0 and config.get("batch_input_shape") is not None:  # Keras 2: on the first layer
                input_shape = _batch_shape_to_sample(config["batch_input_shape"])
            name = prefix + str(config.get("name") or f"layer_{i}")
            layer_trainable = trainable and config.get("trainable", True) is not False
            if _is_model(class_name, config):
                _, outs = self.model(config, f"{path}.config", f"{name}/", [current], depth + 1, layer_trainable)
                current = outs[0]
                continue
            layer = self._layer(name, class_name, config, path, layer_trainable, item.get("module"))
            self.nodes.append(GraphNode(name, layer, (current,)))
            self.calls[(name, 0)] = name
            current = (name, 0)
        inputs = [] if outer_refs else [(input_name, input_shape)]
        return inputs, [current]

    def functional(self, doc: dict, where: str, prefix: str, outer_refs, depth: int, trainable: bool):
        inputs = []
        input_names = [r[0] for r in _history_list(doc.get("input_layers"), f"{where}.input_layers")]
        for i, item in enumerate(_layers_of(doc, where)):
            path = f"{where}.layers[{i}]"
            class_name, config = _class_and_config(item, path)
            keras_name = str(item.get("name") or config.get("name") or f"layer_{i}")
            name = prefix + keras_name
            layer_trainable = trainable and config.get("trainable", True) is not False
            inbound = item.get("inbound_nodes") or []
            if not isinstance(inbound, list):
                raise SpecError(f"{path}.inbound_nodes must be a list, received {shown(inbound)}",
                                where=f"{path}.inbound_nodes", value=inbound)
            calls = [[("?", prefix + n, k, t) for n, k, t in refs] for refs in _calls(inbound, path)]
            if class_name == "InputLayer":
                if outer_refs is None:
                    shape = config.get("batch_shape", config.get("batch_input_shape"))
                    inputs.append((name, _batch_shape_to_sample(shape)))
                    self.alias[(name, 0, 0)] = (name, 0)
                else:
                    position = input_names.index(keras_name) if keras_name in input_names else 0
                    if position >= len(outer_refs):
                        raise SpecError(f"nested model input '{keras_name}' receives no tensor", where=path)
                    self.alias[(name, 0, 0)] = outer_refs[position]
                continue
            if _is_model(class_name, config):
                for k, refs in enumerate(calls):
                    inner = f"{name}/" if k == 0 else f"{name}@{k}/"
                    _, outs = self.model(config, f"{path}.config", inner, refs, depth + 1, layer_trainable)
                    for t, out in enumerate(outs):
                        self.alias[(name, k, t)] = out
                continue
            module = item.get("module")
            for k, (refs, call_kwargs, constants) in enumerate(zip(calls, _call_kwargs(inbound),
                                                                    _call_constants(inbound))):
                node_name = name if k == 0 else f"{name}@{k}"
                if isinstance(module, str) and module.startswith(_KERAS_OPS):
                    given = frozenset(k for k, v in call_kwargs.items() if isinstance(v, dict)
                                      and v.get("class_name") == "__keras_tensor__")
                    layer = replace(_keras_op(class_name, module, len(refs), path, constants, config, given),
                                    name=name, type_name=class_name)
                else:
                    layer = self._layer(name, class_name, config, path, layer_trainable, module, call_kwargs)
                self.nodes.append(GraphNode(node_name, layer, tuple(refs)))
                self.calls[(name, k)] = node_name
        outputs = [("?", prefix + n, k, t) for n, k, t in _history_list(doc.get("output_layers"),
                                                                         f"{where}.output_layers")]
        return inputs, outputs

    def _layer(self, name: str, class_name: str, config: dict, path: str, trainable: bool, module: object,
               call_kwargs: dict | None = None):
        """The one paramcalc layer of a Keras layer; where its rule reads call options, one per choice of
        them, the first met holding the weights and the others tied to it."""
        chosen = chosen_call_options(keras_converter(class_name, module), call_kwargs)
        key = name if chosen is None else (name, chosen)
        if key not in self.layers:
            layer = convert_layer(class_name, config, path, module, chosen)
            again = chosen is not None and any(type(k) is tuple and k[0] == name for k in self.layers)
            self.layers[key] = replace(layer, name=name, type_name=class_name,
                                       trainable=layer.trainable if trainable else False,
                                       tied=ALL_TIED if again else layer.tied)
        return self.layers[key]

    def resolve(self, ref: tuple, reader: str) -> tuple:
        """A raw reference as a graph ref, following aliases (nested models' inputs and outputs)."""
        for _ in range(10_000):
            if ref[0] != "?":
                return ref
            _, name, call, tensor = ref
            if (name, call, tensor) in self.alias:
                ref = self.alias[(name, call, tensor)]
            elif (name, call) in self.calls:
                return (self.calls[(name, call)], tensor)
            else:
                raise SpecError(f"'{reader}' takes input from '{name}' (call {call}), which does not exist",
                                layer=reader, value=name)
        raise SpecError(f"cycle while resolving the inputs of '{reader}'", layer=reader)


def _layers_of(doc: dict, where: str) -> list:
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise SpecError(f"{where}.layers must be a list, received {type(layers_doc).__name__}",
                        where=f"{where}.layers")
    return layers_doc


def _class_and_config(item: object, path: str) -> tuple[str, dict]:
    if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
        raise SpecError(f"{path} must be a Keras layer config with a class_name", where=path)
    config = item.get("config") or {}
    if not isinstance(config, dict):
        raise SpecError(f"{path}.config must be an object", where=f"{path}.config")
    return item["class_name"], config


def _history_list(value: object, where: str) -> list:
    """input_layers / output_layers: ["name", 0, 0] (one) or [["name", 0, 0], ...], each checked."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{where} must be a list of [layer name, call, tensor], received {shown(value)}",
                        where=where, value=value)
    entries = [value] if value and isinstance(value[0], str) else list(value)
    out = []
    for i, entry in enumerate(entries):
        at = where if entries is not value else f"{where}[{i}]"
        if not isinstance(entry, (list, tuple)) or len(entry) < 3 or not isinstance(entry[0], str):
            raise SpecError(f"{at} must be [layer name, call, tensor], received {shown(entry)}", where=at,
                            value=entry)
        out.append((entry[0], _index(entry[1], f"{at}[1]"), _index(entry[2], f"{at}[2]")))
    return out


_TENSOR_KWARGS = ("query", "value", "key", "inputs")  # call arguments that carry input tensors, in order


_KERAS_OPS = "keras.src.ops."
# Keras operations applied to symbolic tensors in a functional model (``x + 3.0``, ``ops.multiply(a, b)``)
# are saved as operation nodes of these classes
_OP_MERGES = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Divide": "divide",
              "Minimum": "minimum", "Maximum": "maximum",
              "TrueDivide": "divide"}


def _keras_op(class_name: str, module: str, tensors: int, path: str, constants: tuple = (),
              config: dict | None = None, tensor_kwargs: frozenset = frozenset()):
    """A Keras operation node: with two tensors a merge (shapes broadcast), with one tensor and a
    constant an elementwise op on the tensor; ``x[...]`` (GetItem) with ints, slices, None and Ellipsis
    an Index; ``matmul``, ``transpose``, ``reshape`` (a -1 or the batch first) and the activations
    (``ops.gelu``, ``ops.softmax`` over the last axis, ...) by the kinds torch's have. ``constants``: the
    call's positional arguments that are not tensors, as Python values; ``config``: the operation's
    (``axes``, ``newshape``, ``axis``); ``tensor_kwargs``: the keywords passed a tensor (a mask reads
    nothing a rule counts; an attention's additive ``bias`` would be a pass of its own)."""
    config = config or {}
    if class_name == "GetItem" and tensors == 1 and len(constants) == 1 and _basic_index(constants[0]):
        key = constants[0]
        return Index(index_items(key if isinstance(key, (list, tuple)) else [key]))
    if class_name == "Matmul" and tensors == 2 and not constants:
        return MatMul()
    if class_name == "Einsum" and tensors == 2 and not constants and isinstance(config.get("subscripts"), str):
        return Einsum(config["subscripts"])
    if class_name == "DotProductAttention" and tensors == 3 and not constants and \
            config.get("attn_logits_soft_cap") is None and "bias" not in tensor_kwargs:
        return DotProductAttention()
    if class_name == "Repeat" and tensors == 1 and not constants and type(config.get("repeats")) is int \
            and type(config.get("axis")) is int:
        return Repeat(config["repeats"], config["axis"])
    if class_name == "ExpandDims" and tensors == 1 and not constants and type(config.get("axis")) is int:
        return Unsqueeze(config["axis"])
    if class_name == "Pad" and tensors == 1 and not constants and _axis_pairs(config.get("pad_width")):
        return Pad(tuple((axis, *pair) for axis, pair in enumerate(config["pad_width"]) if any(pair)))
    if class_name == "Cast" and tensors == 1 and not constants:
        return Identity()  # as torch's .to(dtype) is read
    if class_name == "Transpose" and tensors == 1 and not constants and config.get("axes") is not None:
        return Transpose(dims=tuple(config["axes"]))
    if class_name == "Reshape" and tensors == 1 and not constants and _batch_first(config.get("newshape")):
        return View(tuple(config["newshape"]))
    if tensors == 1 and not constants and config.get("axis", -1) == -1 and \
            snake_case(class_name) in _OP_ACTIVATIONS:
        return Activation(snake_case(class_name))
    op = _OP_MERGES.get(class_name)
    if op is None:
        raise UnknownLayerError(f"the Keras operation '{module}.{class_name}' at {path} is not modelled",
                                value=class_name, fix="wrap it in a layer class and register a rule "
                                "(paramcalc.register_keras_layer), or use a Keras layer (layers.Add, ...)")
    return Merge(op) if tensors >= 2 else ScalarOp(op)


# ``keras.ops`` activations, by the snake-case name of their operation class (``Gelu``: ``gelu``)
_OP_ACTIVATIONS = {name for name in (*ACTIVATION_FLOPS, *ACTIVATION_ALIASES) if name not in ("linear", "identity")}


def _basic_index(key) -> bool:
    """An index of ints, slices of ints, None and Ellipsis: numpy's basic indexing. A config saves a tuple
    as a list, as it saves a list of ints (advanced indexing, no rule): a list of ints alone is refused."""
    if isinstance(key, list) and all(type(it) is int for it in key):
        return False
    items = key if isinstance(key, (list, tuple)) else (key,)
    return all(it is None or it is Ellipsis or type(it) is int or
               (isinstance(it, slice) and all(v is None or type(v) is int for v in (it.start, it.stop, it.step)))
               for it in items)


def _axis_pairs(pad_width) -> bool:
    """``ops.pad``'s width as one (before, after) pair of ints per axis, the batch's (0, 0)."""
    return (isinstance(pad_width, (list, tuple)) and bool(pad_width)
            and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(type(v) is int and v >= 0 for v in p)
                    for p in pad_width) and not any(pad_width[0]))


def _batch_first(newshape) -> bool:
    """A reshape's target that keeps the batch free: ints, the first -1 (a concrete first size would fix
    the batch, which paramcalc keeps a symbol)."""
    return (isinstance(newshape, (list, tuple)) and bool(newshape) and newshape[0] == -1
            and all(type(d) is int for d in newshape) and list(newshape).count(-1) == 1)


def _calls(inbound: list, path: str) -> list[list[tuple]]:
    """Each call's input tensors as (layer, call, tensor) triples, Keras 3 and Keras 2 formats."""
    calls = []
    for k, call in enumerate(inbound):
        refs: list[tuple] = []
        where = f"{path}.inbound_nodes[{k}]"
        if isinstance(call, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            args = call.get("args", [])
            if not isinstance(args, (list, tuple)):
                raise SpecError(f"{where}.args must be a list of the call's arguments, received "
                                f"{type(args).__name__}", where=f"{where}.args", value=args)
            _collect(args, refs, 0, f"{where}.args")
            kwargs = call.get("kwargs") or {}
            if not isinstance(kwargs, dict):
                raise SpecError(f"{where}.kwargs must be an object, received {type(kwargs).__name__}",
                                where=f"{where}.kwargs")
            for key in _TENSOR_KWARGS:
                if key in kwargs:
                    _collect(kwargs[key], refs, 0, f"{where}.kwargs.{key}")
        elif isinstance(call, (list, tuple)):  # Keras 2: [["name", node, tensor, {kwargs}], ...]
            for j, entry in enumerate(call):
                if isinstance(entry, (list, tuple)) and len(entry) >= 3 and isinstance(entry[0], str):
                    refs.append((entry[0], _index(entry[1], f"{where}[{j}][1]"), _index(entry[2], f"{where}[{j}][2]")))
        else:
            raise SpecError(f"{path}.inbound_nodes[{k}] is neither a Keras 3 nor a Keras 2 call", where=path)
        calls.append(refs)
    return calls


def _call_constants(inbound: list) -> list[tuple]:
    """Each call's positional arguments that are not tensors, as Python values (a Keras 3 config saves a
    slice as ``{"class_name": "__slice__", ...}``); Keras 2 configs save none. ``_calls`` has checked the
    formats."""
    def value(v):
        if isinstance(v, dict) and v.get("class_name") == "__slice__":
            c = v.get("config") or {}
            return slice(c.get("start"), c.get("stop"), c.get("step"))
        if isinstance(v, dict) and v.get("class_name") == "__ellipsis__":
            return Ellipsis
        return [value(x) for x in v] if isinstance(v, (list, tuple)) else v

    return [tuple(value(a) for a in call.get("args", []) if not (isinstance(a, dict) and
                                                                 a.get("class_name") == "__keras_tensor__"))
            if isinstance(call, dict) else () for call in inbound]


def _call_kwargs(inbound: list) -> list[dict]:
    """Each call's keyword arguments (their plain values are call options a rule may read), Keras 3 and
    Keras 2 formats; ``_calls`` has checked the formats."""
    found = []
    for call in inbound:
        if isinstance(call, dict):
            found.append(call.get("kwargs") or {})
        else:  # Keras 2: the kwargs of the call's first input entry
            first = call[0] if call and isinstance(call[0], (list, tuple)) else ()
            found.append(first[3] if len(first) > 3 and isinstance(first[3], dict) else {})
    return found


def _collect(value: object, refs: list, depth: int, where: str) -> None:
    if depth > 32:
        raise SpecError(f"nesting too deep in a layer call's arguments at {where}", where=where)
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            config = value.get("config") or {}
            history = config.get("keras_history") if isinstance(config, dict) else None
            if isinstance(history, (list, tuple)) and len(history) >= 3:
                at = f"{where}.config.keras_history"
                if not isinstance(history[0], str):
                    raise SpecError(f"{at}[0] must be a layer name, received {history[0]!r}", where=at,
                                    value=history[0])
                refs.append((history[0], _index(history[1], f"{at}[1]"), _index(history[2], f"{at}[2]")))
        return
    if isinstance(value, (list, tuple)):  # JSON gives lists; a live get_config() gives tuples too
        for i, item in enumerate(value):
            _collect(item, refs, depth + 1, f"{where}[{i}]")


def _index(value: object, where: str) -> int:
    """A call or tensor index of a Keras config: a non-negative integer (bools and floats refused)."""
    if type(value) is int and value >= 0:
        return value
    shown = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "an integer of many digits"
    raise SpecError(f"{where} must be a non-negative integer index, received {shown}", where=where, value=value,
                    fix="fix the config's inbound_nodes, or save it again with model.get_config()")


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


def convert_layer(class_name: str, config: dict, path: str, module: object = None, options: tuple | None = None):
    """One Keras layer config as a paramcalc layer (not yet named); ``options``: the call options its rule
    reads (``chosen_call_options``)."""
    convert = keras_converter(class_name, module)
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
        return convert(config, **dict(options or ()))
    except ParamcalcError as err:
        raise err.with_layer(layer_name or path) from None
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise SpecError(f"{path}: cannot read the {class_name} config ({err!r})", layer=layer_name,
                        where=path) from None


# -- built-in Keras classes ---------------------------------------------------------------------------------
# functions Keras libraries register as serializable, by the name Keras saves them under
_REGISTERED_ACTIVATIONS = {"keras_hub>gelu_approximate": "gelu"}  # gelu's tanh form: gelu's FLOP count


def _activation_of(config: dict) -> str:
    act = config.get("activation", "linear")
    if isinstance(act, dict):  # a serialized function: built-in names and the registered ones above
        name = act.get("config") if act.get("class_name") == "function" else None
        if name in _REGISTERED_ACTIVATIONS:
            return _REGISTERED_ACTIVATIONS[name]
        raise SpecError(f"activation {name or act.get('class_name')!r} is a custom function", value=act,
                        fix="register a layer kind for it")
    return act


_AUGMENTATIONS = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomShear", "RandomPerspective",
    "RandomElasticTransform", "RandomContrast", "RandomBrightness", "RandomColorJitter", "RandomHue",
    "RandomSaturation", "RandomSharpness", "RandomGrayscale", "RandomPosterization", "RandomInvert",
    "RandomColorDegeneration", "RandomErasing", "RandomGaussianBlur", "Solarization", "AutoContrast",
    "Equalization", "ContrastLimitedAdaptiveHistogramEqualization", "AugMix", "RandAugment", "CutMix", "MixUp",
    "MaxNumBoundingBoxes", "GaussianNoise")


def _last(c: dict) -> bool:
    return c.get("data_format") in (None, "channels_last")


def _conv(rank: int) -> Callable:
    return lambda c: Conv(filters=c["filters"], kernel_size=tuple(c["kernel_size"]), strides=tuple(c["strides"]),
                          padding=c["padding"], dilation=tuple(c["dilation_rate"]), groups=c.get("groups", 1),
                          use_bias=c["use_bias"], activation=_activation_of(c), rank=rank, channels_last=_last(c))


def _conv_transpose(rank: int) -> Callable:
    return lambda c: ConvTranspose(
        filters=c["filters"], kernel_size=tuple(c["kernel_size"]), strides=tuple(c["strides"]),
        padding=c["padding"], dilation=tuple(c["dilation_rate"]),
        output_padding=None if c.get("output_padding") is None else tuple(c["output_padding"]),
        use_bias=c["use_bias"], activation=_activation_of(c), rank=rank, channels_last=_last(c))


def _depthwise(rank: int) -> Callable:
    return lambda c: DepthwiseConv(kernel_size=tuple(c["kernel_size"]), strides=tuple(c["strides"]),
                                   padding=c["padding"], dilation=tuple(c["dilation_rate"]),
                                   depth_multiplier=c.get("depth_multiplier", 1), use_bias=c["use_bias"],
                                   activation=_activation_of(c), rank=rank, channels_last=_last(c))


def _separable(rank: int) -> Callable:
    return lambda c: SeparableConv(filters=c["filters"], kernel_size=tuple(c["kernel_size"]),
                                   strides=tuple(c["strides"]), padding=c["padding"],
                                   dilation=tuple(c["dilation_rate"]), depth_multiplier=c.get("depth_multiplier", 1),
                                   use_bias=c["use_bias"], activation=_activation_of(c), rank=rank,
                                   channels_last=_last(c))


def _pool(rank: int, op: str) -> Callable:
    return lambda c: Pool(op=op, pool_size=_ints(c["pool_size"], rank),
                          strides=None if c.get("strides") is None else _ints(c["strides"], rank),
                          padding=c.get("padding", "valid"), rank=rank, channels_last=_last(c))


def _ints(value: object, rank: int) -> tuple:
    return (value,) * rank if type(value) is int else tuple(value)


def _spatial_axes(rank: int, c: dict) -> list[int]:
    return list(range(1, rank + 1)) if _last(c) else list(range(2, rank + 2))


def _pairs(value: object, rank: int) -> list:
    if type(value) is int:
        return [(value, value)] * rank
    value = list(value)
    if rank == 1 and len(value) == 2 and all(type(v) is int for v in value):
        return [tuple(value)]
    return [(v, v) if type(v) is int else tuple(v) for v in value]


def _padding(rank: int) -> Callable:
    return lambda c: Pad(tuple((a, b, e) for a, (b, e) in zip(_spatial_axes(rank, c), _pairs(c["padding"], rank))))


def _cropping(rank: int) -> Callable:
    return lambda c: Crop(tuple((a, b, e) for a, (b, e) in zip(_spatial_axes(rank, c), _pairs(c["cropping"], rank))))


def _upsampling(rank: int) -> Callable:
    return lambda c: UpSample(axes=tuple(_spatial_axes(rank, c)), factors=_ints(c["size"], rank),
                              interpolation=c.get("interpolation", "nearest"))


def _rnn(cell: str) -> Callable:
    return lambda c: Recurrent(cell=cell, units=c["units"], return_sequences=c.get("return_sequences", False),
                               return_state=c.get("return_state", False), use_bias=c.get("use_bias", True),
                               reset_after=c.get("reset_after", True))


def _conv_lstm(rank: int) -> Callable:
    # ``activation`` and ``recurrent_activation`` are the cell's (tanh, sigmoid), not applied after it
    return lambda c: ConvLSTM(filters=c["filters"], kernel_size=_ints(c["kernel_size"], rank),
                              strides=_ints(c.get("strides", 1), rank), padding=c.get("padding", "valid"),
                              dilation=_ints(c.get("dilation_rate", 1), rank), use_bias=c.get("use_bias", True),
                              return_sequences=c.get("return_sequences", False),
                              return_state=c.get("return_state", False), rank=rank, channels_last=_last(c))


_RNN_CELLS = {"SimpleRNN": "simple", "LSTM": "lstm", "GRU": "gru"}


def _bidirectional(c: dict):
    inner = c["layer"]
    cell = _RNN_CELLS.get(inner.get("class_name"))
    if cell is None:
        raise SpecError(f"Bidirectional wraps {inner.get('class_name')!r}; paramcalc reads SimpleRNN, LSTM "
                        "and GRU inside it", value=inner.get("class_name"))
    rnn = _rnn(cell)(inner["config"])
    return replace(rnn, bidirectional=True, merge_mode=c.get("merge_mode", "concat"))


def _time_distributed(c: dict):
    inner = c["layer"]
    layer = convert_layer(inner["class_name"], inner.get("config") or {}, "TimeDistributed.layer",
                          inner.get("module"))
    return TimeDistributed(layer=layer)


def _gqa(c: dict):
    """Keras GroupedQueryAttention: heads of head_dim, key and value projected to fewer heads that groups of
    query heads share (Keras repeats them to every query head); the output as wide as the query."""
    if c.get("use_gate"):
        raise SpecError("GroupedQueryAttention use_gate=True is not modelled yet", value=True)
    return MultiHeadAttention(num_heads=c["num_query_heads"], key_dim=c["head_dim"], value_dim=c["head_dim"],
                              use_bias=c.get("use_bias", True), dropout=float(c.get("dropout") or 0.0),
                              num_key_value_heads=c["num_key_value_heads"])


def _mha(c: dict):
    output_shape = c.get("output_shape")
    if output_shape is not None and not (type(output_shape) is int or len(output_shape) == 1):
        raise SpecError(f"MultiHeadAttention output_shape {output_shape!r}: paramcalc reads a single output width",
                        value=output_shape)
    axes = c.get("attention_axes")
    if axes not in (None, [1], (1,)):
        raise SpecError(f"MultiHeadAttention attention_axes {axes!r}: paramcalc reads attention over axis 1",
                        value=axes)
    if c.get("use_gate"):
        raise SpecError("MultiHeadAttention use_gate=True is not modelled yet", value=True)
    out = output_shape if type(output_shape) is int or output_shape is None else output_shape[0]
    return MultiHeadAttention(num_heads=c["num_heads"], key_dim=c["key_dim"], value_dim=c.get("value_dim"),
                              output_dim=out, use_bias=c.get("use_bias", True),
                              dropout=float(c.get("dropout") or 0.0))


def _axes(value: object) -> tuple:
    return (value,) if type(value) is int else tuple(value)


def _normalization(c: dict):
    return Normalization(axes=_axes(c.get("axis", -1)) if c.get("axis") is not None else (),
                         adapted=c.get("mean") is None)


def _lambda(c: dict):
    """Never decoded or run: a Lambda is opaque, shaped by its declared output_shape if any."""
    shape = c.get("output_shape")
    if isinstance(shape, (list, tuple)) and all(isinstance(d, int) or d is None for d in shape):
        return Opaque(output_shape=tuple(shape), origin="a Keras Lambda")
    return Opaque(origin="a Keras Lambda")


def _relu(c: dict):
    return Activation("relu6" if c.get("max_value") is not None else
                      "leaky_relu" if c.get("negative_slope") else "relu")


BUILTINS: dict[str, Callable] = {
    "Dense": lambda c: Dense(c["units"], activation=_activation_of(c), use_bias=c.get("use_bias", True)),
    "EinsumDense": lambda c: EinsumDense(c["equation"], c["output_shape"], bias_axes=c.get("bias_axes"),
                                         activation=_activation_of(c)),
    "Flatten": lambda c: Flatten(),
    "Reshape": lambda c: Reshape(tuple(c["target_shape"])),
    "Permute": lambda c: Permute(tuple(c["dims"])),
    "Activation": lambda c: Activation(_activation_of(c)),
    "ReLU": _relu,
    "LeakyReLU": lambda c: Activation("leaky_relu"),
    "ELU": lambda c: Activation("elu"),
    "Softmax": lambda c: Activation("softmax"),
    "PReLU": lambda c: PReLU(shared_axes=tuple(c.get("shared_axes") or ())),
    "Dropout": lambda c: Dropout(c.get("rate", 0.5)),
    "SpatialDropout1D": lambda c: Dropout(c.get("rate", 0.5)),
    "SpatialDropout2D": lambda c: Dropout(c.get("rate", 0.5)),
    "SpatialDropout3D": lambda c: Dropout(c.get("rate", 0.5)),
    "GaussianDropout": lambda c: Dropout(c.get("rate", 0.5)),
    "AlphaDropout": lambda c: Dropout(c.get("rate", 0.5)),
    "ActivityRegularization": lambda c: Identity(),
    "Identity": lambda c: Identity(),
    "Masking": lambda c: Identity(),
    "Lambda": _lambda,
    "Conv1D": _conv(1), "Conv2D": _conv(2), "Conv3D": _conv(3),
    "Conv1DTranspose": _conv_transpose(1), "Conv2DTranspose": _conv_transpose(2),
    "Conv3DTranspose": _conv_transpose(3),
    "DepthwiseConv1D": _depthwise(1), "DepthwiseConv2D": _depthwise(2),
    "SeparableConv1D": _separable(1), "SeparableConv2D": _separable(2),
    "MaxPooling1D": _pool(1, "max"), "MaxPooling2D": _pool(2, "max"), "MaxPooling3D": _pool(3, "max"),
    "AveragePooling1D": _pool(1, "avg"), "AveragePooling2D": _pool(2, "avg"),
    "AveragePooling3D": _pool(3, "avg"),
    **{f"Adaptive{op}Pooling{r}D": (lambda c, r=r, o=o: AdaptivePool(o, c["output_size"], rank=r,
                                                                     channels_last=_last(c)))
       for r in (1, 2, 3) for op, o in (("Average", "avg"), ("Max", "max"))},
    **{f"Global{op}Pooling{r}D": (lambda c, r=r, o=o: GlobalPool(op=o, rank=r, channels_last=_last(c),
                                                                   keepdims=c.get("keepdims", False)))
       for r in (1, 2, 3) for op, o in (("Average", "avg"), ("Max", "max"))},
    "BatchNormalization": lambda c: BatchNorm(axis=c.get("axis", -1) if type(c.get("axis", -1)) is int
                                              else c["axis"][0], center=c.get("center", True),
                                              scale=c.get("scale", True), stats="weights"),
    "LayerNormalization": lambda c: LayerNorm(axes=_axes(c.get("axis", -1)), center=c.get("center", True),
                                              scale=c.get("scale", True), rms=c.get("rms_scaling", False)),
    "GroupNormalization": lambda c: GroupNorm(groups=c.get("groups", 32), axis=c.get("axis", -1),
                                              center=c.get("center", True), scale=c.get("scale", True)),
    "RMSNormalization": lambda c: RMSNorm(),
    "Normalization": _normalization,
    "Embedding": lambda c: Embedding(c["input_dim"], c["output_dim"]),
    "SimpleRNN": _rnn("simple"), "LSTM": _rnn("lstm"), "GRU": _rnn("gru"),
    "ConvLSTM1D": _conv_lstm(1), "ConvLSTM2D": _conv_lstm(2), "ConvLSTM3D": _conv_lstm(3),
    "Bidirectional": _bidirectional,
    "TimeDistributed": _time_distributed,
    "MultiHeadAttention": _mha,
    "Attention": lambda c: ScoreAttention(c.get("score_mode", "dot"), use_scale=c.get("use_scale", False),
                                          dropout=float(c.get("dropout") or 0.0)),
    "AdditiveAttention": lambda c: ScoreAttention("additive", use_scale=c.get("use_scale", True),
                                                  dropout=float(c.get("dropout") or 0.0)),
    "GroupQueryAttention": _gqa, "GroupedQueryAttention": _gqa,  # a config's name, and the class's
    "ZeroPadding1D": _padding(1), "ZeroPadding2D": _padding(2), "ZeroPadding3D": _padding(3),
    "Cropping1D": _cropping(1), "Cropping2D": _cropping(2), "Cropping3D": _cropping(3),
    "UpSampling1D": _upsampling(1), "UpSampling2D": _upsampling(2), "UpSampling3D": _upsampling(3),
    "RepeatVector": lambda c: RepeatVector(c["n"]),
    "Rescaling": lambda c: Rescale(),
    # preprocessing and augmentation: each sample changed in training, its shape kept, or made (height, width)
    **{name: (lambda c: Augment(channels_last=_last(c))) for name in _AUGMENTATIONS},
    **{name: (lambda c: Augment(size=(c["height"], c["width"]), channels_last=_last(c)))
       for name in ("Resizing", "CenterCrop", "RandomCrop")},
    "LayerScale": lambda c: LayerScale(projection_dim=c.get("projection_dim")),  # ConvNeXt's
    "CustomScaleLayer": lambda c: ScaledSum(scale=float(c["scale"])),  # InceptionResNetV2's
    "Add": lambda c: Merge("add"), "Subtract": lambda c: Merge("subtract"),
    "Multiply": lambda c: Merge("multiply"), "Average": lambda c: Merge("average"),
    "Maximum": lambda c: Merge("maximum"), "Minimum": lambda c: Merge("minimum"),
    "Concatenate": lambda c: Concatenate(axis=c.get("axis", -1)),
    "Dot": lambda c: Dot(axes=c["axes"], normalize=c.get("normalize", False)),
}

def _reversible_embedding(c: dict, reverse: bool = False):
    if c.get("logit_soft_cap") is not None:  # cap * tanh(logits / cap): a second pass the kind does not price
        raise SpecError(f"logit_soft_cap={c['logit_soft_cap']} has no rule", value=c["logit_soft_cap"],
                        fix="register a rule for ReversibleEmbedding that prices the cap")
    if c.get("quantization_config") is not None:
        raise SpecError("a quantized ReversibleEmbedding has no rule", value=c["quantization_config"])
    return ReversibleEmbedding(c["input_dim"], c["output_dim"], tie_weights=c.get("tie_weights", True), reverse=reverse)


_reversible_embedding.call_options = ("reverse",)
BUILTINS["ReversibleEmbedding"] = _reversible_embedding  # Keras' since 3.13, KerasHub's before

def _cached_mha(c: dict, cache: bool = False):
    """KerasHub's CachedMultiHeadAttention: Keras' MultiHeadAttention, which it is, where it is called
    without a cache (training, and a model's forward); with one it reads keys and values from it."""
    if cache:
        raise SpecError("CachedMultiHeadAttention called with a cache (generation) has no rule", value="cache",
                        fix="estimate the model's forward, which calls it without one")
    return _mha(c)


_cached_mha.call_options = _cached_mha.tensor_options = ("cache",)

# KerasHub's modeling layers (keras_hub.layers), for models built from its layers or its classes
KERAS_HUB: dict[str, Callable] = {
    "PositionEmbedding": lambda c: PositionEmbedding(c["sequence_length"]),
    "CachedMultiHeadAttention": _cached_mha,
    # the decoder families' RMS norms: x * rsqrt(mean(x ** 2, axis=-1) + epsilon) * scale, one (features,)
    # scale (Qwen3's query and key norms: one (head_dim,) scale over each head)
    **dict.fromkeys(("LlamaLayerNorm", "MistralLayerNormalization", "MixtralLayerNormalization", "QwenLayerNorm",
                     "Phi3LayerNorm", "T5LayerNorm"), lambda c: RMSNorm()),
    "Qwen3LayerNorm": lambda c: RMSNorm(normalized_shape=(c["head_dim"],) if c.get("head_dim") else None),
    # Llama's changes only how the frequencies are made (once per feature pair)
    **dict.fromkeys(("RotaryEmbedding", "LlamaRotaryEmbedding"),
                    lambda c: RotaryEmbedding(c.get("sequence_axis", 1), c.get("feature_axis", -1))),
}
for _convert_fn in KERAS_HUB.values():
    _convert_fn.modules = ("keras_hub.", "keras_nlp.")

for _name, _convert_fn in {**BUILTINS, **KERAS_HUB}.items():
    register_keras_layer(_name, _convert_fn)
