"""Shift-add PE and multiplier PE vs integer arithmetic, on Icarus and Verilator (cocotb).

The cocotb side is sim/test_pe.py; this file builds each PE configuration (cached
under build/sim/<worker>/) and runs it on every simulator in `SIMULATORS`.
"""
import pytest

from hw.rtl.pe import MultiplierPE, ShiftAddPE, csd_terms, pack_terms, pe_product, unpack_word
from sim.runner import SIMULATORS, emit_verilog, run_test
from sim.test_pe import case_for

APOT4 = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]

# (id, case kwargs): the layer kinds the IR produces
CONFIGS = {
    # 8-bit first layer: signed int8 input, CSD weights up to 127 (T=3 after CSD of 7 bits)
    "int8-csd3": dict(act_bits=8, act_signed=True, terms=3, max_shift=7, run_len=300),
    # 4-bit APoT activations (decode table) times 4-bit APoT weights (T=2)
    "apot4-t2": dict(act_bits=4, levels=APOT4, terms=2, max_shift=4, run_len=600),
    # 4-bit uniform activations, PoT weights (T=1)
    "u4-pot": dict(act_bits=4, terms=1, max_shift=3, run_len=600),
}
FAST = {"shift": ["int8-csd3", "apot4-t2"], "mult": ["int8-csd3"]}


def make_pe(case):
    kw = dict(act_bits=case["act_bits"], act_signed=case["act_signed"], levels=case["levels"],
              acc_bits=case["acc_bits"])
    if case["kind"] == "shift":
        return ShiftAddPE(terms=case["terms"], max_shift=case["max_shift"], **kw)
    return MultiplierPE(weight_bits=case["weight_bits"], **kw)


def run_pe(kind, cfg, sim, n=3000, seed=1):
    case = case_for(kind, n=n, seed=seed, **CONFIGS[cfg])
    top = f"pe_{kind}"
    return run_test(emit_verilog(make_pe(case), top), top, "sim.test_pe", sim, case, tag=cfg)


def _params(slow):
    out = []
    for kind in ("shift", "mult"):
        for cfg in CONFIGS:
            fast = cfg in FAST[kind]
            if fast != slow:
                out.append(pytest.param(kind, cfg, id=f"{kind}-{cfg}",
                                        marks=[pytest.mark.slow] if slow else []))
    return out


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("kind,cfg", _params(False) + _params(True))
def test_pe_random_and_widest(sim, kind, cfg):
    r = run_pe(kind, cfg, sim)
    assert r["passed"], r
    assert r["checked"] > 3000
    # the widest phase must have used the accumulator's range (>= half of it)
    assert r["acc_range_used"] > 0.5, r


# ---- the pure-Python side of the PE (no simulator)

def test_pack_unpack_roundtrip_and_csd():
    import random
    rng = random.Random(0)
    for _ in range(2000):
        w = rng.randrange(-255, 256)
        terms = csd_terms(w)
        assert sum(s * 2 ** k for s, k in terms) == w
        assert all(abs(a[1] - b[1]) >= 2 for a, b in zip(terms, terms[1:]))  # CSD: no adjacent digits
        T = max(1, len(terms))
        word = pack_terms(terms, 8)
        back = [t for t in unpack_word(word, T, 8) if t[0]]
        assert back == terms
        v = rng.randrange(256)
        assert pe_product(v, word, T, 8) == v * w


def test_field_layout_matches_ir_doc():
    # docs/ir.md: field = nz << (SB+1) | neg << SB | shift, term t at bits [t*TW, (t+1)*TW)
    # max_shift 6 -> SB 3, TW 5; terms (+1, 6), (-1, 2)
    word = pack_terms([(1, 6), (-1, 2)], 6)
    assert word == (0b10110) | (0b11010 << 5)
    assert pack_terms([(0, 0), (0, 0)], 6) == 0
    with pytest.raises(ValueError):
        pack_terms([(1, 7)], 6)
