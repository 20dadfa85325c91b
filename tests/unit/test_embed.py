"""evo2lite embed: exact streaming equals the full forward pass for every chunk size, layers, pooling,
reverse-complement averaging, window mode, batching (debug model, fp32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evo2lite.apps.embed import (Embedder, Embedding, SeqInput, default_layer, embed, layer_names,
                                 resolve_layers, window_plan)
from evo2lite.checkpoint import load_model
from evo2lite.errors import InputError
from evo2lite.kernels.attention import reference as attention_reference
from evo2lite.pipelines.windows import reverse_complement
from evo2lite.tokenizer import encode


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("debug", random_init=True, seed=1)


def random_dna(n: int, seed: int = 0) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), n))


def full_pass(model, seq: str, layers: list[str]) -> dict[str, np.ndarray]:
    capture = dict.fromkeys(layers)
    with torch.inference_mode():
        model.hidden_states(encode(seq)[None], capture=capture)
    return {k: v[0].float().numpy() for k, v in capture.items()}


def assert_close(got: np.ndarray, want: np.ndarray, rel: float = 2e-5) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(np.asarray(got, dtype=np.float64) - want).max())
    assert err <= rel * scale, f"max |diff| {err:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("length,chunks", [(40, [1, 3, 7, 40]), (300, [16, 127, 128, 299]),
                                           (1000, [100, 333, 1000, 4096])])
def test_streamed_equals_full_pass_for_every_chunk_size(model, length, chunks):
    layers = layer_names(model.config)
    seq = random_dna(length, seed=length)
    want = full_pass(model, seq, layers)
    for chunk in chunks:
        got = embed(model, seq, layers=layers, chunk_size=chunk)
        for name in layers:
            assert got[name].shape == (length, model.config.d_model)
            assert_close(got[name], want[name])


def test_streaming_with_blocked_cpu_attention(model, monkeypatch):
    """Without the fused CPU kernel, a chunk of queries against a long cache goes in query blocks."""
    seq = random_dna(600, seed=3)
    want = full_pass(model, seq, ["final"])["final"]

    def unavailable(*args):
        raise AttributeError("no fused kernel")

    monkeypatch.setattr(attention_reference, "_cache_then_chunk_cpu", unavailable)
    monkeypatch.setattr(attention_reference, "MASK_BUDGET", 2000)  # forces blocks of 2000 // T queries
    assert_close(embed(model, seq, layers="final", chunk_size=250), want)


def test_other_shape_and_rotary_interpolation():
    net = load_model("debug_odd", random_init=True, seed=2)
    seq = random_dna(500, seed=5)
    layers = ["blocks.0", "blocks.3.mlp", "final"]
    want = full_pass(net, seq, layers)
    got = embed(net, seq, layers=layers, chunk_size=77)
    for name in layers:
        assert_close(got[name], want[name])


def test_only_the_blocks_needed_run(model, monkeypatch):
    """Embedding blocks.2 runs blocks 0-2 only; the record's state reserves its KV cache once."""
    calls = []
    for i, block in enumerate(model.blocks):
        monkeypatch.setattr(block.mlp, "forward", lambda a, f=block.mlp.forward, i=i: calls.append(i) or f(a))
    seq = random_dna(200, seed=7)
    want = full_pass(model, seq, ["blocks.2", "blocks.1.mlp"])
    calls.clear()
    got = embed(model, seq, layers=["blocks.2", "blocks.1.mlp"], chunk_size=64)
    assert sorted(set(calls)) == [0, 1, 2]
    for name in want:
        assert_close(got[name], want[name])


def test_layer_names_and_aliases(model):
    cfg = model.config
    n = cfg.num_blocks
    assert resolve_layers(cfg, None) == [default_layer(cfg)]
    assert default_layer(cfg) == "blocks.5"
    assert resolve_layers(cfg, ["blocks.3.mlp.l3", "blocks-2", "norm", "blocks.-1", "final"]) == \
        ["blocks.3.mlp", "blocks.2", "final", f"blocks.{n - 1}"]
    assert len(layer_names(cfg)) == 2 * n + 1
    for bad in ("blocks.7", "block.1", "blocks.1.attn", "", "blocks.-8"):
        with pytest.raises(InputError, match="valid layers: blocks.0 .. blocks.6"):
            resolve_layers(cfg, bad)


def test_default_layer_of_evo2_7b_is_blocks_26():
    from evo2lite.config import PRESETS

    assert default_layer(PRESETS["evo2_7b"]) == "blocks.26"


def test_pooling_matches_per_token(model):
    seq = random_dna(500, seed=11)
    tokens = embed(model, seq, layers="blocks.4", chunk_size=128)
    assert_close(embed(model, seq, layers="blocks.4", pool="mean", chunk_size=128), tokens.mean(0))
    assert_close(embed(model, seq, layers="blocks.4", pool="max", chunk_size=128), tokens.max(0))
    assert_close(embed(model, seq, layers="blocks.4", pool="last", chunk_size=128), tokens[-1])
    windows = embed(model, seq, layers="blocks.4", stride=64, chunk_size=100)
    assert windows.shape == (8, model.config.d_model)  # 7 full windows and one of 52 bases
    want = np.stack([tokens[i:i + 64].mean(0) for i in range(0, 500, 64)])
    assert_close(windows, want)


