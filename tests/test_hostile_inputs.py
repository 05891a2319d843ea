"""Every input a probe found crashing, silently wrong, exhausting or misdiagnosed: each gets paramcalc's
own error, naming where (JSON path, line, file offset), what was received and the fix; and code lying
beside a model never runs."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import pytest

import paramcalc
from paramcalc.core.errors import LayerConfigError, SpecError
from paramcalc.io import files

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def summary(*args, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-m", "paramcalc", "summary", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def refused(result, *phrases) -> None:
    """One line on stderr, no traceback, exit 1, and the phrases that say what and where."""
    assert result.returncode == 1, result.stdout[-500:] + result.stderr[-500:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


# -- code beside a model ---------------------------------------------------------------------------------------
CANARY = "import pathlib\npathlib.Path({path!r}).write_text('ran')\n"


def test_modules_beside_a_model_never_run_when_it_is_read(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    canary = tmp_path / "canary.txt"
    for name in ("onnx.py", "json.py", "h5py.py", "runpy.py", "paramcalc.py"):
        (tmp_path / name).write_text(CANARY.format(path=str(canary)))
    weight = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], [0.0] * 12)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    (tmp_path / "model.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    # the command as a user runs it (its own folder, not the current one, leads its path), in the model's
    # folder: the readers' children must not import from it either
    command = [os.path.join(os.path.dirname(sys.executable), "paramcalc"), "summary"]
    env = dict(os.environ, PYTHONSAFEPATH="")  # no help from the environment
    done = subprocess.run([*command, "model.onnx", "--json"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert json.loads(done.stdout)["params"] == 12, done.stderr
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "model.h5", "w") as handle:
        handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 2, "batch_input_shape": [None, 3]}}]}})
    done = subprocess.run([*command, "model.h5", "--json"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert json.loads(done.stdout)["totals"]["params"] == 8, done.stderr
    assert not canary.exists()  # the children ran in isolated mode: nothing from the folder was imported


# -- numbers no model can use ----------------------------------------------------------------------------------
def test_an_integer_of_thousands_of_digits_is_named_where_it_is(tmp_path):
    path = tmp_path / "huge.json"
    path.write_text('{"input_shape": [4], "layers": [{"kind": "dense", "units": ' + "9" * 5000 + "}]}")
    refused(summary(str(path)), "an integer of 5,000 digits at $.layers[0].units", "at most 2**63 - 1")
    with pytest.raises(LayerConfigError, match="an integer of 16610 bits"):
        paramcalc.Dense(10**5000)
    with pytest.raises(LayerConfigError, match="kernel_size"):
        paramcalc.Conv(3, kernel_size=10**5000)


def test_nan_names_its_json_path(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text('{"input_shape": [4], "layers": [{"kind": "dense", "units": NaN}]}')
    refused(summary(str(path)), "NaN at $.layers[0].units: not a number")


@pytest.mark.parametrize(("value", "shown"), [("zero", "'zero'"), (1e400, "inf"), (None, "None"), (True, "True"),
                                              (-1, "-1"), (1.0, "1.0")])
def test_keras_inbound_indices_that_are_not_indices(value, shown):
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "a", "config": {"name": "a", "batch_shape": [None, 4]}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 3}, "inbound_nodes": [
            {"args": [{"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "keras_history": ["a", 0, value]}}],
             "kwargs": {}}]}],
        "input_layers": [["a", 0, 0]], "output_layers": [["d", 0, 0]]}}
    with pytest.raises(SpecError) as error:
        paramcalc.estimate(config)
    assert "keras_history[2] must be a non-negative integer index" in str(error.value)
    assert f"received {shown}" in str(error.value)
    config["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = [7, 0, 0]
    with pytest.raises(SpecError, match=r"keras_history\[0\] must be a layer name, received 7"):
        paramcalc.estimate(config)


# -- YAML ------------------------------------------------------------------------------------------------------
def test_yaml_nested_thousands_deep_and_duplicate_keys(tmp_path):
    pytest.importorskip("yaml")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    refused(summary(str(deep)), "nesting too deep")
    moderate = tmp_path / "moderate.yaml"  # deep enough to pass the parser, not the spec's own limit
    moderate.write_text("layers: " + "[" * 100 + "]" * 100 + "\n")
    refused(summary(str(moderate)), "nesting too deep (limit 64 levels)")
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("input_shape: [4]\nlayers:\n  - kind: dense\n    units: 3\n    units: 300\n")
    refused(summary(str(duplicate)), "duplicate key 'units' at line 5 (first at line 4)")


# -- safetensors -----------------------------------------------------------------------------------------------
def _safetensors(path, header: bytes, length: int | None = None, data: bytes = b"\0" * 8):
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def test_safetensors_headers_that_are_not_utf8_or_whose_length_lies(tmp_path):
    good = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    refused(summary(str(_safetensors(tmp_path / "bad.safetensors", good + b', "\xff\xfe": 1}'))),
            "the safetensors header is not UTF-8 (byte 0xff at file offset 64)")
    refused(summary(str(_safetensors(tmp_path / "long.safetensors", good + b"}", length=len(good) + 1001))),
            "header length (1,054) runs past the end of the file (70 bytes)")
    short = _safetensors(tmp_path / "short.safetensors", good + b"}", length=len(good) - 10)
    refused(summary(str(short)), "are not a JSON header", "the header length is wrong")


@pytest.mark.parametrize(("dtype", "shape", "nbytes"), [("C64", [3], 24), ("F4", [5], 3), ("F6_E2M3", [4], 3),
                                                         ("F8_E8M0", [2], 2), ("BOOL", [3], 3), ("F64", [2], 16)])
def test_every_safetensors_dtype_has_its_exact_size(tmp_path, dtype, shape, nbytes):
    header = json.dumps({"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}}).encode()
    weights = files.read_safetensors(_safetensors(tmp_path / "w.safetensors", header, data=b"\0" * nbytes))
    assert weights.nbytes == nbytes and weights.params == shape[0]


# -- ONNX dtypes -----------------------------------------------------------------------------------------------
def test_every_onnx_dtype_has_its_exact_size_or_a_clear_error(tmp_path):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from paramcalc.io.onnx_reader import read_onnx, tensor_bytes

    assert tensor_bytes(TensorProto.COMPLEX64, [3]) == 24 and tensor_bytes(TensorProto.COMPLEX128, [3]) == 48
    assert tensor_bytes(TensorProto.INT4, [5]) == 3 and tensor_bytes(TensorProto.UINT2, [5]) == 2
    assert tensor_bytes(TensorProto.FLOAT6E2M3, [4]) == 3
    assert tensor_bytes(TensorProto.STRING, [2], [b"abc", b"de"]) == 5
    for code in TensorProto.DataType.values():  # every type this onnx knows: a size, or STRING's own rule
        if code not in (TensorProto.UNDEFINED, TensorProto.STRING):
            assert tensor_bytes(code, [8]) > 0
    with pytest.raises(ValueError, match="data type 0 has no known size"):
        tensor_bytes(TensorProto.UNDEFINED, [1])
    tensors = [helper.make_tensor("c", TensorProto.COMPLEX64, [2], [1 + 2j, 3 + 4j]),
               helper.make_tensor("s", TensorProto.STRING, [2], [b"hello", b"!"]),
               helper.make_tensor("i", TensorProto.INT4, [3], [1, 2, 3])]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], tensors)
    path = tmp_path / "types.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    found = {name: nbytes for name, _, nbytes in read_onnx(str(path)).initializers}
    assert found == {"c": 16, "s": 6, "i": 2}


# -- files that are no model -----------------------------------------------------------------------------------
def test_devices_fifos_and_folders_are_refused_before_they_are_read(tmp_path):
    if os.path.exists("/dev/zero"):
        refused(summary("/dev/zero", timeout=20), "a character device, not a model file")
    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)
    refused(summary(str(fifo), timeout=20), "a FIFO (named pipe)")
    refused(summary(str(tmp_path)), "a folder, not a model file")


def test_files_are_diagnosed_by_what_they_are(tmp_path):
    old_pickle = tmp_path / "model.pt"
    old_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=0))  # text: no magic byte
    refused(summary(str(old_pickle)), "a pickle", "never unpickles", "safetensors")
    named_keras = tmp_path / "pickle.keras"
    named_keras.write_bytes(pickle.dumps({"a": 1}))
    refused(summary(str(named_keras)), "a pickle named .keras, not a Keras archive")
    no_config = tmp_path / "noconf.keras"
    with zipfile.ZipFile(no_config, "w") as archive:
        archive.writestr("model.weights.h5", b"x")
    refused(summary(str(no_config)), "not a Keras archive (a zip without config.json)")
    noise = tmp_path / "noise.keras"
    noise.write_bytes(bytes(range(256)))
    refused(summary(str(noise)), "not a Keras archive (not a zip file)")
    binary = tmp_path / "noise.json"
    binary.write_bytes(b"\x00\xff" * 64)
    refused(summary(str(binary)), "binary content", "not a JSON or YAML spec")


def test_an_oversized_h5_config_is_refused_within_a_memory_cap(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    from paramcalc.io import h5_reader

    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as handle:  # a string attribute does not say its size before it is read
        handle.attrs["model_config"] = '{"a": "' + "x" * (h5_reader.CHILD_BASE_BYTES + 2**20) + '"}'
    monkeypatch.setattr(files, "MAX_CONFIG_BYTES", 1024)  # a cap of h5py's needs plus 3 KiB
    with pytest.raises(files.FileFormatError, match="larger than the limit of 1,024 bytes .refused while reading"):
        files.read_h5_config(path)
    small = tmp_path / "small.h5"
    with h5py.File(small, "w") as handle:  # under the cap, over the limit: refused once read
        handle.attrs["model_config"] = '{"a": "' + "x" * 4096 + '"}'
    with pytest.raises(files.FileFormatError, match="refused once read"):
        files.read_h5_config(small)


@pytest.mark.parametrize("index", [1, 2**63])
def test_a_functional_config_naming_an_output_a_layer_does_not_have_is_a_spec_error(index):
    """Found by the readers' fuzz test: an output index of 2**63 escaped as IndexError."""
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "a", "config": {"name": "a", "batch_shape": [None, 4]},
         "inbound_nodes": []},
        {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 3}, "inbound_nodes": [
            {"args": [{"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "keras_history": ["a", 0, 0]}}],
             "kwargs": {}}]}],
        "input_layers": [["a", 0, 0]], "output_layers": [["d", 0, index]]}}
    with pytest.raises(SpecError, match=f"outputs name output {index} of 'd', which has 1 output"):
        paramcalc.estimate(json.dumps(config))


@pytest.mark.parametrize("args", [-1, "a", {"0": 1}])
def test_a_keras_call_whose_arguments_are_not_a_list_is_a_spec_error(args):
    """Found by the readers' fuzz test: a call's ``args`` of -1 escaped as TypeError when its constants
    were read."""
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "a", "config": {"name": "a", "batch_shape": [None, 4]},
         "inbound_nodes": []},
        {"class_name": "Add", "name": "add", "config": {"name": "add"}, "inbound_nodes": [
            {"args": args, "kwargs": {}}]}],
        "input_layers": [["a", 0, 0]], "output_layers": [["add", 0, 0]]}}
    with pytest.raises(SpecError, match=r"inbound_nodes\[0\]\.args must be a list of the call's arguments, "
                                        f"received {type(args).__name__}"):
        paramcalc.estimate(json.dumps(config))
