"""Cached decoding against the official engine vtx (CPU, fp32, tiny random Evo-2-shaped model loaded by
both from one official checkpoint): equal step logits and greedy tokens from prompts of >= 6 tokens, and,
for shorter prompts where vtx's FIR cache is still filling (spec §6.2), ours still equal the full pass
while vtx's do not."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

pytest.importorskip("vortex")

import vtx_harness as H  # noqa: E402
from evo2lite.checkpoint import load_model  # noqa: E402
from evo2lite.inference import Decoder, prefill  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    vcfg = H.make_vtx_config("SMLASML", 64, 4, 4, 176, rotary_scale=32.0)
    directory = tmp_path_factory.mktemp("vtxgen")
    pt, yml = directory / "model.pt", directory / "model.yml"
    H.write_yaml_config(vcfg, yml)
    with contextlib.redirect_stderr(io.StringIO()):
        H.save_official_checkpoint(H.build_random_vtx_model(vcfg, seed=3, bf16_exact=True), pt)
        vtx_model = H.load_vtx_from_official(pt, yml)
    H.set_vtx_precision(vtx_model, "float32")
    ours = load_model(pt, config=yml, dtype="float32")
    return ours, vtx_model


def _rel(a, b) -> float:
    return float(((a.float() - b.float()).abs().amax(-1) / b.float().abs().amax(-1)).max())


def _ours_greedy(model, ids, n):
    logits, state = prefill(model, ids)
    decoder = Decoder(model, state, capacity=ids.shape[1] + n)
    tokens, steps = [], []
    for _ in range(n):
        steps.append(logits.float())
        tokens.append(logits.float().argmax(-1))
        logits = decoder.step(tokens[-1])
    return torch.stack(tokens, 1), torch.stack(steps, 1)


def test_greedy_decoding_matches_vtx(models):
    ours, vtx_model = models
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(1))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        vtx_tokens, vtx_logits = H.vtx_generate_greedy(vtx_model, ids, 12, cached=True)
    tokens, logits = _ours_greedy(ours, ids, 12)
    assert torch.equal(tokens, vtx_tokens.cpu())
    assert _rel(logits, vtx_logits.cpu()) < RTOL


@pytest.mark.parametrize("prompt_len", [1, 3, 5])
def test_short_prompts_where_vtx_is_wrong(models, prompt_len):
    ours, vtx_model = models
    n = 6
    ids = torch.randint(0, 256, (1, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    tokens, logits = _ours_greedy(ours, ids, n)
    with torch.inference_mode():
        full = ours(torch.cat([ids, tokens[:, :-1]], 1)).float()[:, prompt_len - 1:]
    assert _rel(logits, full) < RTOL  # ours: cached == one full pass, from the first token on
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        vtx_tokens, vtx_logits = H.vtx_generate_greedy(vtx_model, ids, n, cached=True)
    # vtx's prefill is right, so both pick the same first token; its first cached step is not (its
    # step_fir bug, spec §6.2). If this ever fails, vtx has been fixed and the spec note can go.
    assert _rel(vtx_logits[:, 0].cpu(), full[:, 0]) < RTOL
    assert int(vtx_tokens[0, 0]) == int(tokens[0, 0])
    assert _rel(vtx_logits[:, 1].cpu(), full[:, 1]) > 1e-2
