"""StripedHyena2 invariants (DESIGN.md §3): no position sees the future, chunked streaming with state equals
the full pass, plus the building blocks (RMSNorm, gated MLP, precision policy, init, capture)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from evo2lite.config import PRESETS, ModelConfig
from evo2lite.model import GatedMLP, RMSNorm, StripedHyena2, init_weights_


def tiny(layout: str, **kw) -> ModelConfig:
    base = dict(layout=layout, d_model=32, num_heads=2, d_mlp=48, num_se_groups=4, num_mr_groups=2,
                context_len=512)
    return ModelConfig(**{**base, **kw})


def model_of(cfg: ModelConfig, seed: int = 1) -> StripedHyena2:
    return init_weights_(StripedHyena2(cfg), seed=seed).eval()


def random_ids(B: int, L: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (B, L), generator=torch.Generator().manual_seed(seed))


# --- causality -----------------------------------------------------------------------------------------

# One block kind per model (one block, and two so that a block without GELU follows block 0), and mixed.
CAUSAL_LAYOUTS = ["S", "M", "L", "A", "SS", "MM", "LL", "AA", "SMLA", "ALMS", "SMLASML"]
L_CAUSAL, T_PERTURB = 160, 70


@pytest.mark.parametrize("layout", CAUSAL_LAYOUTS)
def test_no_position_sees_the_future(layout):
    model = model_of(tiny(layout))
    ids = random_ids(2, L_CAUSAL)
    changed = ids.clone()
    changed[:, T_PERTURB] = (ids[:, T_PERTURB] + 17) % 256
    with torch.inference_mode():
        a, b = model(ids), model(changed)
    scale = a.abs().max().item()
    before = (a[:, :T_PERTURB] - b[:, :T_PERTURB]).abs().max().item()
    if set(layout) <= {"S", "A"}:
        # direct convolutions and masked attention: bit-for-bit
        assert torch.equal(a[:, :T_PERTURB], b[:, :T_PERTURB]), f"max |delta| before t: {before}"
    else:
        # Hyena-MR/LR convolve by FFT over all positions at once: the perturbation reaches positions < t
        # through fp32 rounding only (~1e-7 relative). A causality bug (circular wrap-around, a shifted tap)
        # changes them by as much as the positions after t (>= 1e-2 here).
        assert before <= 1e-5 * scale, f"max |delta| before t: {before} (logit scale {scale})"
    per_position = (a - b).abs().amax(dim=(0, 2))
    # the perturbed position and everything after it within reach change
    reach = L_CAUSAL if set(layout) - {"S"} else len(layout) * (2 + 6)  # featurizer 3 + SE 7 per block
    after = per_position[T_PERTURB: T_PERTURB + reach + 1]
    assert (after > 1e-4 * scale).all(), f"unchanged positions after t: {(after <= 1e-4 * scale).nonzero()}"
    if layout == "SS":
        assert torch.equal(a[:, T_PERTURB + reach + 1:], b[:, T_PERTURB + reach + 1:])


@pytest.mark.parametrize("layout", ["MM", "LL"])
def test_long_filters_see_the_whole_past(layout):
    # token 0 still influences position 150 (MR: K = 128 taps per block, two blocks; LR: infinite)
    model = model_of(tiny(layout))
    ids = random_ids(1, 151, seed=3)
    changed = ids.clone()
    changed[:, 0] = (ids[:, 0] + 1) % 256
    with torch.inference_mode():
        delta = (model(ids) - model(changed))[0, -1].abs().max().item()
    assert delta > 1e-6


# --- chunked streaming with state ---------------------------------------------------------------------

def run_chunked(model, ids, splits):
    state = model.new_state(ids.shape[0])
    outs, start = [], 0
    with torch.inference_mode():
        for n in splits:
            outs.append(model(ids[:, start: start + n], state))
            start += n
    assert start == ids.shape[1] and state.position == start
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("preset", ["debug", "debug_odd"])
@pytest.mark.parametrize("splits", [
    [150, 150],
    [1, 127, 1, 171],       # the MR tail (127 samples) wraps exactly; then chunks of 1 and odd lengths
    [129, 2, 169],
    [3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 64],
    [299, 1],
])
def test_chunked_forward_with_state_equals_full_forward(preset, splits):
    model = model_of(PRESETS[preset])
    ids = random_ids(2, 300, seed=len(splits))
    with torch.inference_mode():
        full = model(ids)
    chunked, _ = run_chunked(model, ids, splits)
    scale = full.abs().max().item()
    assert (chunked - full).abs().max().item() <= 1e-5 * scale


def test_chunks_of_one_token_equal_full_forward():
    # every kind, rotary interpolation, L > 128 so the MR tail is full; one token at a time is decoding
    model = model_of(tiny("SMLA", rotary_scale=8.0))
    ids = random_ids(2, 140, seed=5)
    with torch.inference_mode():
        full = model(ids)
    chunked, state = run_chunked(model, ids, [1] * 140)
    assert (chunked - full).abs().max().item() <= 1e-5 * full.abs().max().item()
    kinds = {"S": {"featurizer_tail", "filter_tail"}, "M": {"featurizer_tail", "filter_tail"},
             "L": {"featurizer_tail", "sigma"}, "A": {"k", "v"}}
    for layer, kind in zip(state.layers, "SMLA"):
        assert set(layer) == kinds[kind]
    assert state.layers[1]["filter_tail"].shape == (2, 127, 32)
    assert state.layers[2]["sigma"].shape == (2, 32, 16) and state.layers[2]["sigma"].dtype == torch.float32
    assert state.layers[3]["k"].shape == (2, 2, 140, 16)


def test_state_clone_and_select_continue_identically():
    model = model_of(tiny("SMLA"))
    ids = random_ids(3, 60, seed=6)
    state = model.new_state(3)
    with torch.inference_mode():
        model(ids[:, :40], state)
        copy = state.clone()
        row = state.select(torch.tensor([2]))
        a = model(ids[:, 40:], state)
        b = model(ids[:, 40:], copy)
        c = model(ids[2:, 40:], row)
    assert torch.equal(a, b)
    torch.testing.assert_close(c, a[2:], rtol=1e-5, atol=1e-5)
    assert copy.position == 60 and row.batch_size == 1 and copy.nbytes() > 0


# --- building blocks -----------------------------------------------------------------------------------

def test_rmsnorm_adds_eps_to_the_rms():
    norm = RMSNorm(8, eps=0.5)
    with torch.no_grad():
        norm.scale.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    expect = norm.scale * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + 0.5)  # not sqrt(mean + eps)
    torch.testing.assert_close(norm(x), expect)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_gelu_only_in_block_zero():
    model = StripedHyena2(PRESETS["debug"])
    assert [b.mlp.gelu for b in model.blocks] == [True] + [False] * (len(model.blocks) - 1)
    mlp = GatedMLP(4, 6, gelu=True)
    a = torch.randn(1, 2, 4)
    torch.testing.assert_close(mlp(a), mlp.l3(F.gelu(mlp.l1(a)) * mlp.l2(a)))


def test_forward_shapes_and_tied_unembedding():
    model = model_of(PRESETS["debug_odd"])
    ids = random_ids(2, 33)
    with torch.no_grad():
        logits = model(ids)
        hidden = model.hidden_states(ids)
        tied = hidden @ model.embedding.weight.t()
    assert logits.shape == (2, 33, 512) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, tied)
    assert not any(n.startswith("unembed") for n, _ in model.named_parameters())


def test_hidden_states_capture():
    model = model_of(PRESETS["debug"])
    ids = random_ids(1, 20)
    names = ["blocks.0", "blocks.3.mlp", "blocks.6", "final"]
    capture = dict.fromkeys(names)
    with torch.no_grad():
        out = model.hidden_states(ids, capture=capture)
        plain = model.hidden_states(ids)
        normed = model.norm(capture["blocks.6"])
        x, _ = model.blocks[0](model.embedding(ids))  # blocks.0 is the residual stream after block 0
    assert all(capture[n] is not None and capture[n].shape == (1, 20, 64) for n in names)
    assert torch.equal(capture["final"], out) and torch.equal(out, plain)
    torch.testing.assert_close(normed, out)
    assert torch.equal(capture["blocks.0"], x)


def test_cast_keeps_poles_residues_and_inv_freq_fp32():
    model = model_of(PRESETS["debug"]).cast(torch.bfloat16)
    fp32 = ("log_poles", "residues", "inv_freq")
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    assert {n for n, t in tensors if t.dtype == torch.float32} == {n for n, _ in tensors if n.endswith(fp32)}
    assert {t.dtype for n, t in tensors if not n.endswith(fp32)} == {torch.bfloat16}
    assert model.dtype == torch.bfloat16
    with torch.inference_mode():
        logits = model(random_ids(1, 40))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_init_is_reproducible_and_sane():
    a = model_of(PRESETS["debug"], seed=3).state_dict()
    b = model_of(PRESETS["debug"], seed=3).state_dict()
    c = model_of(PRESETS["debug"], seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embedding.weight"], c["embedding.weight"])
    for name, t in a.items():
        assert torch.isfinite(t).all(), name
        if name.endswith("log_poles"):
            assert (t < 0).all(), name  # poles exp(lambda) inside the unit interval
    # random weights give a near-uniform but not degenerate next-byte distribution
    with torch.inference_mode():
        logp = model_of(PRESETS["debug"]).forward(random_ids(1, 64)).log_softmax(-1)
    assert logp.std() > 0 and torch.isfinite(logp).all()


def test_block_kinds_follow_the_layout():
    from evo2lite.mixers import Attention, HyenaLR, HyenaMR, HyenaSE

    model = StripedHyena2(dataclasses.replace(PRESETS["debug"], layout="ALMS"))
    assert [type(b.mixer) for b in model.blocks] == [Attention, HyenaLR, HyenaMR, HyenaSE]
    assert model.blocks[0].mlp.gelu  # block 0 keeps GELU whatever its kind (spec §2.2)


def test_cached_lr_filter_follows_parameter_changes():
    """Inference keeps the last Hyena-LR filter; an in-place change, a load or a cast must rebuild it."""
    model = model_of(tiny("L"), seed=5)
    ids = random_ids(2, 50)
    with torch.no_grad():
        before = model(ids)
        assert torch.equal(model(ids), before)  # served from the cache
        model.blocks[0].mixer.filter.log_poles.mul_(0.5)
        after = model(ids)
    assert not torch.allclose(after, before)
    fresh = model_of(tiny("L"), seed=5)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(ids), after)
