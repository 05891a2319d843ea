"""Model files read as data (the "Model files" rows of ../shared/reference/bad-inputs.md)."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile

import pytest

import paramcalc
from paramcalc.io import files


def _safetensors(path, header: dict, data: bytes = b"", length: int | None = None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def test_safetensors_counts_from_the_header(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
              "b": {"dtype": "BF16", "shape": [4], "data_offsets": [48, 56]}, "__metadata__": {"format": "pt"}}
    weights = files.read_safetensors(_safetensors(tmp_path / "m.safetensors", header, bytes(56)))
    assert weights.params == 16 and weights.nbytes == 56 and weights.metadata == {"format": "pt"}
    assert files.sniff(tmp_path / "m.safetensors") == "safetensors"


@pytest.mark.parametrize("header,data,length,message", [
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}, b"", None, "past the end"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), None, "needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), None, "overlap"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4), 200 * 2**20, "over the limit"),
    ({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, bytes(1), None, "unknown dtype"),
])
def test_bad_safetensors_are_specific_errors(tmp_path, header, data, length, message):
    path = _safetensors(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(files.FileFormatError, match=message):
        files.read_safetensors(path)


def test_zip_without_config_is_not_a_keras_archive(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.weights.h5", b"x")
    with pytest.raises(files.FileFormatError, match="not a Keras archive"):
        files.read_keras_config(path)


def test_an_archive_whose_config_is_flagged_encrypted_is_a_file_error(tmp_path):
    """A damaged archive found by the fuzz test: zipfile raised RuntimeError ("password required")."""
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
    raw = bytearray(path.read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        start = raw.index(signature)
        raw[start + flag_at] |= 0x1
    path.write_bytes(bytes(raw))
    assert files.sniff(path) == "keras"
    with pytest.raises(files.FileFormatError, match="encrypted"):
        files.read_keras_config(path)


def test_compression_bomb_is_refused_before_reading(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{" + b" " * (8 * 2**20) + b"}")
    with pytest.raises(files.FileFormatError, match="limit of 200x"):
        files.read_keras_config(path)


@pytest.mark.parametrize("content,kind", [
    (pickle.dumps({"state_dict": 1}), "pickle"),
    (bytes(range(200)), "unknown"),
])
def test_content_decides_not_the_extension(tmp_path, content, kind):
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    assert files.sniff(path) == kind
    result = subprocess.run([sys.executable, "-m", "paramcalc", "summary", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    if kind == "pickle":
        assert "never unpickles" in result.stderr and "safetensors" in result.stderr


def test_real_keras_archive(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((100, 1)), keras.layers.Dense(300), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    path = tmp_path / "seed.keras"
    model.save(path)
    assert files.sniff(path) == "keras"
    est = paramcalc.estimate(files.read_keras_config(path))
    assert est.params == model.count_params()
    result = subprocess.run([sys.executable, "-m", "paramcalc", "summary", str(path), "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["totals"]["params"] == model.count_params()


def test_lambda_in_a_keras_archive_is_named_never_run(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                                          "config": {"code": "..."}}}}]}}
    path = tmp_path / "lambda.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    with pytest.raises(paramcalc.ShapeError, match="never decoded or run") as info:
        paramcalc.estimate(files.read_keras_config(path))
    assert "'evil'" in str(info.value) and "output_shape" in str(info.value)


def test_lambda_with_output_shape_is_opaque_with_a_warning(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
        {"class_name": "Lambda", "config": {"name": "double", "output_shape": [6],
                                            "function": {"class_name": "__lambda__", "config": {"code": "..."}}}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}
    path = tmp_path / "lambda_ok.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    est = paramcalc.estimate(files.read_keras_config(path))
    assert est.params == 14 and est.row("double").output_shape[1:] == (6,)
    assert [d.code for d in est.diagnostics] == ["opaque-layer"]


def test_lambda_inside_a_wrapper_is_found(tmp_path):
    config = {"layers": [{"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
        "class_name": "Lambda", "config": {"name": "inner", "function": {"class_name": "__lambda__"}}}}}],
        "build_input_shape": [None, 4, 3]}
    with pytest.raises(paramcalc.ShapeError, match="never decoded or run"):
        paramcalc.estimate(config)


def test_legacy_h5_model_config(tmp_path):
    h5py = pytest.importorskip("h5py")
    config = {"class_name": "Sequential", "config": {"name": "legacy", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 4, "batch_input_shape": [None, 8]}}]}}
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
        handle["external"] = h5py.ExternalLink("/etc/passwd-does-not-exist.h5", "/")  # never followed
    assert files.sniff(path) == "hdf5"
    assert paramcalc.estimate(files.read_h5_config(path)).params == 36
    result = subprocess.run([sys.executable, "-m", "paramcalc", "summary", str(path), "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["totals"]["params"] == 36


def test_weights_only_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as handle:
        handle["dense/kernel"] = [[0.0]]
    with pytest.raises(files.FileFormatError, match="weights-only file: no architecture inside"):
        files.read_h5_config(path)


def test_lambda_in_compile_config_is_reported_with_its_path(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}}]},
        "compile_config": {"loss": {"class_name": "__lambda__", "config": {"code": "evil"}}}}
    path = tmp_path / "compiled.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    est = paramcalc.estimate(files.read_keras_config(path))
    assert est.params == 8
    assert any("$.compile_config.loss" in note and "never decoded or run" in note for note in est.notes)


def test_config_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_CONFIG_BYTES", 1000)
    path = tmp_path / "big.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("config.json", json.dumps({"layers": [], "padding": "x" * 5000}))
    with pytest.raises(files.FileFormatError, match="over the limit of 1,000"):
        files.read_keras_config(path)


def test_a_member_whose_declared_size_lies_is_never_read_past_it(tmp_path):
    path = tmp_path / "liar.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("config.json", json.dumps({"layers": [], "name": "x" * 100}))
    raw = bytearray(path.read_bytes())
    # shrink the declared size in both headers: the reader must stop there, not trust the data
    real = len(json.dumps({"layers": [], "name": "x" * 100}))
    raw = raw.replace(real.to_bytes(4, "little"), (10).to_bytes(4, "little"))
    path.write_bytes(bytes(raw))
    with pytest.raises(paramcalc.ParamcalcError):
        files.read_keras_config(path)
