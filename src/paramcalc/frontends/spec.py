"""paramcalc's own model document: a dict (or JSON text) mirroring the Python API.

    {"name": "seed", "input_shape": [20020, 1],
     "layers": [{"kind": "dense", "units": 300, "activation": "relu"},
                {"kind": "flatten"},
                {"kind": "dense", "units": 1}]}

Every key of a layer is an argument of its kind (``paramcalc.Dense(units=300, ...)``); an unknown key
or kind is an error that names its JSON path.
"""

from __future__ import annotations

import dataclasses
import json

import paramcalc.layers  # noqa: F401  (registers the built-in kinds a spec names)
from paramcalc.core.errors import ParamcalcError, SpecError, UnknownLayerError, shown
from paramcalc.core.graph import Graph, GraphNode, Sequential
from paramcalc.core.registry import layer_kinds, lookup_kind

MAX_SPEC_BYTES = 16 * 1024 * 1024  # far beyond any real spec; refuse before parsing
MAX_SPEC_DEPTH = 64  # a spec is a few levels deep; this also keeps json's recursion bounded

MODEL_KEYS = {"name", "input_shape", "inputs", "outputs", "layers", "dtype", "framework", "paramcalc"}


def _check_depth(text: str, source: str) -> None:
    """Refuse deeply nested JSON before json.loads recurses into it."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_SPEC_DEPTH:
                raise SpecError(f"{source}: nesting too deep (limit {MAX_SPEC_DEPTH})", where=source)
        elif ch in "]}":
            depth -= 1


class _Pairs(list):
    """A JSON object as parsed, before duplicate keys are checked with their paths."""


class _Refused:
    """A JSON number no model can use (NaN, Infinity, an integer of thousands of digits), kept as parsed
    until its path is known, so the error can name where it is."""

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str) -> None:
        self.text = text
        self.why = why


# Integers past this many digits are refused as they are parsed: Python's int() refuses 4,300 digits and
# more, and no size of a model has more than 19 (sizes stop at 2**63 - 1).
MAX_INT_DIGITS = 100


def _parse_int(text: str):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Refused(f"an integer of {len(text.lstrip('-')):,} digits",
                        "dimension must be a non-negative integer (at most 2**63 - 1)")
    return int(text)


def _parse_constant(name: str):
    return _Refused(name, "not a number a model can use")


def _to_plain(value: object, path: str) -> object:
    """Turn parsed pairs into dicts, refusing a key given twice (json would keep the last silently)."""
    if isinstance(value, _Pairs):
        out = {}
        for key, item in value:
            if key in out:
                raise SpecError(f"duplicate key {key!r} at {path}", where=f"{path}.{key}", value=key,
                                fix="keep one entry per key")
            out[key] = _to_plain(item, f"{path}.{key}")
        return out
    if isinstance(value, list):
        return [_to_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, _Refused):
        raise SpecError(f"{value.text} at {path}: {value.why}", where=path, value=value.text)
    return value


def load_spec_text(text: str, source: str) -> dict:
    """Parse JSON text into a dict, with size, depth and duplicate-key checks."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: {len(text):,} characters is larger than any model spec "
                        f"(limit {MAX_SPEC_BYTES:,})", where=source)
    _check_depth(text, source)
    try:
        data = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_parse_constant, parse_int=_parse_int)
    except json.JSONDecodeError as err:
        raise SpecError(f"{source}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
                        where=source) from None
    try:
        data = _to_plain(data, "$")
    except SpecError as err:
        raise SpecError(f"{source}: {err.message}", where=err.where, value=err.value, fix=err.fix) from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a model spec must be a JSON object, received {type(data).__name__}",
                        where=source)
    return data


