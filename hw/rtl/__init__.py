"""Amaranth RTL: PEs (pe.py), requantization (requant.py), the per-layer engine
(engine.py), Verilog emission of an export (export.py: emit_rtl). See docs/hardware.md."""
