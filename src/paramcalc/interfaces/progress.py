"""Progress of a long measurement (``paramcalc calibrate``), shown as a bar with its total and an ETA.

A measurement declares its stages up front (``plan``), enters each (``stage``) and reports what it
measured as it goes (a call with the message). On a terminal one line is redrawn in place; piped to a
file, every stage and message is a line of its own, so a log reads top to bottom. No third-party
package: a bar this small is not worth a dependency.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """Seconds as m:ss (or h:mm:ss)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """The calibration's progress on ``stream``.

    ``weights``: each stage's share of the time it usually takes, by name (unlisted stages weigh 1); the
    ETA is the time so far scaled by the weight still to come over the weight done, so it corrects itself
    as the stages pass. ``tty``: redraw one line (default: whether ``stream`` is a terminal)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, weights: dict | None = None,
                 clock: Callable[[], float] = time.monotonic, width: int = 100):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.weights = weights or {}
        self.clock = clock
        self.width = width
        self.stages: list = []
        self.index = -1
        self.started = clock()
        self.stage_started = self.started
        self.last = ""

    # -- what a measurement calls -------------------------------------------------------------------------
    def plan(self, stages: list) -> None:
        self.stages = list(stages)
        self.index = -1
        self.started = self.clock()

    def stage(self, name: str) -> None:
        if name in self.stages[self.index + 1:]:
            self.index = self.stages.index(name, self.index + 1)
        else:  # a stage the plan did not name: shown, counted with the one before
            self.stages.insert(self.index + 1, name)
            self.index += 1
        self.stage_started = self.clock()
        if self.tty:
            self._draw()
        else:
            self._line(f"[{self.index + 1}/{len(self.stages)}] {name} (elapsed {format_duration(self.elapsed())}"
                       + (f", ETA {format_duration(eta)})" if (eta := self.eta()) is not None else ")"))

    def __call__(self, message: str) -> None:
        self.last = message
        if self.tty:
            self._draw()
        else:
            self._line(f"    {message}")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()

    # -- figures ------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.started

    def fraction(self) -> float:
        """The share of the plan's weight done: the stages passed (how far the running one has got is
        not known)."""
        if not self.stages:
            return 0.0
        weights = [self.weights.get(name, 1.0) for name in self.stages]
        return sum(weights[:max(self.index, 0)]) / sum(weights)

    def eta(self) -> float | None:
        done = self.fraction()
        if done <= 0.0:  # nothing finished yet: no rate to go by
            return None
        return self.elapsed() * (1.0 - done) / done

    # -- output -------------------------------------------------------------------------------------------
    def _draw(self) -> None:
        done = self.fraction()
        filled = int(BAR_WIDTH * done)
        eta = self.eta()
        head = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:4.0%} {self.index + 1}/{len(self.stages)} "
                f"{self.stages[self.index] if self.index >= 0 else ''} {format_duration(self.elapsed())}"
                + (f" ETA {format_duration(eta)}" if eta is not None else ""))
        text = f"{head} | {self.last}" if self.last else head
        self.stream.write("\r" + text[:self.width - 1].ljust(self.width - 1))
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
