"""ONNX files: parsed in a child process, external data never read, symbolic dims kept."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from paramcalc import SpecError  # noqa: E402
from paramcalc.io.onnx_reader import read_onnx  # noqa: E402


def _model(path, external: bool = False):
    if external:  # the bytes would live in another file, outside the model's folder
        weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[20020, 300])
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "../../etc/passwd"
    else:
        weight = helper.make_tensor("W", TensorProto.FLOAT, [20020, 300], vals=bytes(20020 * 300 * 4), raw=True)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [300], [0.0] * 300)
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 20020])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 300])], [weight, bias])
    model = helper.make_model(graph)
    path.write_bytes(model.SerializeToString())
    return path


def test_counts_from_initializer_dims_and_symbolic_inputs(tmp_path):
    summary = read_onnx(str(_model(tmp_path / "m.onnx")))
    assert summary.params == 20020 * 300 + 300
    assert summary.inputs == (("x", ("batch", 20020)),)
    assert summary.ops == {"Gemm": 1}


def test_external_data_is_never_opened(tmp_path):
    summary = read_onnx(str(_model(tmp_path / "ext.onnx", external=True)))
    assert summary.external == ("W",) and summary.params == 20020 * 300 + 300


def test_a_file_that_breaks_the_parser_is_survived(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    with pytest.raises(SpecError, match="could not analyse safely"):
        read_onnx(str(path))
    result = subprocess.run([sys.executable, "-m", "paramcalc", "summary", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "could not analyse safely" in result.stderr and "Traceback" not in result.stderr


def test_cli_summary_of_onnx(tmp_path):
    path = _model(tmp_path / "m.onnx")
    data = json.loads(subprocess.run([sys.executable, "-m", "paramcalc", "summary", str(path), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    assert data["params"] == 6006300 and data["inputs"] == {"x": ["batch", 20020]}
