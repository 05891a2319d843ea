"""Dimensions: exact Python ints on the fast path, a small immutable polynomial for symbols.

A dimension (``Dim``) is either a plain ``int`` or a :class:`Sym`, a polynomial with integer
coefficients over named symbols such as ``n`` or the batch size ``B``. Arithmetic mixes both freely
(``300 * (n + 1)``) and collapses back to ``int`` as soon as no symbol is left, so code written for ints
works unchanged for symbols. Sizes never go through floats or numpy: a count past 2**63 stays exact.

Symbols stand for positive integers (sizes of at least 1). A question that this does not settle
(is ``n == 20020``?) is answered ``None`` by :func:`equal`, and callers record it as an assumption
instead of guessing.

>>> n = symbol("n")
>>> params = 90000 * n + 31101
>>> params
Sym('90000*n + 31101')
>>> params.subs(n=20020)
1801831101
"""

from __future__ import annotations

import keyword
import operator
from typing import Iterable, Mapping, Union

from paramcalc.core.errors import DimensionError, shown

# Frameworks index tensors with int64; a size beyond that is a typo, not a model.
MAX_DIM = 2**63 - 1

Dim = Union[int, "Sym"]


class FloorDiv:
    """An opaque ``num // den`` kept when a division is not exact (``n // 7``)."""

    __slots__ = ("num", "den", "_hash")

    def __init__(self, num: Dim, den: Dim) -> None:
        self.num = num
        self.den = den
        self._hash = hash(("//", num, den))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FloorDiv) and self.num == other.num and self.den == other.den

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        num = str(self.num) if type(self.num) is int or self.num._is_atomic() else f"({self.num})"
        den = str(self.den) if type(self.den) is int or self.den._is_atomic() else f"({self.den})"
        return f"{num}//{den}"


Atom = Union[str, FloorDiv]
# A monomial is a sorted tuple of (atom, exponent) pairs; () is the constant monomial.
Monomial = tuple


def _atom_key(atom: Atom) -> tuple:
    return (0, atom) if type(atom) is str else (1, str(atom))


def _mono_key(mono: Monomial) -> tuple:
    """Graded order: higher total degree first, then by atom names (stable, readable output)."""
    return (-sum(e for _, e in mono), tuple((_atom_key(a), -e) for a, e in mono))


def _mono_mul(a: Monomial, b: Monomial) -> Monomial:
    if not a:
        return b
    if not b:
        return a
    exps = dict(a)
    for atom, e in b:
        exps[atom] = exps.get(atom, 0) + e
    return tuple(sorted(exps.items(), key=lambda item: _atom_key(item[0])))


def _mono_div(a: Monomial, b: Monomial) -> Monomial | None:
    """a / b when b divides a, else None."""
    exps = dict(a)
    for atom, e in b:
        left = exps.get(atom, 0) - e
        if left < 0:
            return None
        if left:
            exps[atom] = left
        else:
            del exps[atom]
    return tuple(sorted(exps.items(), key=lambda item: _atom_key(item[0])))


def _make(terms: dict) -> Dim:
    """Normalise a {monomial: coefficient} dict into an int or a Sym."""
    terms = {m: c for m, c in terms.items() if c}
    if not terms:
        return 0
    if len(terms) == 1 and () in terms:
        return terms[()]
    return Sym._from_terms(terms)


def _terms_of(value: Dim) -> dict:
    if type(value) is int:
        return {(): value} if value else {}
    if isinstance(value, Sym):
        return value._terms
    raise TypeError(f"expected an int or a symbolic dimension, got {type(value).__name__}")


