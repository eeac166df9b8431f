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

`accel_top(board, build_dir)` is the board top-level (`boards.top.BoardTop`) for
`make accel-bitstream` / `shiftq synth`-like flows.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from boards import protocol
from shiftq.errors import UserError

# PO x PX per board (see docs/accelerator.md for why)
PARALLELISM = {"icebreaker": (4, 1), "ulx3s-85f": (12, 4)}


class BoardNetwork:
    def __init__(self, ir, build_dir=None, *, po: int = 4, px: int = 1, words=None):
        from hw.rtl.accel.plan import make_plan

        self.ir = ir
        self.build_dir = Path(build_dir) if build_dir else None
        if words is None and self.build_dir is not None:
            from hw.rtl.accel.check import load_words
            words = load_words(self.build_dir, ir)
        self.plan = make_plan(ir, po=po, px=px, words=words)
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


def network_from_build(build_dir, board: str | None = None) -> BoardNetwork:
    from hw.ir import load

    build_dir = Path(build_dir)
    if not (build_dir / "model.json").exists():
        raise UserError(f"no export in {build_dir}: run `make export MODEL=...` first")
    po, px = PARALLELISM.get(board, (4, 1))
    return BoardNetwork(load(build_dir), build_dir, po=po, px=px)


def AccelCore(plan, info):
    """The accelerator behind the bridge's core port."""
    from amaranth.hdl import Module, Mux, Signal, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from hw.rtl.accel.accel import Accelerator

    class _AccelCore(wiring.Component):
        def __init__(self):
            self.plan = plan
            super().__init__({
                "in_addr": In(range(max(2, info.n_in))),
                "in_data": In(info.in_bits),
                "in_we": In(1),
                "start": In(1),
                "busy": Out(1),
                "out_addr": In(range(max(2, info.n_out + 1))),
                "out_data": Out(signed(info.out_bits)),
            })

        def elaborate(self, platform):
            m = Module()
            m.submodules.accel = acc = Accelerator(plan)
            m.d.comb += [acc.in_valid.eq(self.in_we), acc.in_data.eq(self.in_data),
                         acc.out_ready.eq(1), acc.step_mode.eq(0), acc.resume.eq(0),
                         acc.logit_addr.eq(self.out_addr), self.busy.eq(acc.busy)]
            m.d.comb += self.out_data.eq(Mux(self.out_addr == plan.n_out, acc.klass, acc.logit_data))
            return m

    return _AccelCore()


def accel_top(board: str, build_dir):
    """The board top-level: UART bridge + accelerator + LEDs (boards/top.py)."""
    from boards.top import BoardTop

    net = network_from_build(build_dir, board)
    return BoardTop(board, net.make_core(), net.info), net


def main(argv=None) -> int:
    """`python -m boards.accel_top --build build/NAME --board B`: the accelerator's bitstream
    into build/NAME/synth-accel/BOARD/ (plan budget check first, then yosys + nextpnr)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m boards.accel_top", description=main.__doc__.splitlines()[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--board", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--po", type=int, default=None)
    ap.add_argument("--px", type=int, default=None)
    ap.add_argument("--system-tools", action="store_true")
    args = ap.parse_args(argv)
    try:
        from boards.top import BoardTop
        from hw.ir import load
        from hw.rtl.accel.plan import check_budget
        from hw.synth import get_board, synthesize

        board = get_board(args.board)
        build = Path(args.build)
        if not (build / "model.json").exists():
            raise UserError(f"no export in {build}: run `make export MODEL={build.name}` first")
        po, px = PARALLELISM.get(board.name, (4, 1))
        net = BoardNetwork(load(build), build, po=args.po or po, px=args.px or px)
        budget = check_budget(net.plan, board.name)
        out = build / "synth-accel" / board.name
        p = net.plan
        print(f"accel: {p.name} ({len(p.steps)} steps, {p.PO}x{p.PX} PEs, {budget['ebr']} EBR + "
              f"{budget['spram']} SPRAM planned) for {board.name} -> {out}/", flush=True)
        util = synthesize(BoardTop(board.name, net.make_core(), net.info), board, out, seed=args.seed,
                          tools="system" if args.system_tools else None)
        design = dict(model=p.name, board=board.name, PO=p.PO, PX=p.PX, design_id=f"{net.info.design_id:#010x}",
                      macs=p.macs, cycles_estimate=sum(p.cycle_estimate().values()), budget=budget,
                      bitstream=util["bitstream"], seed=args.seed)
        (out / "design.json").write_text(json.dumps(design, indent=2, default=int) + "\n")
        print((out / "summary.md").read_text())
        return 0
    except UserError as e:
        print(f"accel_top: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import sys
    sys.exit(main())
