"""paramcalc's errors: one root (a ValueError) and a few children that carry the facts as fields.

Every message says what was expected, what was received, where (the layer or the JSON path) and, where
one exists, the fix.
"""

from __future__ import annotations


def shown(value: object) -> str:
    """A bad value as an error shows it: its repr, shortened, and never a 5,000-digit integer (Python
    refuses to print one, which turned a clear error into a crash)."""
    if type(value) is int and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"
    if isinstance(value, (list, tuple)) and any(type(v) is int and v.bit_length() > 128 for v in value):
        return f"a {type(value).__name__} holding " + ", ".join(shown(v) for v in value[:4])
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ParamcalcError(ValueError):
    """Root of every error paramcalc raises on bad input.

    ``layer`` names the layer (or spec path) concerned, ``value`` the offending value, ``fix`` a
    one-line remedy; each may be None.
    """

    def __init__(self, message: str, *, layer: str | None = None, value: object = None,
                 fix: str | None = None, where: str | None = None) -> None:
        self.layer = layer
        self.value = value
        self.fix = fix
        self.where = where
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message
        if self.layer is not None and f"'{self.layer}'" not in text:
            text = f"layer '{self.layer}': {text}"
        if self.fix:
            text = f"{text}. Fix: {self.fix}"
        return text

    def with_layer(self, layer: str) -> "ParamcalcError":
        """The same error, re-raised at the model level with the layer's name added."""
        if self.layer is None:
            self.layer = layer
            self.args = (self._render(),)
        return self


class DimensionError(ParamcalcError):
    """A dimension that is not a non-negative integer or a symbol."""


class LayerConfigError(ParamcalcError):
    """A layer argument out of range or of the wrong type (units=-1, a Reshape with two -1)."""


class ShapeError(ParamcalcError):
    """A layer cannot accept the shape it receives (Linear(20020) fed 6,006,000 features)."""


class UnknownLayerError(ParamcalcError):
    """A layer class paramcalc has no rule for; the message says how to register one."""


class SpecError(ParamcalcError):
    """A malformed model description (spec document, Keras config); ``where`` is its JSON path."""


class FileFormatError(SpecError):
    """A file paramcalc will not (or cannot safely) read; the message says why and what to pass instead."""
