"""The whole-network accelerator on a board: the UART bridge (boards/bridge.py, protocol
v1) around `hw.rtl.accel.Accelerator`.

`BoardNetwork(ir, build_dir)` is the host's and the hardware's common view: the
protocol `Info` (input: the network's input integers; output: the `n_out` logits
followed by the class, all `out_bits` signed), a design id (CRC-32 over model.json's
graph and every weight / constant array, so a stale bitstream is refused), and the
golden reference. `AccelCore(plan)` adapts the accelerator to the bridge's core port:
a write of element k goes to the accelerator's input stream (the bridge writes
elements in order), the run starts by itself after the last element, and
`out_addr` reads logit `out_addr` (or the class at `n_out`).

`accel_top(board, build_dir)` is the board top-level (`AccelBoardTop`: `boards.top.BoardTop`
plus, where needed, the boot-time weight loader); `build_bitstream(build_dir, board)` builds
it into build_dir/synth-accel/BOARD/ for `make bitstream` (`shiftq synth --accel`,
`python -m boards.accel_top`). The PE array per board is `PARALLELISM` (make_plan
keywords; `board_kwargs` applies overrides): the iCEBreaker's plan keeps its weights in
SPRAM, written at boot.

**Weights loaded at boot (iCEBreaker).** When the plan says `plan.weights_loaded` (the
accelerator then keeps its weights in SPRAM, which the bitstream cannot initialise, and
has the ports `wl_addr`, `wl_data`, `wl_en`, `wl_done`), `AccelCore` exposes those
ports and `AccelBoardTop` puts a `boards.flash_loader.FlashLoader` between the flash
pins (`spi_flash_1x`: SCK pin 15, SS pin 16, IO0/COPI pin 14, IO1/CIPO pin 17; WP# and
HOLD# held high) and them: the words `plan.loaded_words` (`plan.loaded_word_bits` each)
come from the weight image that `shiftq flash` writes at `boards.weight_image.FLASH_OFFSET`.
`wl_done` is the loader's `done`: the accelerator does not start before it. The image's
design-id field is `BoardNetwork.weights_id` (CRC-32 of the image's words, seeded with
the protocol design id), so weights of another export *or another PE array* are refused.
Status on the break-off LED section of the iCEBreaker (PMOD2): LED 2 = weights loaded,
LED 3 = no valid image (the board then never answers a run; reflash with `shiftq flash`).
Plans without `weights_loaded` (the ULX3S's) keep their weights in initialised block RAM.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from boards import protocol
from shiftq.errors import UserError

# make_plan keyword arguments per board (the PE array; see docs/accelerator.md for why)
PARALLELISM = {
    # weights in SPRAM, written at boot from flash; no deep pipeline (its ~600 flip-flops
    # would not fit the UP5K's 5,280 logic cells, and 12 MHz does not need them)
    "icebreaker": dict(po=4, px=1, weights_loaded=True, deep_pipeline=False),
    # 12 x 4 x 8 = 384 MACs per clock (96 PEs): ResNet-20 takes 73% of the 85F's LUT4
    # (docs/accelerator.md, Measured); deep pipeline on (the make_plan default)
    "ulx3s-85f": dict(po=12, pi=4, px=8),
}
DEFAULT_PARALLELISM = dict(po=4, px=1)
# boards whose top can clock the design from a PLL (`--clock-mhz`): oscillator MHz
PLL_BOARDS = {"ulx3s-85f": 25.0}
# the PLL frequency `make bitstream` uses per board (MHz; boards absent: the oscillator).
# 62.5: ResNet-20 at 12 x 4 x 8 routed at 66.2 MHz against it (seed 1, the banked weight
# ROM; docs/accelerator.md), 1,004 images/s at 62,238 cycles
CLOCK_MHZ = {"ulx3s-85f": 62.5}


def board_kwargs(board: str | None, **override) -> dict:
    """make_plan keyword arguments for `board` (PARALLELISM), updated with the non-None `override`s."""
    kw = dict(PARALLELISM.get(board, DEFAULT_PARALLELISM))
    kw.update({k: v for k, v in override.items() if v is not None})
    return kw


def uses_loader(plan) -> bool:
    """True when the plan's weights are written at boot (the accelerator's `wl_*` ports)."""
    return bool(getattr(plan, "weights_loaded", False)) and hasattr(plan, "loaded_words") \
        and hasattr(plan, "loaded_word_bits")


class BoardNetwork:
    def __init__(self, ir, build_dir=None, *, words=None, **plan_kwargs):
        from hw.rtl.accel.plan import make_plan

        self.ir = ir
        self.build_dir = Path(build_dir) if build_dir else None
        if words is None and self.build_dir is not None:
            from hw.rtl.accel.check import load_words
            words = load_words(self.build_dir, ir)
        self.plan_kwargs = {**DEFAULT_PARALLELISM, **plan_kwargs}
        self.plan = make_plan(ir, words=words, **self.plan_kwargs)
        p = self.plan
        self.info = protocol.Info(design_id=self._design_id(), n_in=p.n_in, in_bits=p.in_bits, in_signed=True,
                                  n_out=p.n_out + 1, out_bits=max(p.out_bits, (p.n_out).bit_length() + 1),
                                  out_signed=True)

    def _design_id(self) -> int:
        crc = zlib.crc32(json.dumps(self.ir.graph["nodes"], sort_keys=True, separators=(",", ":")).encode())
        for k in sorted(self.ir.arrays):
            crc = zlib.crc32(k.encode(), crc)
            crc = zlib.crc32(np.ascontiguousarray(self.ir.arrays[k], dtype=np.int64).tobytes(), crc)
        return crc & 0xFFFFFFFF

    def golden(self, x) -> np.ndarray:
        """[logits..., class] for one input tensor of integers."""
        from hw.golden import run

        x = np.asarray(x, dtype=np.int64).reshape([1] + list(self.plan.input_shape))
        y = run(self.ir, x, quantized=True)[0].reshape(-1)
        return np.concatenate([y, [int(y.argmax())]]).astype(np.int64)

    def make_core(self):
        return AccelCore(self.plan, self.info)

    # ---- boot-time weights (plans with `weights_loaded`)

    @property
    def uses_loader(self) -> bool:
        return uses_loader(self.plan)

    @property
    def weights_id(self) -> int:
        """The image header's design-id field: CRC-32 over the words as stored in the
        image, started from the protocol design id (export + layout in one number)."""
        from boards.weight_image import encode

        body = encode(self.plan.loaded_words, self.plan.loaded_word_bits, 0)[16:]
        return zlib.crc32(body, self.info.design_id) & 0xFFFFFFFF

    def weight_image(self) -> bytes:
        from boards.weight_image import encode

        return encode(self.plan.loaded_words, self.plan.loaded_word_bits, self.weights_id)

    def make_loader(self, clk_hz: float, *, clk_div: int = 1):
        """The FlashLoader for this plan's image at FLASH_OFFSET (SPI at clk / (2 * clk_div))."""
        from boards.flash_loader import FlashLoader, tres1_cycles
        from boards.weight_image import FLASH_OFFSET

        return FlashLoader(word_bits=self.plan.loaded_word_bits, n_words=len(self.plan.loaded_words),
                           design_id=self.weights_id, flash_addr=FLASH_OFFSET, clk_div=clk_div,
                           tres1_cycles=tres1_cycles(clk_hz))


