"""benchmarks/vep_human.py: derived CDS and variant classes on a planted gene (checked by re-splicing and
translating the mutated genome), the both-strand model and Markov deltas against plain full-window
log-likelihoods, the substitution-matched AUROC; and benchmarks/train_base_h200.sh end to end on a CPU (tiny)."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import vep_human as vh  # noqa: E402

CODE = vh.standard_code()
SENSE = [c for c, aa in CODE.items() if aa != "*" and c != "ATG"]


def _planted(rng, strand: str):
    """A genome with one 3-exon gene: CDS of 160 codons split over the exons, canonical GT..AG introns of
    1,400 bases. Returns (genome, gene, protein)."""
    cds = "ATG" + "".join(rng.choice(SENSE, 158)) + "TAA"
    utr5, utr3 = "CCTCCC", "GCCGCC"  # no ATG: the planted ORF is the longest
    tx = utr5 + cds + utr3
    cuts = [0, 150, 330, len(tx)]
    pieces = [tx[a:b] for a, b in zip(cuts, cuts[1:])]
    intron = lambda: "GT" + "".join(rng.choice(list("ACGT"), 1396)) + "AG"
    flank = "".join(rng.choice(list("ACGT"), 3000))
    gene_seq = pieces[0] + intron() + pieces[1] + intron() + pieces[2]
    local, p = [], 0  # exons inside gene_seq
    for piece in pieces:
        local.append((p, p + len(piece)))
        p += len(piece) + 1400
    if strand == "-":  # the same gene on the other strand: mirror the exons inside the gene's span
        gene_seq = vh.revcomp(gene_seq)
        local = sorted((len(gene_seq) - e, len(gene_seq) - s) for s, e in local)
    exons = [(len(flank) + s, len(flank) + e) for s, e in local]
    genome = flank + gene_seq + "".join(rng.choice(list("ACGT"), 3000))
    protein = "".join(CODE[cds[i:i + 3]] for i in range(0, len(cds), 3))
    return genome, {"strand": strand, "exons": exons}, protein


def _translate_gene(genome: str, gene: dict) -> str:
    tx = "".join(genome[s:e] for s, e in gene["exons"])
    tx = vh.revcomp(tx) if gene["strand"] == "-" else tx
    start = tx.index("ATG")
    return "".join(CODE.get(tx[i:i + 3], "X") for i in range(start, len(tx) - 2, 3))


@pytest.mark.parametrize("strand", ["+", "-"])
def test_planted_gene_sites_match_retranslation(strand):
    rng = np.random.default_rng(1 if strand == "+" else 2)
    genome, gene, protein = _planted(rng, strand)
    sites, info = vh.gene_sites(genome, 0, gene, CODE, min_codons=150, deep_intron=500)
    assert info["orf_codons"] == len(protein) and info["introns"] == 2
    coding = [s for s in sites if set(s["alts"].values()) <= {"syn", "stop", "other"}]
    assert len(coding) == 3 * (len(protein) - 2)  # every base of every codon but the start and the stop
    ref_protein = _translate_gene(genome, gene)[:len(protein)]
    assert ref_protein == protein
    seen = set()
    for s in coding:
        for alt, cls in s["alts"].items():
            assert alt != genome[s["pos"]]
            mutated = genome[:s["pos"]] + alt + genome[s["pos"] + 1:]
            new = "".join(CODE.get(c, "X") for c in _codons_of(mutated, gene))
            changed = [i for i, (a, b) in enumerate(zip(protein, new)) if a != b]
            expect = "syn" if not changed else ("stop" if new[changed[0]] == "*" else "other")
            assert cls == expect, (s["pos"], alt, cls, expect)
            seen.add(cls)
    assert seen == {"syn", "stop", "other"}
    splice = [s for s in sites if "splice" in s["alts"].values()]
    assert len(splice) == 8
    for s in splice:  # the two intron bases at each end, GT..AG on the gene strand
        assert any(s["pos"] in (e, e + 1, s1 - 2, s1 - 1) for (_, e), (s1, _) in zip(gene["exons"], gene["exons"][1:]))
    intron = [s["pos"] for s in sites if "intron" in s["alts"].values()]
    assert intron and all(min(abs(p - x) for ex in gene["exons"] for x in ex) >= 500 for p in intron)


def _codons_of(genome: str, gene: dict) -> list[str]:
    tx = "".join(genome[s:e] for s, e in gene["exons"])
    tx = vh.revcomp(tx) if gene["strand"] == "-" else tx
    start = tx.index("ATG", 0)
    return [tx[i:i + 3] for i in range(start, len(tx) - 2, 3)]


def test_standard_code_is_biopythons():
    from Bio.Data.CodonTable import unambiguous_dna_by_id

    table = unambiguous_dna_by_id[1]
    assert CODE == {**table.forward_table, **{s: "*" for s in table.stop_codons}}


def test_a_short_orf_gene_gives_no_sites():
    rng = np.random.default_rng(3)
    genome, gene, _ = _planted(rng, "+")
    sites, info = vh.gene_sites(genome, 0, gene, CODE, min_codons=500, deep_intron=500)
    assert sites == [] and info["orf_codons"] == 0


def test_markov_deltas_equal_full_window_loglik():
    rng = np.random.default_rng(4)
    order, alpha = 3, 0.5
    counts = rng.integers(0, 50, 4 ** (order + 1)).astype(np.int64)
    genome = "".join(rng.choice(list("ACGT"), 400))
    rows = [{"pos": int(p), "alt": b} for p in rng.integers(50, 350, 20) for b in "ACGT" if b != genome[p]]
    got = vh.markov_deltas(counts, order, alpha, genome, 0, rows)

    def loglik(seq):  # every position with a full context, the plain way
        idx = lambda s: sum("ACGT".index(c) << 2 * (len(s) - 1 - i) for i, c in enumerate(s))
        tot = counts.reshape(-1, 4).sum(1)
        return sum(math.log((counts[idx(seq[t - order:t + 1])] + alpha) / (tot[idx(seq[t - order:t])] + 4 * alpha))
                   for t in range(order, len(seq)))

    for r, d in zip(rows, got):
        lo, hi = r["pos"] - 40, r["pos"] + 40
        ref = genome[lo:hi]
        alt = ref[:40] + r["alt"] + ref[41:]
        want = 0.5 * ((loglik(alt) - loglik(ref)) + (loglik(vh.revcomp(alt)) - loglik(vh.revcomp(ref))))
        assert d == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_model_deltas_both_strands_equal_plain_window_loglik():
    from evo2lite.config import PRESETS
    from evo2lite.model import StripedHyena2, init_weights_
    from evo2lite.tokenizer import encode

    torch.manual_seed(0)
    model = init_weights_(StripedHyena2(PRESETS["debug"]), 0).eval()
    rng = np.random.default_rng(5)
    genome = "".join(rng.choice(list("ACGT"), 600))
    offset, up, down = 1000, 48, 16
    sites = [{"pos": offset + int(p), "ref": genome[p], "gene": "g",
              "alts": {b: "other" for b in "ACGT" if b != genome[p]}} for p in (100, 300, 301, 500)]
    rows = vh.model_deltas(model, genome, offset, sites, up, down, batch=3)
    assert len(rows) == 12

    def window_ll(seq: str) -> float:
        ids = encode(seq)[None]
        with torch.inference_mode():
            logp = model(ids).float().log_softmax(-1)
        return float(logp[0, :-1].gather(1, ids[0, 1:, None]).sum())

    for r in rows:
        p = r["pos"] - offset
        ref = genome[p - up:p + down]
        alt = ref[:up] + r["alt"] + ref[up + 1:]
        assert r["delta_fwd"] == pytest.approx(window_ll(alt) - window_ll(ref), abs=2e-4)
        rref = vh.revcomp(genome[p - down + 1:p + up + 1])
        ralt = vh.revcomp(genome[p - down + 1:p] + r["alt"] + genome[p + 1:p + up + 1])
        assert r["delta_rev"] == pytest.approx(window_ll(ralt) - window_ll(rref), abs=2e-4)
        assert r["delta"] == pytest.approx(0.5 * (r["delta_fwd"] + r["delta_rev"]))


def test_substitution_matched_auroc_removes_a_composition_only_signal():
    # positives: C>T scored low; negatives: T>C scored high (composition alone separates them); plus
    # C>A pairs (G>T is C>A on the other strand) that barely separate: only those count when matched
    rows, scores = [], []
    for i in range(10):
        rows += [{"ref": "C", "alt": "T", "class": "stop"}, {"ref": "T", "alt": "C", "class": "syn"}]
        scores += [-5.0 - i, 1.0 + i]
    for i in range(10):
        rows += [{"ref": "G", "alt": "T", "class": "stop"}, {"ref": "C", "alt": "A", "class": "syn"}]
        scores += [float(i), float(i) + 0.5]
    res = vh.aurocs(rows, np.array(scores))["stop_vs_syn"]
    assert res["n_pos"] == 20 and res["n_neg"] == 20
    assert res["auroc"] > 0.7
    assert res["auroc_substitution_matched"] == pytest.approx(vh.auroc(-np.arange(10.0), -np.arange(10.0) - 0.5))


def test_site_bootstrap_intervals(tmp_path):
    rng = np.random.default_rng(1)
    rows = [{"pos": i // 2, "ref": "C", "alt": "AT"[i % 2], "class": ("stop", "syn")[(i // 2) % 2]}
            for i in range(200)]
    separated = np.array([-5.0 if r["class"] == "stop" else 1.0 for r in rows])
    assert vh.site_bootstrap(rows, separated, reps=200)["stop_vs_syn"]["auroc"] == [1.0, 1.0]
    noise = rng.normal(size=len(rows))
    lo, hi = vh.site_bootstrap(rows, noise, reps=400)["stop_vs_syn"]["auroc"]
    point = vh.aurocs(rows, noise)["stop_vs_syn"]["auroc"]
    assert lo < point < hi and 0.1 < hi - lo < 0.4   # ~4 standard errors of an AUROC of 50 x 50 sites
    # two alternatives per site share it: resampling sites keeps them together, so a copy of every row
    # (twice the variants, the same sites) gives the same intervals
    doubled = rows + [dict(r) for r in rows]
    assert vh.site_bootstrap(doubled, np.concatenate([noise, noise]), reps=400)["stop_vs_syn"]["auroc"] == \
        pytest.approx([lo, hi], abs=1e-12)
    path = tmp_path / "out.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump({"variants": [{**r, "delta": float(d)} for r, d in zip(rows, noise)]}, fh)
    summary = vh.summarize([path], reps=400)[str(path)]["stop_vs_syn"]
    assert summary["auroc"] == pytest.approx([point, lo, hi])
    assert summary["n_pos"] == 100 and summary["n_neg"] == 100


def test_chr17_is_refused():
    with pytest.raises(SystemExit):
        vh.parse_region("chr17:0-1000")


def _dry_env(tmp_path, out: Path, **extra) -> dict:
    """The dry run's environment: a built fixture corpus and vep_human inputs with one planted gene."""
    from evo2lite.pipelines.corpus import build_corpus

    corpus = tmp_path / "corpus"
    if not corpus.exists():
        build_corpus(ROOT / "data" / "fixtures" / "manifest.yaml", corpus, progress=False, overwrite=True)
    vep_in = tmp_path / "vep"
    vep_in.mkdir(exist_ok=True)
    genome, gene, _ = _planted(np.random.default_rng(6), "+")
    with gzip.open(vep_in / "chr20_masked.fa.gz", "wt") as fh:
        fh.write(">chr20 planted\n" + "\n".join(genome[i:i + 60] for i in range(0, len(genome), 60)) + "\n")
    (vep_in / "hg19_RefSeq_exon_chr20.txt").write_text(
        "GeneID\tChr\tStart\tEnd\tStrand\n" + "".join(f"1\tchr20\t{s + 1}\t{e}\t+\n" for s, e in gene["exons"]))
    return dict(os.environ, OMP_NUM_THREADS="1", BASE_DRY="1", OUT=str(out), BASE_RUN_DIR=str(tmp_path / "run"),
                BASE_CORPUS=str(corpus), BASE_VEP_INPUTS=str(vep_in), BASE_VEP_REGION=f"20:0-{len(genome)}",
                BASE_HELD_SPLIT="val", **extra)


