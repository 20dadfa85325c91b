"""Sequence scoring (evo2lite/apps/score.py): batching does not change scores, sliding windows score every
position exactly once with at least W/2 left context, short records give NaN with a warning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evo2lite.apps.score import (score_sequences, sliding_windows, token_logprobs, write_per_position,
                                 write_score_table)
from evo2lite.checkpoint import load_model
from evo2lite.errors import Evo2LiteError
from evo2lite.tokenizer import encode


@pytest.fixture(scope="module")
def model():
    return load_model("debug", random_init=True, seed=3)


def random_dna(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), size=n))


def manual_logprobs(model, ids: torch.Tensor, start: int, end: int) -> np.ndarray:
    """log P(ids[p] | ids[start:p]) for p in start+1 .. end-1, straight from one forward pass."""
    with torch.inference_mode():
        logits = model(ids[None, start:end]).double()
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    return logp[torch.arange(end - start - 1), ids[start + 1: end]].numpy()


# --- batching --------------------------------------------------------------------------------------------

def test_batched_equals_one_by_one(model):
    records = [(f"r{i}", random_dna(n, i)) for i, n in enumerate([5, 130, 64, 2, 97, 250, 31])]
    together = score_sequences(model, records, batch_size=4)
    for rec, got in zip(records, together):
        alone = score_sequences(model, [rec], batch_size=1)[0]
        assert got.name == alone.name and got.length == alone.length == len(rec[1])
        assert got.sum_logprob == pytest.approx(alone.sum_logprob, rel=1e-5)
        assert got.mean_logprob == pytest.approx(alone.mean_logprob, rel=1e-5)
        np.testing.assert_allclose(got.per_position[1:], alone.per_position[1:], rtol=1e-5, atol=1e-6)


def test_scores_are_the_next_token_logprobs(model):
    seq = random_dna(120, 7)
    result = score_sequences(model, [("x", seq)])[0]
    ids = encode(seq)
    expected = manual_logprobs(model, ids, 0, len(ids))
    assert math.isnan(result.per_position[0]) and result.per_position.shape == (120,)
    np.testing.assert_allclose(result.per_position[1:], expected, rtol=1e-5, atol=1e-6)
    assert result.sum_logprob == pytest.approx(expected.sum(), rel=1e-6)
    assert result.mean_logprob == pytest.approx(expected.sum() / 119, rel=1e-6)
    assert all(v < 0 for v in result.per_position[1:])


def test_lower_case_scores_like_upper_case(model):
    seq = random_dna(80, 8)
    upper, lower = score_sequences(model, [("u", seq), ("l", seq.lower())])
    assert upper.sum_logprob == pytest.approx(lower.sum_logprob, rel=1e-6)


def test_bytes_records_and_order(model):
    records = [("long", random_dna(90, 1).encode()), ("short", b"ACG"), ("mid", random_dna(40, 2))]
    results = score_sequences(model, records, batch_size=2)
    assert [r.name for r in results] == ["long", "short", "mid"]  # input order, whatever the batching
    assert [r.length for r in results] == [90, 3, 40]


def test_token_logprobs():
    logits = torch.randn(2, 5, 512, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(1))
    out = token_logprobs(logits, ids)
    assert out.shape == (2, 4) and out.dtype == torch.float32
    full = torch.log_softmax(logits, -1)
    assert torch.allclose(out[1, 2], full[1, 2, ids[1, 3]])


# --- sliding windows -------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 2, 3, 10, 63, 64, 65, 95, 96, 97, 300, 1000, 1001])
@pytest.mark.parametrize("context", [2, 3, 7, 64, 65])
def test_sliding_windows_score_each_position_once_with_half_context(length, context):
    windows = sliding_windows(length, context)
    counts = np.zeros(max(length, 1), dtype=int)
    for start, end, first in windows:
        assert 0 <= start < first <= end <= length
        assert end - start <= context
        counts[first:end] += 1
        # every scored position p sees p - start bases of left context: all there are (start = 0), or at
        # least W/2
        assert start == 0 or first - start >= context / 2
    assert counts[0] == 0
    assert (counts[1:length] == 1).all()
    if length > context:
        assert all(end - start == context for start, end, _ in windows)  # full windows only


def test_sliding_windows_are_as_documented():
    assert sliding_windows(300, 64) == [(0, 64, 1), (32, 96, 64), (64, 128, 96), (96, 160, 128),
                                        (128, 192, 160), (160, 224, 192), (192, 256, 224), (224, 288, 256),
                                        (236, 300, 288)]
    assert sliding_windows(64, 64) == [(0, 64, 1)]
    assert sliding_windows(1, 64) == []


def test_long_record_equals_manual_window_by_window(model):
    length, W = 300, 64
    seq = random_dna(length, 9)
    ids = encode(seq)
    result = score_sequences(model, [("long", seq), ("short", seq[:50])], context=W, batch_size=3)[0]
    expected = np.full(length, np.nan)
    # the windows of test_sliding_windows_are_as_documented, written out independently
    expected[1:64] = manual_logprobs(model, ids, 0, 64)
    for end in range(96, 289, 32):
        expected[end - 32: end] = manual_logprobs(model, ids, end - 64, end)[-32:]
    expected[288:300] = manual_logprobs(model, ids, 236, 300)[-12:]
    assert not np.isnan(expected[1:]).any()
    np.testing.assert_allclose(result.per_position[1:], expected[1:], rtol=1e-5, atol=1e-6)
    assert result.sum_logprob == pytest.approx(expected[1:].sum(), rel=1e-6)
    # windowed scores differ from the full-context ones (the window really limits the context)
    full = score_sequences(model, [("long", seq)], context=1024)[0]
    assert not np.allclose(full.per_position[100:], result.per_position[100:], rtol=1e-5)


def test_progress_counts_every_scored_position(model):
    seen = []
    score_sequences(model, [("a", random_dna(200, 1)), ("b", "ACGT"), ("c", "A")], context=64,
                    batch_size=2, progress=seen.append)
    assert sum(seen) == 199 + 3


# --- short records and bad arguments -----------------------------------------------------------------------

def test_records_shorter_than_two_bases_are_nan_with_a_warning(model, capsys):
    results = score_sequences(model, [("empty", ""), ("one", "A"), ("two", "AC")])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "'empty'" in err[0] and "'one'" in err[1] and all("warning" in line for line in err)
    assert math.isnan(results[0].sum_logprob) and math.isnan(results[0].mean_logprob)
    assert math.isnan(results[1].sum_logprob) and math.isnan(results[1].mean_logprob)
    assert results[0].length == 0 and results[1].length == 1 and results[1].per_position.shape == (1,)
    assert math.isfinite(results[2].sum_logprob) and results[2].sum_logprob == results[2].mean_logprob


def test_bad_arguments(model):
    with pytest.raises(Evo2LiteError, match="context"):
        score_sequences(model, [("a", "ACGT")], context=1)
    with pytest.raises(Evo2LiteError, match="batch-size"):
        score_sequences(model, [("a", "ACGT")], batch_size=0)
    assert score_sequences(model, []) == []


# --- writers -----------------------------------------------------------------------------------------------

def test_writers(model, tmp_path):
    import io

    results = score_sequences(model, [("seq1", "ACGTACGT"), ("seq2", "GGA"), ("tiny", "A")])
    out = io.StringIO()
    write_score_table(results, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "name\tlength\tsum_logprob\tmean_logprob"
    assert [line.split("\t")[:2] for line in lines[1:]] == [["seq1", "8"], ["seq2", "3"], ["tiny", "1"]]
    assert lines[3].split("\t")[2:] == ["nan", "nan"]
    assert float(lines[1].split("\t")[2]) == pytest.approx(results[0].sum_logprob, abs=1e-6)

    write_per_position(results, tmp_path / "pp.bedGraph")
    rows = (tmp_path / "pp.bedGraph").read_text().splitlines()
    assert rows[0].startswith("track type=bedGraph")
    body = [r.split("\t") for r in rows[1:]]
    assert [(r[0], int(r[1]), int(r[2])) for r in body] == \
        [("seq1", p, p + 1) for p in range(1, 8)] + [("seq2", 1, 2), ("seq2", 2, 3)]
    assert float(body[0][3]) == pytest.approx(results[0].per_position[1], abs=1e-6)

    write_per_position(results, tmp_path / "pp.npz")
    with np.load(tmp_path / "pp.npz") as data:
        assert sorted(data.files) == ["0:seq1", "1:seq2", "2:tiny"]
        np.testing.assert_array_equal(data["0:seq1"], results[0].per_position)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pp.bedGraph", "pp.npz"]  # no temp files left
