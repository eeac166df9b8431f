"""Amaranth RTL: PEs (pe.py), requantization (requant.py), the layer engine (engine.py)."""