class Sym:
    """An immutable polynomial in named dimension symbols, with integer coefficients.

    Build one with :func:`symbol`; combine with ``+ - *`` and ``//`` (exact when it divides, else an
    opaque floor term). ``subs(n=20020)`` substitutes values and returns an ``int`` once every symbol
    is given.
    """

    __slots__ = ("_terms", "_hash")

    @classmethod
    def _from_terms(cls, terms: dict) -> "Sym":
        self = object.__new__(cls)
        self._terms = terms
        self._hash = hash(frozenset(terms.items()))
        return self

    # -- arithmetic -----------------------------------------------------------------------------------
    def __add__(self, other: Dim) -> Dim:
        if type(other) is int:
            if not other:
                return self
            terms = dict(self._terms)
            terms[()] = terms.get((), 0) + other
            return _make(terms)
        if isinstance(other, Sym):
            terms = dict(self._terms)
            for m, c in other._terms.items():
                terms[m] = terms.get(m, 0) + c
            return _make(terms)
        return NotImplemented

    __radd__ = __add__

    def __neg__(self) -> "Sym":
        return Sym._from_terms({m: -c for m, c in self._terms.items()})

    def __sub__(self, other: Dim) -> Dim:
        if type(other) is int or isinstance(other, Sym):
            return self + (-other)
        return NotImplemented

    def __rsub__(self, other: Dim) -> Dim:
        if type(other) is int:
            return (-self) + other
        return NotImplemented

    def __mul__(self, other: Dim) -> Dim:
        if type(other) is int:
            if other == 1:
                return self
            if other == 0:
                return 0
            return Sym._from_terms({m: c * other for m, c in self._terms.items()})  # no term vanishes
        if isinstance(other, Sym):
            terms: dict = {}
            for m1, c1 in self._terms.items():
                for m2, c2 in other._terms.items():
                    m = _mono_mul(m1, m2)
                    terms[m] = terms.get(m, 0) + c1 * c2
            return _make(terms)
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        if type(other) is int or isinstance(other, Sym):
            return floordiv(self, other)
        return NotImplemented

    def __rfloordiv__(self, other: Dim) -> Dim:
        if type(other) is int:
            return floordiv(other, self)
        return NotImplemented

    # -- identity -------------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        # Normalised Syms are never constant, so a Sym never equals an int structurally.
        return isinstance(other, Sym) and self._terms == other._terms

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of the symbolic dimension {self} is undecidable; "
            "use paramcalc.core.dims.equal() or is_positive()"
        )

    # -- queries --------------------------------------------------------------------------------------
    @property
    def symbols(self) -> frozenset:
        """Names of the symbols this expression depends on."""
        return frozenset().union(*(_atom_symbols(a) for m in self._terms for a, _ in m))

    def subs(self, values: Mapping[str, Dim] | None = None, /, **kwargs: Dim) -> Dim:
        """Substitute symbols by values (ints or expressions); returns an int once none is left."""
        mapping = {**(values or {}), **kwargs}
        total: Dim = 0
        for mono, coeff in self._terms.items():
            term: Dim = coeff
            for atom, e in mono:
                value = _subs_atom(atom, mapping)
                for _ in range(e):
                    term = term * value
            total = total + term
        return total

    def _is_atomic(self) -> bool:
        if len(self._terms) != 1:
            return False
        ((mono, coeff),) = self._terms.items()
        return coeff == 1 and len(mono) == 1 and mono[0][1] == 1

    def __str__(self) -> str:
        out = []
        for mono in sorted(self._terms, key=_mono_key):
            coeff = self._terms[mono]
            factors = [str(a) if e == 1 else f"{a}**{e}" for a, e in mono]
            magnitude = abs(coeff)
            if not factors:
                body = str(magnitude)
            elif magnitude == 1:
                body = "*".join(factors)
            else:
                body = "*".join([str(magnitude), *factors])
            if not out:
                out.append(body if coeff > 0 else f"-{body}")
            else:
                out.append(f"+ {body}" if coeff > 0 else f"- {body}")
        return " ".join(out)

    def __repr__(self) -> str:
        return f"Sym('{self}')"

    def __reduce__(self):  # pickling keeps the canonical terms
        return (Sym._from_terms, (self._terms,))


def _atom_symbols(atom: Atom) -> frozenset:
    if type(atom) is str:
        return frozenset((atom,))
    return symbols_of(atom.num) | symbols_of(atom.den)


def _subs_atom(atom: Atom, mapping: Mapping[str, Dim]) -> Dim:
    if type(atom) is str:
        return mapping[atom] if atom in mapping else symbol(atom)
    num = atom.num.subs(mapping) if isinstance(atom.num, Sym) else atom.num
    den = atom.den.subs(mapping) if isinstance(atom.den, Sym) else atom.den
    return floordiv(num, den)


