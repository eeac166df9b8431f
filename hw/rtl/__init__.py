"""Amaranth RTL: PEs (pe.py), requantization (requant.py), the per-layer engine
(engine.py), Verilog emission of an export (export.py: emit_rtl). See docs/hardware.md."""

# A signal with these attributes keeps its own flip-flop through synthesis: hw/synth.py
# marks the $dff driving it `keep`, so yosys' opt_merge does not fold the per-PE copies
# of a broadcast register back into one flip-flop (the copies exist to cut a fanout of
# hundreds of loads spread over the die into short local nets). Use it on reset-less
# signals: a kept flip-flop does not absorb a reset multiplexer.
KEEP_FF = {"shiftq_keep_ff": 1}
