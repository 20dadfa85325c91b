"""StripedHyena 2: the Evo 2 model (spec §1-2). Single device; parallelism lives in evo2lite/parallel/.

Legend: B batch, L length, D d_model, I MLP inner size, V vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .inference.state import InferenceState
from .mixers import MIXERS

# Kept in fp32 whatever the model dtype: the LR poles/residues and the rotary frequencies (spec §2.10).
FP32_PARAMS = ("log_poles", "residues", "inv_freq")


class RMSNorm(nn.Module):
    """scale * x / (rms(x) + eps): eps is added to the RMS, not inside the square root (spec §2.1)."""

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(d_model))

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        x = x_BLD.float()
        rms = x.pow(2).mean(-1, keepdim=True).sqrt()
        return (self.scale.float() * x / (rms + self.eps)).to(x_BLD.dtype)


class GatedMLP(nn.Module):
    """l3(act(l1 a) * l2 a), no biases; act is GELU in block 0 and the identity after (spec §2.2)."""

    def __init__(self, d_model: int, d_mlp: int, gelu: bool) -> None:
        super().__init__()
        self.l1 = nn.Linear(d_model, d_mlp, bias=False)
        self.l2 = nn.Linear(d_model, d_mlp, bias=False)
        self.l3 = nn.Linear(d_mlp, d_model, bias=False)
        self.gelu = gelu

    def forward(self, a_BLD: torch.Tensor) -> torch.Tensor:
        gate_BLI = self.l1(a_BLD)
        if self.gelu:
            gate_BLI = F.gelu(gate_BLI)
        return self.l3(gate_BLI * self.l2(a_BLD))


class Block(nn.Module):
    """Pre-norm residual block: x += mixer(pre_norm(x)); x += mlp(post_norm(x)) (spec §2.3)."""

    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        self.kind = config.layout[index]
        self.pre_norm = RMSNorm(config.d_model, config.eps)
        self.mixer = MIXERS[self.kind](config)
        self.post_norm = RMSNorm(config.d_model, config.eps)
        self.mlp = GatedMLP(config.d_model, config.d_mlp, gelu=index == 0)

    def forward(self, x_BLD: torch.Tensor, state: dict | None = None, position: int = 0,
                attention_step=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the residual stream after the block, the MLP output before its residual add)."""
        a_BLD = self.pre_norm(x_BLD)
        if attention_step is not None and state is not None and self.kind == "A":
            x_BLD = x_BLD + attention_step(self.mixer, a_BLD, state, position)
        else:
            x_BLD = x_BLD + self.mixer(a_BLD, state, position)
        mlp_BLD = self.mlp(self.post_norm(x_BLD))
        return x_BLD + mlp_BLD, mlp_BLD


