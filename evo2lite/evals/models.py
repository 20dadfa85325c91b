"""Models for the synthetic tasks, built from evo2lite's own blocks through a layout string.

Legend: B batch, L length, D d_model, V task vocabulary.

A task model is a StripedHyena2 (the same Block, mixers and kernels as the DNA models) at MAD's width (128)
with MAD's multi-head settings (16 attention heads of size 8, 16 Hyena filter groups), its logits cut to the
task's vocabulary. Every block carries its own gated MLP, so a layout of n letters is n (mixer, MLP) pairs:
MAD's single-operator baselines are `mixer, swiglu, mixer, swiglu`, i.e. two letters; we default to four
letters so that the multi-hybrids (SMLA, SSMA) and the single-operator stacks (SSSS, ...) have the same
number of blocks and almost the same number of parameters (`num_params` is reported per run).

Compression is an encoder-decoder as MAD specifies (mad/model/auto_encoder.py): the blocks encode, the last
position's vector is the code, and a fixed position-wise MLP decoder with sin-cos positions reads every
token back from it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..model import RMSNorm, StripedHyena2, init_weights_

WIDTH = 128
HEADS = 16
GROUPS = 16
MLP_WIDTH = 344  # MAD's SwiGLU inner width: 2/3 * 4 * 128 rounded up to a multiple of 8


def task_config(layout: str, vocab_size: int, seq_len: int, d_model: int = WIDTH) -> ModelConfig:
    """ModelConfig of a task model; the byte vocabulary floor (256) only pads the embedding table."""
    return ModelConfig(layout=layout, d_model=d_model, num_heads=HEADS, d_mlp=MLP_WIDTH, num_se_groups=GROUPS,
                       num_mr_groups=GROUPS, vocab_size=max(256, vocab_size), context_len=max(seq_len, 2),
                       name=f"mad-{layout}")


def sincos_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sin-cos position table (MAD's posemb_sincos_1d)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2 - 1))
    angle = torch.arange(length, dtype=torch.float32)[:, None] * omega[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


class TaskLM(nn.Module):
    """Next-token model: logits (B, L, V) over the task vocabulary."""

    def __init__(self, layout: str, vocab_size: int, seq_len: int, seed: int = 0, d_model: int = WIDTH) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.backbone = init_weights_(StripedHyena2(task_config(layout, vocab_size, seq_len, d_model)), seed=seed)

    def forward(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return self.backbone(ids_BL)[..., :self.vocab_size]


class TaskAutoEncoder(nn.Module):
    """Compression: encode with the blocks, pool the last position, decode every position from it."""

    def __init__(self, layout: str, vocab_size: int, seq_len: int, seed: int = 0, d_model: int = WIDTH) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        cfg = task_config(layout, vocab_size, seq_len, d_model)
        self.backbone = init_weights_(StripedHyena2(cfg), seed=seed)
        d = cfg.d_model
        self.register_buffer("positions", sincos_positions(seq_len, d), persistent=False)
        self.decoder = nn.Sequential(RMSNorm(d, cfg.eps), nn.Linear(d, d), nn.GELU(),
                                     RMSNorm(d, cfg.eps), nn.Linear(d, d), nn.GELU())
        self.out_norm = RMSNorm(d, cfg.eps)
        self.unembed = nn.Linear(d, vocab_size)
        for lin in (self.decoder[1], self.decoder[4], self.unembed):
            nn.init.normal_(lin.weight, std=1 / math.sqrt(d))
            nn.init.zeros_(lin.bias)

    def forward(self, ids_BL: torch.Tensor) -> torch.Tensor:
        code_BD = self.backbone.hidden_states(ids_BL)[:, -1]
        x_BLD = code_BD[:, None, :] + self.positions[: ids_BL.shape[1]].to(code_BD.dtype)
        return self.unembed(self.out_norm(self.decoder(x_BLD)))


def build_task_model(layout: str, vocab_size: int, seq_len: int, encoder_decoder: bool, seed: int = 0,
                     d_model: int = WIDTH) -> nn.Module:
    cls = TaskAutoEncoder if encoder_decoder else TaskLM
    return cls(layout, vocab_size, seq_len, seed=seed, d_model=d_model)


def masked_loss_and_hits(logits_BLV: torch.Tensor, targets_BL: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy over scored positions, and (correct argmax predictions, scored positions)."""
    flat = logits_BLV.reshape(-1, logits_BLV.shape[-1]).float()
    tgt = targets_BL.reshape(-1)
    loss = F.cross_entropy(flat, tgt, ignore_index=-100)
    scored = tgt != -100
    hits = int((flat.argmax(-1)[scored] == tgt[scored]).sum())
    return loss, hits, int(scored.sum())