def _run_script(env: dict) -> subprocess.CompletedProcess:
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "train_base_h200.sh")], capture_output=True, text=True,
                         env=env, timeout=500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


EIGHT_FILES = sorted(["config.json", "heldout_human.json", "model.safetensors.part0", "model.safetensors.part1",
                      "run.log", "train_log.jsonl", "vep_human.json", "vep_human_small.json"])


@pytest.mark.slow
def test_train_base_script_dry_run(tmp_path):
    """The one-call GPU script on a CPU: train (tiny model, 25 s budget), bf16 export split in two parts that
    join to a loadable model, held-out bits and vep_human on a planted gene; the 8 output files."""
    from evo2lite.checkpoint import load_model

    out = tmp_path / "out"
    run = _run_script(_dry_env(tmp_path, out))
    assert sorted(p.name for p in out.iterdir()) == EIGHT_FILES
    joined = tmp_path / "joined"
    joined.mkdir()
    (joined / "model.safetensors").write_bytes(b"".join((out / f"model.safetensors.part{i}").read_bytes()
                                                        for i in (0, 1)))
    (joined / "config.json").write_bytes((out / "config.json").read_bytes())
    model = load_model(str(joined), device="cpu", dtype="float32")
    assert model.config.name == "evo2lite-base-dry"
    trained = load_model(str(tmp_path / "run" / "model"), device="cpu", dtype="float32")
    for (k, a), (_, b) in zip(model.state_dict().items(), trained.state_dict().items()):
        want = b if k.endswith(("log_poles", "residues", "inv_freq")) else b.to(torch.bfloat16).float()
        assert torch.equal(a, want), k
    held = json.loads((out / "heldout_human.json").read_text())
    assert held["positions"] > 0 and 0 < held["bits_per_base"] < 9
    vep = json.loads((out / "vep_human.json").read_text())
    assert vep["genes_with_cds"] == 1 and "stop_vs_syn" in vep["model"] and vep["model"]["context"] == 512
    small = json.loads((out / "vep_human_small.json").read_text())
    assert small["model"]["context"] == 2048
    assert [(v["pos"], v["alt"]) for v in small["variants"]] == [(v["pos"], v["alt"]) for v in vep["variants"]]
    assert "== vep_human: exit 0" in (out / "run.log").read_text()
    assert "fused Hyena kernels" not in run.stdout  # the CUDA-only check is skipped on the dry run


