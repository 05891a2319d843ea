"""ONNX files, read in a child process: the onnx package's native code parses the protobuf there, so a
file that crashes it cannot take paramcalc (or the CLI) down with it. External data is never opened:
initializers are counted from their declared dims, wherever their bytes live.

Run as ``python -m paramcalc.io.onnx_reader FILE``: prints one JSON document. paramcalc starts it in
Python's isolated mode (:mod:`paramcalc.io.subprocesses`): an ``onnx.py`` beside the model never runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from paramcalc.core.dims import prod
from paramcalc.core.errors import SpecError

# onnx TensorProto data types -> bits per element (4-bit types pack two elements a byte, 2-bit ones four,
# 6-bit ones four in three bytes); STRING has no fixed size: its bytes are the strings' own
ONNX_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128,
             16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6}
ONNX_STRING = 8
TIMEOUT_S = 60


@dataclass(frozen=True)
class OnnxSummary:
    path: str
    inputs: tuple  # (name, dims) with ints or symbol names ("batch")
    initializers: tuple  # (name, dims, bytes)
    ops: dict  # op type -> count
    external: tuple  # initializers whose data lives outside the file (never read)

    @property
    def params(self) -> int:
        return sum(prod(dims) for _, dims, _ in self.initializers)

    @property
    def nbytes(self) -> int:
        return sum(nbytes for _, _, nbytes in self.initializers)


def tensor_bytes(data_type: int, dims: list, strings: list | None = None) -> int:
    """Bytes an initializer's data takes: elements x bits, rounded up to whole bytes for the packed
    types; for STRING, the strings' own bytes (which must be in the file)."""
    if data_type == ONNX_STRING:
        if strings is None:
            raise ValueError("a STRING initializer's size is its strings', which live outside the file")
        return sum(len(item) for item in strings)
    if data_type not in ONNX_BITS:
        raise ValueError(f"data type {data_type} has no known size (0 is UNDEFINED; newer types need a newer "
                         "paramcalc)")
    return -(-prod(dims) * ONNX_BITS[data_type] // 8)


def read_onnx(path: str) -> OnnxSummary:
    """Parse ``path`` in a child process; a crash or a hang there is a clear error here."""
    from paramcalc.io.subprocesses import python_command

    command = python_command(module="paramcalc.io.onnx_reader", args=(os.path.abspath(path),), isolated=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SpecError(f"{path}: could not analyse safely (the ONNX parser ran past {TIMEOUT_S} s)",
                        where=str(path)) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["the parser exited with code %d" % result.returncode])[-1]
        raise SpecError(f"{path}: could not analyse safely ({last[:200]})", where=str(path))
    data = json.loads(result.stdout)
    return OnnxSummary(path=str(path), inputs=tuple((n, tuple(d)) for n, d in data["inputs"]),
                       initializers=tuple((n, tuple(d), b) for n, d, b in data["initializers"]),
                       ops=data["ops"], external=tuple(data["external"]))


def _child(path: str) -> None:
    import onnx

    model = onnx.load(path, load_external_data=False)  # external data: never opened
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializer_names:
            continue
        dims = []
        for d in value.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        inputs.append([value.name, dims])
    initializers, external = [], []
    for t in graph.initializer:
        if any(d < 0 for d in t.dims):
            raise ValueError(f"initializer {t.name!r} has a negative dim")
        outside = t.data_location == onnx.TensorProto.EXTERNAL
        try:
            nbytes = tensor_bytes(t.data_type, list(t.dims), None if outside else list(t.string_data))
        except ValueError as error:
            raise ValueError(f"initializer {t.name!r}: {error}") from None
        initializers.append([t.name, list(t.dims), nbytes])
        if outside:
            external.append(t.name)
    ops: dict = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(json.dumps({"inputs": inputs, "initializers": initializers, "ops": ops, "external": external}))


if __name__ == "__main__":
    _child(sys.argv[1])
