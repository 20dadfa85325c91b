"""Invariants of the inference engine (CPU, fp32): cached decoding == one full forward pass, chunked
prefill == one-shot prefill, ragged batches == rows alone, constant-size recurrent state."""

from __future__ import annotations

import pytest
import torch

from evo2lite.config import PRESETS
from evo2lite.inference import Decoder, InferenceState, forward_chunk, prefill, state_nbytes
from evo2lite.model import StripedHyena2, init_weights_

RTOL = 1e-4  # relative to the largest |logit| of the position


def _model(preset: str = "debug", seed: int = 0) -> StripedHyena2:
    return init_weights_(StripedHyena2(PRESETS[preset]), seed).eval()


# model (preset "debug", seed 0): tests/conftest.py
@pytest.fixture(scope="module")
def model_odd():
    return _model("debug_odd", 1)  # rotary interpolation x32, odd widths, 6 MR groups


def _ids(B: int, L: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (B, L), generator=torch.Generator().manual_seed(seed))


def _full(model, ids):
    with torch.inference_mode():
        return model(ids).float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()).abs().amax(-1) / b.float().abs().amax(-1)).max())


@pytest.mark.parametrize("prompt_len", [1, 2, 5, 6, 7, 127, 128, 129, 1000])
def test_cached_decoding_equals_full_forward(model, prompt_len):
    steps = 6
    ids = _ids(2, prompt_len + steps, seed=prompt_len)
    full = _full(model, ids)
    logits, state = prefill(model, ids[:, :prompt_len], chunk_len=256, capacity=prompt_len + steps)
    assert _rel(logits, full[:, prompt_len - 1]) < RTOL
    decoder = Decoder(model, state, capacity=prompt_len + steps)
    for t in range(prompt_len, prompt_len + steps):
        assert _rel(decoder.step(ids[:, t]), full[:, t]) < RTOL, f"position {t}"


@pytest.mark.parametrize("prompt_len", [1, 3, 6, 130])
def test_cached_decoding_rotary_interpolation_and_odd_shapes(model_odd, prompt_len):
    steps = 5
    ids = _ids(1, prompt_len + steps, seed=7)
    full = _full(model_odd, ids)
    logits, state = prefill(model_odd, ids[:, :prompt_len], chunk_len=64)
    assert _rel(logits, full[:, prompt_len - 1]) < RTOL
    decoder = Decoder(model_odd, state, capacity=prompt_len + steps)
    for t in range(prompt_len, prompt_len + steps):
        assert _rel(decoder.step(ids[:, t]), full[:, t]) < RTOL


@pytest.mark.parametrize("chunk_len, length", [(1, 60), (7, 400), (128, 400), (333, 400)])
def test_chunked_prefill_equals_one_shot(model, chunk_len, length):
    ids = _ids(2, length, seed=1)
    one_logits, one = prefill(model, ids, chunk_len=10_000)
    logits, chunked = prefill(model, ids, chunk_len=chunk_len)
    assert _rel(logits, one_logits) < RTOL
    assert chunked.position == one.position == length
    for a, b in zip(chunked.layers, one.layers):
        assert a.keys() == b.keys()
        for key in ("featurizer_tail", "filter_tail", "sigma", "k", "v"):
            if key in b:
                scale = b[key].float().abs().max()
                assert float((a[key].float() - b[key].float()).abs().max()) <= 1e-5 * scale + 1e-6, key


def test_forward_chunk_all_logits_and_interop_with_model_forward(model):
    ids = _ids(2, 300, seed=2)
    full = _full(model, ids)
    state = InferenceState.empty(model.config.num_blocks, 2)
    parts = [forward_chunk(model, ids[:, :100], state),
             forward_chunk(model, ids[:, 100:150], state, logits="all")]
    # the model's own stateful forward continues a state the engine built, and the other way round
    with torch.inference_mode():
        parts.append(model(ids[:, 150:220], state).float())
    parts.append(forward_chunk(model, ids[:, 220:300], state))
    assert _rel(torch.cat(parts, dim=1), full) < RTOL
    assert state.position == 300


