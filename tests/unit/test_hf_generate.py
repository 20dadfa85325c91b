"""`generate()` of the HF wrapper: our recurrent state is its cache (one token through the model per
generated token), greedy output equals `evo2lite generate`, sampling follows the generation config."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from evo2lite.apps.generate import generate  # noqa: E402
from evo2lite.config import PRESETS  # noqa: E402
from evo2lite.errors import Evo2LiteError  # noqa: E402
from evo2lite.hf import Evo2LiteCache, Evo2LiteConfig, Evo2LiteForCausalLM  # noqa: E402
from evo2lite.model import StripedHyena2, init_weights_  # noqa: E402
from evo2lite.tokenizer import encode  # noqa: E402

PROMPTS = ["ACGTTGCAAGGCTTACGATCGATCGGA", "ttgacgatcgatcgaNNNAGCTAGCTA"]  # equal lengths: no padding


@pytest.fixture(scope="module")
def net():
    return init_weights_(StripedHyena2(PRESETS["debug"]), 1).eval()


@pytest.fixture(scope="module")
def hf(net):
    model = Evo2LiteForCausalLM(Evo2LiteConfig.from_model_config(net.config)).eval()
    model.load_state_dict({f"model.{k}": v for k, v in net.state_dict().items()})
    return model


class _TokenCounter:
    """Counts the token ids entering the model (a hook on the embedding) and the forward calls."""

    def __init__(self, model) -> None:
        self.tokens = self.calls = 0
        self.handle = model.model.embedding.register_forward_pre_hook(self)

    def __call__(self, module, args) -> None:
        self.tokens += args[0].numel()
        self.calls += 1


def test_greedy_equals_evo2lite_generate_one_token_per_step(net, hf):
    n_new = 24
    ids = torch.stack([encode(p) for p in PROMPTS])
    counter = _TokenCounter(hf)
    try:
        out = hf.generate(ids, max_new_tokens=n_new, do_sample=False, eos_token_id=None)
    finally:
        counter.handle.remove()
    ref = generate(PROMPTS, n_new, model=net, temperature=0, stop_at_eos=False)
    for row, r in zip(out, ref):
        assert row[ids.shape[1]:].tolist() == r.token_ids
    # the prompt once, then one token per row per step (the last token is sampled, never fed back)
    assert counter.calls == n_new
    assert counter.tokens == ids.numel() + ids.shape[0] * (n_new - 1)


def test_generate_stops_at_eos_like_evo2lite(hf):
    # point EOS's (tied) embedding row at the prompt's last hidden state: greedy picks EOS at some step
    model = Evo2LiteForCausalLM(hf.config).eval()
    model.load_state_dict(hf.state_dict())
    ids = encode(PROMPTS[0])[None]
    with torch.no_grad():
        h = model.model.hidden_states(ids)[0, -1]
        model.model.embedding.weight[0] = 50 * h / h.norm()
    out = model.generate(ids, max_new_tokens=12, do_sample=False)  # eos_token_id 0 from the config
    ref = generate(PROMPTS[0], 12, model=model.model, temperature=0)[0]
    assert ref.stop_reason == "eos"
    assert out[0, ids.shape[1]:].tolist() == ref.token_ids + [0]  # HF keeps the EOS, ours drops it


def test_sampling_honours_top_k_and_seed(net, hf):
    ids = encode(PROMPTS[0])[None].repeat(3, 1)
    torch.manual_seed(7)
    a = hf.generate(ids, max_new_tokens=16, do_sample=True, top_k=3, temperature=0.8, eos_token_id=None)
    torch.manual_seed(7)
    b = hf.generate(ids, max_new_tokens=16, do_sample=True, top_k=3, temperature=0.8, eos_token_id=None)
    assert torch.equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 1  # rows sample independently
    with torch.no_grad():
        logits = net(a[:, :-1])[:, ids.shape[1] - 1:]  # the logits each sampled token was drawn from
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == a[:, ids.shape[1]:, None]).any(-1).all()
    greedy = hf.generate(ids[:1], max_new_tokens=8, do_sample=True, top_k=1, eos_token_id=None)
    assert torch.equal(greedy, hf.generate(ids[:1], max_new_tokens=8, do_sample=False, eos_token_id=None))


def test_num_return_sequences_and_beams_run_on_the_state(hf):
    ids = encode(PROMPTS[0])[None]
    out = hf.generate(ids, max_new_tokens=6, do_sample=True, top_k=4, num_return_sequences=3, eos_token_id=None)
    assert out.shape == (3, ids.shape[1] + 6)
    # beams reorder the state's rows every step: sequences and beam scores equal those of recomputing
    # every prefix without a cache (a state left unreordered shifts the scores by ~4e-2 here)
    kwargs = dict(max_new_tokens=6, num_beams=4, num_return_sequences=4, do_sample=False, eos_token_id=None,
                  return_dict_in_generate=True, output_scores=True)
    beams = hf.generate(ids, **kwargs)
    recomputed = hf.generate(ids, use_cache=False, **kwargs)
    assert beams.sequences.shape == (4, ids.shape[1] + 6)
    assert torch.equal(beams.sequences, recomputed.sequences)
    torch.testing.assert_close(beams.sequences_scores, recomputed.sequences_scores, rtol=0, atol=1e-5)


def test_cache_continues_a_sequence_exactly(net, hf):
    ids = encode(PROMPTS[1])[None]
    with torch.no_grad():
        first = hf(ids[:, :20], use_cache=True)
        cache = first.cache if "cache" in first else first.past_key_values
        assert isinstance(cache, Evo2LiteCache) and cache.get_seq_length() == 20
        rest = hf(ids[:, 20:], use_cache=True, **{"cache" if "cache" in first else "past_key_values": cache})
        full = net(ids)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(NotImplementedError):
        cache.crop(1)
    # with gradients on, the cache path is the model's own differentiable stateful forward
    first = hf(ids[:, :20], use_cache=True)
    cache = first.cache if "cache" in first else first.past_key_values
    rest = hf(ids[:, 20:], **{"cache" if "cache" in first else "past_key_values": cache})
    rest.logits.sum().backward()
    assert hf.model.embedding.weight.grad is not None
    torch.testing.assert_close(rest.logits.detach(), full[:, 20:], rtol=1e-5, atol=1e-5)
    hf.zero_grad(set_to_none=True)


def test_left_padded_prompts_are_refused(hf):
    ids = torch.stack([encode(p) for p in PROMPTS])
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with pytest.raises(Evo2LiteError, match="right-padded"):
        hf.generate(ids, attention_mask=mask, max_new_tokens=2)
