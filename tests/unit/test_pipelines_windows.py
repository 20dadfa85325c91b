"""Reverse complement, N runs and windows."""

from pathlib import Path

import numpy as np
import pytest

from evo2lite.pipelines.fasta import read_sequences
from evo2lite.pipelines.windows import (
    find_n_runs,
    iter_windows,
    reverse_complement,
    reverse_complement_array,
    split_on_n_runs,
)

FIX = Path(__file__).resolve().parents[2] / "data" / "fixtures"


def test_reverse_complement_iupac_and_case():
    assert reverse_complement("ACGT") == "ACGT"
    assert reverse_complement("AAcgN") == "NcgTT"
    assert reverse_complement("RYKMSWBDHVN") == "NBDHVWSKMRY"
    assert reverse_complement("rykmswbdhvn") == "nbdhvwskmry"
    assert reverse_complement(b"AC-GT\x00") == b"\x00AC-GT"  # gaps and EOS are kept, only moved
    assert reverse_complement("U") == "A"
    assert reverse_complement("") == ""


def test_reverse_complement_is_an_involution_on_real_dna():
    for rec in read_sequences(FIX / "dicty_cdna20.fa"):
        rc = reverse_complement(rec.seq)
        assert rc != rec.seq and reverse_complement(rc) == rec.seq
        lower = np.frombuffer(rec.seq, dtype=np.uint8) >= ord("a")
        assert np.array_equal(np.frombuffer(rc, dtype=np.uint8) >= ord("a"), lower[::-1])  # case mask reversed


def test_reverse_complement_array_matches_bytes():
    (rec,) = read_sequences(FIX / "lambda.fa")
    arr = np.frombuffer(rec.seq, dtype=np.uint8)
    assert reverse_complement_array(arr).tobytes() == reverse_complement(rec.seq)
    batch = np.stack([arr[:100], arr[100:200]])
    out = reverse_complement_array(batch)
    assert out[1].tobytes() == reverse_complement(rec.seq[100:200])
    with pytest.raises(ValueError):
        reverse_complement_array(arr.astype(np.int64))


def test_n_runs_on_real_gap():
    (rec,) = read_sequences(FIX / "chr20_61188369_61288369.fa")
    assert find_n_runs(rec.seq, 100) == [(25000, 75000)]
    assert split_on_n_runs(len(rec.seq), [(25000, 75000)]) == [(0, 25000), (75000, 100000)]


def test_n_runs_edges_and_threshold():
    seq = b"NNNACGTnnnnACNNNNN"
    assert find_n_runs(seq) == [(0, 3), (7, 11), (13, 18)]
    assert find_n_runs(seq, 4) == [(7, 11), (13, 18)]
    assert find_n_runs(b"ACGT", 1) == [] and find_n_runs(b"", 1) == []
    assert split_on_n_runs(18, [(0, 3), (13, 18)]) == [(3, 13)]
    assert split_on_n_runs(5, [(0, 5)]) == []


def test_iter_windows_cover_everything():
    assert list(iter_windows(10, 4)) == [(0, 4), (4, 8), (6, 10)]
    assert list(iter_windows(10, 4, 3)) == [(0, 4), (3, 7), (6, 10)]
    assert list(iter_windows(3, 4)) == [(0, 3)]
    assert list(iter_windows(8, 4)) == [(0, 4), (4, 8)]
    assert list(iter_windows(0, 4)) == []
    for length in range(1, 40):
        covered = set()
        for a, b in iter_windows(length, 7, 5):
            covered.update(range(a, b))
            assert b - a == min(7, length)
        assert covered == set(range(length))
