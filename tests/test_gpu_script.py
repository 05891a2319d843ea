"""The prepared GPU validation (benchmarks/gpu_validation.sh) rehearsed on this CPU in smoke mode, so
that a lent GPU's few minutes are never spent on a script that no longer runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

pytest.importorskip("torch")
pytest.importorskip("keras")


@pytest.mark.skipif(shutil.which("timeout") is None, reason="the script caps each part with timeout(1)")
def test_every_part_of_the_gpu_script_runs(tmp_path):
    env = dict(os.environ, SMOKE="1", DEVICE="cpu", PYTHON=sys.executable, OUT=str(tmp_path))
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run(["bash", "benchmarks/gpu_validation.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("done"), done.stdout[-2000:]
    from paramcalc.cost.devices import from_calibration

    torch_profile = from_calibration(json.loads((tmp_path / "calibration_cpu.json").read_text()))
    keras_profile = from_calibration(json.loads((tmp_path / "calibration_keras_cpu.json").read_text()))
    assert torch_profile.framework == "torch" and keras_profile.framework == "keras-torch"
    for name in ("train_cpu.json", "train_keras_cpu.json"):
        measured = json.loads((tmp_path / name).read_text())
        assert measured and all(m["step_s"] > 0 and m["peak_bytes"] > 0 for m in measured), measured
