"""Trainable parametrizations of the Hyena filters (spec §9) and their export to the checkpoint form.

The model (evo2lite/model.py) holds every filter in its exported, inference form: Hyena-MR `filter.h`
(G, K) with the exponential decay folded in, Hyena-LR `filter.log_poles` (D, S) and `filter.residues`
(D, S). Training uses the parametrizations savanna trains (spec §9.1-9.2), registered with
`torch.nn.utils.parametrize` so the model code is untouched:

  Hyena-MR   h = h_hat * decay,  decay[g, t] = exp(-r_g * t / (decay_len - 1)),  r = logspace(-2, 2, G)
             (the 'weak' preset). `h_hat` is the parameter; the decay is a fixed buffer, so it acts as
             the regularizer of [paper] §2.1 (tap t of group g can never grow past decay[g, t] * |h_hat|).
  Hyena-LR   log_poles = -exp(p) * exp(gamma)  (p, gamma = log gamma_0 stored apart as savanna does),
             residues R trained directly. Every pole exp(log_poles) lies in (0, 1): stable by construction.
  Hyena-SE   explicit (G, 7) filter, trained as it is stored.

`make_trainable(model)` registers the parametrizations in place, keeping the current exported values
(so it applies to a model from `init_weights_` or to any loaded checkpoint, an imported Evo 2 one too);
`export_state_dict(model)` gives the plain state dict with the model's own keys, which is what
checkpoint.save_state writes and load_model reads.

Weight decay (`param_groups`): matrices (projections, MLP, embedding) decay; norm scales, biases and every
Hyena filter parameter (featurizer, SE, MR, LR, the D skip) do not (savanna's `hyena_filter_wd: 0.0`).
savanna also decays the LR poles/residues, the featurizer and D by an accident of its class lists
(spec §9.3); we do not reproduce that.

Legend: G filter groups, K filter taps, D channels, S poles per channel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .mixers import MediumFilter, ModalFilter

DECAY_PRESETS = {"strong": (0.0, 2.0), "normal": (-1.0, 2.0), "weak": (-2.0, 2.0)}  # log10 r_min, r_max
_MIN_RATE = 1e-12  # |log_poles| floor when decomposing a checkpoint whose poles sit at exactly 1


def mr_decay(groups: int, taps: int, decay_len: int, preset: str = "weak") -> torch.Tensor:
    """decay (G, K): exp(-r_g t / (decay_len - 1)) for t = 0..K-1, r log-spaced over the preset (spec §9.1).
    Identical to the decay `init_weights_` folds in when decay_len == config.context_len."""
    lo, hi = DECAY_PRESETS[preset]
    rates_G = torch.logspace(lo, hi, groups)
    t_K = torch.linspace(0, 1, max(decay_len, taps))[:taps]
    return torch.exp(-rates_G[:, None] * t_K[None, :])


class ExplicitDecay(nn.Module):
    """Hyena-MR: h = h_hat * decay."""

    def __init__(self, decay_GK: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("decay", decay_GK.float(), persistent=True)

    def forward(self, h_hat_GK: torch.Tensor) -> torch.Tensor:
        return h_hat_GK * self.decay.to(h_hat_GK.dtype)

    def right_inverse(self, h_GK: torch.Tensor) -> torch.Tensor:
        return h_GK / self.decay.to(h_GK.dtype)


class ModalPoles(nn.Module):
    """Hyena-LR: log_poles = -exp(p) * exp(gamma). Parameters original0 = p, original1 = gamma."""

    def forward(self, p_DS: torch.Tensor, gamma_DS: torch.Tensor) -> torch.Tensor:
        return -torch.exp(p_DS) * torch.exp(gamma_DS)

    def right_inverse(self, log_poles_DS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # p = -1 as at initialisation (spec §9.2); gamma takes the rest: p + gamma = log(-log_poles).
        # With p = -1 this is exact for init_weights_'s log_poles = -exp(-1) * gamma0.
        rate = (-log_poles_DS.detach().float()).clamp_min(_MIN_RATE)
        p = torch.full_like(rate, -1.0)
        return p, torch.log(rate) - p


def is_trainable(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())


def make_trainable(model: nn.Module, decay_len: int | None = None, preset: str = "weak") -> nn.Module:
    """Register the spec §9 parametrizations on every Hyena-MR and Hyena-LR filter, in place, keeping the
    filters' current values (to float rounding). decay_len: the length that normalises the MR decay
    (savanna's L_cache = the training sequence length); default the model's context_len."""
    if is_trainable(model):
        return model
    decay_len = decay_len or model.config.context_len
    for module in model.modules():
        if isinstance(module, MediumFilter):
            groups, taps = module.h.shape
            decay = mr_decay(groups, taps, decay_len, preset).to(module.h.device)
            parametrize.register_parametrization(module, "h", ExplicitDecay(decay))
        elif isinstance(module, ModalFilter):
            parametrize.register_parametrization(module, "log_poles", ModalPoles())
    return model


@torch.no_grad()
def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain (inference) state dict of a model with or without parametrizations: the model's own
    keys, MR filters with the decay folded in, LR log_poles computed from p and gamma."""
    out = {}
    for name, tensor in model.state_dict().items():
        if ".parametrizations." not in name:
            out[name] = tensor.detach().clone()
    for mod_name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                key = f"{mod_name}.{attr}" if mod_name else attr
                out[key] = getattr(module, attr).detach().clone()
    return out


def strip_trainable(model: nn.Module) -> nn.Module:
    """Remove the parametrizations in place, leaving the exported values as plain parameters."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return model


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return (param.ndim < 2 or name.endswith(("bias", ".scale"))
            or ".filter." in name or ".featurizer." in name)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices (projections, MLP, embedding), none on norms, biases and
    Hyena filter parameters (see the module docstring)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if _no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
