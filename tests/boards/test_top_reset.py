"""boards/top.py CoreReset: the board core's reset comes from one flip-flop, set while
`sync` is in reset and then following the synchronised button (Amaranth simulator)."""
from amaranth.sim import Simulator

from boards.top import CoreReset


def _run(presses, clocks=12):
    """rst before the first clock, then after each clock; `presses`: the clocks (0-based)
    before which the button is set to the given value."""
    dut = CoreReset()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = []

    async def tb(ctx):
        seen.append(ctx.get(dut.rst))
        for k in range(clocks):
            if k in presses:
                ctx.set(dut.button, presses[k])
            await ctx.tick()
            seen.append(ctx.get(dut.rst))

    sim.add_testbench(tb)
    sim.run()
    return seen


def test_reset_starts_asserted_then_follows_the_button_three_clocks_late():
    seen = _run({3: 1, 6: 0})
    assert seen[0] == 1                       # the flip-flop's initial value: in reset at configuration
    assert seen[1:4] == [0, 0, 0]             # button up: released after the first clock
    assert seen[4:6] == [0, 0]                # pressed before clock 3: two synchroniser stages first
    assert seen[6:9] == [1, 1, 1]             # then the register: three clocks from the press
    assert seen[9:] == [0, 0, 0, 0]           # released three clocks after the button


def test_a_one_clock_glitch_still_resets():
    seen = _run({2: 1, 3: 0})
    assert seen.count(1) == 2 and seen[5] == 1   # the initial value, and one clock of reset
