"""evo2lite.plots and `evo2lite plot`: the numbers behind each figure (track alignment for SNVs and indels,
PCA, k-mer spectra, ORFs) against independent computations, and the drawn data read back from the axes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from evo2lite import plots
from evo2lite.apps.score import score_sequences
from evo2lite.checkpoint import load_model
from evo2lite.errors import Evo2LiteError, InputError

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def model():
    return load_model("debug", random_init=True, seed=3)


def random_dna(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list("ACGT"), size=n))


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    seq = random_dna(900, 1)
    path = tmp_path_factory.mktemp("ref") / "ref.fa"
    path.write_text(">c1 test\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    return path, seq


def nan_equal(a, b, rtol=1e-6):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)) and \
        np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=rtol, atol=1e-9)


# --- variant parsing and the track data ------------------------------------------------------------------

def test_parse_variant():
    assert plots.parse_variant("20:1,546,804:g>A") == ("20", 1546803, "G", "A")
    assert plots.parse_variant("17:TC>T") == (None, 16, "TC", "T")
    assert plots.parse_variant("HLA:1:5:A>AT") == ("HLA:1", 4, "A", "AT")
    assert plots.parse_variant("20:1546804:G:a") == ("20", 1546803, "G", "A")
    for bad in ("20:0:A>C", "20:5:A", "20:x:A>C", "5:A>Q", "A>C", "20:5:>C", "5:A:C", "20:5:A:"):
        with pytest.raises(InputError):
            plots.parse_variant(bad)


def test_track_region_matches_score_sequences(model, genome):
    path, seq = genome
    track = plots.likelihood_track_data(model, path, "c1", 300, 420, flank=100)
    want = score_sequences(model, [("w", seq[200:420])])[0].per_position[100:]
    assert track.start == 300 and nan_equal(track.ref_logp, want) and not np.isnan(track.ref_logp).any()
    assert track.alt_logp is None and track.delta is None
    first = plots.likelihood_track_data(model, path, "c1", 0, 50, flank=100)  # no room for a flank
    assert np.isnan(first.ref_logp[0]) and nan_equal(first.ref_logp, score_sequences(model, [("w", seq[:50])])[0].per_position)


@pytest.mark.parametrize("ref_len,alt", [(1, "SNV"), (1, "INS"), (4, "DEL")])
def test_track_alt_alignment(model, genome, ref_len, alt):
    path, seq = genome
    pos = 350
    ref = seq[pos:pos + ref_len]
    alt = {"SNV": "ACGT".replace(ref, "")[0], "INS": ref + "GGT", "DEL": ref[0]}[alt]
    track = plots.likelihood_track_data(model, path, "c1", 300, 420, (pos, ref, alt), flank=100)
    ref_win, alt_win = seq[200:420], seq[200:pos] + alt + seq[pos + ref_len:420]
    r, a = (s.per_position for s in score_sequences(model, [("r", ref_win), ("a", alt_win)]))
    o = pos - 200
    n = min(len(ref), len(alt))
    # before the variant: identical (causal model); the overlapping allele bases; after: shifted by the length change
    assert nan_equal(track.alt_logp[:o - 100 + n], a[100:o + n])
    assert nan_equal(track.alt_logp[o - 100 + len(ref):], a[o + len(alt):])
    assert np.isnan(track.alt_logp[o - 100 + n:o - 100 + len(ref)]).all()  # deleted bases
    assert np.allclose(track.delta[:o - 100], 0.0, atol=1e-5)  # fp32 FFT round-off only
    assert track.total_delta == pytest.approx(np.nansum(a) - np.nansum(r), rel=1e-9, abs=1e-9)
    assert abs(track.delta[o - 100 + len(ref) + 2]) > 0  # the change reaches the bases after it


def test_track_input_errors(model, genome):
    path, seq = genome
    wrong = "ACGT".replace(seq[350], "")[0]
    with pytest.raises(InputError, match="does not match the reference"):
        plots.likelihood_track_data(model, path, "c1", 300, 420, f"c1:351:{wrong}>{seq[350]}")
    with pytest.raises(InputError, match="outside the region"):
        plots.likelihood_track_data(model, path, "c1", 300, 420, f"c1:500:{seq[499]}>N")
    with pytest.raises(InputError, match="outside contig"):
        plots.likelihood_track_data(model, path, "c1", 800, 1000)
    with pytest.raises(InputError, match="not in"):
        plots.likelihood_track_data(model, path, "c2", 0, 10)


def test_track_figure_draws_the_data(model, genome):
    path, seq = genome
    track = plots.likelihood_track_data(model, path, "c1", 300, 420, f"c1:351:{seq[350]}>{seq[350]}T")
    fig = plots.likelihood_track(track)
    top, bottom = fig.axes
    ref_line, alt_line = top.lines[:2]
    assert np.array_equal(ref_line.get_xdata(), np.arange(301, 421))  # 1-based on the axis
    assert nan_equal(ref_line.get_ydata(), track.ref_logp)
    assert nan_equal(alt_line.get_ydata(), track.alt_logp)
    assert nan_equal(bottom.lines[0].get_ydata(), track.alt_logp - track.ref_logp)
    assert any(np.allclose(line.get_xdata(), 351) for line in top.lines[2:])  # the variant marker
    assert top.get_xlim() == (301, 420)
    assert f"{track.total_delta:+.3f}" in top.get_title()
    smoothed = plots.likelihood_track(track, smooth=5).axes[0].lines[0].get_ydata()
    i = 50
    assert smoothed[i] == pytest.approx(np.mean(track.ref_logp[i - 2:i + 3]))


# --- score distributions, PCA -----------------------------------------------------------------------------

def test_score_distribution_points_and_counts():
    scores = [-3.0, -2.5, np.nan, 0.1, 0.2, 0.3, -0.4]
    classes = ["nonsense", "nonsense", "nonsense", "synonymous", "synonymous", "synonymous", "missense"]
    fig = plots.score_distribution(scores, classes, order=["synonymous", "missense", "nonsense", "splice"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["synonymous\n(n=3)", "missense\n(n=1)", "nonsense\n(n=2)", "splice\n(n=0)"]
    points = [c.get_offsets() for c in ax.collections]
    assert [len(p) for p in points] == [3, 1, 2, 0]
    assert np.allclose(np.sort(points[2][:, 1]), [-3.0, -2.5])
    assert np.all(np.abs(points[0][:, 0] - 1) < 0.2) and np.all(np.abs(points[2][:, 0] - 3) < 0.2)
    with pytest.raises(ValueError):
        plots.score_distribution([1.0], ["a", "b"])


def test_pca_against_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1]) @ np.linalg.qr(rng.normal(size=(5, 5)))[0]
    coords, ratio = plots.pca(x, 2)
    centred = x - x.mean(0)
    w, v = np.linalg.eigh(np.cov(centred, rowvar=False))
    w, v = w[::-1], v[:, ::-1]
    want = centred @ v[:, :2]
    for j in range(2):  # equal up to each component's sign
        assert np.allclose(np.abs(coords[:, j]), np.abs(want[:, j]), atol=1e-9)
    assert np.allclose(ratio, w[:2] / w.sum())
    fig = plots.embedding_projection(x, ["a"] * 30 + ["b"] * 30)
    ax = fig.axes[0]
    drawn = np.concatenate([c.get_offsets() for c in ax.collections])
    assert np.allclose(drawn, coords)
    assert f"{100 * ratio[0]:.1f} %" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (30)", "b (30)"]


# --- sequence statistics -----------------------------------------------------------------------------------

def test_gc_and_kmers():
    assert plots.gc_content("GGCCAT") == pytest.approx(4 / 6)
    assert plots.gc_content("ggNNat") == pytest.approx(0.5)
    assert np.isnan(plots.gc_content("NNN"))
    seq = random_dna(500, 5) + "N" + random_dna(20, 6)
    kmers, freq = plots.kmer_spectrum(seq, 2)
    assert kmers[:3] == ["AA", "AC", "AG"] and len(kmers) == 16
    windows = [seq[i:i + 2] for i in range(len(seq) - 1) if "N" not in seq[i:i + 2]]
    assert np.allclose(freq, [windows.count(m) / len(windows) for m in kmers])
    _, both = plots.kmer_spectrum(["AAAA", "CC"], 2)
    assert both[0] == pytest.approx(3 / 4) and both[5] == pytest.approx(1 / 4)


def brute_longest_orf(seq: str) -> int:
    best = 0
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    for s in (seq, "".join(comp[b] for b in reversed(seq))):
        for m in re.finditer("(?=ATG)", s):
            i = m.start()
            n = 0
            while i + 3 * n + 3 <= len(s):
                n += 1
                if s[i + 3 * n - 3:i + 3 * n] in ("TAA", "TAG", "TGA"):
                    break
            best = max(best, n)
    return best


def test_longest_orf():
    assert plots.longest_orf("CCATGAAATAGCC") == 3
    assert plots.longest_orf("CTATTTCATCC") == 3  # ATGAAATAG on the reverse strand
    assert plots.longest_orf("ATGAAACCC") == 3  # runs off the end
    assert plots.longest_orf("CCCCCC") == 0
    for seed in range(20):
        seq = random_dna(300, 100 + seed)
        assert plots.longest_orf(seq) == brute_longest_orf(seq)


def test_generation_stats_panels():
    genome = random_dna(3000, 7)
    groups = {"T=1.0": [random_dna(200, s) for s in range(4)], "T=0.5": ["ATGAAA" * 30 + "TAG"] * 3}
    fig = plots.generation_stats(groups, genome, k=2, num_windows=50)
    gc_ax, km_ax, orf_ax = fig.axes
    assert [t.get_text() for t in gc_ax.get_xticklabels()] == ["reference", "T=1.0", "T=0.5"]
    gc_points = [c.get_offsets()[:, 1] for c in gc_ax.collections]
    assert len(gc_points[0]) == 50
    assert np.allclose(gc_points[1], [plots.gc_content(s) for s in groups["T=1.0"]])
    _, ref_freq = plots.kmer_spectrum(genome, 2)
    _, gen_freq = plots.kmer_spectrum(groups["T=0.5"], 2)
    offsets = km_ax.collections[1].get_offsets()
    assert np.allclose(offsets[:, 0], ref_freq) and np.allclose(offsets[:, 1], gen_freq)
    orf_points = [c.get_offsets()[:, 1] for c in orf_ax.collections]
    assert np.allclose(orf_points[2], 61)
    with pytest.raises(ValueError):
        plots.generation_stats({"empty": []}, genome)


# --- saving, and the CLI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_save_figure_formats(tmp_path, suffix, magic):
    fig = plots.score_distribution([1.0, 2.0], ["a", "b"])
    out = plots.save_figure(fig, tmp_path / f"f{suffix}")
    assert out.read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{suffix}"]  # no temp file left
    with pytest.raises(Evo2LiteError, match=r"\.png, \.svg or \.pdf"):
        plots.save_figure(fig, tmp_path / "f.jpg")
    with pytest.raises(Evo2LiteError, match="exists"):
        plots.save_figure(fig, out, force=False)


def test_cli_plot_track(tmp_path, genome):
    from evo2lite.cli import app

    path, seq = genome
    runner = CliRunner()
    out = tmp_path / "track.svg"
    res = runner.invoke(app, ["plot", "track", str(path), "-r", "c1:301-420", "--variant",
                              f"c1:351:{seq[350]}>{seq[350]}T", "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes().startswith(b"<?xml") and "ALT - REF" in res.output
    res = runner.invoke(app, ["plot", "track", "-f", str(path), "-r", "c1:301-420", "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 2 and "exists" in res.output  # no --force
    for args, message in [
        (["-r", "c1:301-420", "--variant", "c1:351:Q>A"], "POS:REF>ALT"),
        (["-r", "c1:301-420", "--variant", f"c1:351:{'ACGT'.replace(seq[350], '')[0]}>A"], "does not match"),
        (["-r", "c1:301-4200"], "outside contig"),
        (["-r", "c1:1-5", "-r", "c1:8-9"], "exactly one region"),
        (["-r", "c1:1-50", "-o", str(tmp_path / "x.jpg")], ".png, .svg or .pdf"),
    ]:
        outs = [] if "-o" in args else ["-o", str(tmp_path / "e.png")]
        res = runner.invoke(app, ["plot", "track", str(path), *args, *outs, "--device", "cpu"])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output
        assert not (tmp_path / "e.png").exists()