def from_spec(doc: dict, where: str = "$") -> Sequential:
    """Translate a spec dict into a paramcalc Sequential."""
    unknown = set(doc) - MODEL_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"unknown key '{key}' at {where}; a model spec has: {', '.join(sorted(MODEL_KEYS))}",
                        where=f"{where}.{key}", value=key)
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise SpecError(f"{where}.layers must be a list of layer objects, received {type(layers_doc).__name__}",
                        where=f"{where}.layers")
    layers = [_layer_from_spec(item, f"{where}.layers[{i}]") for i, item in enumerate(layers_doc)]
    framework = doc.get("framework")
    if framework not in (None, "keras", "torch"):
        raise SpecError(f"{where}.framework must be 'keras', 'torch' or null, received {framework!r}",
                        where=f"{where}.framework", value=framework)
    name = doc.get("name", "sequential")
    dtype = doc.get("dtype", "float32")
    for key, value in (("name", name), ("dtype", dtype)):
        if not isinstance(value, str):
            raise SpecError(f"{where}.{key} must be a string, received {value!r}", where=f"{where}.{key}")
    if "inputs" not in doc and not any(isinstance(x, dict) and "inbound" in x for x in layers_doc):
        return Sequential(layers, input_shape=doc.get("input_shape"), name=name, framework=framework,
                          dtype=dtype)
    return _graph_from_spec(doc, layers, layers_doc, where, name, framework, dtype)


def _graph_from_spec(doc, layers, layers_doc, where, name, framework, dtype) -> Graph:
    """A spec with named ``inputs`` and per-layer ``inbound`` names: a DAG.

        {"inputs": {"a": [10], "b": [5]},
         "layers": [{"kind": "dense", "units": 4, "name": "d", "inbound": ["a"]},
                    {"kind": "concatenate", "name": "cat", "inbound": ["d", "b"]}],
         "outputs": ["cat"]}

    A layer without ``inbound`` reads the layer before it; ``outputs`` defaults to the last layer.
    """
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise SpecError(f"{where}.inputs must map input names to shapes, e.g. {{\"x\": [10]}}",
                        where=f"{where}.inputs")
    nodes, previous = [], None
    for i, (layer, item) in enumerate(zip(layers, layers_doc)):
        node_name = layer.name or f"layer_{i}"
        inbound = item.get("inbound")
        if inbound is None:
            inbound = [previous or next(iter(inputs))]
        if not isinstance(inbound, list) or not all(isinstance(x, str) for x in inbound):
            raise SpecError(f"{where}.layers[{i}].inbound must be a list of layer or input names",
                            where=f"{where}.layers[{i}].inbound", value=inbound)
        nodes.append(GraphNode(node_name, layer, tuple((x, 0) for x in inbound)))
        previous = node_name
    outputs = doc.get("outputs") or [previous or next(iter(inputs))]
    if not isinstance(outputs, list):
        raise SpecError(f"{where}.outputs must be a list of layer or input names, received {shown(outputs)}",
                        where=f"{where}.outputs", value=outputs)
    return Graph(tuple((k, v) for k, v in inputs.items()), tuple(nodes), tuple((o, 0) for o in outputs),
                 name=name, framework=framework, dtype=dtype)


def _layer_from_spec(item: object, where: str):
    if not isinstance(item, dict):
        raise SpecError(f"{where} must be a layer object such as {{\"kind\": \"dense\", \"units\": 300}}, "
                        f"received {type(item).__name__}", where=where)
    kind = item.get("kind")
    cls = lookup_kind(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownLayerError(
            f"unknown layer kind {kind!r} at {where}; known kinds: {', '.join(sorted(layer_kinds()))}",
            where=where, value=kind,
            fix="register a rule for it with @paramcalc.register_layer('your_kind') on a paramcalc.Layer "
                "subclass",
        )
    allowed = {f.name for f in dataclasses.fields(cls) if f.name != "type_name"}
    args = {k: v for k, v in item.items() if k not in ("kind", "inbound")}
    for key in args:
        if key not in allowed:
            raise SpecError(f"unknown argument '{key}' for kind '{kind}' at {where}; it takes: "
                            f"{', '.join(sorted(allowed))}", where=f"{where}.{key}", value=key)
    for key, value in args.items():
        if isinstance(value, list):
            args[key] = tuple(value)
    try:
        return cls(**args)
    except ParamcalcError as err:
        raise type(err)(f"{where}: {err.message}", layer=err.layer, value=err.value, fix=err.fix,
                        where=where) from None
