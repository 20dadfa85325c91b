"""Sampling and the generation API: greedy cached == greedy recompute, seeds reproduce independently of
the batch, unequal prompts batch exactly, EOS / A-C-G-T-only / long-prompt behaviour, option errors."""

from __future__ import annotations

import io

import pytest
import torch

from evo2lite.apps import generate as gen_mod
from evo2lite.apps.generate import FastaSink, GeneratedSequence, generate
from evo2lite.config import PRESETS
from evo2lite.inference import GenerationError, SamplingParams, draw_uniforms, make_generators, sample_next
from evo2lite.inference.sampling import ACGT_IDS
from evo2lite.tokenizer import encode

# model (preset "debug", seed 0): tests/conftest.py


# --- sampling ----------------------------------------------------------------------------------------

def test_greedy_is_argmax_and_acgt_restriction():
    logits = torch.randn(5, 512, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits, SamplingParams(temperature=0)), logits.argmax(-1))
    assert torch.equal(sample_next(logits, SamplingParams(top_k=1)), logits.argmax(-1))
    picked = sample_next(logits, SamplingParams(temperature=0, acgt_only=True))
    allowed = torch.tensor(ACGT_IDS)
    assert torch.equal(picked, allowed[logits[:, allowed].argmax(-1)])


def test_top_k_and_top_p_follow_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [1e-4] * 508]))
    logits = logits.expand(20000, -1)
    u = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(sample_next(logits, SamplingParams(top_k=2), u), minlength=512).float()
    assert counts[2:].sum() == 0
    assert abs(counts[0] / 20000 - 0.625) < 0.02  # 0.5 / (0.5 + 0.3)
    counts = torch.bincount(sample_next(logits, SamplingParams(top_k=0, top_p=0.85), u), minlength=512)
    assert counts[3:].sum() == 0 and counts[2] > 0  # {0.5, 0.3} < 0.85 <= {0.5, 0.3, 0.15}
    counts = torch.bincount(sample_next(logits, SamplingParams(top_k=4, temperature=1e-3), u), minlength=512)
    assert counts[0] == 20000


def test_rows_draw_from_their_own_generators():
    logits = torch.zeros(3, 512)
    a = draw_uniforms(make_generators([1, 2, 3]))
    b = draw_uniforms(make_generators([2]))
    assert a[1] == b[0]
    toks = sample_next(logits, SamplingParams(top_k=0), a)
    assert toks.shape == (3,)


@pytest.mark.parametrize("kwargs, match", [
    ({"top_p": 0.0}, "top-p"), ({"top_p": 1.5}, "top-p"), ({"temperature": -1.0}, "temperature"),
])
def test_bad_sampling_params(kwargs, match):
    with pytest.raises(GenerationError, match=match):
        SamplingParams(**kwargs)


# --- generation --------------------------------------------------------------------------------------

def _greedy_recompute(model, prompt: str, n: int) -> list[int]:
    ids = encode(prompt)[None]
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(ids)[0, -1].float().argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("prompt", ["A", "ACGTA", "ACGTAC", "|d__Bacteria;p__Pseudomonadota|ATG" * 4])
def test_greedy_cached_equals_greedy_recompute(model, prompt):
    n = 24
    [row] = generate(prompt, n, model=model, temperature=0, stop_at_eos=False)
    assert row.token_ids == _greedy_recompute(model, prompt, n)
    assert row.stop_reason == "length"


def test_seed_reproduces_independently_of_batch(model):
    prompts = [("a", "ACGTTGCA"), ("b", "GATTACA" * 9), ("c", "TTT")]
    kw = dict(model=model, seed=7, num_samples=2, acgt_only=True)
    big = generate(prompts, 20, batch_size=6, **kw)
    small = generate(prompts, 20, batch_size=1, **kw)
    assert [r.token_ids for r in big] == [r.token_ids for r in small]
    alone = generate([("b", "GATTACA" * 9)], 20, batch_size=2, **kw)
    # prompt index 0 alone vs index 1 above: a different stream, but reproducible itself
    assert [r.token_ids for r in alone] == [r.token_ids for r in generate([("b", "GATTACA" * 9)], 20, **kw)]
    assert big[0].token_ids != big[1].token_ids  # samples of one prompt differ
    other = generate(prompts, 20, batch_size=6, **{**kw, "seed": 8})
    assert [r.token_ids for r in other] != [r.token_ids for r in big]
    assert all(r.run_seed == 7 and r.name == f"{r.prompt_name}_sample{r.sample_index + 1}" for r in big)


def test_unequal_prompts_batch_like_alone_greedy(model):
    prompts = ["ACG", "ACGTTTGACCA" * 13, "GGGGCCCCAT"]
    batched = generate(prompts, 15, model=model, temperature=0, batch_size=3, stop_at_eos=False)
    for p, row in zip(prompts, batched):
        assert row.token_ids == _greedy_recompute(model, p, 15)


def test_acgt_only_and_text(model):
    rows = generate("|d__Bacteria;p__Bacillota|", 40, model=model, acgt_only=True, top_k=0, seed=1)
    assert set(rows[0].text) <= set("ACGT") and len(rows[0].text) == 40


def test_stop_at_eos(model, monkeypatch):
    real = gen_mod.sample_next
    calls = {"n": 0}

    def fake(logits, params, uniforms=None):
        toks = real(logits, params, uniforms)
        calls["n"] += 1
        if calls["n"] == 4:
            toks[0] = 0  # row 0 emits EOS at its 4th token
        return toks

    monkeypatch.setattr(gen_mod, "sample_next", fake)
    rows = generate("ACGTACGT", 10, model=model, num_samples=2, seed=3)
    assert rows[0].stop_reason == "eos" and len(rows[0].token_ids) == 3
    assert rows[1].stop_reason == "length" and len(rows[1].token_ids) == 10


def test_long_prompt_warns(model, capsys):
    prompt = "ACGT" * (PRESETS["debug"].context_len // 4 + 2)
    rows = generate(prompt, 3, model=model, seed=0)
    assert len(rows[0].token_ids) == 3
    assert "longer than the model's trained context" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, match", [
    ({"n_tokens": 0}, "-n"), ({"n_tokens": -2}, "-n"), ({"prompts": ""}, "empty"),
    ({"prompts": []}, "no prompts"), ({"num_samples": 0}, "num-samples"), ({"top_p": 0}, "top-p"),
])
def test_bad_options(model, kwargs, match):
    args = {"prompts": "ACGT", "n_tokens": 5, **kwargs}
    with pytest.raises(GenerationError, match=match):
        generate(args.pop("prompts"), args.pop("n_tokens"), model=model, **args)


def test_fasta_sink_streams_first_row_and_keeps_order():
    out = io.StringIO()
    sink = FastaSink(out, lambda r: f">{r.name}", include_prompt=True)
    rows = [GeneratedSequence(name=f"r{i}", prompt_name="p", prompt_index=0, sample_index=i, prompt="TAG",
                              seed=0) for i in range(3)]
    for r in rows:
        sink.start(r)
    sink.tokens(rows[1], "C")
    sink.tokens(rows[0], "A")
    assert out.getvalue() == ">r0\nTAGA"  # the first row is live, the others wait
    sink.tokens(rows[2], "\x01")  # not printable: written as N
    sink.finish(rows[1])
    sink.finish(rows[0])
    sink.finish(rows[2])
    assert out.getvalue() == ">r0\nTAGA\n>r1\nTAGC\n>r2\nTAGN\n"
