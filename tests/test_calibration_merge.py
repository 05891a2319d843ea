"""``paramcalc calibrate --merge``: the median of several calibrations of one device, entry by entry."""

from __future__ import annotations

import pytest

from paramcalc.calibration.merge import merge
from paramcalc.core.errors import ParamcalcError
from paramcalc.cost.devices import from_calibration

MEMORY = {"lstm": {"saved_bytes_per_unit": 31.0, "workspace_bytes_per_unit": 0.0}}


def _calibration(scale: float, **extra) -> dict:
    return {"name": "cpu", "framework": "keras", "device": "cpu", "framework_version": "keras 3",
            "op_overhead_s": 1e-5 * scale, "step_overhead_s": 5e-4 * scale,
            "matmul": {"float32": [{"m": 64, "k": 64, "n": 64, "seconds": 1e-5 * scale},
                                   {"m": 128, "k": 128, "n": 128, "seconds": 8e-5 * scale}]},
            "optimizers": {"adam": {"seconds_per_param": 2e-9 * scale, "params": 4194304}}, **extra}


def test_every_measured_number_is_the_median_and_every_shape_is_kept():
    runs = [_calibration(1.0), _calibration(3.0), _calibration(1.5, recurrent_memory=MEMORY)]
    merged = merge(runs)
    assert merged["op_overhead_s"] == pytest.approx(1.5e-5) and merged["step_overhead_s"] == pytest.approx(7.5e-4)
    rows = merged["matmul"]["float32"]
    assert [(r["m"], r["k"], r["n"]) for r in rows] == [(64, 64, 64), (128, 128, 128)]
    assert [r["seconds"] for r in rows] == [pytest.approx(1.5e-5), pytest.approx(1.2e-4)]
    assert merged["optimizers"]["adam"] == {"seconds_per_param": pytest.approx(3e-9), "params": 4194304}
    assert merged["recurrent_memory"] == MEMORY  # measured by one run only: its figure
    assert merged["framework_version"] == "keras 3" and merged["merged_from"] == 3
    profile = from_calibration(merged)  # loads as any calibration does
    assert profile.matmul_seconds(128, 128, 128, "float32") == pytest.approx(1.2e-4)


def test_calibrations_of_different_devices_frameworks_or_sweeps_are_refused():
    with pytest.raises(ParamcalcError, match="different frameworks.*b.json: torch"):
        merge([_calibration(1.0), _calibration(1.0, framework="torch")], ["a.json", "b.json"])
    quick = _calibration(1.0)
    quick["matmul"]["float32"] = quick["matmul"]["float32"][:1]
    with pytest.raises(ParamcalcError, match="different lengths"):
        merge([_calibration(1.0), quick])
    moved = _calibration(1.0)
    moved["matmul"]["float32"][1]["m"] = 256
    with pytest.raises(ParamcalcError, match="different ms"):
        merge([_calibration(1.0), moved])
    with pytest.raises(ParamcalcError, match="two calibrations or more"):
        merge([_calibration(1.0)])
