"""PoT / APoT / uniform quantization: exact level sets and fake-quant modules."""
from .fake import QConv2d, QLinear, QuantAct, Quantizer, WeightQuant  # noqa: F401
from .levels import LevelSet, csd_terms, level_set  # noqa: F401
from .wrap import LayerQ, default_qconfig, set_quant_enabled, wrap  # noqa: F401
