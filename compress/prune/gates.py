"""Variational-information-bottleneck channel gates (Dai et al. 2018; DJPQ, seed 002).

Every channel group of the plan (compress.prune.groups) gets one gate per channel,
z_i = mu_i + sigma_i * eps (eps ~ N(0, 1), drawn per sample in training; z_i = mu_i
in evaluation). The gate multiplies the output of every batch norm of the group, that
is *before* the ReLU and before a residual add, so that

- a channel whose gate is off is zero everywhere the group's channels are carried
  (conv output, residual sum, shortcut), exactly as a removed channel;
- a kept gate folds into the batch norm at the end (weight and bias times mu), so the
  gated model in evaluation mode and the folded, physically pruned model compute the
  same function.

The information term of the VIB is KL = sum_i log(1 + mu_i^2 / sigma_i^2); a channel
with log alpha_i = log(sigma_i^2 / mu_i^2) above `threshold` carries no information
and is pruned. `expected_kept(tau)` is the differentiable surrogate of the kept count
(sum of sigmoid((threshold - log alpha_i) / tau)); `hard_kept()` is the count itself.
"""
from __future__ import annotations

import torch
from torch import nn

from .groups import module


class VIBGates(nn.Module):
    def __init__(self, model, plan, threshold: float = 0.0, init_log_sigma2: float = -6.0):
        super().__init__()
        self.plan = plan
        self.threshold = float(threshold)
        self.names = [g.name for g in plan]
        self.mu = nn.ParameterDict()
        self.log_sigma2 = nn.ParameterDict()
        for g in plan:
            key = self._key(g.name)
            self.mu[key] = nn.Parameter(torch.ones(g.size))
            self.log_sigma2[key] = nn.Parameter(torch.full((g.size,), float(init_log_sigma2)))
        self._hooks = []
        for g in plan:
            for b in g.bns:
                self._hooks.append(module(model, b).register_forward_hook(self._hook(g.name)))

    @staticmethod
    def _key(name):
        return name.replace(".", "__")

    def params(self, name):
        k = self._key(name)
        return self.mu[k], self.log_sigma2[k]

    def log_alpha(self, name) -> torch.Tensor:
        mu, ls2 = self.params(name)
        return ls2 - torch.log(mu.pow(2) + 1e-8)

    def keep_mask(self, name) -> torch.Tensor:
        """Channels whose gate is on (log alpha below threshold); never empty: if every
        gate of a group is off, the one with the lowest log alpha stays."""
        la = self.log_alpha(name).detach()
        k = la < self.threshold
        if not k.any():
            k[int(la.argmin())] = True
        return k

    def keeps(self) -> dict:
        return {n: self.keep_mask(n) for n in self.names}

    def hard_kept(self) -> dict:
        return {n: int(self.keep_mask(n).sum()) for n in self.names}

    def expected_kept(self, tau: float = 1.0) -> dict:
        return {n: torch.sigmoid((self.threshold - self.log_alpha(n)) / tau).sum() for n in self.names}

    def kl(self) -> torch.Tensor:
        """Mean over all channels of log(1 + mu^2 / sigma^2) = softplus(-log alpha)."""
        las = torch.cat([self.log_alpha(n) for n in self.names])
        return nn.functional.softplus(-las).mean()

    def _hook(self, name):
        def hook(mod, inp, out):
            mu, ls2 = self.params(name)
            shape = (1, -1) + (1,) * (out.dim() - 2)
            if self.training:
                eps = torch.randn(out.shape[0], mu.numel(), *([1] * (out.dim() - 2)), dtype=out.dtype)
                z = mu.view(shape) + torch.exp(0.5 * ls2).view(shape) * eps
            else:
                z = (mu * self.keep_mask(name).to(mu.dtype)).view(shape)
            return out * z
        return hook

    @torch.no_grad()
    def fold(self, model):
        """Multiply every gated batch norm's weight and bias by mu, then remove the hooks:
        the model computes what the gated model computes in evaluation mode (on the kept
        channels; the pruned ones are removed afterwards)."""
        for g in self.plan:
            mu, _ = self.params(g.name)
            for b in g.bns:
                bn = module(model, b)
                bn.weight.mul_(mu)
                bn.bias.mul_(mu)
        self.detach()

    def detach(self):
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def summary(self) -> dict:
        return {n: {"channels": int(self.keep_mask(n).numel()), "kept": int(self.keep_mask(n).sum()),
                    "log_alpha_median": float(self.log_alpha(n).detach().median())} for n in self.names}
