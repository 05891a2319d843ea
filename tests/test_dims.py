import math
import pickle

import pytest

from paramcalc import DimensionError, Sym, symbol
from paramcalc.core.dims import (
    as_dim,
    degree,
    dominates,
    equal,
    exact_div,
    floordiv,
    format_count,
    is_positive,
    prod,
    total,
)

n, m = symbol("n"), symbol("m")


def test_int_fast_path_and_collapse_to_int():
    assert type(3 * n - 3 * n) is int and 3 * n - 3 * n == 0
    assert (n + 1) - n == 1 and type((n + 1) - n) is int
    assert n * 1 is n and n + 0 is n
    assert 0 * n == 0 and type(0 * n) is int


def test_polynomial_arithmetic_and_printing():
    expr = 300 * (n + 1) + 90000 * n * 1
    assert str(expr) == "90300*n + 300"
    assert str((n + 1) * (n - 1)) == "n**2 - 1"
    assert str(-n + 5) == "-n + 5"
    assert str(n * m + m) == "m*n + m"
    assert repr(2 * n) == "Sym('2*n')"


def test_subs_returns_exact_ints():
    big = (2**27 + 1) * n
    assert big.subs(n=2**27 + 1) == (2**27 + 1) ** 2
    assert type(big.subs(n=3)) is int
    assert (n * m).subs(n=2) == 2 * m
    assert (90000 * n + 31101).subs({"n": 20020}) == 1801831101


def test_exact_division():
    assert exact_div(12, 4) == 3 and exact_div(12, 5) is None and exact_div(3, 0) is None
    assert exact_div(300 * n, 300) == n
    assert exact_div(n * n + n, n + 1) == n
    assert exact_div(6 * n * m, 3 * n) == 2 * m
    assert exact_div(n + 1, n) is None
    assert exact_div(0, n) == 0


def test_floordiv_keeps_opaque_term_and_evaluates_on_subs():
    q = floordiv(n, 7)
    assert isinstance(q, Sym) and str(q) == "n//7"
    assert q.subs(n=20) == 2
    assert floordiv(14 * n, 7) == 2 * n
    assert (n + 1) // 2 == floordiv(n + 1, 2)
    assert str(floordiv(n + 1, 2)) == "(n + 1)//2"


def test_equal_is_three_valued():
    assert equal(n, n) is True
    assert equal(n + 1, n) is False
    assert equal(2 * n, n) is False  # n >= 1, so n != 0
    assert equal(n, 20020) is None
    assert equal(n, m) is None
    assert equal(3, 3) is True and equal(3, 4) is False


def test_is_positive():
    assert is_positive(n) is True
    assert is_positive(n - 1) is None
    assert is_positive(-n) is False
    assert is_positive(0) is False


def test_symbolic_truth_value_is_refused():
    with pytest.raises(TypeError, match="undecidable"):
        bool(n)


def test_prod_is_exact_beyond_int64():
    assert prod([100000] * 4) == 10**20
    assert prod([]) == 1
    assert prod([n, 2, m]) == 2 * n * m


def test_hash_and_pickle():
    assert hash(2 * n + 1) == hash(1 + n * 2)
    assert {2 * n + 1: "x"}[n + n + 1] == "x"
    assert pickle.loads(pickle.dumps(90000 * n + 31101)) == 90000 * n + 31101


def test_degree_and_dominates():
    assert degree(3) == 0 and degree(n * n + n) == 2
    assert dominates(90000 * n + 300, 90000 * n + 31101)
    assert not dominates(300, 90000 * n + 31101)
    assert dominates(6, 10) and not dominates(4, 10)


def test_format_count():
    assert format_count(1801831101) == "1,801,831,101"
    assert format_count(90000 * n + 31101) == "90000*n + 31101"


BAD_DIMS = [-2, 3.0, "3", True, False, float("nan"), 1e400, 10**5000, 2**63, b"n", [3]]


@pytest.mark.parametrize("bad", BAD_DIMS, ids=[f"bad{i}" for i in range(len(BAD_DIMS))])
def test_as_dim_rejects_non_dimensions(bad):
    with pytest.raises(DimensionError, match="dimension must be a non-negative integer") as info:
        as_dim(bad, "input_shape[0]")
    assert "input_shape[0]" in str(info.value)
    assert len(str(info.value)) < 300  # a 5000-digit integer is described, not printed


def test_as_dim_accepts_numpy_ints_exactly():
    np = pytest.importorskip("numpy")
    value = as_dim(np.int64(20020), "x")
    assert value == 20020 and type(value) is int
    with pytest.raises(DimensionError):
        as_dim(np.bool_(True), "x")
    with pytest.raises(DimensionError):
        as_dim(np.float64(3.0), "x")


def test_as_dim_symbols():
    assert as_dim("n", "x") == n
    assert as_dim(n + 1, "x") == n + 1
    with pytest.raises(DimensionError):
        as_dim("for", "x")  # a keyword is no symbol


def test_math_prod_agrees():
    assert math.prod([3, n]) == 3 * n


def test_total_is_the_sum():
    values = [3, n * m, -(n * m), 2 * n + 1, 0, floordiv(n, 3), 7 * n]
    assert total(values) == sum(values, 0) == 9 * n + 4 + floordiv(n, 3)
    assert total([n, -n, 5]) == 5 and type(total([n, -n, 5])) is int
    assert total([]) == 0
