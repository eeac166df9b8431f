"""BOPs as a function of kept channels and per-layer bit widths (seed 001, Eq. 6).

`BopsModel(model)` reads, once, every conv / linear of a dense zoo model: its MACs
(from compress.metrics.layer_costs, the same hooks `shiftq metrics` uses), its
input channel group and output channel group (compress.prune.groups). A layer's MACs
are proportional to (input channels kept) x (output channels kept), so

    BOPs = sum_l  m_l x cin_l x cout_l x wbits_l x abits_l,   m_l = MACs_l / (Cin_l Cout_l)

where cin_l / cout_l are the kept counts of the layer's producer / own group (times the
features per channel for a linear after a Flatten), or the dense width where the layer
has no prunable group (the image input, the classifier's outputs).

The same expression serves two callers:
- DJPQ: counts are expected kept channels (a tensor from the gates) and bit widths are
  learned (tensors), so BOPs is differentiable in both;
- PIC-PQ and every final check: integer counts and integer bits, which give exactly
  what `compress.metrics.model_metrics` counts on the physically pruned, wrapped model.
"""
from __future__ import annotations

from dataclasses import dataclass


from compress.models.walk import layers, short
from compress.prune.groups import build_plan


@dataclass
class LayerTerm:
    name: str            # short layer name ("b1.conv1")
    path: str            # module path
    slot: str            # input act slot path
    per_pair: float      # MACs per (input feature, output channel) pair
    cin: int             # dense input features
    cout: int            # dense output channels
    in_group: str | None
    in_per: int          # input features per channel of in_group
    out_group: str | None


class BopsModel:
    def __init__(self, model):
        from compress.metrics import layer_costs

        plan = build_plan(model)
        self.plan = plan
        self.group_sizes = {g.name: g.size for g in plan}
        out_of, in_of = plan.out_group(), plan.in_group()
        rows = {r["layer"]: r for r in layer_costs(model, {})}
        self.terms: list[LayerTerm] = []
        for path, mod, slot in layers(model):
            name = short(path)
            w = mod.weight
            cout, cin = int(w.shape[0]), int(w.shape[1])
            g_in, per = in_of.get(path, (None, 1))
            self.terms.append(LayerTerm(name, path, slot, rows[name]["macs"] / (cin * cout), cin, cout,
                                        g_in, per, out_of.get(path)))
        self.dense_bops = sum(t.per_pair * t.cin * t.cout for t in self.terms) * 32 * 32

    def names(self):
        return [t.name for t in self.terms]

    def __call__(self, kept: dict, wbits: dict, abits: dict):
        """BOPs for kept counts {group: n} and bits {layer: b} (numbers or tensors)."""
        total = 0.0
        for t in self.terms:
            cin = kept[t.in_group] * t.in_per if t.in_group else t.cin
            cout = kept[t.out_group] if t.out_group else t.cout
            total = total + t.per_pair * cin * cout * wbits[t.name] * abits[t.name]
        return total

    def macs(self, kept: dict) -> float:
        return self(kept, {t.name: 1 for t in self.terms}, {t.name: 1 for t in self.terms})

    def reduction(self, bops) -> float:
        return self.dense_bops / float(bops)
