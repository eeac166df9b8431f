"""shiftq: compress CNNs to PoT/APoT weights and prove shift-add hardware bit-exact."""
__version__ = "0.1.0"
