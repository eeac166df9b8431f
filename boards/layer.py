"""One exported layer on a board: what the UART top-level wraps today.

`BoardLayer` is one conv2d / linear node of an exported IR (default: the first conv),
with what the host and the hardware both need: its input and output tensors, the
protocol `Info` (element counts, widths, a design id that changes with the layer's
weights and constants), the golden reference (`hw/golden.py`) and the test vectors
of the export (`vectors.npz`: `node:INPUT` -> `node:NAME`).

`LayerCore` adapts the issue-5 `LayerEngine` (`hw/rtl/engine.py`, chan/pix addressed
buffers) to the bridge's core port (`boards/bridge.py`: one row-major element index).
The bridge visits elements in order (0, 1, 2, ...), so the adapter keeps a
(channel, pixel) counter that restarts when the index returns to 0 instead of
dividing by H*W in hardware.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from boards import protocol
from shiftq.errors import UserError

# per-board PE array caps (PO output lanes x PI input lanes); the UP5K has 5,280 LUTs
PARALLELISM = {"icebreaker": (4, 1), "ulx3s-85f": (16, 4)}


class BoardLayer:
    def __init__(self, ir, name: str | None = None, build_dir=None):
        self.ir = ir
        self.build_dir = Path(build_dir) if build_dir else None
        convs = [n for n in ir.nodes if n["op"] in ("conv2d", "linear")]
        if not convs:
            raise UserError("the IR has no conv2d / linear node to put on the board")
        if name is None:
            node = next((n for n in convs if n["op"] == "conv2d"), convs[0])
        else:
            try:
                node = ir.node(name)
            except KeyError:
                raise UserError(f"no node {name!r} in the IR; conv/linear nodes: "
                                f"{', '.join(n['name'] for n in convs)}") from None
            if node["op"] not in ("conv2d", "linear"):
                raise UserError(f"node {name!r} is a {node['op']}; the board runs one conv2d or linear node")
        rq = node.get("requant") or {}
        if rq.get("residual"):
            raise UserError(f"node {node['name']!r} adds a residual; the board top-level runs layers "
                            "without one (pick another with --layer)")
        self.node, self.name = node, node["name"]
        self.tin = ir.tensor(node["input"])
        self.tout = node["out"]
        in_signed = self.tin["kind"] != "code"
        out_signed = self.tout["kind"] != "code"
        self.n_in = int(np.prod(self.tin["shape"]))
        self.n_out = int(np.prod(self.tout["shape"]))
        self.info = protocol.Info(design_id=self._design_id(), n_in=self.n_in, in_bits=self.tin["bits"],
                                  in_signed=in_signed, n_out=self.n_out, out_bits=self.tout["bits"],
                                  out_signed=out_signed)

    def _design_id(self) -> int:
        n = self.node
        desc = {"node": n, "input": self.tin}
        crc = zlib.crc32(json.dumps(desc, sort_keys=True, separators=(",", ":")).encode())
        keys = [n["weight"]["key"]]
        if n.get("requant"):
            keys += [n["requant"]["mult"], n["requant"]["bias"]]
        for k in keys:
            crc = zlib.crc32(np.ascontiguousarray(self.ir.array(k), dtype=np.int64).tobytes(), crc)
        return crc & 0xFFFFFFFF

    def describe(self) -> dict:
        return {"layer": self.name, "op": self.node["op"], "input": self.node["input"],
                "in_shape": self.tin["shape"], "out_shape": self.tout["shape"],
                "design_id": f"{self.info.design_id:#010x}", "n_in": self.n_in, "n_out": self.n_out,
                "in_bits": self.info.in_bits, "out_bits": self.info.out_bits}

    def golden(self, x) -> np.ndarray:
        """The golden output (row-major int64) for one input tensor (any shape with n_in elements)."""
        from hw import golden

        x = np.asarray(x, dtype=np.int64).reshape([1] + list(self.tin["shape"]))
        return golden.run_node(self.ir, self.node, {self.node["input"]: x})[0].reshape(-1)

    def vectors(self, count: int | None = None):
        """(inputs, golden outputs) of the export's test vectors, row-major int64 arrays."""
        if self.build_dir is None or not (self.build_dir / "vectors.npz").exists():
            raise UserError(f"no vectors.npz in {self.build_dir}: re-run the export")
        with np.load(self.build_dir / "vectors.npz") as v:
            kin, kout = f"node:{self.node['input']}", f"node:{self.name}"
            if kin not in v.files or kout not in v.files:
                raise UserError(f"{self.build_dir / 'vectors.npz'} lacks {kin} / {kout}: re-export")
            xs, ys = v[kin], v[kout]
        n = len(xs) if count is None else min(count, len(xs))
        return ([xs[i].reshape(-1).astype(np.int64) for i in range(n)],
                [ys[i].reshape(-1).astype(np.int64) for i in range(n)])

    def spec(self, board: str | None = None, po_max: int | None = None, pi_max: int | None = None,
             pe: str = "shift"):
        from hw.rtl.engine import layer_spec, read_mem

        dpo, dpi = PARALLELISM.get(board, (16, 4))
        words = None
        if self.build_dir is not None:
            mem = self.build_dir / "tables" / f"{self.name}.mem"
            if mem.exists():
                words = read_mem(mem, int(np.asarray(self.ir.array(self.node["weight"]["key"])).size))
        return layer_spec(self.ir, self.name, po_max=po_max or dpo, pi_max=pi_max or dpi, words=words, pe=pe)

    def make_core(self, board: str | None = None, **kw):
        return LayerCore(self, self.spec(board, **kw))


