"""ONNX files, read in a child process: the onnx package's native code parses the protobuf there, so a
file that crashes it cannot take paramcalc (or the CLI) down with it. External data is never opened:
initializers are counted from their declared dims, wherever their bytes live.

Run as ``python -m paramcalc.onnx_reader FILE``: prints one JSON document.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from .dims import prod
from .errors import SpecError

# onnx TensorProto data types -> bytes per element
ONNX_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2, 17: 1, 18: 1,
              19: 1, 20: 1}
TIMEOUT_S = 60


@dataclass(frozen=True)
class OnnxSummary:
    path: str
    inputs: tuple  # (name, dims) with ints or symbol names ("batch")
    initializers: tuple  # (name, dims, bytes per element)
    ops: dict  # op type -> count
    external: tuple  # initializers whose data lives outside the file (never read)

    @property
    def params(self) -> int:
        return sum(prod(dims) for _, dims, _ in self.initializers)

    @property
    def nbytes(self) -> int:
        return sum(prod(dims) * size for _, dims, size in self.initializers)


def read_onnx(path: str) -> OnnxSummary:
    """Parse ``path`` in a child process; a crash or a hang there is a clear error here."""
    try:
        result = subprocess.run([sys.executable, "-m", "paramcalc.onnx_reader", str(path)], capture_output=True,
                                text=True, timeout=TIMEOUT_S)
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
        initializers.append([t.name, list(t.dims), ONNX_BYTES.get(t.data_type, 0)])
        if t.data_location == onnx.TensorProto.EXTERNAL:
            external.append(t.name)
    ops: dict = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(json.dumps({"inputs": inputs, "initializers": initializers, "ops": ops, "external": external}))


if __name__ == "__main__":
    _child(sys.argv[1])
