"""TensorSpec: the shape (batch axis first) and dtype of one tensor, frozen and cheap."""

from __future__ import annotations

from dataclasses import dataclass

from paramcalc.core.dims import Dim, prod


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor's shape and dtype. ``shape[0]`` is the batch axis, as the frameworks index it.

    >>> TensorSpec((128, 20020, 1)).rank
    3
    """

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> Dim:
        """Elements in the whole tensor, batch included (exact)."""
        return prod(self.shape)

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        return self.shape[1:]

    def with_shape(self, shape: tuple[Dim, ...]) -> "TensorSpec":
        return TensorSpec(tuple(shape), self.dtype)


# Bytes per element of the dtypes weights and activations are stored in.
DTYPE_BYTES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element; Keras' mixed policies keep their variables in float32."""
    if dtype.startswith("mixed_"):
        return DTYPE_BYTES["float32"]
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        from paramcalc.core.errors import ParamcalcError

        raise ParamcalcError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}") from None


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """A non-tensor value flowing through a traced graph: a size (``x.size(0)``) or a tuple of them.

    Traced torch code computes shapes from shapes (``x.view(x.size(0), -1)``); these values carry the
    exact or symbolic sizes to the layers that read them.
    """

    value: object

    @property
    def rank(self) -> int:  # a value is no tensor: layers that need a tensor reject it by rank
        return -1
