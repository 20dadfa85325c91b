"""Sampling the next token: temperature, top-k, top-p, an A/C/G/T-only restriction, and per-row seeds.

Order (vtx's sampler, spec §6.3, without its quirks): restrict to A/C/G/T if asked; greedy when
temperature == 0 or top_k == 1; otherwise divide by the temperature, keep the top_k tokens (all when
top_k <= 0), keep the smallest prefix of those whose probability mass reaches top_p, renormalise.

Randomness: each row draws one uniform number per step from its own CPU `torch.Generator` and picks
the token by inverse CDF on the device. A row's tokens therefore depend only on its seed and its logits,
not on the other rows of the batch, the batch size, or the device's random number generator.

Legend: B batch, V vocabulary, K kept candidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..errors import Evo2LiteError

ACGT_IDS = (65, 67, 71, 84)  # b"ACGT"
EOS_ID = 0


class GenerationError(Evo2LiteError, ValueError):
    """An invalid generation option (sampling settings, token count, prompt)."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 4  # Evo 2's default
    top_p: float = 1.0
    acgt_only: bool = False

    def __post_init__(self) -> None:
        from ..options import check_options

        check_options(GenerationError, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def row_seed(seed: int, *key: int) -> int:
    """A 63-bit seed for one row, derived from the run's seed and the row's identity (e.g. prompt index,
    sample index), so a row gets the same random stream in any batch."""
    digest = hashlib.blake2b(repr((int(seed), *map(int, key))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def draw_uniforms(generators: list[torch.Generator]) -> torch.Tensor:
    """One U[0, 1) per row (fp64, CPU)."""
    return torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])


def sample_next(logits_BV: torch.Tensor, params: SamplingParams, uniforms_B: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Next token ids (B,) on the logits' device. `uniforms_B` (from `draw_uniforms`) is needed unless
    sampling is greedy."""
    logits = logits_BV.float()
    logits = torch.nan_to_num(logits, nan=float("-inf"))
    if params.acgt_only:
        allowed = torch.full_like(logits[:1], float("-inf"))
        allowed[:, list(ACGT_IDS)] = 0.0
        logits = logits + allowed
    if params.greedy:
        return logits.argmax(-1)
    if uniforms_B is None:
        raise ValueError("sampling needs uniforms_B (one uniform per row)")
    V = logits.shape[-1]
    K = V if params.top_k <= 0 else min(int(params.top_k), V)
    values_BK, ids_BK = torch.topk(logits, K, dim=-1)  # sorted, largest first
    probs_BK = torch.softmax(values_BK / params.temperature, dim=-1)
    if params.top_p < 1:
        before_BK = probs_BK.cumsum(-1) - probs_BK  # mass of the better candidates
        probs_BK = torch.where(before_BK < params.top_p, probs_BK, torch.zeros_like(probs_BK))
    cdf_BK = probs_BK.cumsum(-1)
    target_B1 = uniforms_B.to(logits.device, torch.float32)[:, None] * cdf_BK[:, -1:]
    choice_B = (cdf_BK <= target_B1).sum(-1).clamp(max=K - 1)
    # a candidate with zero probability (masked) can only be hit by rounding: step back to a real one
    choice_B = torch.where(probs_BK.gather(-1, choice_B[:, None])[:, 0] > 0, choice_B,
                           (probs_BK > 0).long().cumsum(-1).argmax(-1))
    return ids_BK.gather(-1, choice_B[:, None])[:, 0]
