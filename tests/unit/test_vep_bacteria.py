"""benchmarks/vep_bacteria.py on a planted GenBank genome: variant classes by the genetic code, the
substitution-matched AUROC and the in-sample Markov controls against brute-force recomputations, the shared
draw of --draw-reach, and one model run end to end (the tiny random model)."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import vep_bacteria as vb  # noqa: E402
import vep_human as vh  # noqa: E402

pytest.importorskip("Bio")


@pytest.fixture(scope="module")
def genbank(tmp_path_factory):
    """A 12 kb random genome with seven genes of 200 codons, alternating strands (table 11)."""
    from Bio.Seq import Seq
    from Bio.SeqFeature import FeatureLocation, SeqFeature
    from Bio.SeqRecord import SeqRecord
    from Bio import SeqIO

    rng = np.random.default_rng(1)
    code = vb._codon_table()
    sense = [c for c, aa in code.items() if aa != "*" and c != "ATG"]
    genome = list("".join(rng.choice(list("ACGT"), 12_000)))
    features = []
    for g, start in enumerate(range(1_000, 11_000, 1_650)):
        cds = "ATG" + "".join(rng.choice(sense, 198)) + "TAA"
        strand = 1 if g % 2 == 0 else -1
        genome[start:start + len(cds)] = cds if strand == 1 else cds.translate(vb._COMP)[::-1]
        features.append(SeqFeature(FeatureLocation(start, start + len(cds), strand=strand), type="CDS",
                                   qualifiers={"locus_tag": [f"g{g}"]}))
    record = SeqRecord(Seq("".join(genome)), id="PLANTED.1", name="PLANTED", description="planted genes",
                       features=features, annotations={"molecule_type": "DNA"})
    path = tmp_path_factory.mktemp("gb") / "planted.gbk"
    SeqIO.write(record, path, "genbank")
    return path


def test_variant_classes_follow_the_genetic_code(genbank):
    _, genome, sites = vb.coding_sites(genbank)
    code = vb._codon_table()
    assert len(sites) == 7 * 198 * 3  # every position of every inner codon
    for s in sites[:: 37]:
        # re-translate the codon holding the site on its gene's strand, with and without the change
        g = s["pos"]
        for alt, cls in s["alts"].items():
            mutated = genome[:g] + alt + genome[g + 1:]
            start = 1_000 + 1_650 * int(s["gene"][1:])
            seqs = [x[start:start + 600] for x in (genome, mutated)]
            if s["strand"] == -1:
                seqs = [x.translate(vb._COMP)[::-1] for x in seqs]
            k = [i for i in range(600) if seqs[0][i] != seqs[1][i]][0] // 3 * 3
            ref_aa, alt_aa = code[seqs[0][k:k + 3]], code[seqs[1][k:k + 3]]
            assert cls == ("syn" if alt_aa == ref_aa else "stop" if alt_aa == "*" else "other")


def _brute_matched(rows, scores):
    """Substitution-matched AUROC of -score by every (stop, syn) pair of the same substitution type."""
    num = den = 0.0
    for sub in {vh.substitution(r["ref"], r["alt"]) for r in rows}:
        pos = [-scores[i] for i, r in enumerate(rows) if r["class"] == "stop" and vh.substitution(r["ref"], r["alt"]) == sub]
        neg = [-scores[i] for i, r in enumerate(rows) if r["class"] == "syn" and vh.substitution(r["ref"], r["alt"]) == sub]
        if pos and neg:
            wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
            num += wins  # weight n_pos * n_neg times the class AUROC = the pair count of wins
            den += len(pos) * len(neg)
    return num / den


def test_controls_and_shared_draw(genbank, tmp_path, capsys):
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    common = [str(genbank), "--no-model", "--sites", "40", "--markov-orders", "0", "2", "--draw-reach", "700"]
    assert vb.main([*common, "--upstream", "600", "--downstream", "100", "-o", str(out_a)]) == 0
    assert vb.main([*common, "--upstream", "300", "--downstream", "300", "-o", str(out_b)]) == 0
    a, b = json.loads(out_a.read_text()), json.loads(out_b.read_text())
    # the same reach draws the same sites whatever the window
    assert [(v["pos"], v["alt"]) for v in a["variants"]] == [(v["pos"], v["alt"]) for v in b["variants"]]
    rows = a["variants"]
    assert {"stop", "syn"} <= {r["class"] for r in rows}
    for order in (0, 2):
        res = a["markov_in_sample"][f"order_{order}"]
        scores = [r[f"markov{order}"] for r in rows]
        assert res["auroc_substitution_matched"] == pytest.approx(_brute_matched(rows, scores), abs=1e-12)
    # order 0 scores a change by its two bases only: inside one substitution type every score ties
    assert a["markov_in_sample"]["order_0"]["auroc_substitution_matched"] == 0.5
    # an order-2 delta recomputed from the genome's own counts (both strands, add-alpha 1)
    _, genome, _ = vb.coding_sites(genbank)
    both = genome + "N" + genome.translate(vb._COMP)[::-1]
    counts = {}
    for i in range(len(both) - 2):
        kmer = both[i:i + 3]
        if "N" not in kmer:
            counts[kmer] = counts.get(kmer, 0) + 1

    def ll(seq):  # order-2 log-lik of positions 2..4 of a 5-mer
        total = 0.0
        for t in range(2, 5):
            ctx = seq[t - 2:t]
            tot = sum(counts.get(ctx + x, 0) for x in "ACGT")
            total += math.log((counts.get(seq[t - 2:t + 1], 0) + 1.0) / (tot + 4.0))
        return total

    for r in rows[:12]:
        p = r["pos"]
        ref = genome[p - 2:p + 3]
        alt = ref[:2] + r["alt"] + ref[3:]
        rc = lambda s: s.translate(vb._COMP)[::-1]
        expect = 0.5 * ((ll(alt) - ll(ref)) + (ll(rc(alt)) - ll(rc(ref))))
        assert r["markov2"] == pytest.approx(expect, abs=1e-9)


def test_draw_reach_shorter_than_the_window_is_refused(genbank):
    with pytest.raises(SystemExit, match="draw-reach"):
        vb.main([str(genbank), "--no-model", "--upstream", "600", "--downstream", "100", "--draw-reach", "500"])


def test_model_run_reports_both_aurocs(genbank, model_dir, tmp_path):
    out = tmp_path / "m.json"
    assert vb.main([str(genbank), "--model", model_dir, "--sites", "6", "--upstream", "64", "--downstream", "16",
                    "--batch-size", "4", "--markov-orders", "-o", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["variants"]
    deltas = [r["delta"] for r in rows]
    pos = [-d for r, d in zip(rows, deltas) if r["class"] == "stop"]
    neg = [-d for r, d in zip(rows, deltas) if r["class"] == "syn"]
    assert res["auroc_stop_vs_syn"] == pytest.approx(vb.auroc(np.array(pos), np.array(neg)))
    assert res["auroc_substitution_matched"] == pytest.approx(_brute_matched(rows, deltas), abs=1e-12)
    assert "markov_in_sample" not in res
