"""The pytest plugin, run inside pytest's own pytester."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc.testing import BudgetExceeded, assert_budget

PASSING = '''
import paramcalc

def test_flat_fits(paramcalc_budget):
    est = paramcalc_budget(paramcalc.seed_model("flat", 20020), max_params=7_000_000,
                           batch_size=128, max_memory="1 GiB")
    assert est.params == 6126801
'''

FAILING = '''
import paramcalc

def test_reshaped_flatten_fits(paramcalc_budget):
    paramcalc_budget(paramcalc.seed_model("reshaped_flatten", 20020), max_params=7_000_000,
                     batch_size=128, max_memory="24 GiB")
'''


def test_passing_budget_and_report(pytester):
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--paramcalc-report", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*paramcalc report*",
                                 "*test_flat_fits: params=6,126,801 trainable=6,126,801 flops/sample=*"])


def test_failing_budget_says_which_and_by_how_much(pytester):
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*model 'reshaped_flatten' is over budget:*",
        "*params: 1,801,831,101 > budget 7,000,000 (over by 1,794,831,101, 257.40x)*",
        "*training memory (bytes): * > budget 25,769,803,776*",
        "*layers holding the most parameters: dense_1 (1,801,800,300)*",
        "*flatten-explosion*",
    ])
    # the failure reads in a screenful: the budget's own source is hidden, the whole table left out
    text = result.stdout.str()
    failure = text[text.index("_ test_reshaped_flatten_fits _"):text.index("short test summary")]
    assert "def assert_budget" not in failure and "__tracebackhide__" not in failure
    assert len([line for line in failure.splitlines() if line.strip("=_ ")]) <= 20


def test_report_is_off_by_default(pytester):
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert "paramcalc report" not in result.stdout.str()


def test_assert_budget_directly():
    est = assert_budget(paramcalc.seed_model("flat", 100), max_params=200_000, max_flops=10**6)
    assert est.params == 150_801
    with pytest.raises(BudgetExceeded) as info:
        assert_budget(paramcalc.seed_model("reshaped", 100), target_shape=(), allow_warnings=False)
    assert any("loss-broadcast" in f for f in info.value.failures)
    with pytest.raises(BudgetExceeded, match="samples per second"):
        assert_budget(paramcalc.seed_model("reshaped_flatten", 2000), batch_size=128, device="h100-sxm-torch",
                      min_samples_per_second=10**9)
    with pytest.raises(BudgetExceeded, match="depends on symbols"):
        assert_budget(paramcalc.seed_model("flat"), max_params=10)


def test_plugin_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys, paramcalc.pytest_plugin, paramcalc.testing; "
            "print([m for m in ('torch', 'tensorflow', 'keras', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