def network_from_build(build_dir, board: str | None = None) -> BoardNetwork:
    from hw.ir import load

    build_dir = Path(build_dir)
    if not (build_dir / "model.json").exists():
        raise UserError(f"no export in {build_dir}: run `make export MODEL=...` first")
    return BoardNetwork(load(build_dir), build_dir, **board_kwargs(board))


def AccelCore(plan, info):
    """The accelerator behind the bridge's core port."""
    from amaranth.hdl import Module, Mux, Signal, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from hw.rtl.accel.accel import Accelerator

    loaded = uses_loader(plan)

    class _AccelCore(wiring.Component):
        def __init__(self):
            self.plan = plan
            ports = {
                "in_addr": In(range(max(2, info.n_in))),
                "in_data": In(info.in_bits),
                "in_we": In(1),
                "start": In(1),
                "busy": Out(1),
                "out_addr": In(range(max(2, info.n_out + 1))),
                "out_data": Out(signed(info.out_bits)),
            }
            if loaded:      # the weight write port, driven by boards.flash_loader.FlashLoader
                n = len(plan.loaded_words)
                ports.update({"wl_addr": In(range(max(2, n))), "wl_data": In(plan.loaded_word_bits),
                              "wl_en": In(1), "wl_done": In(1)})
            super().__init__(ports)

        def elaborate(self, platform):
            m = Module()
            m.submodules.accel = acc = Accelerator(plan)
            m.d.comb += [acc.in_valid.eq(self.in_we), acc.in_data.eq(self.in_data),
                         acc.out_ready.eq(1), acc.step_mode.eq(0), acc.resume.eq(0),
                         acc.logit_addr.eq(self.out_addr), self.busy.eq(acc.busy)]
            if loaded:
                m.d.comb += [acc.wl_addr.eq(self.wl_addr), acc.wl_data.eq(self.wl_data),
                             acc.wl_en.eq(self.wl_en), acc.wl_done.eq(self.wl_done)]
            m.d.comb += self.out_data.eq(Mux(self.out_addr == plan.n_out, acc.klass, acc.logit_data))
            return m

    return _AccelCore()