@pytest.mark.slow
def test_train_base_script_two_calls_resume(tmp_path):
    """The multi-call mode on a CPU: a first call lays out a 30-step schedule, stops on its 1 s slice with a
    checkpoint; the last call resumes that checkpoint (same schedule, no second start, no step trained twice),
    trains to step 30 and writes the 8 files; a next call without a first one fails with a message."""
    from evo2lite.apps.train import WarmupCosine

    lone = subprocess.run(["bash", str(ROOT / "benchmarks" / "train_base_h200.sh")], capture_output=True, text=True,
                          env={**_dry_env(tmp_path, tmp_path / "lone_out", BASE_PHASE="next"),
                               "BASE_RUN_DIR": str(tmp_path / "lone_run")}, timeout=60)
    assert lone.returncode == 1 and "no checkpoint of a first call" in lone.stdout
    first, last = tmp_path / "out_first", tmp_path / "out_last"
    common = dict(BASE_MAX_STEPS="30", BASE_TOTAL_S="1")  # BASE_MAX_STEPS wins over the 5.87 steps/s estimate
    _run_script(_dry_env(tmp_path, first, BASE_PHASE="first", BASE_SLICE_S="1", **common))
    assert sorted(p.name for p in first.iterdir()) == ["run.log", "train_log.jsonl"]
    log1 = [json.loads(line) for line in (first / "train_log.jsonl").read_text().splitlines()]
    stop = [r["step"] for r in log1 if r.get("event") == "time_budget_stop"]
    assert len(stop) == 1 and 1 <= stop[0] < 30
    assert not any(r.get("event") == "calibrate" for r in log1)  # the schedule stays the first call's
    assert (tmp_path / "run" / "checkpoints" / f"step_{stop[0]:07d}").is_dir()

    run = _run_script(_dry_env(tmp_path, last, BASE_PHASE="last", BASE_SLICE_S="1", BASE_LAST_S="300", **common))
    assert f"resuming step_{stop[0]:07d} of 30 steps" in run.stdout
    assert sorted(p.name for p in last.iterdir()) == EIGHT_FILES
    log = [json.loads(line) for line in (last / "train_log.jsonl").read_text().splitlines()]
    assert log[:len(log1)] == log1  # the first call's lines are kept as they were
    assert [r["event"] for r in log if r.get("event") == "start"] == ["start"]
    assert not any(r.get("event") == "calibrate" for r in log)
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    end = log[-1]
    assert end["event"] == "end" and end["steps"] == 30 and end["max_steps"] == 30
    assert end["tokens"] == 30 * 2 * 512  # restored from the checkpoint, not recounted from 0
    # the lr of every logged step follows the ONE 30-step schedule (warm-up 2 from the dry run), both calls
    lr0 = log[0]["config"]["lr"]
    sched = WarmupCosine(2, 30, log[0]["config"]["min_lr"] / lr0)
    for r in log:
        if "loss" in r:
            assert math.isclose(r["lr"], lr0 * sched(r["step"]), rel_tol=1e-9), r
    held = json.loads((last / "heldout_human.json").read_text())
    assert held["positions"] > 0 and 0 < held["bits_per_base"] < 9


