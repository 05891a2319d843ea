"""Hypothesis building blocks shared by the property tests: small shapes and valid reshape targets.

The generators track shapes with a few lines of their own, only to draw valid arguments; the oracle
that the tests compare against is always the real framework.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def factorization(draw, total: int, max_rank: int = 3, allow_infer: bool = True) -> tuple:
    """A tuple of sizes whose product is ``total``, maybe with one -1 standing for one of them."""
    rank = draw(st.integers(1, max_rank))
    dims, left = [], total
    for _ in range(rank - 1):
        d = draw(st.sampled_from(divisors(left)))
        dims.append(d)
        left //= d
    dims.append(left)
    dims = draw(st.permutations(dims))
    if allow_infer and draw(st.booleans()) and all(d > 0 for d in dims):
        dims = list(dims)
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    assert math.prod(d for d in dims if d != -1) * (1 if -1 not in dims else 1) > 0
    return tuple(dims)


sizes = st.integers(1, 5)
