"""Compression recipes: small schedules over the shared training loop (compress.train).

Each recipe module has NAME, DOC, FLAGS (the recipe-specific settings it reads) and
`compress(run, fp32_model) -> model`, which returns the physically pruned model with
every conv and linear quantized. `compress.recipes.common` holds what they share.
"""
from . import baselines, djpq, jptp, picpq, ppq, spq

RECIPES = {m.NAME: m for m in (ppq, spq, jptp, djpq, picpq, baselines.PruneOnly, baselines.QuantOnly)}
