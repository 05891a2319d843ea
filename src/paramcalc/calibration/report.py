"""How a measurement reports: its plan of stages, the stage it enters, and what it measured, passed on to
a progress display (``paramcalc.interfaces.progress.ProgressBar``) or any callable taking a message."""

from __future__ import annotations

from typing import Callable


class Reporter:
    """What a measurement reports through: messages, a plan of stages and the stage entered, passed on to
    ``progress`` (a ProgressBar, or any callable taking a message, such as ``print``: stages then arrive
    as messages of their own)."""

    def __init__(self, progress: Callable[[str], None] | None, on_message: Callable[[str], None] | None = None):
        self.progress = progress
        self.on_message = on_message
        self.stages: list = []

    def plan(self, stages: list) -> None:
        self.stages = list(stages)
        if hasattr(self.progress, "plan"):
            self.progress.plan(self.stages)

    def stage(self, name: str) -> None:
        if self.on_message is not None:
            self.on_message(name)
        if hasattr(self.progress, "stage"):
            self.progress.stage(name)
        elif self.progress is not None:
            position = self.stages.index(name) + 1 if name in self.stages else "?"
            self.progress(f"[{position}/{len(self.stages)}] {name}")

    def __call__(self, message: str) -> None:
        if self.on_message is not None:
            self.on_message(message)
        if self.progress is not None:
            self.progress(message)