def _spi_clk_div(clk_hz: float, max_hz: float = 25e6) -> int:
    """Smallest divider giving SPI clock = clk / (2 * div) <= max_hz (READ 0x03 is good
    to 50 MHz on the W25Q128JV; we keep a wide margin for the board's traces)."""
    import math
    return max(1, math.ceil(clk_hz / (2 * max_hz)))


def AccelBoardTop(board: str, net: BoardNetwork, *, clock_mhz: float | None = None, tools=None):
    """`boards.top.BoardTop` around `net`'s core; on the iCEBreaker with a plan whose
    weights are loaded at boot, plus the FlashLoader on the flash pins (module docstring).
    `clock_mhz` (ULX3S): clock the design from the ECP5 PLL at that frequency
    (boards/pll.py; `pll_hz` is what its dividers reach) instead of the 25 MHz oscillator."""
    from amaranth.hdl import ClockDomain, Elaboratable, Module
    from amaranth.lib import io

    from boards.top import BoardTop

    if net.uses_loader and board != "icebreaker":
        raise UserError(f"{net.plan.name}: the plan loads its weights at boot, which is wired for the "
                        f"iCEBreaker's SPI flash only (not {board})")
    pll = None
    if clock_mhz is not None:
        if board not in PLL_BOARDS:
            raise UserError(f"--clock-mhz needs a PLL, built for {', '.join(PLL_BOARDS)} only (not {board}): "
                            f"leave it out to run at the board's oscillator")
        from boards.pll import PLLDomain
        pll = PLLDomain(PLL_BOARDS[board] * 1e6, clock_mhz, tools=tools)

    class _AccelBoardTop(Elaboratable):
        def __init__(self):
            self.board, self.net = board, net
            self.core = net.make_core()
            self.loader = None
            self.pll_hz = pll.achieved_hz if pll else None

        def elaborate(self, platform):
            m = Module()
            if pll is not None:
                m.domains.sync = ClockDomain("sync")
                m.submodules.pll = pll
            from hw.synth import get_board
            m.submodules.board = BoardTop(self.board, self.core, self.net.info, clk_hz=self.pll_hz,
                                          global_reset=get_board(self.board).family == "ecp5")
            if not self.net.uses_loader:
                return m
            clk = platform.default_clk_frequency
            self.loader = loader = self.net.make_loader(clk, clk_div=_spi_clk_div(clk))
            m.submodules.loader = loader
            flash = platform.request("spi_flash_1x", 0, dir="-")
            m.submodules.flash_cs = cs = io.Buffer("o", flash.cs)        # PinsN: cs.o = 1 selects
            m.submodules.flash_clk = sck = io.Buffer("o", flash.clk)
            m.submodules.flash_copi = copi = io.Buffer("o", flash.copi)
            m.submodules.flash_cipo = cipo = io.Buffer("i", flash.cipo)
            m.submodules.flash_wp = wp = io.Buffer("o", flash.wp)        # PinsN: 0 = WP# high
            m.submodules.flash_hold = hold = io.Buffer("o", flash.hold)  # PinsN: 0 = HOLD# high
            m.d.comb += [cs.o.eq(~loader.cs_n), sck.o.eq(loader.sck), copi.o.eq(loader.copi),
                         loader.cipo.eq(cipo.i), wp.o.eq(0), hold.o.eq(0)]
            c = self.core
            m.d.comb += [c.wl_addr.eq(loader.wl_addr), c.wl_data.eq(loader.wl_data),
                         c.wl_en.eq(loader.wl_en), c.wl_done.eq(loader.done)]
            # status on the break-off LED section (PMOD2): LED 2 loaded, LED 3 no valid image
            try:
                platform.add_resources(platform.break_off_pmod)
            except (NameError, ValueError, AttributeError):
                pass            # already added (a second elaboration), or no break-off section
            try:
                ok = io.Buffer("o", platform.request("led", 2, dir="-"))
                bad = io.Buffer("o", platform.request("led", 3, dir="-"))
            except Exception:   # a platform without those LEDs: no status LEDs
                return m
            m.submodules.led_loaded, m.submodules.led_noimage = ok, bad
            m.d.comb += [ok.o.eq(loader.done), bad.o.eq(loader.error)]
            return m

    return _AccelBoardTop()