def test_kv_buffer_is_written_in_place(model):
    ids = _ids(1, 64, seed=3)
    _, state = prefill(model, ids[:, :40], capacity=64)
    attn = [i for i, k in enumerate(model.config.layout) if k == "A"][0]
    buffer = state.layers[attn]["k_cache"]
    assert buffer.shape[2] >= 64 and state.layers[attn]["k"].data_ptr() == buffer.data_ptr()
    for t in range(40, 64):
        forward_chunk(model, ids[:, t:t + 1], state, logits="none")
    assert state.layers[attn]["k_cache"] is buffer  # no reallocation while within capacity
    forward_chunk(model, _ids(1, 100, seed=4), state, logits="none")  # past capacity: grows once
    assert state.layers[attn]["k"].shape[2] == 164 and state.layers[attn]["k_cache"].shape[2] == 192


def test_ragged_batch_decodes_like_rows_alone(model):
    lengths, steps = [3, 50, 17], 5
    seqs = [_ids(1, n + steps, seed=10 + n) for n in lengths]
    parts = []
    for s, n in zip(seqs, lengths):
        _, st = prefill(model, s[:, :n])
        parts.append((st, [0]))
    decoder = Decoder(model, parts, capacity=max(lengths) + steps)
    fulls = [_full(model, s)[0] for s in seqs]
    for j in range(steps):
        tokens = torch.stack([s[0, n + j] for s, n in zip(seqs, lengths)])
        logits = decoder.step(tokens)
        for b, (full, n) in enumerate(zip(fulls, lengths)):
            assert _rel(logits[b:b + 1], full[n + j:n + j + 1]) < RTOL
    with pytest.raises(ValueError, match="different positions"):
        decoder.to_state()


def test_repeated_rows_and_state_roundtrip(model):
    ids = _ids(1, 40, seed=5)
    _, state = prefill(model, ids[:, :20])
    decoder = Decoder(model, [(state, [0, 0, 0])], capacity=40)
    full = _full(model, ids)[0]
    for t in range(20, 30):
        logits = decoder.step(ids[0, t].repeat(3))
        assert _rel(logits, full[t].expand(3, -1)) < RTOL
    continued = decoder.to_state()
    assert continued.position == 30 and continued.batch_size == 3
    rest = forward_chunk(model, ids[:, 30:].repeat(3, 1), continued)
    assert _rel(rest, full[30:].expand(3, -1, -1)) < RTOL


def test_select_keeps_only_cached_positions(model):
    _, state = prefill(model, _ids(2, 30, seed=6), capacity=500)
    one = state.select(torch.tensor([1]))
    attn = [i for i, k in enumerate(model.config.layout) if k == "A"][0]
    assert "k_cache" not in one.layers[attn] and one.layers[attn]["k"].shape == (1, 4, 30, 16)
    assert one.nbytes() < state.nbytes()


def test_recurrent_state_is_constant_in_context(model):
    sizes = []
    for n in (10, 300, 1200):
        _, st = prefill(model, _ids(1, n, seed=n), chunk_len=256, capacity=n)
        by_kind = st.nbytes_by_kind()
        expect = state_nbytes(model.config, 1, n, dtype=torch.float32)
        assert by_kind["hyena"] == expect["hyena"]
        assert by_kind["kv"] >= expect["kv"]  # capacity is rounded up to the KV alignment
        sizes.append(by_kind["hyena"])
    assert len(set(sizes)) == 1


def test_bf16_decoding_tracks_the_bf16_forward(model):
    net = _model("debug").cast(torch.bfloat16)
    ids = _ids(1, 80, seed=8)
    full = _full(net, ids)
    _, state = prefill(net, ids[:, :70])
    decoder = Decoder(net, state, capacity=80)
    for t in range(70, 80):
        logits = decoder.step(ids[:, t])
        assert logits.dtype == torch.bfloat16
        assert _rel(logits, full[:, t]) < 0.05


def test_split_kv_attention_equals_sdpa(model):
    lengths, steps = [70, 5], 6
    seqs = [_ids(1, n + steps, seed=20 + n) for n in lengths]
    parts = [(prefill(model, s[:, :n])[1], [0]) for s, n in zip(seqs, lengths)]
    sdpa = Decoder(model, parts, capacity=300)
    split = Decoder(model, [(st.clone(), rows) for st, rows in parts], capacity=300, attention="split")
    assert split.capacity == 320 and split.split_block == 64  # 5 blocks of keys
    for j in range(steps):
        tokens = torch.stack([s[0, n + j] for s, n in zip(seqs, lengths)])
        assert _rel(split.step(tokens), sdpa.step(tokens)) < 1e-5