def test_train_base_script_takes_the_corpus_of_its_config(tmp_path):
    """Without BASE_CORPUS the script trains on the config's `corpus:` (pilot 4's base4.yaml names its own pack),
    and an unreadable config is a one-line exit 2."""
    import yaml

    cfg = yaml.safe_load((ROOT / "data" / "train" / "base4.yaml").read_text())
    assert cfg["corpus"] == ".carry/train4bit" and cfg["region_weights"]["bed"].startswith(".carry/train4bit/")
    cfg = {**cfg, "corpus": str(tmp_path / "nowhere")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "BASE_CORPUS"}
    env.update(OMP_NUM_THREADS="1", BASE_DRY="1", BASE_PHASE="first", BASE_RUN_DIR=str(tmp_path / "run"))
    script = ["bash", str(ROOT / "benchmarks" / "train_base_h200.sh")]
    run = subprocess.run(script, capture_output=True, text=True, timeout=120,
                         env={**env, "OUT": str(tmp_path / "out"), "BASE_CONFIG": str(tmp_path / "c.yaml")})
    assert run.returncode == 1 and f"corpus {tmp_path / 'nowhere'}: neither" in run.stdout, run.stdout[-2000:]
    bad = subprocess.run(script, capture_output=True, text=True, timeout=60,
                         env={**env, "OUT": str(tmp_path / "out2"), "BASE_CONFIG": str(tmp_path / "missing.yaml")})
    last_line = bad.stdout.strip().splitlines()[-1]
    assert bad.returncode == 2 and last_line == f"cannot read corpus: from {tmp_path / 'missing.yaml'}", bad.stdout


