"""Quantization level sets as exact integers over one common denominator.

The numerators are what the hardware multiplies by (as shifts and adds); the
denominator folds into the layer's scale. Every level set here is sorted, unique,
and its largest magnitude equals the denominator.

Schemes (seed 001 and Li et al. 2020, see shared/PAPERS.md):
- uniform: b bits; signed {-(2^(b-1)-1) .. 2^(b-1)-1} / (2^(b-1)-1), unsigned {0 .. 2^b-1} / (2^b-1)
- pot: signed has a sign bit and 2^(b-1) magnitudes {0, 2^-(2^(b-1)-2), ..., 1};
       unsigned has 2^b magnitudes {0, 2^-(2^b-2), ..., 1}
- apot: additive powers of two with m magnitude bits (b-1 signed, b unsigned), built
        exactly as the APoT reference implementation does (k = 2 bits per term), so
        4-bit signed weights are sign + {0,1,2,3,4,6,8,10}/10 and 4-bit unsigned
        activations are {0,1,2,3,4,6,8,9,12,16,18,24,32,33,36,48}/48.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import product
from math import lcm

from shiftq.errors import UserError

SCHEMES = ("uniform", "pot", "apot")
BITS_RANGE = {"uniform": range(2, 17), "pot": range(2, 9), "apot": range(2, 8)}


@dataclass(frozen=True)
class LevelSet:
    """Levels = numerators / denominator, sorted ascending."""

    scheme: str
    bits: int
    signed: bool
    numerators: tuple[int, ...]
    denominator: int

    @property
    def values(self) -> list[float]:
        return [n / self.denominator for n in self.numerators]

    @property
    def max_terms(self) -> int:
        """Most powers of two any level needs (in canonical signed-digit form)."""
        return max(len(csd_terms(n)) for n in self.numerators)

    def to_json(self) -> dict:
        return {
            "scheme": self.scheme, "bits": self.bits, "signed": self.signed,
            "numerators": list(self.numerators), "denominator": self.denominator,
            "values": self.values, "max_terms": self.max_terms,
        }


def _check(scheme: str, bits: int, signed: bool) -> None:
    if scheme not in SCHEMES:
        raise UserError(f"unknown quantization scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    allowed = BITS_RANGE[scheme]
    if signed and scheme == "apot":
        allowed = range(3, 8)
    elif scheme == "apot":
        allowed = range(2, 7)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        kind = "signed" if signed else "unsigned"
        raise UserError(
            f"{scheme} quantization ({kind}) supports {allowed.start} to {allowed.stop - 1} bits, got {bits}")


# Term sets of the APoT reference construction, indexed by magnitude bits m. Each set
# holds the exponents e of the non-zero terms 2^-e; a level is one pick from each set
# (or 0). For even m this is the paper's k=2, n=m/2 rule; odd m follows the reference.
_APOT_TERMS = {
    2: [[1, 2, 3]],
    3: [[1, 2, 4], [3]],
    4: [[1, 3, 5], [2, 4, 6]],
    5: [[1, 3, 6], [2, 4, 7], [5]],
    6: [[1, 4, 7], [2, 5, 8], [3, 6, 9]],
}


def _apot_magnitudes(m: int) -> list[Fraction]:
    """Normalised APoT magnitudes from m magnitude bits, sorted ascending."""
    sets = [[Fraction(0)] + [Fraction(1, 2 ** e) for e in exps] for exps in _APOT_TERMS[m]]
    sums = sorted({sum(c) for c in product(*sets)})
    top = sums[-1]
    return [s / top for s in sums]


def _pot_magnitudes(m: int) -> list[Fraction]:
    count = 2 ** m - 1  # non-zero magnitudes
    return [Fraction(0)] + [Fraction(1, 2 ** e) for e in range(count - 1, -1, -1)]


def level_set(scheme: str, bits: int, signed: bool) -> LevelSet:
    # checked before the cache: 4.0 == 4 would otherwise hit the cached entry of 4
    _check(scheme, bits, signed)
    return _level_set(scheme, bits, bool(signed))


@lru_cache(maxsize=None)
def _level_set(scheme: str, bits: int, signed: bool) -> LevelSet:
    if scheme == "uniform":
        q = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        nums = list(range(-q, q + 1)) if signed else list(range(0, q + 1))
        return LevelSet(scheme, bits, signed, tuple(nums), q)
    m = bits - 1 if signed else bits
    mags = _apot_magnitudes(m) if scheme == "apot" else _pot_magnitudes(m)
    den = lcm(*(f.denominator for f in mags))
    pos = [int(f * den) for f in mags]
    nums = sorted({-p for p in pos} | set(pos)) if signed else pos
    return LevelSet(scheme, bits, signed, tuple(nums), den)


def csd_terms(n: int) -> list[tuple[int, int]]:
    """Canonical signed-digit terms of integer n as (sign, shift), most significant first.

    n == sum(sign * 2**shift); no two adjacent shifts are both non-zero, so the number of
    terms is minimal. 0 has no terms.
    """
    terms = []
    shift = 0
    while n != 0:
        if n & 1:
            digit = 2 - (n & 3)  # +1 if n % 4 == 1, -1 if n % 4 == 3
            terms.append((digit, shift))
            n -= digit
        n >>= 1
        shift += 1
    return terms[::-1]
