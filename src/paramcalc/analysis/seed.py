"""The three models of the case paramcalc was born from, as paramcalc specs.

A regression MLP on (samples, n) tabular data; the user reshaped the data to (samples, n, 1):

- ``flat``: Dense(300, relu) on (n,) -> Dense(300, relu) -> Dense(100, relu) -> Dense(1)
- ``reshaped_flatten``: the same on (n, 1) with a Flatten after the first Dense
- ``reshaped``: the same on (n, 1), no Flatten

>>> import paramcalc
>>> [paramcalc.estimate(seed_model(v), input_shape=None).params for v in SEED_VARIANTS]
[Sym('300*n + 120801'), Sym('90000*n + 31101'), 121101]
"""

from __future__ import annotations

from paramcalc.core.graph import Sequential
from paramcalc.layers import Dense, Flatten

SEED_VARIANTS = ("flat", "reshaped_flatten", "reshaped")
SEED_FEATURES = 20020


def seed_model(variant: str = "flat", features: object = "n") -> Sequential:
    """One seed model with ``features`` input features (an int, or a symbol name; default "n")."""
    head = [Dense(300, activation="relu")]
    tail = [Dense(300, activation="relu"), Dense(100, activation="relu"), Dense(1)]
    if variant == "flat":
        return Sequential(head + tail, input_shape=(features,), name="flat", framework="keras")
    if variant == "reshaped_flatten":
        return Sequential(head + [Flatten()] + tail, input_shape=(features, 1), name="reshaped_flatten",
                          framework="keras")
    if variant == "reshaped":
        return Sequential(head + tail, input_shape=(features, 1), name="reshaped", framework="keras")
    raise ValueError(f"unknown seed variant {variant!r}; choose one of {', '.join(SEED_VARIANTS)}")