# -- public helpers ---------------------------------------------------------------------------------------
def symbol(name: str) -> Sym:
    """A symbolic dimension, e.g. ``symbol("n")``; the name must be a Python identifier."""
    if type(name) is not str or not name.isidentifier() or keyword.iskeyword(name):
        raise DimensionError(f"a symbol name must be an identifier such as 'n', received {name!r}")
    return Sym._from_terms({((name, 1),): 1})


def symbols_of(value: object) -> frozenset:
    """Symbol names in a dimension (empty for an int or None)."""
    return value.symbols if isinstance(value, Sym) else frozenset()


def is_symbolic(value: object) -> bool:
    return isinstance(value, Sym)


def subs(value: Dim, mapping: Mapping[str, Dim]) -> Dim:
    """Substitute into an int or a Sym (ints pass through)."""
    return value.subs(mapping) if isinstance(value, Sym) else value


def exact_div(num: Dim, den: Dim) -> Dim | None:
    """num / den when den divides num exactly (as polynomials), else None."""
    if type(num) is int and type(den) is int:
        if den == 0:
            return None
        q, r = divmod(num, den)
        return None if r else q
    num_terms, den_terms = _terms_of(num), _terms_of(den)
    if not den_terms:
        return None
    if not num_terms:
        return 0
    # Multivariate division by a single divisor: when den divides num in Z[x], repeatedly cancelling
    # the leading term always ends at a zero remainder, so any leftover term means "not exact".
    lead_mono = min(den_terms, key=_mono_key)
    lead_coeff = den_terms[lead_mono]
    remainder = dict(num_terms)
    quotient: dict = {}
    for _ in range(10_000):
        if not remainder:
            return _make(quotient)
        mono = min(remainder, key=_mono_key)
        q_mono = _mono_div(mono, lead_mono)
        q_coeff, r = divmod(remainder[mono], lead_coeff)
        if q_mono is None or r:
            return None
        quotient[q_mono] = quotient.get(q_mono, 0) + q_coeff
        for m, c in den_terms.items():
            key = _mono_mul(m, q_mono)
            left = remainder.get(key, 0) - c * q_coeff
            if left:
                remainder[key] = left
            else:
                remainder.pop(key, None)
    return None


def floordiv(num: Dim, den: Dim) -> Dim:
    """num // den: exact when it divides, an int for ints, else an opaque floor term.

    A floor of a floor folds into one: ``(x // a + c) // b == (x + c*a) // (a*b)`` for integers x and c
    and positive a and b (``x // a + c == (x + c*a) // a``, and flooring twice by positive integers is
    flooring once by their product). Strided layers stacked on a symbolic length then give one compact
    term, ``(n - 4)//4 + 1`` rather than ``((n - 2)//2 - 1)//2 + 1``, whose size would double with
    every layer."""
    if type(num) is int and type(den) is int:
        return num // den
    quotient = exact_div(num, den)
    if quotient is not None:
        return quotient
    inner = _single_floor(num)
    if inner is not None and is_positive(den) is True and is_positive(inner.den) is True:
        rest = num - Sym._from_terms({((inner, 1),): 1})
        return floordiv(inner.num + rest * inner.den, inner.den * den)
    return Sym._from_terms({((FloorDiv(num, den), 1),): 1})


def _single_floor(value: Dim) -> FloorDiv | None:
    """The floor term F when ``value`` is F plus a polynomial without floors (F's coefficient 1)."""
    if type(value) is int:
        return None
    found = None
    for mono, coeff in value._terms.items():
        if any(type(atom) is not str for atom, _ in mono):
            if found is not None or coeff != 1 or len(mono) != 1 or mono[0][1] != 1:
                return None
            found = mono[0][0]
    return found


def equal(a: Dim, b: Dim) -> bool | None:
    """True or False when decidable for every positive value of the symbols, else None."""
    if type(a) is int and type(b) is int:
        return a == b
    diff = a - b
    if type(diff) is int:
        return diff == 0
    sign = _sign(diff)
    return False if sign else None


def is_positive(value: Dim) -> bool | None:
    """value > 0 for every positive value of its symbols: True, False, or None when it depends."""
    if type(value) is int:
        return value > 0
    sign = _sign(value)
    return None if sign is None else sign > 0