def test_rc_average_realigns_the_reverse_strand(model):
    seq = random_dna(300, seed=13)
    fwd = embed(model, seq, layers="blocks.3", chunk_size=1000)
    rev = embed(model, reverse_complement(seq), layers="blocks.3", chunk_size=1000)
    aligned = (fwd + rev[::-1]) / 2
    got = embed(model, seq, layers="blocks.3", rc_average=True, chunk_size=70)
    assert_close(got, aligned)
    assert_close(embed(model, seq, layers="blocks.3", rc_average=True, pool="mean"), aligned.mean(0))
    assert_close(embed(model, seq, layers="blocks.3", rc_average=True, pool="max", chunk_size=90),
                 aligned.max(0))
    assert_close(embed(model, seq, layers="blocks.3", rc_average=True, pool="last"), (fwd[-1] + rev[-1]) / 2)
    strided = embed(model, seq, layers="blocks.3", rc_average=True, stride=100, chunk_size=45)
    assert_close(strided, aligned.reshape(3, 100, -1).mean(1))


def test_window_mode(model):
    seq = random_dna(700, seed=17)
    exact = embed(model, seq, layers="final")
    # a record no longer than the window is one window: identical to the exact pass
    assert_close(embed(model, seq, layers="final", chunk_size=700, window_mode=True), exact)
    got = embed(model, seq, layers="final", chunk_size=256, window_mode=True, window_overlap=64, batch_size=3)
    assert got.shape == exact.shape
    plan = window_plan(700, 256, 64)
    assert [(k0, k1) for _, _, k0, k1 in plan] == [(0, 256), (256, 448), (448, 640), (640, 700)]
    for w0, w1, k0, k1 in plan:
        assert w1 - w0 == 256 and k0 - w0 >= min(64, k0)
        window = full_pass(model, seq[w0:w1], ["final"])["final"]
        assert_close(got[k0:k1], window[k0 - w0:k1 - w0])
    assert not np.allclose(got[300:], exact[300:], atol=1e-3)  # it is an approximation
    both = embed(model, seq[:200], layers="final", chunk_size=256, window_mode=True, rc_average=True)
    assert_close(both, embed(model, seq[:200], layers="final", rc_average=True))


@pytest.mark.parametrize("overlap", [0, 1, 99])
def test_window_plan_tiles(overlap):
    for length in (1, 99, 100, 101, 250, 1001):
        plan = window_plan(length, 100, overlap)
        kept = [(k0, k1) for _, _, k0, k1 in plan]
        assert kept[0][0] == 0 and kept[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))
        for w0, w1, k0, _ in plan:
            assert 0 <= w0 <= k0 and w1 <= length and (k0 == 0 or k0 - w0 >= overlap)


def test_batches_of_short_records_match_one_by_one(model):
    seqs = {f"r{i}": random_dna(n, seed=i) for i, n in enumerate([50, 200, 120, 7, 300])}
    one = embed(model, seqs, layers=["blocks.1", "final"], chunk_size=256)
    batched = embed(model, seqs, layers=["blocks.1", "final"], chunk_size=256, batch_size=3)
    pooled = embed(model, seqs, layers="final", chunk_size=256, batch_size=4, pool="mean", rc_average=True)
    for a, b, p, seq in zip(one, batched, pooled, seqs.values()):
        for name in a:
            assert_close(b[name], a[name])
        fwd = embed(model, seq, layers="final")
        rev = embed(model, reverse_complement(seq), layers="final")
        assert_close(p, (fwd.mean(0) + rev.mean(0)) / 2)


def test_api_shapes_iterator_and_soft_masking(model):
    seq = random_dna(90, seed=19)
    assert embed(model, seq, layers="blocks.0").shape == (90, 64)
    assert set(embed(model, seq, layers=["blocks.0", "final"])) == {"blocks.0", "final"}
    out = embed(model, [seq, seq[:10]], pool="mean")
    assert [o.shape for o in out] == [(64,), (64,)]
    items = list(embed(model, [("a", seq), SeqInput("b", seq, contig="chr1", start=100)], iterator=True,
                       layers="final", stride=40))
    assert all(isinstance(e, Embedding) for e in items)
    assert (items[1].name, items[1].contig, items[1].start, items[1].end, items[1].index) == ("b", "chr1", 100, 190, 1)
    assert items[0].arrays["final"].shape == (3, 64)
    assert_close(embed(model, seq.lower(), layers="final"), embed(model, seq, layers="final"), rel=0)
    assert embed(model, seq, layers="final", out_dtype="float16").dtype == np.float16


def test_bad_input(model):
    with pytest.raises(InputError, match="empty"):
        embed(model, [("ok", "ACGT"), ("empty", "")])
    with pytest.raises(InputError, match="--pool"):
        Embedder(model, pool="median")
    with pytest.raises(InputError, match="--stride"):
        Embedder(model, pool="mean", stride=10)
    with pytest.raises(InputError, match="--window-overlap"):
        Embedder(model, window_mode=True, chunk_size=10, window_overlap=10)
