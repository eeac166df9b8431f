"""Level sets: the reference APoT sets exactly, and the invariants of every set."""
import math

import pytest
from hypothesis import given, strategies as st

from compress.quant.levels import BITS_RANGE, csd_terms, level_set
from shiftq.errors import UserError


def test_reference_apot_weights_4bit():
    ls = level_set("apot", 4, True)
    assert ls.denominator == 10
    mags = [0, 1, 2, 3, 4, 6, 8, 10]
    assert list(ls.numerators) == sorted({-m for m in mags} | set(mags))


def test_reference_apot_activations_4bit():
    ls = level_set("apot", 4, False)
    assert list(ls.numerators) == [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
    assert ls.denominator == 48


def _apot_args():
    return st.one_of(
        st.tuples(st.integers(3, 7), st.just(True)),
        st.tuples(st.integers(2, 6), st.just(False)))


@given(_apot_args())
def test_apot_levels_are_sums_of_at_most_n_powers_of_two(args):
    bits, signed = args
    ls = level_set("apot", bits, signed)
    m = bits - 1 if signed else bits          # magnitude bits
    n = math.ceil(m / 2)                        # k = 2 bits per term
    for num in ls.numerators:
        assert bin(abs(num)).count("1") <= n, (num, ls)
    assert len(ls.numerators) == (2 ** bits - 1 if signed else 2 ** bits)


@given(st.sampled_from(["uniform", "pot", "apot"]), st.integers(2, 16), st.booleans())
def test_every_level_set_sorted_unique_max_is_denominator(scheme, bits, signed):
    try:
        ls = level_set(scheme, bits, signed)
    except UserError:
        assert bits not in BITS_RANGE[scheme] or (scheme == "apot" and (bits > 6 + signed or bits < 2 + signed))
        return
    nums = list(ls.numerators)
    assert nums == sorted(set(nums))
    assert max(nums) == ls.denominator
    assert (min(nums) == -ls.denominator) if signed else (min(nums) == 0)
    if signed:
        assert nums == sorted(-v for v in nums)  # symmetric
    if scheme == "pot":
        assert all(v == 0 or bin(abs(v)).count("1") == 1 for v in nums)


@pytest.mark.parametrize("scheme,bits,signed", [
    ("apot", 8, True), ("apot", 2, True), ("apot", 7, False), ("pot", 9, False),
    ("uniform", 1, False), ("uniform", 17, True), ("nope", 4, True), ("apot", 4.0, True)])
def test_bits_outside_a_scheme_are_user_errors(scheme, bits, signed):
    with pytest.raises(UserError):
        level_set(scheme, bits, signed)


@given(st.integers(-10 ** 6, 10 ** 6))
def test_csd_terms_reconstruct_and_are_non_adjacent(n):
    terms = csd_terms(n)
    assert sum(s * 2 ** k for s, k in terms) == n
    shifts = [k for _, k in terms]
    assert shifts == sorted(shifts, reverse=True)
    assert all(a - b >= 2 for a, b in zip(shifts, shifts[1:]))
