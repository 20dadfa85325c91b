"""One stateful attention path (issue #9): the full forward, the inference engine's chunks and the decoder's
tokens all run `Attention.step`, and they agree in fp32 to 1e-5 with rotary at offsets (chunk starts, ragged
decode rows), position interpolation and a non-default rotary base."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from evo2lite.config import PRESETS
from evo2lite.inference import Decoder, forward_chunk, prefill
from evo2lite.mixers import Attention
from evo2lite.model import StripedHyena2, init_weights_

RTOL = 1e-5  # fp32, relative to the largest |logit| of the position


@pytest.fixture(scope="module")
def model():
    # attention and MLPs only: every difference between the paths is an attention difference
    config = dataclasses.replace(PRESETS["debug"], layout="AAA", rotary_scale=4.0, rotary_base=500.0,
                                 name="attention_only")
    return init_weights_(StripedHyena2(config), 3).eval()


def _ids(B: int, L: int) -> torch.Tensor:
    return torch.randint(0, 256, (B, L), generator=torch.Generator().manual_seed(7))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().amax(-1) / b.abs().amax(-1)).max())


def test_every_path_runs_attention_step(model, monkeypatch):
    calls = []
    step = Attention.step

    def spy(self, a_BLD, positions, attend):
        calls.append(positions.detach().clone())
        return step(self, a_BLD, positions, attend)

    monkeypatch.setattr(Attention, "step", spy)
    ids = _ids(2, 12)
    with torch.inference_mode():
        model(ids)
        assert len(calls) == 3 and torch.equal(calls[-1], torch.arange(12))
        _, state = prefill(model, ids[:, :9], chunk_len=5)
        assert len(calls) == 9 and torch.equal(calls[-1], torch.arange(5, 9))  # the second chunk, at 5
        decoder = Decoder(model, state, capacity=16, cuda_graph=False)
    decoder.step(ids[:, 9])
    assert len(calls) == 12 and torch.equal(calls[-1], torch.tensor([[9], [9]]))  # (B, 1): one per row


@pytest.mark.parametrize("attention", ["sdpa", "split"])
def test_chunked_prefill_and_decode_equal_one_forward(model, attention):
    """A state started by the mixers' own concatenating cache (`model(ids, state)`), continued by the
    engine in chunks that start at odd offsets, then decoded token by token == one full forward."""
    ids = _ids(2, 64)
    with torch.inference_mode():
        full = model(ids)
        state = model.new_state(2)
        logits = [model(ids[:, :5], state)]
        for a, b in ((5, 28), (28, 31), (31, 50)):
            logits.append(forward_chunk(model, ids[:, a:b], state))
        decoder = Decoder(model, state, capacity=64, cuda_graph=False, attention=attention)
    logits += [decoder.step(ids[:, t])[:, None] for t in range(50, 64)]
    assert _rel(torch.cat(logits, dim=1), full) < RTOL


def test_ragged_rows_decode_at_their_own_positions(model):
    """Rows at different positions in one decoder: rotary and the cache write per row."""
    ids = _ids(2, 48)
    with torch.inference_mode():
        full = model(ids)
        _, s0 = prefill(model, ids[:1, :30], chunk_len=11)
        _, s1 = prefill(model, ids[1:, :17], chunk_len=8)
        decoder = Decoder(model, [(s0, [0]), (s1, [0])], capacity=48, cuda_graph=False)
    for k in range(18):
        out = decoder.step(torch.stack([ids[0, 30 + k], ids[1, 17 + k]]))
        assert _rel(out[:1], full[0, 30 + k][None]) < RTOL
        assert _rel(out[1:], full[1, 17 + k][None]) < RTOL
