"""YAML specs and the YAML rows of ../shared/reference/bad-inputs.md."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc import SpecError
from paramcalc.frontends.yaml_spec import load_spec_yaml

pytest.importorskip("yaml")

SEED = """
name: seed
input_shape: [n, 1]
layers:
  - {kind: dense, units: 300, activation: relu}
  - {kind: flatten}
  - {kind: dense, units: 1}
"""


def test_yaml_spec_estimates():
    assert str(paramcalc.estimate(load_spec_yaml(SEED, "seed.yaml")).params) == "300*n + 601"


def test_units_1e3_is_a_string_in_yaml_1_1_and_a_clear_type_error():
    doc = load_spec_yaml("input_shape: [3]\nlayers:\n  - {kind: dense, units: 1e3}\n", "s.yaml")
    assert doc["layers"][0]["units"] == "1e3"
    with pytest.raises(paramcalc.LayerConfigError, match="units='1e3'"):
        paramcalc.estimate(doc)


def test_anchor_that_refers_to_itself_is_cyclic():
    with pytest.raises(SpecError, match="cyclic"):
        load_spec_yaml("a: &x [1, *x]\n", "cyclic.yaml")


def test_billion_laughs_hits_the_node_cap_quickly():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    with pytest.raises(SpecError, match="node cap"):
        load_spec_yaml("\n".join(lines) + "\n", "laughs.yaml")


def test_cli_reads_yaml(tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / "seed.yaml"
    path.write_text(SEED)
    out = subprocess.run([sys.executable, "-m", "paramcalc", "summary", str(path), "--input", "100,1", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["totals"]["params"] == 30601
