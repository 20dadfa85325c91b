"""evo2lite embed in memory bounded by the chunk, not the record (issue #9): lazy reference slices,
per-chunk token ids, running sums for pooling, per-token / per-window rows spilled to disk and copied
into the output in blocks; the non-DNA warning; the exact-mode KV check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from evo2lite.apps import embed_reduce
from evo2lite.apps.embed import embed
from evo2lite.apps.embed_io import embed_file
from evo2lite.apps.embed_reduce import DiskRows, Strand
from evo2lite.config import ModelConfig
from evo2lite.errors import InputError
from evo2lite.model import StripedHyena2, init_weights_
from evo2lite.pipelines.windows import reverse_complement
from evo2lite.tokenizer import to_bytes

TINY = dict(layout="SA", d_model=8, num_heads=1, d_mlp=8, num_se_groups=1, num_mr_groups=1, name="tiny")


@pytest.fixture(scope="module")
def model():
    return init_weights_(StripedHyena2(ModelConfig(**TINY)), 3).eval()


def random_dna(n: int, seed: int = 0) -> bytes:
    return np.frombuffer(b"ACGT", np.uint8)[np.random.default_rng(seed).integers(0, 4, n)].tobytes()


def write_fasta(path: Path, records: dict[str, bytes], width: int = 60) -> Path:
    with open(path, "wb") as fh:
        for name, seq in records.items():
            fh.write(b">" + name.encode() + b"\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i:i + width] + b"\n")
    return path


def test_disk_rows_read_write_and_blocks(tmp_path):
    rows = DiskRows(tmp_path, (10, 3), np.float32)
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing to clean up
    assert np.array_equal(rows[2:4], np.zeros((2, 3)))
    rows[1:3] = np.arange(6).reshape(2, 3)
    rows[9:10] = 7
    got = np.concatenate([block for _, block in rows.blocks(block_rows=4)])
    want = np.zeros((10, 3), np.float32)
    want[1:3], want[9] = np.arange(6).reshape(2, 3), 7
    assert np.array_equal(got, want) and [a for a, _ in rows.blocks(block_rows=4)] == [0, 4, 8]
    with pytest.raises(TypeError):
        rows[[1, 2]]
    rows.close()


def test_strand_pieces_equal_the_whole_strand():
    seq = b"ACGTTNacgtRYKMacg"
    fwd, rev = Strand(seq, False), Strand(seq, True)
    whole_rev = to_bytes(reverse_complement(seq))
    assert b"".join(fwd.text(a, min(a + 4, len(seq))) for a in range(0, len(seq), 4)) == to_bytes(seq)
    assert b"".join(rev.text(a, min(a + 5, len(seq))) for a in range(0, len(seq), 5)) == whole_rev
    tagged = Strand(b"|d__bacteria|acgt", False)  # a tag is upper-cased whole, across chunk boundaries
    assert tagged.text(0, 5) + tagged.text(5, 17) == b"|D__BACTERIA|ACGT"


@pytest.mark.parametrize("rc", [False, True])
def test_spilled_rows_equal_in_memory_results(tmp_path, model, monkeypatch, rc):
    """Every array spilled to disk (threshold 0) gives the same files as arrays kept in memory."""
    seqs = {"r1": random_dna(700, 1), "r2": random_dna(301, 2)}
    fasta = write_fasta(tmp_path / "in.fa", seqs)
    layer = "final"
    want_tok = [embed(model, s.decode(), layers=layer, rc_average=rc, chunk_size=128) for s in seqs.values()]
    want_max = [embed(model, s.decode(), layers=layer, rc_average=rc, pool="max") for s in seqs.values()]
    want_win = [embed(model, s.decode(), layers=layer, rc_average=rc, stride=50, chunk_size=90)
                for s in seqs.values()]
    monkeypatch.setattr(embed_reduce, "SPILL_BYTES", 0)
    monkeypatch.setattr(embed_reduce, "BLOCK_BYTES", 100)  # a few rows per block
    common = dict(model=model, layers=layer, rc_average=rc)
    embed_file(fasta, tmp_path / "t.npz", chunk_size=128, compression="none", **common)
    embed_file(fasta, tmp_path / "m.h5", pool="max", **common)
    embed_file(fasta, tmp_path / "w.h5", stride=50, chunk_size=90, **common)
    embed_file(fasta, tmp_path / "w.parquet", stride=50, chunk_size=90, out_dtype="float16", **common)
    with np.load(tmp_path / "t.npz") as z:
        for name, want in zip(seqs, want_tok):
            np.testing.assert_allclose(z[f"{name}/{layer}"], want, rtol=1e-5, atol=1e-6)
    with h5py.File(tmp_path / "m.h5") as f, h5py.File(tmp_path / "w.h5") as g:
        for name, mx, win in zip(seqs, want_max, want_win):
            np.testing.assert_allclose(f[name][layer][()], mx, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(g[name][layer][()], win, rtol=1e-5, atol=1e-6)
    table = pq.read_table(tmp_path / "w.parquet").to_pydict()
    vectors = np.array(table[layer], dtype=np.float32)
    np.testing.assert_allclose(vectors, np.concatenate(want_win), rtol=2e-3, atol=2e-3)  # float16 out
    assert table["window_start"][:3] == [0, 50, 100] and len(table["id"]) == 14 + 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fa", "m.h5", "t.npz", "w.h5", "w.parquet"]


def test_non_dna_input_warns_once_with_counts(tmp_path, model, capsys):
    protein = b"MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEG"
    fasta = write_fasta(tmp_path / "mix.fa", {"dna": random_dna(200), "prot1": protein, "prot2": protein * 2})
    summary = embed_file(fasta, tmp_path / "e.h5", model=model, pool="mean", batch_size=2)
    err = capsys.readouterr().err.strip().splitlines()
    assert summary["not_dna"] == 2 and len(err) == 1
    assert err[0].startswith("evo2lite: warning: 2 of 3 record(s) do not look like DNA") and "A/C/G/T/N" in err[0]
    embed_file(write_fasta(tmp_path / "dna.fa", {"x": random_dna(100) + b"NNNNRYacgt"}), tmp_path / "d.h5",
               model=model, pool="mean", window_mode=True, chunk_size=32)
    assert capsys.readouterr().err == ""


def test_exact_mode_refuses_a_kv_cache_larger_than_free_memory(model, monkeypatch):
    from evo2lite.apps import embed as embed_module

    monkeypatch.setattr(embed_module, "_free_memory", lambda device: 10_000)
    with pytest.raises(InputError, match="KV cache in exact mode.*--window-mode"):
        embed(model, "ACGT" * 1000, layers="final")
    embed(model, "ACGT" * 1000, layers="blocks.0")  # no attention block runs: no KV cache
    embed(model, "ACGT" * 1000, layers="final", window_mode=True, chunk_size=256)


_CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from evo2lite.apps.embed_io import embed_file
    from evo2lite.config import ModelConfig
    from evo2lite.model import StripedHyena2, init_weights_

    fasta, out, region, config, run = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    net = init_weights_(StripedHyena2(ModelConfig(**json.loads(config))), 3).eval()
    options = dict(model=net, layers="blocks.0", window_mode=True, chunk_size=16384, window_overlap=64)
    embed_file(fasta, out + ".warm.h5", regions=[region.split(":")[0] + ":1-20000"], pool="mean", **options)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = embed_file(fasta, out, regions=[region], **json.loads(run), **options)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps({"bases": summary["bases"], "growth": growth}))
""")