def test_base_diagnose_scores_each_position_with_its_chunk_context_and_finds_repeats():
    """benchmarks/base_diagnose.py: every scored position's log p(A,C,G,T) equals the model run on exactly the
    tokens before it in its chunk's window (context C, chunks of C/2); a planted 5-copy 40-mer (either strand)
    is marked repeat, random sequence is not."""
    import base_diagnose as bd
    from evo2lite.config import PRESETS
    from evo2lite.model import StripedHyena2, init_weights_
    from evo2lite.tokenizer import encode

    model = init_weights_(StripedHyena2(PRESETS["debug"]), 2).eval()  # context 1,024: 8 chunks of 512
    rng = np.random.default_rng(3)
    seq = "".join(rng.choice(list("ACGT"), bd.WINDOW))
    ids = encode(seq)
    lp = bd.window_logprobs(model, ids)
    assert lp.shape == (bd.SCORED, 4) and np.isfinite(lp).all()
    ctx, first = model.config.context_len, bd.WINDOW - bd.SCORED
    for p in (first, first + 511, first + 512, bd.WINDOW - 1):
        chunk_end = first + (p - first) // (ctx // 2) * (ctx // 2) + ctx // 2
        with torch.no_grad():
            want = model(ids[None, chunk_end - ctx:p])[0, -1].float().log_softmax(-1)
        got = lp[p - first]
        assert np.allclose(got, want[[ord(b) for b in "ACGT"]].double().numpy(), atol=1e-5), p

    unit = "".join(rng.choice(list("ACGT"), 40))
    parts = [unit if i % 2 else vh.revcomp(unit) for i in range(5)]
    genome = "".join(p + "".join(rng.choice(list("ACGT"), 300)) for p in parts)
    mask = bd.repeat_mask(genome)
    starts = [sum(len(q) + 300 for q in parts[:i]) for i in range(5)]
    for s in starts:
        assert mask[s + 10:s + 30].all()
    assert mask.sum() < 5 * 60  # the random spacers stay unique


def test_base_diagnose_direct_deltas_by_hand():
    import base_diagnose as bd

    lp = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.6, 0.2, 0.1]]))
    ref_idx = np.array([0, 2, 1])
    snvs = [(0, 1, "stop"), (1, 0, "syn"), (2, 2, "syn"), (2, 3, "other")]
    out = bd.direct_deltas(lp, ref_idx, snvs)
    assert out["direct_delta_mean_nats"]["stop"] == pytest.approx(math.log(0.1 / 0.7))
    assert out["direct_delta_mean_nats"]["syn"] == pytest.approx(0.5 * (0.0 + math.log(0.2 / 0.6)))
    assert out["snvs"] == {"stop": 1, "syn": 2, "other": 1}
    assert out["stop_vs_syn_auroc_direct"] == 1.0  # the stop-gain costs more than both synonymous changes