def _sign(value: "Sym") -> int | None:
    """+1 / -1 when the polynomial has that sign for all symbols >= 1, else None.

    Every monomial of plain symbols is >= 1 there; one holding a floor term is only >= 0, so it can
    never be the term that decides a strict sign.
    """
    coeffs = value._terms
    if all(c > 0 for c in coeffs.values()):
        sign = 1
    elif all(c < 0 for c in coeffs.values()):
        sign = -1
    else:
        return None
    decisive = any(all(type(a) is str for a, _ in m) for m in coeffs)
    return sign if decisive else None


def total(values: Iterable[Dim]) -> Dim:
    """The sum of ``values``, their terms added into one polynomial (``sum()`` makes a new one at every
    addition: thousands of rows' FLOPs)."""
    terms: dict = {}
    constant = 0
    for value in values:
        if type(value) is int:
            constant += value
        else:
            for mono, coeff in _terms_of(value).items():
                terms[mono] = terms.get(mono, 0) + coeff
    if constant:
        terms[()] = terms.get((), 0) + constant
    return _make(terms)


def prod(values: Iterable[Dim]) -> Dim:
    """Exact product of dimensions (never numpy: it would wrap at 2**63). The integers are multiplied
    first: a shape with a symbolic batch makes one polynomial, not one per axis."""
    constant, symbolic = 1, []
    for v in values:
        if type(v) is int:
            constant *= v
        else:
            symbolic.append(v)
    result: Dim = constant
    for v in symbolic:
        result = result * v
    return result


def upper_max(values: list) -> Dim:
    """The largest of several sizes. Where the batch is a symbol each is a fixed part plus a part per
    sample; their maximum is not a polynomial, so this returns the upper bound (largest fixed part) +
    (largest per-sample part) x B, exact at B = 0 and as B grows."""
    if all(type(v) is int for v in values):
        return max(values)
    fixed, per_sample = [], []
    for v in values:
        if isinstance(v, Sym):
            zero = v.subs({s: 0 for s in v.symbols})
            fixed.append(zero)
            per_sample.append(v - zero)
        else:
            fixed.append(v)
            per_sample.append(0)
    slopes = [p.subs({s: 1 for s in p.symbols}) if isinstance(p, Sym) else p for p in per_sample]
    return max(fixed) + per_sample[slopes.index(max(slopes))]


def format_dim(value: Dim | None) -> str:
    return "None" if value is None else str(value)


def as_dim(value: object, where: str) -> Dim:
    """Validate a user-given dimension: a non-negative int (numpy ints included) or a symbol name.

    ``where`` names the place it came from (``input_shape[1]``, ``layer 'dense' units``) so the error
    can say it.
    """
    if type(value) is int:
        if 0 <= value <= MAX_DIM:
            return value
    elif isinstance(value, Sym):
        return value
    elif type(value) is str and value.isidentifier() and not keyword.iskeyword(value):
        return symbol(value)
    elif not isinstance(value, (bool, float, str, bytes)):
        try:
            index = operator.index(value)  # numpy integers and other exact integer types
        except TypeError:
            pass
        else:
            if 0 <= index <= MAX_DIM:
                return int(index)
    raise DimensionError(
        f"dimension must be a non-negative integer (at most 2**63 - 1) or a symbol name such as 'n'; "
        f"received {shown(value)} at {where}",
        where=where,
        value=value,
    )


def format_count(value: Dim | None) -> str:
    """A count for people: thousands separators for ints (1,801,831,101), expressions as they are."""
    if type(value) is int:
        return f"{value:,}"
    return format_dim(value)


def degree(value: Dim) -> int:
    """Total degree in the symbols (0 for an int)."""
    if type(value) is int:
        return 0
    return max(sum(e for _, e in mono) for mono in value._terms)


def dominates(part: Dim, total: Dim) -> bool:
    """``part`` is at least half of ``total``; for expressions, as the symbols grow (the rest of the
    total is of lower degree than ``part``)."""
    if type(part) is int and type(total) is int:
        return total > 0 and 2 * part >= total
    rest = total - part
    return degree(part) > 0 and degree(rest) < degree(part)
