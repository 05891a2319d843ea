"""Mutated model files for the readers: valid seeds (a paramcalc spec, Keras configs, a .keras archive,
a safetensors file, an ONNX file) damaged by truncation, byte flips, huge numbers, deep nesting and
values of the wrong type. ``read(kind, data)`` runs one through its reader and the estimate; anything
but a paramcalc error escaping it is a bug. Used by tests/test_fuzz_readers.py (a few hundred examples)
and benchmarks/fuzz_readers.py (a long run that prints what it tried)."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
from pathlib import Path

from hypothesis import strategies as st

import paramcalc
from paramcalc.frontends.spec import load_spec_text
from paramcalc.io import files

SPEC = {"name": "seed", "input_shape": [20, 1], "layers": [
    {"kind": "conv", "filters": 2, "kernel_size": 3, "rank": 1, "strides": 2},
    {"kind": "dense", "units": 8, "activation": "relu"}, {"kind": "flatten"}, {"kind": "dense", "units": 1}]}
GRAPH = {"inputs": {"a": [10], "b": [5]}, "layers": [
    {"kind": "dense", "units": 4, "name": "d", "inbound": ["a"]},
    {"kind": "concatenate", "name": "cat", "inbound": ["d", "b"]}], "outputs": ["cat"]}
KERAS_SEQUENTIAL = {"class_name": "Sequential", "config": {"name": "s", "layers": [
    {"class_name": "InputLayer", "config": {"batch_shape": [None, 16], "name": "input"}},
    {"class_name": "Dense", "config": {"name": "d", "units": 8, "activation": "relu", "use_bias": True}},
    {"class_name": "Dropout", "config": {"name": "drop", "rate": 0.5}},
    {"class_name": "Dense", "config": {"name": "out", "units": 1}}]}}
KERAS_FUNCTIONAL = {"class_name": "Functional", "config": {"name": "m", "layers": [
    {"class_name": "InputLayer", "name": "a", "config": {"name": "a", "batch_shape": [None, 4]}, "inbound_nodes": []},
    {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 3}, "inbound_nodes": [
        {"args": [{"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "keras_history": ["a", 0, 0]}}],
         "kwargs": {}}]},
    {"class_name": "Add", "name": "add", "config": {"name": "add"}, "inbound_nodes": [
        {"args": [[{"class_name": "__keras_tensor__", "config": {"shape": [None, 3], "keras_history": ["d", 0, 0]}},
                   {"class_name": "__keras_tensor__", "config": {"shape": [None, 3], "keras_history": ["d", 0, 0]}}]],
         "kwargs": {}}]}],
    "input_layers": [["a", 0, 0]], "output_layers": [["add", 0, 0]]}}


def _keras_archive(config: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
    return buffer.getvalue()


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]},
                         "b": {"dtype": "BF16", "shape": [3], "data_offsets": [48, 54]},
                         "__metadata__": {"format": "pt"}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(54)


def _onnx() -> bytes | None:
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], [0.5] * 12)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    return helper.make_model(graph).SerializeToString()


def seeds() -> dict:
    """kind -> valid file bytes."""
    out = {"spec": json.dumps(SPEC).encode(), "graph": json.dumps(GRAPH).encode(),
           "keras_sequential": json.dumps(KERAS_SEQUENTIAL).encode(),
           "keras_functional": json.dumps(KERAS_FUNCTIONAL).encode(),
           "keras_archive": _keras_archive(KERAS_FUNCTIONAL), "safetensors": _safetensors()}
    onnx = _onnx()
    if onnx is not None:
        out["onnx"] = onnx
    return out


# -- mutations ---------------------------------------------------------------------------------------------------
ODD_VALUES = [-1, 0, 2**63, 10**400, "9" * 5000, 1e400, -1e400, float("nan"), None, True, "", "x" * 200, [], {},
              [[[[[]]]]], {"class_name": "os.system"}, "__lambda__", 3.5, [None, -2]]


def _paths(value, here=()):
    yield here
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, here + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, here + (i,))


def _replace(document, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {k: (_replace(v, rest, new) if k == head else v) for k, v in document.items()}
    return [(_replace(v, rest, new) if i == head else v) for i, v in enumerate(document)]


def _json_text(document) -> bytes:
    text = json.dumps(document, allow_nan=True)
    return text.replace('"' + "9" * 5000 + '"', "9" * 5000).encode()  # a 5000-digit number, not a string


@st.composite
def json_mutation(draw, seed: bytes) -> bytes:
    """A JSON seed with one value replaced by an odd one, or wrapped deep, or with a key doubled."""
    document = json.loads(seed)
    paths = list(_paths(document))
    path = draw(st.sampled_from(paths))
    how = draw(st.sampled_from(["value", "nest", "duplicate"]))
    if how == "value":
        return _json_text(_replace(document, path, draw(st.sampled_from(ODD_VALUES))))
    if how == "nest":
        depth = draw(st.sampled_from([50, 70, 1000, 100_000]))
        text = _json_text(_replace(document, path, "@@"))
        return text.replace(b'"@@"', b"[" * depth + b"1" + b"]" * depth)
    text = json.dumps(document)
    return text.replace("{", '{"name": "a", "name": "b", ', 1).encode() if "{" in text[1:] else text.encode()


@st.composite
def byte_mutation(draw, seed: bytes) -> bytes:
    """Bytes truncated, flipped, inserted or a length field rewritten."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["truncate", "flip", "insert", "length"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if how == "truncate":
            del data[at:]
        elif how == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif how == "insert":
            data[at:at] = draw(st.sampled_from([b"\xff\xfe", b"9" * 50, b"[" * 200, b"\x00" * 16, b'"', b"-1"]))
        elif len(data) >= 8:
            data[:8] = struct.pack("<Q", draw(st.sampled_from([0, 1, 2**63, 2**64 - 1, len(data), 10**8])))
    return bytes(data)


def mutated(kind: str, seed: bytes):
    """A strategy of damaged versions of ``seed``."""
    if kind in ("spec", "graph", "keras_sequential", "keras_functional"):
        return st.one_of(json_mutation(seed), byte_mutation(seed))
    return byte_mutation(seed)


# -- reading ---------------------------------------------------------------------------------------------------
SUFFIX = {"keras_archive": ".keras", "safetensors": ".safetensors", "onnx": ".onnx"}


def read(kind: str, data: bytes) -> str:
    """Read ``data`` as paramcalc would read a file of this kind, estimate what it describes; returns
    "read" or "refused". Anything else raised is an escape."""
    from paramcalc.core.errors import ParamcalcError

    try:
        if kind in SUFFIX:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"model{SUFFIX[kind]}"
                path.write_bytes(data)
                if kind == "onnx":
                    from paramcalc.io.onnx_reader import read_onnx

                    read_onnx(str(path))
                elif kind == "safetensors":
                    files.read_safetensors(path)
                else:
                    paramcalc.estimate(files.read_keras_config(path))
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return "refused"  # the file reader refuses binary content before parsing (files.read_text)
            paramcalc.estimate(load_spec_text(text, "fuzz.json"))
    except ParamcalcError:
        return "refused"
    return "read"
