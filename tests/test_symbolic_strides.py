"""Strided layers stacked on a symbolic size: a floor of a floor folds into one term, so the formulas
stay compact (and fast) however deep the stack, and stay exact: every formula, evaluated, equals the
concrete estimate at that size."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

import paramcalc
from paramcalc import Conv, Pool, Sequential
from paramcalc.core.dims import floordiv, symbol
from paramcalc.core.errors import ShapeError


def test_a_floor_of_a_floor_is_one_floor():
    n = symbol("n")
    assert floordiv(floordiv(n, 3) + 2, 5) == floordiv(n + 6, 15)
    assert str(floordiv(floordiv(n - 2, 2) - 1, 2) + 1) == "(n - 4)//4 + 1"
    for value in range(0, 200):  # the identity, at every size
        assert (floordiv(floordiv(n - 7, 3) + 2, 5)).subs(n=value) == ((value - 7) // 3 + 2) // 5
    # a floor with another coefficient, or two floors, stay as they are
    assert "//" in str(floordiv(2 * floordiv(n, 3) + 1, 5).subs(n=symbol("n")))


layer = st.one_of(
    st.builds(lambda k, s, p, d: Conv(2, k, strides=s, padding=p, dilation=d if s == 1 else 1, rank=1),
              st.integers(1, 4), st.integers(1, 3), st.sampled_from(["valid", "same"]), st.integers(1, 2)),
    st.builds(lambda k, s, p: Pool(pool_size=k, strides=s, padding=p, rank=1),
              st.integers(1, 3), st.integers(1, 3), st.sampled_from(["valid", "same"])))


@settings(max_examples=60, deadline=None)
@given(st.lists(layer, min_size=1, max_size=10), st.lists(st.integers(1, 3000), min_size=4, max_size=4))
def test_symbolic_strided_stacks_equal_their_concrete_estimates(layers, sizes):
    symbolic = paramcalc.estimate(Sequential(layers), input_shape=("n", 2))
    for size in sizes:
        try:
            concrete = paramcalc.estimate(Sequential(layers), input_shape=(size, 2))
        except ShapeError:
            continue  # too short for the stack: the symbolic estimate's assumptions say so
        try:
            substituted = symbolic.subs(n=size)
        except ShapeError:
            continue
        assert substituted.output_shape == concrete.output_shape
        assert [r.output_shape for r in substituted.layers] == [r.output_shape for r in concrete.layers]
        assert substituted.flops_per_batch == concrete.flops_per_batch


def _timed(model, shape) -> float:
    start = time.perf_counter()
    paramcalc.estimate(model, input_shape=shape)
    return time.perf_counter() - start


def test_deep_strided_stacks_stay_compact():
    pools = Sequential([Pool(pool_size=2, rank=1) for _ in range(18)])
    convs = Sequential([Conv(4, 3, strides=2, rank=1) for _ in range(16)])
    cnn = Sequential([layer for _ in range(13) for layer in (Conv(8, 3, padding="same"), Pool(pool_size=2))])
    est = paramcalc.estimate(pools, input_shape=("n", 4))
    assert str(est.output_shape[1]) == "(n - 262144)//262144 + 1"
    assert est.subs(n=10**6).output_shape[1] == 10**6 // 2**18
    # a budget far above what a compact formula needs (it had doubled per layer: 60 s for 18 pools);
    # benchmarks/engine_speed.py prints the figures
    for model, shape in ((pools, ("n", 4)), (convs, ("n", 4)), (cnn, ("h", "w", 3))):
        assert min(_timed(model, shape) for _ in range(3)) < 0.5
