"""pytest plugin (registered as the ``paramcalc`` pytest11 entry point); imports no framework.

- fixture ``paramcalc_budget``: ``paramcalc_budget(model, input_shape=..., max_params=...)`` is
  :func:`paramcalc.testing.assert_budget`, labelled with the test's name;
- ``pytest --paramcalc-report``: at the end of the run, one line per model estimated during the session.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("paramcalc")
    group.addoption("--paramcalc-report", action="store_true", default=False,
                    help="print every model estimated through paramcalc budgets, one stable line each")


@pytest.fixture
def paramcalc_budget(request):
    """Check a model against budgets; failures read as an assertion with the evidence."""
    from paramcalc.testing import assert_budget

    def check(model, **kwargs):
        __tracebackhide__ = True
        kwargs.setdefault("label", f"{request.node.nodeid}")
        return assert_budget(model, **kwargs)

    return check


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not config.getoption("--paramcalc-report"):
        return
    from paramcalc.testing import RECORDED, report_line

    terminalreporter.section("paramcalc report")
    if not RECORDED:
        terminalreporter.write_line("no model was estimated")
    for label, est in RECORDED:
        terminalreporter.write_line(report_line(label, est))