def accel_top(board: str, build_dir):
    """The board top-level: UART bridge + accelerator + LEDs (boards/top.py), and the
    boot-time weight loader where the plan needs it (`AccelBoardTop`)."""
    net = network_from_build(build_dir, board)
    return AccelBoardTop(board, net), net


def write_weight_image(net: BoardNetwork, out_dir, *, bitstream_bytes=None) -> dict:
    """Write `weights.bin` (the plan's boot-time weights) next to the bitstream; returns
    the design.json fields `shiftq flash` reads (`weight_image`, `weight_offset`, ...)."""
    from boards.weight_image import FLASH_OFFSET, write_image

    out = Path(out_dir)
    n = write_image(out / "weights.bin", net.plan.loaded_words, net.plan.loaded_word_bits, net.weights_id,
                    offset=FLASH_OFFSET, bitstream_bytes=bitstream_bytes)
    return dict(weight_image="weights.bin", weight_offset=FLASH_OFFSET, weight_image_bytes=n,
                weights_id=f"{net.weights_id:#010x}", weight_words=len(net.plan.loaded_words),
                weight_word_bits=net.plan.loaded_word_bits)


def prepare_build(build_dir, board_name: str, *, po=None, pi=None, px=None):
    """The checks before any synthesis, each a one-line UserError: export present, the plan
    (board_kwargs(board) with the non-None overrides), a boot-time-loaded plan only on the
    iCEBreaker, the plan's memories within the device's RAM (`check_budget`, with
    `loader=plan.weights_loaded`). Returns (BoardNetwork, budget dict)."""
    from hw.ir import load
    from hw.rtl.accel.plan import check_budget

    build = Path(build_dir)
    if not (build / "model.json").exists():
        raise UserError(f"no export in {build} (model.json missing): run `make export MODEL={build.name}` first")
    net = BoardNetwork(load(build), build, **board_kwargs(board_name, po=po, pi=pi, px=px))
    if net.uses_loader and board_name != "icebreaker":
        raise UserError(f"{net.plan.name}: the plan loads its weights at boot, which is wired for the "
                        f"iCEBreaker's SPI flash only (not {board_name})")
    budget = check_budget(net.plan, board_name, loader=bool(net.plan.weights_loaded))
    return net, budget


