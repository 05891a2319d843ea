"""The built-in layer kinds; importing this package registers them."""

from .base import Context, Inferred, Layer, Weight
from .dense import Dense
from .elementwise import ACTIVATION_FLOPS, Activation, Dropout, Identity
from .reshape import Flatten, Permute, Reshape, Unflatten

__all__ = [
    "ACTIVATION_FLOPS", "Activation", "Context", "Dense", "Dropout", "Flatten", "Identity", "Inferred",
    "Layer", "Permute", "Reshape", "Unflatten", "Weight",
]
