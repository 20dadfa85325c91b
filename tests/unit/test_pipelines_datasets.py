"""The training loader over shards built from the real fixtures: determinism, RC, weights, resume."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from evo2lite.errors import Evo2LiteError, InputError
from evo2lite.pipelines.corpus import build_corpus
from evo2lite.pipelines.datasets import PackedSplit, TokenWindowDataset
from evo2lite.pipelines.windows import reverse_complement

FIX = Path(__file__).resolve().parents[2] / "data" / "fixtures"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(FIX / "manifest.yaml", out, progress=False)
    return out


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(t.to(torch.uint8).tolist())


def test_sample_types_and_sequence_length_chosen_at_load(corpus_dir):
    for seq_len in (128, 1000, 4096):
        ds = TokenWindowDataset(corpus_dir, "train", seq_len, seed=0)
        item = next(iter(ds))
        assert item["input_ids"].dtype == torch.int64 and item["input_ids"].shape == (seq_len,)
        assert item["loss_weights"].dtype == torch.float32 and item["loss_weights"].shape == (seq_len,)
        assert set(item["input_ids"].unique().tolist()) <= set(b"ACGTNRYKMSWBDHV") | {0}


def test_windows_come_from_the_packed_stream(corpus_dir):
    data = PackedSplit(corpus_dir, "train")
    ds = TokenWindowDataset(corpus_dir, "train", 256, seed=3, rc_prob=0.0)
    for i in range(20):
        start, rc = ds.window(i)
        assert not rc
        assert _bytes(ds.sample(i)["input_ids"]) == bytes(data.tokens[start : start + 256])


def test_same_seed_same_samples_other_seed_different(corpus_dir):
    a = TokenWindowDataset(corpus_dir, "train", 512, seed=7)
    b = TokenWindowDataset(corpus_dir, "train", 512, seed=7)
    c = TokenWindowDataset(corpus_dir, "train", 512, seed=8)
    xa = [a.sample(i)["input_ids"] for i in range(30)]
    xb = [b.sample(i)["input_ids"] for i in range(30)]
    xc = [c.sample(i)["input_ids"] for i in range(30)]
    assert all(torch.equal(p, q) for p, q in zip(xa, xb))
    assert not all(torch.equal(p, q) for p, q in zip(xa, xc))


def test_an_epoch_covers_the_split_once(corpus_dir):
    ds = TokenWindowDataset(corpus_dir, "train", 500, seed=1)
    starts = [ds.window(i)[0] for i in range(ds.num_windows)]
    assert len(set(starts)) == ds.num_windows
    assert len({s % 500 for s in starts}) == 1  # one grid per epoch ...
    assert max(starts) + 500 <= ds.data.num_tokens
    nxt = [ds.window(ds.num_windows + i)[0] for i in range(ds.num_windows)]
    assert sorted(nxt) != sorted(starts)  # ... shifted in the next
    ev = TokenWindowDataset(corpus_dir, "val", 1000, shuffle=False)
    assert [ev.window(i) for i in range(3)] == [(0, False), (1000, False), (2000, False)]


def test_reverse_complement_flips_tokens_and_mask(corpus_dir):
    fwd = TokenWindowDataset(corpus_dir, "val", 300, seed=5, rc_prob=0.0, soft_mask_weight=0.1)
    rev = TokenWindowDataset(corpus_dir, "val", 300, seed=5, rc_prob=1.0, soft_mask_weight=0.1)
    found_masked = False
    for i in range(fwd.num_windows):
        f, r = fwd.sample(i), rev.sample(i)
        assert _bytes(r["input_ids"]) == reverse_complement(_bytes(f["input_ids"]))
        assert torch.equal(r["loss_weights"], f["loss_weights"].flip(0))
        found_masked |= bool((f["loss_weights"] < 1).any())
    assert found_masked  # the val split holds soft-masked Dictyostelium cDNA
    mixed = TokenWindowDataset(corpus_dir, "train", 300, seed=5, rc_prob=0.5)
    flips = [mixed.window(i)[1] for i in range(mixed.num_windows)]
    assert 0.3 < np.mean(flips) < 0.7


def test_soft_mask_weight(corpus_dir):
    data = PackedSplit(corpus_dir, "val")
    ds = TokenWindowDataset(corpus_dir, "val", 200, shuffle=False, soft_mask_weight=0.1)
    for i in range(ds.num_windows):
        start, _ = ds.window(i)
        w = ds.sample(i)["loss_weights"].numpy()
        m = np.asarray(data.mask[start : start + 200])
        assert np.allclose(w, np.where(m == 1, 0.1, 1.0))
    assert any((ds.sample(i)["loss_weights"] == 0.1).any() for i in range(ds.num_windows))
    plain = TokenWindowDataset(corpus_dir, "val", 200, shuffle=False)
    assert all(bool((plain.sample(i)["loss_weights"] == 1).all()) for i in range(plain.num_windows))


def test_resume_is_exact(corpus_dir):
    kw = dict(seed=11, rc_prob=0.5, soft_mask_weight=0.1)
    ref = TokenWindowDataset(corpus_dir, "train", 2000, **kw)
    ref_batches = [b for _, b in zip(range(40), ref.batches(4))]  # spans several epochs
    assert 40 * 4 > 2 * ref.num_windows

    first = TokenWindowDataset(corpus_dir, "train", 2000, **kw)
    it = first.batches(4)
    got = [next(it) for _ in range(17)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    del first, it
    resumed = TokenWindowDataset(corpus_dir, "train", 2000, **kw)
    resumed.load_state_dict(state)
    got += [b for _, b in zip(range(23), resumed.batches(4))]
    for a, b in zip(ref_batches, got):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["loss_weights"], b["loss_weights"])

    # the sample iterator and a DataLoader (no workers) keep the same position
    ds = TokenWindowDataset(corpus_dir, "train", 2000, **kw)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)
    for _, batch in zip(range(5), loader):
        pass
    assert ds.state_dict()["position"] == 20
    assert torch.equal(batch["input_ids"], ref_batches[4]["input_ids"])


def test_resume_refuses_other_settings(corpus_dir):
    ds = TokenWindowDataset(corpus_dir, "train", 256, seed=1)
    state = ds.state_dict()
    with pytest.raises(Evo2LiteError, match="seq_len"):
        TokenWindowDataset(corpus_dir, "train", 512, seed=1).load_state_dict(state)
    with pytest.raises(Evo2LiteError, match="seed"):
        TokenWindowDataset(corpus_dir, "train", 256, seed=2).load_state_dict(state)


def test_ranks_take_disjoint_samples(corpus_dir):
    one = TokenWindowDataset(corpus_dir, "train", 256, seed=4)
    r0 = TokenWindowDataset(corpus_dir, "train", 256, seed=4, rank=0, world_size=2)
    r1 = TokenWindowDataset(corpus_dir, "train", 256, seed=4, rank=1, world_size=2)
    for i in range(10):
        assert r0.window(i * 2) == one.window(i * 2)
        assert torch.equal(r0.sample(i)["input_ids"], one.sample(2 * i)["input_ids"])
        assert torch.equal(r1.sample(i)["input_ids"], one.sample(2 * i + 1)["input_ids"])


def test_missing_split_and_short_split_errors(corpus_dir, tmp_path):
    with pytest.raises(InputError, match="no 'val' split"):
        PackedSplit(tmp_path, "val")
    with pytest.raises(InputError, match="fewer than one window"):
        TokenWindowDataset(corpus_dir, "test", 100_000)


def test_loader_refuses_a_shard_holding_chr17(corpus_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(corpus_dir, bad)
    idx_path = bad / "train" / "index.json"
    idx = json.loads(idx_path.read_text())
    idx["entries"][0]["record"] = "NC_000017.11"
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(Evo2LiteError, match="chromosome 17"):
        TokenWindowDataset(bad, "train", 128)