def layer_from_build(build_dir, name: str | None = None) -> BoardLayer:
    from hw.ir import load

    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise UserError(f"no build directory {build_dir}: run `make export MODEL=...` "
                        f"(or `shiftq export ... --out {build_dir}`) first")
    return BoardLayer(load(build_dir), name, build_dir)


def LayerCore(layer: BoardLayer, spec):
    """The engine behind the bridge's core port (see boards/bridge.py)."""
    from amaranth.hdl import Module, Mux, Signal, signed, unsigned
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from hw.rtl.engine import LayerEngine

    info = layer.info
    in_hw = spec.H * spec.W
    out_hw = spec.Ho * spec.Wo

    class _LayerCore(wiring.Component):
        def __init__(self):
            self.spec = spec
            super().__init__({
                "in_addr": In(range(max(2, info.n_in))),
                "in_data": In(info.in_bits),
                "in_we": In(1),
                "start": In(1),
                "busy": Out(1),
                "out_addr": In(range(max(2, info.n_out))),
                "out_data": Out(signed(info.out_bits) if info.out_signed else unsigned(info.out_bits)),
            })

        def elaborate(self, platform):
            m = Module()
            m.submodules.engine = eng = LayerEngine(spec)

            # input side: the position of the element being written; advance after each write
            in_chan = Signal(range(max(2, spec.C)), name="in_c")
            in_pix = Signal(range(max(2, in_hw)), name="in_p")
            cur_c = Signal.like(in_chan)
            cur_p = Signal.like(in_pix)
            with m.If(self.in_addr == 0):
                m.d.comb += [cur_c.eq(0), cur_p.eq(0)]
            with m.Else():
                m.d.comb += [cur_c.eq(in_chan), cur_p.eq(in_pix)]
            with m.If(self.in_we):
                with m.If(cur_p == in_hw - 1):
                    m.d.sync += [in_chan.eq(cur_c + 1), in_pix.eq(0)]
                with m.Else():
                    m.d.sync += [in_chan.eq(cur_c), in_pix.eq(cur_p + 1)]
            m.d.comb += [eng.in_we.eq(self.in_we), eng.in_chan.eq(cur_c), eng.in_pix.eq(cur_p),
                         eng.in_data.eq(self.in_data)]

            # output side: follow out_addr (0 restarts, a change moves one element on)
            oc = Signal(range(max(2, spec.O)), name="out_c")
            op = Signal(range(max(2, out_hw)), name="out_p")
            last = Signal.like(self.out_addr, name="out_last", init=0)
            now_c = Signal.like(oc)
            now_p = Signal.like(op)
            with m.If(self.out_addr == 0):
                m.d.comb += [now_c.eq(0), now_p.eq(0)]
            with m.Elif(self.out_addr != last):
                with m.If(op == out_hw - 1):
                    m.d.comb += [now_c.eq(oc + 1), now_p.eq(0)]
                with m.Else():
                    m.d.comb += [now_c.eq(oc), now_p.eq(op + 1)]
            with m.Else():
                m.d.comb += [now_c.eq(oc), now_p.eq(op)]
            m.d.sync += [last.eq(self.out_addr), oc.eq(now_c), op.eq(now_p)]
            m.d.comb += [eng.out_chan.eq(now_c), eng.out_pix.eq(now_p), self.out_data.eq(eng.out_data),
                         eng.start.eq(self.start), self.busy.eq(eng.busy)]
            return m

    return _LayerCore()
