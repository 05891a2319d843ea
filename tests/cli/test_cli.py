"""The paramcalc command, run as a user runs it: a separate process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "paramcalc", *args], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_demo_shows_the_seed_case():
    out = run("demo").stdout
    for figure in ("6,126,801", "1,801,831,101", "121,101", "300*n + 120801", "90000*n + 31101",
                   "(None, 20020, 300)", "(None, 6006000)", "(None, 20020, 1)",
                   "dense-per-position", "flatten-explosion", "loss-broadcast"):
        assert figure in out, figure


def test_demo_json_at_another_size():
    data = json.loads(run("demo", "--features", "100", "--json").stdout)
    assert data["models"]["reshaped_flatten"]["totals"]["params"] == 9_031_101
    assert data["models"]["flat"]["formula_params"] == "300*n + 120801"


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"name": "seed", "layers": [
        {"kind": "dense", "units": 300, "activation": "relu"}, {"kind": "flatten"},
        {"kind": "dense", "units": 300, "activation": "relu"}, {"kind": "dense", "units": 100,
                                                                 "activation": "relu"},
        {"kind": "dense", "units": 1}]}))
    return path


def test_summary_of_a_spec_file(spec_file):
    out = run("summary", str(spec_file), "--input", "20020,1").stdout
    assert "Total params: 1,801,831,101" in out and "flatten-explosion" in out


def test_summary_symbolic_json(spec_file):
    data = json.loads(run("summary", str(spec_file), "--input", "n,1", "--json").stdout)
    assert data["totals"]["params"] == "90000*n + 31101"


def test_summary_with_batch_and_target(spec_file):
    data = json.loads(run("summary", str(spec_file), "--input", "100,1", "--batch-size", "128",
                          "--target", "()", "--json").stdout)
    assert data["layers"][0]["output_shape"] == [128, 100, 300]
    assert data["target_shape"] == []


@pytest.mark.parametrize("args,text", [
    (["summary", "missing.json", "--input", "3"], "No such file"),
    (["summary", "{spec}", "--input", "3,-2"], "dimension must be a non-negative integer"),
    (["summary", "{spec}"], "declares no input shape"),
    (["summary", "{bad}", "--input", "3"], "not valid JSON"),
])
def test_errors_are_one_line_without_traceback(spec_file, tmp_path, args, text):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    args = [a.format(spec=spec_file, bad=bad) for a in args]
    result = run(*args, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paramcalc: error:") and text in lines[0]
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2():
    result = run("frobnicate", check=False)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_help_on_every_command():
    for command in ([], ["demo"], ["summary"], ["compare"], ["explain"], ["plot"], ["calibrate"]):
        assert "usage: paramcalc" in run(*command, "--help").stdout


def test_summary_with_training_cost(spec_file):
    data = json.loads(run("summary", str(spec_file), "--input", "100,1", "--batch-size", "32", "--optimizer",
                          "adam", "--device", "cpu-dev-torch", "--json").stdout)
    training = data["training"]
    assert training["memory_bytes"]["optimizer"] == 8 * data["totals"]["trainable_params"]
    assert training["step_seconds"] > 0 and training["device"] == "cpu-dev-torch"


def test_keras_backend_chooses_whose_training_memory(spec_file):
    def peak(*extra):
        data = json.loads(run("summary", str(spec_file), "--input", "100,1", "--batch-size", "32", "--optimizer",
                              "adam", "--json", *extra).stdout)
        return data["training"]["memory_bytes"]["peak"]
    # a plain spec follows torch's rules (one update buffer per parameter); named as Keras on TensorFlow,
    # its compiled step holds one layer's gradients and update buffers; Keras on torch keeps three
    # lists of every tensor for its update
    on_tensorflow, on_torch = peak("--keras-backend", "tensorflow"), peak("--keras-backend", "torch")
    assert len({peak(), on_tensorflow, on_torch}) == 3 and on_torch == max(peak(), on_tensorflow, on_torch)


def test_unknown_device_is_a_one_line_error(spec_file):
    result = run("summary", str(spec_file), "--input", "100,1", "--batch-size", "2", "--device", "tpu", check=False)
    assert result.returncode == 1 and "unknown device 'tpu'" in result.stderr


def test_compare_answers_the_seed_question():
    out = run("compare", "seed:flat", "seed:reshaped_flatten", "--target", "()").stdout
    assert "6,126,801" in out and "1,801,831,101" in out and "294.09x the parameters" in out
    assert "+ flatten (Flatten) (None, 6006000)" in out
    assert "flatten-explosion" in out and "dense-per-position" in out


def test_explain_in_prose():
    out = run("explain", "seed:reshaped:100", "--target", "()").stdout
    assert out.startswith("reshaped: 2 finding(s).") and "What to do:" in out
    assert "no pitfalls found" in run("explain", "seed:flat:100").stdout


def test_markdown_summary():
    out = run("summary", "seed:reshaped_flatten:100", "--markdown").stdout
    assert "| Layer (type) | Output Shape | Param # | FLOPs/sample |" in out
    assert "| dense_1 (Dense) | `(None, 300)` | 9,000,300 |" in out


def test_module_attribute_model(tmp_path):
    (tmp_path / "my_models.py").write_text(
        "import paramcalc\n\ndef build():\n    return paramcalc.Sequential([paramcalc.Dense(8)], input_shape=(4,))\n")
    result = subprocess.run([sys.executable, "-m", "paramcalc", "summary", "my_models:build", "--json"],
                            capture_output=True, text=True, cwd=tmp_path, check=True)
    assert json.loads(result.stdout)["totals"]["params"] == 40


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "seed.png"
    run("plot", "seed:reshaped_flatten:n", "--symbol", "n", "--batch-size", "16", "--values", "10,100,1000",
        "--device", "h100-sxm-torch", "--out", str(out))
    assert out.read_bytes().startswith(b"\x89PNG")


def test_plain_when_piped_and_styled_on_request():
    assert "\x1b[" not in run("demo").stdout
    import paramcalc

    est = paramcalc.estimate(paramcalc.seed_model("reshaped", 100), target_shape=())
    styled = est.summary(color=True)
    assert "\x1b[1m" in styled and "\x1b[33m[warning]" in styled
    assert "\x1b[" not in est.summary()


def test_color_on_a_terminal(tmp_path):
    """Run the CLI under a pseudo-terminal: styles appear; with NO_COLOR they do not."""
    import os
    import pty

    def under_pty(env):
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "paramcalc", "summary", "seed:reshaped:100"],
                                stdout=slave, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait()
        os.close(master)
        return b"".join(chunks).decode()

    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    assert "\x1b[1m" in under_pty(env)
    assert "\x1b[" not in under_pty({**env, "NO_COLOR": "1"})


def test_markdown_for_demo_and_explain():
    demo = run("demo", "--markdown").stdout
    assert demo.count("| Layer (type) | Output Shape | Param # | FLOPs/sample |") == 3
    assert "| flatten (Flatten) | `(None, 6006000)` | 0 |" in demo
    out = run("explain", "seed:reshaped:100", "--target", "()", "--markdown").stdout
    assert out.startswith("**reshaped**: 2 finding(s)") and "- **warning: dense-per-position**" in out


def test_calibrate_merge_writes_the_median_of_several_calibrations(tmp_path):
    paths = []
    for i, seconds in enumerate((1e-5, 3e-5, 2e-5)):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps({"name": "cpu", "framework": "torch", "device": "cpu", "op_overhead_s": seconds,
                                    "matmul": {"float32": [{"m": 8, "k": 8, "n": 8, "seconds": seconds}]}}))
        paths.append(str(path))
    out = tmp_path / "merged.json"
    assert "median of 3 calibrations" in run("calibrate", "--merge", *paths, "--out", str(out)).stdout
    merged = json.loads(out.read_text())
    assert merged["op_overhead_s"] == 2e-5 and merged["matmul"]["float32"][0]["seconds"] == 2e-5
    (tmp_path / "bad.json").write_text("{")
    bad = run("calibrate", "--merge", paths[0], str(tmp_path / "bad.json"), "--out", str(out), check=False)
    assert bad.returncode == 1 and "bad.json: not a calibration JSON" in bad.stderr


def test_calibrate_repeat_runs_fresh_processes_and_merges_them(tmp_path):
    import argparse

    from paramcalc.core.errors import ParamcalcError
    from paramcalc.interfaces import cli

    seconds = iter((3e-5, 1e-5, 2e-5))
    commands = []

    def fake_run(command):  # what a child `paramcalc calibrate` would write
        commands.append(command)
        out = command[command.index("--out") + 1]
        value = next(seconds)
        with open(out, "w", encoding="utf-8") as handle:
            json.dump({"framework": "keras", "device": "cpu", "op_overhead_s": value,
                       "matmul": {"float32": [{"m": 8, "k": 8, "n": 8, "seconds": value}]}}, handle)
        return 0
    args = argparse.Namespace(device="cpu", framework="keras", dtypes="float32", quick=True, repeat=3,
                              out=str(tmp_path / "cpu.json"), merge=None, allow_busy=False)
    paths = cli._calibrate_runs(args, fake_run)
    assert paths == [str(tmp_path / f"cpu.run{i}.json") for i in (1, 2, 3)]
    # each run is kept whatever the machine did meanwhile: the merged median is what gets judged
    assert all(c[0] == "calibrate" and "--quick" in c and "--repeat" not in c
               and "--allow-busy" in c for c in commands)
    args.merge = paths
    said = cli._calibrate(args)
    assert "median of 3 calibrations" in said
    assert "differ from their median by 50% (median) and 50% at most" in said  # 1, 2 and 3 x 1e-5 s
    assert json.loads((tmp_path / "cpu.json").read_text())["op_overhead_s"] == 2e-5
    args.merge, args.repeat = None, 2
    with pytest.raises(ParamcalcError, match="run 1 of 2 failed"):
        cli._calibrate_runs(args, lambda command: 1)


@pytest.fixture
def two_inputs(tmp_path):
    path = tmp_path / "twohead.json"
    path.write_text(json.dumps({"name": "twohead", "inputs": {"seq": [256, 8], "meta": [16]},
                                "layers": [{"kind": "dense", "units": 32, "name": "d", "inbound": ["seq"]},
                                           {"kind": "flatten", "name": "f", "inbound": ["d"]},
                                           {"kind": "concatenate", "name": "cat", "inbound": ["f", "meta"]},
                                           {"kind": "dense", "units": 1, "name": "price", "inbound": ["cat"]},
                                           {"kind": "dense", "units": 3, "name": "kind", "inbound": ["cat"]}],
                                "outputs": ["price", "kind"]}))
    return path


def test_several_inputs_and_outputs_are_shown_with_what_each_layer_reads(two_inputs):
    out = run("summary", str(two_inputs)).stdout
    assert 'inputs seq (None, 256, 8), meta (None, 16); outputs price (None, 1), kind (None, 3)' in out
    header = next(line for line in out.splitlines() if line.startswith("Layer (type)"))
    assert header.rstrip().endswith("Connected to")
    cat = next(line for line in out.splitlines() if line.startswith("cat "))
    assert cat.rstrip().endswith("f, meta")
    data = json.loads(run("summary", str(two_inputs), "--json").stdout)
    assert data["outputs"] == {"price": [None, 1], "kind": [None, 3]}
    assert [row["connected_to"] for row in data["layers"]][2] == ["f", "meta"]
    # a chain keeps Keras' four columns
    chain = run("demo", "--features", "100").stdout
    assert "Connected to" not in chain


def test_the_command_line_takes_one_shape_per_input_in_order_or_by_name(two_inputs):
    by_order = json.loads(run("summary", str(two_inputs), "--input", "64,8", "--input", "4", "--json").stdout)
    by_name = json.loads(run("summary", str(two_inputs), "--input", "meta=4", "--input", "seq=64,8",
                             "--json").stdout)
    assert by_order["inputs"] == by_name["inputs"] == {"seq": [64, 8], "meta": [4]}
    mixed = run("summary", str(two_inputs), "--input", "seq=64,8", "--input", "4", check=False)
    assert mixed.returncode == 1 and "name every input" in mixed.stderr
    one = run("summary", str(two_inputs), "--input", "64,8", check=False)
    assert one.returncode == 1 and "--input seq=256,8 --input meta=16" in one.stderr


def test_a_class_handed_in_is_told_to_pass_an_instance(tmp_path, monkeypatch):
    (tmp_path / "tmodel.py").write_text(
        "import paramcalc\n"
        "class Net(paramcalc.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__([paramcalc.Dense(2)], input_shape=(8,))\n"
        "class Needs(paramcalc.Sequential):\n"
        "    def __init__(self, width):\n"
        "        super().__init__([paramcalc.Dense(width)], input_shape=(8,))\n")
    monkeypatch.chdir(tmp_path)
    refused = run("summary", "tmodel:Net", check=False)
    assert refused.returncode == 1 and "tmodel:Net is the class Net, not a model" in refused.stderr
    assert "write tmodel:Net() to make one" in refused.stderr
    assert "Param #" in run("summary", "tmodel:Net()").stdout
    needs = run("summary", "tmodel:Needs()", check=False)
    assert needs.returncode == 1 and "cannot call tmodel:Needs() with no arguments" in needs.stderr
    import paramcalc
    from paramcalc.core.errors import SpecError

    with pytest.raises(SpecError, match="received the class .*Sequential, not a model"):
        paramcalc.estimate(paramcalc.Sequential)


def test_every_flag_does_what_it_says():
    summary = run("summary", "--help").stdout
    for words in (".h5", "ONNX", "YAML", "seed:VARIANT", "module:attribute", "cpu-dev-keras", "h100-sxm-torch",
                  "a100-80gb", "l4"):
        assert words in summary, words
    plot = run("plot", "--help").stdout
    assert "--json" not in plot and "--markdown" not in plot  # a PNG has no text format
    assert run("plot", "seed:flat", "--out", "x.png", "--json", check=False).returncode == 2
    # a device alone prices training with Adam, and says so
    data = json.loads(run("summary", "seed:flat:100", "--batch-size", "8", "--device", "h100-sxm", "--json").stdout)
    assert data["training"]["optimizer"] == "adam"
    assert any(note.startswith("no optimizer given: training memory and time assume Adam") for note in data["notes"])
    chosen = json.loads(run("summary", "seed:flat:100", "--batch-size", "8", "--device", "h100-sxm", "--optimizer",
                            "adam", "--json").stdout)
    assert not any("no optimizer given" in note for note in chosen["notes"])