def board_clock_mhz(board: str, clock_mhz: float | None = None) -> float | None:
    """The PLL frequency a build uses: `clock_mhz`, else the board's default (CLOCK_MHZ),
    else None (the oscillator). 0 means the oscillator too."""
    mhz = CLOCK_MHZ.get(board) if clock_mhz is None else clock_mhz
    return mhz or None


def build_bitstream(build_dir, board, *, seed=1, po=None, pi=None, px=None, clock_mhz=None, tools=None,
                    log=print) -> dict:
    """The accelerator's bitstream into build_dir/synth-accel/BOARD/ (`prepare_build`'s
    checks first, then yosys + nextpnr + pack, then design.json and, for a plan whose
    weights are loaded at boot, weights.bin). `clock_mhz`: the PLL's frequency
    (`board_clock_mhz`). Returns design.json's dict."""
    from hw.synth import get_board, synthesize

    board = get_board(board) if isinstance(board, str) else board
    build = Path(build_dir)
    net, budget = prepare_build(build, board.name, po=po, pi=pi, px=px)
    mhz = board_clock_mhz(board.name, clock_mhz)
    top = AccelBoardTop(board.name, net, clock_mhz=mhz, tools=tools)
    clock_hz = top.pll_hz or board.make_platform().default_clk_frequency
    out = build / "synth-accel" / board.name
    p = net.plan
    log(f"accel: {p.name} ({len(p.steps)} steps, {p.PO}x{p.PI}x{p.PX} PEs"
        f"{', weights loaded at boot' if net.uses_loader else ''}, {budget['ebr']} EBR + "
        f"{budget['spram']} SPRAM planned, clock {clock_hz / 1e6:g} MHz{' from the PLL' if top.pll_hz else ''}) "
        f"for {board.name} ({board.device}) -> {out}/")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("weights.bin", "design.json"):
        (out / stale).unlink(missing_ok=True)
    util = synthesize(top, board, out, seed=seed, tools=tools)
    from hw.rtl.accel.accel import accel_verilog, rtl_sha256
    design = dict(model=p.name, board=board.name, PO=p.PO, PI=p.PI, PX=p.PX, pes=p.pes,
                  clock_hz=clock_hz, pll=bool(top.pll_hz),
                  weights_loaded=bool(p.weights_loaded), design_id=f"{net.info.design_id:#010x}",
                  plan_kwargs=net.plan_kwargs, macs=p.macs, cycles_estimate=sum(p.cycle_estimate().values()),
                  budget=budget, bitstream=util["bitstream"], baud=115200, protocol=1, seed=seed,
                  rtl_sha256=rtl_sha256(accel_verilog(p)))
    if net.uses_loader:
        design.update(write_weight_image(net, out, bitstream_bytes=util.get("bitstream_bytes")))
    (out / "design.json").write_text(json.dumps(design, indent=2, default=int) + "\n")
    return design


def main(argv=None) -> int:
    """`python -m boards.accel_top --build build/NAME --board B`: the accelerator's bitstream
    into build/NAME/synth-accel/BOARD/ (plan budget check first, then yosys + nextpnr);
    the same as `shiftq synth --accel` / `make bitstream`."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m boards.accel_top", description=main.__doc__.splitlines()[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--board", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--po", type=int, default=None)
    ap.add_argument("--pi", type=int, default=None)
    ap.add_argument("--px", type=int, default=None)
    ap.add_argument("--clock-mhz", type=float, default=None)
    ap.add_argument("--system-tools", action="store_true")
    args = ap.parse_args(argv)
    try:
        design = build_bitstream(args.build, args.board, seed=args.seed, po=args.po, pi=args.pi, px=args.px,
                                 clock_mhz=args.clock_mhz,
                                 tools="system" if args.system_tools else None,
                                 log=lambda s: print(s, flush=True))
        out = Path(args.build) / "synth-accel" / design["board"]
        print((out / "summary.md").read_text())
        return 0
    except UserError as e:
        print(f"accel_top: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import sys
    sys.exit(main())