def test_decoder_capacity_is_enforced(model):
    _, state = prefill(model, _ids(1, 5, seed=9))
    decoder = Decoder(model, state, capacity=6)  # rounded up to the KV alignment (64)
    for _ in range(decoder.capacity - 5):
        decoder.step(torch.tensor([65]))
    with pytest.raises(RuntimeError, match="capacity"):
        decoder.step(torch.tensor([65]))


@pytest.mark.slow
def test_compiled_step_equals_eager(model):
    ids = _ids(1, 30, seed=11)
    _, s1 = prefill(model, ids[:, :20])
    _, s2 = prefill(model, ids[:, :20])
    eager = Decoder(model, s1, capacity=30)
    compiled = Decoder(model, s2, capacity=30, compile=True)
    for t in range(20, 30):
        assert _rel(compiled.step(ids[:, t]), eager.step(ids[:, t])) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_step_equals_eager_step(dtype):
    net = _model("debug").cast(dtype).cuda()
    ids = _ids(2, 200, seed=12).cuda()
    _, s1 = prefill(net, ids[:, :150])
    _, s2 = prefill(net, ids[:, :150])
    eager = Decoder(net, s1, capacity=200, cuda_graph=False)
    graph = Decoder(net, s2, capacity=200, cuda_graph=True)
    full = _full(net, ids)
    for t in range(150, 200):
        a, b = eager.step(ids[:, t]).float(), graph.step(ids[:, t]).float()
        assert torch.equal(a, b) or _rel(b, a) < 1e-5
        if dtype == torch.float32:
            assert _rel(b, full[:, t]) < RTOL


def test_decoder_adopts_a_larger_explicit_kv_buffer(model):
    """A prefill reserved more KV room than the decoder asks for: the decoder adopts the buffer (no copy)
    and takes its whole size as its capacity, so its masks match the buffer (issue #9)."""
    steps = 8
    ids = _ids(1, 20 + steps, seed=21)
    full = _full(model, ids)
    _, state = prefill(model, ids[:, :20], capacity=500)
    attn = model.config.layout.index("A")
    buffer = state.layers[attn]["k_cache"]
    decoder = Decoder(model, state, capacity=20 + steps)
    assert decoder.buffers[attn]["k_cache"] is buffer and decoder.capacity == buffer.shape[2]
    for t in range(20, 20 + steps):
        assert _rel(decoder.step(ids[:, t]), full[:, t]) < RTOL, f"position {t}"


def test_decoder_adopts_a_buffer_grown_by_half(model):
    """Chunks past the reserved capacity grow the buffer by 1.5x; a decoder built afterwards with the
    capacity it needs adopts the grown (larger) buffer and still decodes exactly."""
    steps = 5
    ids = _ids(1, 100 + steps, seed=22)
    full = _full(model, ids)
    _, state = prefill(model, ids[:, :64], capacity=64)
    forward_chunk(model, ids[:, 64:100], state, logits="none")  # 100 > 64: grows to round_up(96, 64)=128
    attn = model.config.layout.index("A")
    assert state.layers[attn]["k_cache"].shape[2] == 128
    decoder = Decoder(model, state, capacity=100 + steps)
    assert decoder.capacity == 128
    for t in range(100, 100 + steps):
        assert _rel(decoder.step(ids[:, t]), full[:, t]) < RTOL, f"position {t}"


def test_set_backend_reference_reaches_the_decode_step(model, monkeypatch):
    """set_backend(model, "reference") forces the plain-PyTorch path in cached decode too: an "auto" decoder
    hands hyena_step backend "reference" for those mixers (and "auto" otherwise)."""
    import evo2lite.inference.decode as decode
    from evo2lite.mixers import set_backend

    seen = []
    real = decode.hyena_step

    def spy(*args, **kwargs):
        seen.append(kwargs["backend"])
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "hyena_step", spy)
    ids = _ids(1, 12, seed=5)
    _, state = prefill(model, ids[:, :10])
    Decoder(model, state.clone(), capacity=12, cuda_graph=False).step(ids[:, 10])
    assert seen and set(seen) == {"auto"}
    set_backend(model, "reference")
    try:
        seen.clear()
        Decoder(model, state.clone(), capacity=12, cuda_graph=False).step(ids[:, 10])
        assert seen and set(seen) == {"reference"}
    finally:
        set_backend(model, "auto")
