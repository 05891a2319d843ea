"""Conditions a symbolic estimate relies on that the symbols cannot settle: recorded by the layers as they
propagate, checked again when ``subs()`` gives the symbols values."""

from __future__ import annotations

from dataclasses import dataclass

from paramcalc.core.dims import Dim, equal, exact_div, format_dim, is_positive


@dataclass(frozen=True)
class Assumption:
    """A condition the estimate relies on that the symbols cannot settle (``n == 20020``)."""

    layer: str
    relation: str  # "==", "divisible" or "positive" (left > 0; right unused)
    left: Dim
    right: Dim

    def __str__(self) -> str:
        if self.relation == "positive":
            return f"{format_dim(self.left)} > 0"
        if self.relation == "divisible":
            return f"{format_dim(self.left)} is divisible by {format_dim(self.right)}"
        return f"{format_dim(self.left)} == {format_dim(self.right)}"

    def holds(self) -> bool | None:
        if self.relation == "positive":
            return is_positive(self.left)
        if self.relation == "divisible":
            if type(self.left) is int and type(self.right) is int:
                return exact_div(self.left, self.right) is not None
            return True if exact_div(self.left, self.right) is not None else None
        return equal(self.left, self.right)
