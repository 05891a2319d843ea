"""How much of the machine other processes took while something was measured.

A calibration on a busy machine measures the busy machine: beside one other busy process, the host time
of a convolution layer came out 100x its quiet figure, and the profile then predicted a 23 ms step as
408 ms. The timings themselves cannot tell a slow kernel from a shared core, but the kernel's counters
can: the CPU time every process used (/proc/stat) less this process's own and its children's
(``os.times``), over the time that passed on every logical CPU, is the share others took.

Pure Python, Linux only; elsewhere :func:`cpu_totals` returns None and nothing is judged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

# Others may take this share of the machine during a calibration before its timings are refused: the
# shell, the terminal and the system's own daemons take a few percent on an idle machine.
BUSY_SHARE = 0.15


def cpu_totals() -> tuple[float, float, int] | None:
    """(seconds every process ran on any CPU, of which stolen by the hypervisor, logical CPUs) since boot,
    from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii", errors="replace") as handle:
            lines = handle.read(1 << 16).splitlines()
    except OSError:
        return None
    total = [line.split() for line in lines if line.startswith("cpu ")]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    if not total or cpus == 0:
        return None
    ticks = [int(v) for v in total[0][1:9]] + [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    hertz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hertz, steal / hertz, cpus


def own_seconds() -> float:
    """CPU seconds this process and the children it has waited for have used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Span:
    """One stretch of a measurement: its label, and the share of the machine others took meanwhile."""

    label: str
    seconds: float
    others_share: float


@dataclass
class ContentionWatch:
    """Marks stretches of a measurement (``mark(label)`` after each) and what others took in each.

    ``read`` and ``clock`` stand in for /proc/stat and the clocks in tests."""

    read: Callable = cpu_totals
    own: Callable = own_seconds
    clock: Callable = time.perf_counter
    spans: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._start = self._last = self._sample()

    def _sample(self):
        totals = self.read()
        return None if totals is None else (self.clock(), totals, self.own())

    def mark(self, label: str) -> None:
        now = self._sample()
        if now is not None and self._last is not None:
            self.spans.append(Span(label, now[0] - self._last[0], _others(self._last, now)))
        self._last = now

    def summary(self) -> dict | None:
        """Plain data for a profile: the whole run's share taken by others, the worst stretch's, and
        the hypervisor's steal; None where the counters cannot be read."""
        end = self._sample()
        if end is None or self._start is None:
            return None
        # /proc/stat counts in ticks of 10 ms: a stretch under a second says little on its own
        worst = max((s for s in self.spans if s.seconds >= 1.0), key=lambda s: s.others_share, default=None)
        wall = end[0] - self._start[0]
        cpus = end[1][2]
        return {"others_share": round(_others(self._start, end), 4),
                "steal_share": round((end[1][1] - self._start[1][1]) / max(wall * cpus, 1e-9), 4),
                "worst_share": round(worst.others_share, 4) if worst else None,
                "worst_step": worst.label if worst else None, "seconds": round(wall, 3), "cpus": cpus}


def _others(before, after) -> float:
    """The share of all CPUs' time between two samples that went to other processes."""
    wall = after[0] - before[0]
    busy = (after[1][0] - before[1][0]) + (after[1][1] - before[1][1])  # a hypervisor's steal counts too
    own = after[2] - before[2]
    cpus = after[1][2]
    if wall <= 0:
        return 0.0
    return min(1.0, max(0.0, (busy - own) / (wall * cpus)))


def too_busy(summary: dict | None) -> bool:
    """Whether others took more than :data:`BUSY_SHARE` of the machine during a measurement."""
    return bool(summary) and summary["others_share"] > BUSY_SHARE