class StripedHyena2(nn.Module):
    """Embedding -> blocks -> final RMSNorm -> tied unembedding. `forward(ids, state)` continues the
    sequence held by `state` exactly when one is given (chunked scoring, streaming embeddings, decoding)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_blocks))
        self.norm = RMSNorm(config.d_model, config.eps)
        # Training option, not architecture: recompute each block's activations in the backward pass, so a
        # stateless training forward keeps only the residual stream between blocks (long contexts fit).
        self.activation_checkpointing = False

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def new_state(self, batch_size: int) -> InferenceState:
        return InferenceState.empty(self.config.num_blocks, batch_size)

    def hidden_states(self, ids_BL: torch.Tensor, state: InferenceState | None = None,
                      capture: dict[str, torch.Tensor] | None = None, num_blocks: int | None = None,
                      attention_step=None) -> torch.Tensor:
        """The final-norm output (B, L, D), advancing `state` when one is given.

        capture: a dict whose keys name layers to fill with their activations: `blocks.N` (residual
        stream after block N), `blocks.N.mlp` (block N's MLP output before the residual add), `final`.
        num_blocks: run only the first blocks (embeddings need nothing past the deepest captured layer);
        the residual stream after them is returned, without the final norm.
        attention_step(mixer, a_BLD, layer_state, position): replaces the attention mixers' own stateful
        path (the inference engine's preallocated KV cache); None uses the mixers' reference path."""
        position = state.position if state is not None else 0
        blocks = self.blocks if num_blocks is None else self.blocks[:num_blocks]
        x_BLD = self.embedding(ids_BL.to(self.device))
        recompute = self.activation_checkpointing and state is None and torch.is_grad_enabled()
        for i, block in enumerate(blocks):
            layer = state.layers[i] if state is not None else None
            if recompute:
                x_BLD, mlp_BLD = checkpoint(block, x_BLD, None, position, attention_step, use_reentrant=False)
            else:
                x_BLD, mlp_BLD = block(x_BLD, layer, position, attention_step)
            if capture is not None and f"blocks.{i}.mlp" in capture:
                capture[f"blocks.{i}.mlp"] = mlp_BLD
            if capture is not None and f"blocks.{i}" in capture:
                capture[f"blocks.{i}"] = x_BLD
        if state is not None:
            state.position += ids_BL.shape[1]
        if len(blocks) < len(self.blocks):
            return x_BLD
        x_BLD = self.norm(x_BLD)
        if capture is not None and "final" in capture:
            capture["final"] = x_BLD
        return x_BLD

    def forward(self, ids_BL: torch.Tensor, state: InferenceState | None = None) -> torch.Tensor:
        """Logits (B, L, V) in the model dtype."""
        return F.linear(self.hidden_states(ids_BL, state), self.embedding.weight)

    def cast(self, dtype: torch.dtype) -> "StripedHyena2":
        """Cast to `dtype`, keeping log_poles, residues and inv_freq in fp32 (spec §2.10)."""
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            if not name.endswith(FP32_PARAMS):
                tensor.data = tensor.data.to(dtype)
        return self


@torch.no_grad()
def init_weights_(model: StripedHyena2, seed: int = 0) -> StripedHyena2:
    """The initialisation of spec §9 (savanna), in place, drawn on the model's device (fast for the 7B
    shapes on a GPU) and reproducible from `seed` on a given device type. The LR filter is built directly in
    its exported form: log_poles = -exp(p) * gamma with p = -1, gamma ~ U(0.01, 0.1)."""
    cfg = model.config
    device = model.device
    gen = torch.Generator(device).manual_seed(seed)
    d = cfg.d_model
    small = (2.0 / (5.0 * d)) ** 0.5
    wang = 2.0 / (cfg.num_blocks * d ** 0.5)

    def normal_(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=gen, device=device) * std)

    def uniform_(t: torch.Tensor, bound: float) -> None:
        t.copy_((torch.rand(t.shape, generator=gen, device=device) * 2 - 1) * bound)

    normal_(model.embedding.weight, small)
    for block in model.blocks:
        mixer = block.mixer
        normal_(block.mlp.l1.weight, small)
        normal_(block.mlp.l2.weight, small)
        normal_(block.mlp.l3.weight, wang)
        block.pre_norm.scale.fill_(1.0)
        block.post_norm.scale.fill_(1.0)
        normal_(mixer.out_proj.weight, wang)
        mixer.out_proj.bias.zero_()
        if block.kind == "A":
            normal_(mixer.qkv_proj.weight, small)
            continue
        normal_(mixer.in_proj.weight, small)
        uniform_(mixer.featurizer.h, (1.0 / 3) ** 0.5)  # short_conv_L = 3 for the featurizer and SE alike
        inner = mixer.filter
        if block.kind == "S":
            uniform_(inner.h, (1.0 / 3) ** 0.5)
            continue
        normal_(inner.D, 1.0)
        if block.kind == "M":
            # explicit filter with the 'weak' exponential-decay preset folded in (spec §9.1)
            groups, taps = inner.h.shape
            rates = torch.logspace(-2, 2, groups, device=device)
            # t normalised by the pretraining length as in savanna, at least the filter's own length
            decay = torch.exp(-rates[:, None] * torch.linspace(0, 1, max(cfg.context_len, taps), device=device)[None, :taps])
            inner.h.copy_(torch.randn(inner.h.shape, generator=gen, device=device) / taps ** 0.5 * decay)
        else:
            gamma = 0.01 + 0.09 * torch.rand(inner.log_poles.shape, generator=gen, device=device)
            inner.log_poles.copy_(-math.exp(-1.0) * gamma)
            normal_(inner.residues, 0.1 / cfg.state_size ** 0.5)
    model.norm.scale.fill_(1.0)
    return model
