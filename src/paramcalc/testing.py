"""Budgets for models, for other projects' test suites: params, memory, FLOPs and speed.

>>> import paramcalc
>>> from paramcalc.testing import assert_budget
>>> est = assert_budget(paramcalc.seed_model("flat", 20020), max_params=7_000_000)
>>> est.params
6126801

A broken budget raises :class:`BudgetExceeded` (an AssertionError, so pytest shows it as a failure)
whose message says which budget, by how much, shows the table and the layers that cost most, and the
diagnostics. Every estimate made here is recorded for ``pytest --paramcalc-report``.
"""

from __future__ import annotations

from typing import Any

from paramcalc.core.dims import format_count
from paramcalc.cost.capacity import parse_bytes

# (label, Estimate) of every model checked in this process, for the pytest report
RECORDED: list[tuple[str, Any]] = []


class BudgetExceeded(AssertionError):
    """A model broke one or more budgets; ``failures`` lists them, ``estimate`` is the evidence."""

    def __init__(self, message: str, failures: list[str], estimate: Any) -> None:
        super().__init__(message)
        self.failures = failures
        self.estimate = estimate


def assert_budget(model: object, *, input_shape: object = None, batch_size: object = None,
                  target_shape: object = None, max_params: int | None = None,
                  max_trainable_params: int | None = None, max_flops: int | None = None,
                  max_memory: object = None, optimizer: str = "adam", dtype: str = "float32",
                  device: object = None, min_samples_per_second: float | None = None,
                  allow_warnings: bool = True, label: str | None = None, parallel: object = None,
                  max_memory_per_rank: object = None):
    """Estimate ``model`` and check every budget given; returns the Estimate when all hold.

    ``max_memory``: training peak (bytes or text such as "8 GiB") with ``optimizer`` and ``dtype``, at
    ``batch_size``. ``min_samples_per_second``: needs ``device`` and ``batch_size``. ``max_flops``:
    forward FLOPs per sample. ``allow_warnings=False`` fails on any warning diagnostic.
    ``max_memory_per_rank``: the training peak of one rank under ``parallel`` (a
    :class:`~paramcalc.Parallel`; ``batch_size`` is then each rank's micro-batch).

    >>> import paramcalc
    >>> model = paramcalc.Sequential([paramcalc.Dense(4096), paramcalc.Dense(4096)])
    >>> est = assert_budget(model, input_shape=(4096,), batch_size=8, dtype="bfloat16_master",
    ...                     parallel=paramcalc.Parallel(data=8, zero=3, units=("dense", "dense_1")),
    ...                     max_memory_per_rank="256 MiB")
    """
    __tracebackhide__ = True  # pytest shows the failure where the budget was asked for, not in here
    from paramcalc.analysis.estimate import estimate

    if max_memory_per_rank is not None and parallel is None:
        raise ValueError("max_memory_per_rank needs parallel=paramcalc.Parallel(...) (for one device: max_memory)")
    training = (max_memory is not None or min_samples_per_second is not None or device is not None
                or max_memory_per_rank is not None)
    est = estimate(model, input_shape=input_shape, batch_size=batch_size, target_shape=target_shape,
                   optimizer=optimizer if training else None, dtype=dtype if training else None, device=device,
                   parallel=parallel if training else None)
    RECORDED.append((label or est.name, est))
    failures = []
    _check(failures, "params", est.params, max_params)
    _check(failures, "trainable params", est.trainable_params, max_trainable_params)
    _check(failures, "forward FLOPs per sample", est.flops, max_flops)
    if training and est.training is None:
        failures.append(f"training budgets need concrete sizes: {est.notes[-1] if est.notes else ''}")
    if max_memory is not None and est.training is not None:
        _check(failures, "training memory (bytes)", est.training.memory.peak, parse_bytes(max_memory))
    if max_memory_per_rank is not None and est.training is not None:
        _check(failures, f"training memory per rank, {parallel.label} (bytes)", est.training.memory.peak,
               parse_bytes(max_memory_per_rank))
    if min_samples_per_second is not None and est.training is not None:
        rate = est.training.samples_per_second
        if rate is None:
            failures.append("min_samples_per_second needs a device and a batch_size")
        elif rate < min_samples_per_second:
            failures.append(f"samples per second: predicted {rate:,.0f} on {est.training.device}, budget "
                            f"{min_samples_per_second:,.0f} ({min_samples_per_second / rate:.2f}x too slow)")
    if not allow_warnings:
        failures += [f"diagnostic {d.code} at '{d.layer}': {d.message}" for d in est.diagnostics
                     if d.severity == "warning"]
    if failures:
        raise BudgetExceeded(_message(est, failures), failures, est)
    return est


def _check(failures: list, what: str, value: Any, limit: Any) -> None:
    if limit is None:
        return
    if type(value) is not int:
        failures.append(f"{what} is {value}, which depends on symbols: give concrete sizes to check {limit:,}")
    elif value > limit:
        failures.append(f"{what}: {value:,} > budget {limit:,} (over by {value - limit:,}, "
                        f"{value / limit if limit else float('inf'):.2f}x)")


def _message(est, failures: list[str]) -> str:
    """A few lines: what broke, the layers behind it and the findings; the whole table stays on the
    exception (``error.estimate.summary()``), since a deep model's would bury the failure."""
    lines = [f"model '{est.name}' is over budget:"] + [f"  - {f}" for f in failures]
    heaviest = sorted((r for r in est.layers if type(r.params) is int), key=lambda r: -r.params)[:3]
    if heaviest:
        lines.append("  layers holding the most parameters: "
                     + ", ".join(f"{r.name} ({format_count(r.params)})" for r in heaviest))
    if est.training is not None:
        lines.append(f"  training peak: {format_count(est.training.memory.peak)} bytes")
        if est.training.layer_seconds:
            lines.append("  slowest: " + ", ".join(f"{n} ({s * 1e3:.2f} ms)"
                                                  for n, s in est.training.layer_seconds[:3]))
    findings = [d for d in est.diagnostics if d.severity == "warning"] or list(est.diagnostics)
    for d in findings[:3]:
        text = f"  [{d.code}] {d.message}"
        lines.append(text if len(text) <= 160 else text[:157] + "...")
    if len(findings) > 3:
        lines.append(f"  ... and {len(findings) - 3} more findings")
    lines.append("  (the whole table: error.estimate.summary(), or paramcalc summary on the command line)")
    return "\n".join(lines)


def report_line(label: str, est) -> str:
    """One stable line per model: the figures a snapshot test can compare."""
    parts = [f"{label}: params={format_count(est.params)}", f"trainable={format_count(est.trainable_params)}",
             f"flops/sample={format_count(est.flops)}", f"output={est.format_shape(est.output_shape)}"]
    if est.training is not None:
        parts.append(f"peak_memory={format_count(est.training.memory.peak)}B")
        if est.training.step_seconds is not None:
            parts.append(f"step={est.training.step_seconds * 1e3:.3f}ms@{est.training.device}")
    codes = sorted({d.code for d in est.diagnostics})
    if codes:
        parts.append(f"diagnostics={','.join(codes)}")
    return " ".join(parts)