def _child(fasta, out, region, **run):
    """Run _CHILD in a fresh interpreter, so its peak RSS is its own."""
    return subprocess.run([sys.executable, "-c", _CHILD, str(fasta), str(out), region, json.dumps(TINY),
                           json.dumps(run)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_whole_60mb_chromosome_in_bounded_memory(tmp_path):
    """A 60 Mb contig embedded whole (`-r chrZ`, window mode, mean pool, CPU): peak RSS grows by a bounded
    amount. Before the fix the record was fetched whole and encoded as int64 (60 MB + 480 MB)."""
    n = 60_000_000
    fasta = write_fasta(tmp_path / "big.fa", {"chrZ": random_dna(n)}, width=80)
    result = _child(fasta, tmp_path / "out.h5", "chrZ", pool="mean")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bases"] == n
    assert report["growth"] < 120e6, report  # bounded by the window batch, not the 60 Mb record
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["chrZ"]["blocks.0"].shape == (8,) and f["chrZ"].attrs["end"] == n


def test_per_token_rows_of_a_long_record_are_spilled_not_held(tmp_path):
    """4 Mb per token (128 MB of float32 rows) to .npz: the rows go through a spill file, so peak RSS grows
    by far less than the array (before the fix it was allocated whole)."""
    n = 4_000_000
    fasta = write_fasta(tmp_path / "big.fa", {"chrZ": random_dna(n, 5)})
    result = _child(fasta, tmp_path / "out.npz", "chrZ:1", compression="none")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bases"] == n and report["growth"] < 64e6, report
    with np.load(tmp_path / "out.npz", mmap_mode=None) as z:
        rows = z["chrZ_1-4000000/blocks.0"]
        assert rows.shape == (n, 8) and np.isfinite(rows[-5:]).all() and np.abs(rows[-5:]).sum() > 0
