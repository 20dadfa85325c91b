"""Where on held-out human DNA (GRCh37 chr20:10-15 Mb, the vep_human.py region) models gain or lose bits, and
whether they price an in-frame stop codon at all (issue #20, the evo2lite-base pilot diagnosis).

Every model scores the SAME positions: W windows of 8,192 bases (half of them centred on CDS bases of the
genes with a derived CDS, half at random; seed fixed), positions 4,096..8,191 of each window, read with
the model's own context (a model of context C reads C tokens ending at each chunk of C/2 positions: at
least C/2 bases of left context everywhere). Forward strand only, fp32 on the CPU.

Per region kind it reports bits/base: repeat vs unique bases (the reference is not soft-masked, so a base
counts as repeat when the 16-mer around it occurs >= 4 times on either strand of the whole chr20),
CDS bases by codon position (1, 2, 3; the CDS derived as benchmarks/vep_human.py derives it), other exonic
bases (UTRs, non-coding exons), intronic and intergenic bases. For every coding SNV in the scored
positions it takes the direct term of the variant's delta, log p(alt) - log p(ref) at the site from the
same forward pass (the downstream positions' change is left out), and reports the mean per class
(stop-gain, synonymous, missense) and the stop-gain vs synonymous AUROC of -delta.

    python benchmarks/base_diagnose.py --reference 20.fa.gz --models /work/base_pilot1 default \
        --windows 40 --threads 2 -o base_diagnose.json
    python benchmarks/base_diagnose.py --control-genbank R_denitrificans.gbk --models /work/base_pilot1 default \
        --windows 10 --threads 2 -o control.json
    python benchmarks/base_diagnose.py --train-pack .carry/train2bit --annotation hg19_RefSeq_exon.txt \
        --fasta 20=20.fa.gz X=hs37chrXtrunc.fa.gz -o train_coding.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vep_human import gene_sites, parse_region, read_contig, read_genes, standard_code  # noqa: E402

WINDOW = 8192
SCORED = 4096  # the last SCORED positions of each window are scored
REPEAT_K, REPEAT_COPIES = 16, 4  # a random 16-mer is expected ~0.03 times on 2 x 63 Mb
# the first two are read from the repeat mask; the others are the annotation's, one per base
KINDS = ("repeat", "unique", "cds_codon1", "cds_codon2", "cds_codon3", "exon_noncds", "intron", "intergenic")


def repeat_mask(seq: str, k: int = REPEAT_K, min_copies: int = REPEAT_COPIES) -> np.ndarray:
    """True where the k-mer starting k//2 before a base occurs >= min_copies times in seq (either strand).
    The reference carries no soft-masking, so this marks interspersed repeats (Alu, L1) and simple repeats."""
    codes = np.frombuffer(seq.encode(), dtype=np.uint8)
    lut = np.full(256, 255, dtype=np.uint8)
    for i, b in enumerate(b"ACGT"):
        lut[b] = i
    c = lut[codes].astype(np.uint32)  # k = 16: a 2-bit k-mer fills 32 bits
    good = c < 4
    c[~good] = 0
    n = len(c) - k + 1
    fwd, rev = np.zeros(n, dtype=np.uint32), np.zeros(n, dtype=np.uint32)
    bad = np.zeros(n, dtype=bool)
    for j in range(k):
        fwd = (fwd << np.uint32(2)) | c[j:j + n]
        rev = rev | ((np.uint32(3) - c[j:j + n]) << np.uint32(2 * j))
        bad |= ~good[j:j + n]
    canon = np.minimum(fwd, rev)[~bad]
    uniq, counts = np.unique(canon, return_counts=True)
    copies = np.zeros(n, dtype=np.int64)
    copies[~bad] = counts[np.searchsorted(uniq, canon)]
    out = np.zeros(len(seq), dtype=bool)
    out[k // 2:k // 2 + n] = copies >= min_copies
    return out


def annotate(genome: str, offset: int, genes: dict, code: dict) -> tuple[np.ndarray, list[dict]]:
    """Per base of genome: a region kind index into KINDS (repeat status is kept apart) and the coding SNVs."""
    n = len(genome)
    kind = np.full(n, KINDS.index("intergenic"), dtype=np.int8)
    coding = []
    for g in genes.values():
        s, e = g["exons"][0][0] - offset, g["exons"][-1][1] - offset
        kind[s:e] = KINDS.index("intron")
        for a, b in g["exons"]:
            kind[a - offset:b - offset] = KINDS.index("exon_noncds")
    for g in genes.values():
        sites, _ = gene_sites(genome.upper(), offset, g, code, 150, 500)
        cds = [s for s in sites if set(s["alts"].values()) - {"splice", "intron"}]
        for i, s in enumerate(cds):  # codon sites come in transcript order, 3 per codon
            kind[s["pos"] - offset] = KINDS.index(f"cds_codon{i % 3 + 1}")
            coding.append(s)
    return kind, coding


def pick_windows(n: int, kind: np.ndarray, count: int, rng) -> list[int]:
    """Window starts: half with a CDS base inside the scored half, half uniform; all A/C/G/T-only."""
    exonic = np.flatnonzero((kind >= KINDS.index("cds_codon1")) & (kind <= KINDS.index("cds_codon3")))
    starts = []
    for _ in range(count * 20):
        if len(starts) == count:
            break
        if len(starts) < count // 2 and exonic.size:
            start = int(rng.choice(exonic)) - WINDOW + SCORED // 2
        else:
            start = int(rng.integers(0, n - WINDOW))
        if 0 <= start <= n - WINDOW and all(abs(start - s) >= SCORED for s in starts):
            starts.append(start)
    return sorted(starts)


def window_logprobs(model, ids) -> np.ndarray:
    """(SCORED, 4) log p(A, C, G, T) at the last SCORED positions of one window, with the model's context."""
    import torch

    ctx = min(model.config.context_len, WINDOW)
    out = []
    step = ctx // 2
    for first in range(WINDOW - SCORED, WINDOW, step):  # score positions first..first+step-1
        lo = max(0, first + step - ctx)
        with torch.no_grad():
            logits = model(ids[None, lo:first + step].clone())[0].float()
        lp = torch.log_softmax(logits, -1)[first - lo - 1:first + step - lo - 1]
        out.append(lp[:, [ord(b) for b in "ACGT"]].double().numpy())
    return np.concatenate(out)


def direct_deltas(lp: np.ndarray, ref_idx: np.ndarray, snvs: list[tuple[int, int, str]]) -> dict:
    """Mean direct term log p(alt) - log p(ref) per class of the SNVs (row of lp, alt base index, class), and
    the stop-gain vs synonymous AUROC of its negation."""
    delta = np.array([lp[i, b] - lp[i, ref_idx[i]] for i, b, _ in snvs])
    cls = np.array([c for _, _, c in snvs])
    mean = {c: float(delta[cls == c].mean()) for c in ("stop", "syn", "other")}
    pos_s, neg_s = -delta[cls == "stop"], -delta[cls == "syn"]
    auroc = float(((pos_s[:, None] > neg_s[None]).sum() + 0.5 * (pos_s[:, None] == neg_s[None]).sum())
                  / (pos_s.size * neg_s.size))
    return {"direct_delta_mean_nats": mean, "snvs": {c: int((cls == c).sum()) for c in mean},
            "stop_vs_syn_auroc_direct": auroc}


def bacterial_control(genbank: str, models: list[str], windows: int, seed: int) -> dict:
    """The direct-term probe on annotated bacterial genes (a genome's GenBank CDS, vep_bacteria.py's sites), where
    a model that prices stop codons should show it: random windows, the same scored positions as above."""
    from vep_bacteria import coding_sites

    from evo2lite.checkpoint import load_model
    from evo2lite.tokenizer import encode

    _, genome, sites = coding_sites(genbank)
    rng = np.random.default_rng(seed)
    starts = sorted(int(s) for s in rng.choice((len(genome) - WINDOW) // SCORED, windows, replace=False) * SCORED)
    pos = np.concatenate([np.arange(s + WINDOW - SCORED, s + WINDOW) for s in starts])
    at = {int(p): i for i, p in enumerate(pos)}
    ref_idx = np.array(["ACGT".find(genome[p]) for p in pos])
    snvs = [(at[s["pos"]], "ACGT".index(b), c) for s in sites if s["pos"] in at for b, c in s["alts"].items()]
    out = {"genbank": str(genbank), "windows": len(starts), "models": {}}
    for spec in models:
        model = load_model(None if spec == "default" else spec, device="cpu", dtype="float32").eval()
        lp = np.concatenate([window_logprobs(model, encode(genome[s:s + WINDOW])) for s in starts])
        out["models"][spec] = direct_deltas(lp, ref_idx, snvs)
        print(spec, json.dumps(out["models"][spec]), flush=True)
    return out


def train_coding(corpus: Path, annotation: str, fastas: dict[str, str]) -> dict:
    """Human tokens of a 2-bit pack's train split, and the exonic and derived-CDS bases (vep_human.py's rule:
    the longest ORF of the merged exons, >= 150 codons; start and stop codons not counted) of the annotated
    genes lying wholly inside its human train ranges, per contig."""
    from evo2lite.pipelines.region_weights import split_index

    entries = split_index(corpus)["entries"]
    human = [e for e in entries if e["organism"] == "Homo sapiens"]
    out = {"train_tokens": sum(e["length"] for e in entries), "human_tokens": sum(e["length"] for e in human)}
    code = standard_code()
    for contig, fasta in fastas.items():
        ranges = [tuple(map(int, e["name"].rpartition(":")[2].split("-"))) for e in human
                  if e["name"].rpartition(":")[0] == contig]
        seq = read_contig(fasta, contig)
        in_train = np.zeros(len(seq), dtype=bool)
        for a, b in ranges:
            in_train[a:b] = True
        exonic = np.zeros(len(seq), dtype=bool)
        genes = read_genes(annotation, contig, 0, len(seq))
        inside = {g: v for g, v in genes.items() if any(a <= v["exons"][0][0] and v["exons"][-1][1] <= b
                                                          for a, b in ranges)}
        cds = 0
        for g in genes.values():
            for a, b in g["exons"]:
                exonic[a:b] = True
        for g in inside.values():
            sites, _ = gene_sites(seq, 0, g, code, 150, 10**9)  # no deep-intronic sites
            cds += sum(1 for s in sites if "splice" not in s["alts"].values())
        out[contig] = {"train_bases": int(in_train.sum()), "exonic_in_train": int((exonic & in_train).sum()),
                       "genes_in_train": len(inside), "derived_cds_bases": cds}
    return out


def main(argv=None) -> int:
    import torch

    from evo2lite.checkpoint import load_model
    from evo2lite.tokenizer import encode

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["default"], help="model directories; 'default': the shipped one")
    ap.add_argument("--reference", help="GRCh37 chr20 (vt-examples' 20.fa.gz: the whole "
                    "chromosome, for the repeat copy counts)")
    ap.add_argument("--annotation", default=".carry/vep_human/hg19_RefSeq_exon_chr20.txt")
    ap.add_argument("--region", default="20:10000000-15000000")
    ap.add_argument("--windows", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-pack", type=Path, help="count the human and coding bases of this 2-bit pack's "
                    "train split instead (with --annotation the whole hg19 SAF and --fasta CONTIG=FASTA...)")
    ap.add_argument("--fasta", nargs="+", default=[], help="CONTIG=FASTA of each human contig to count")
    ap.add_argument("--control-genbank", help="run the direct-term probe on this bacterial GenBank instead "
                    "(the positive control: R_denitrificans.gbk, the test genome of vep_bacteria.py)")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    if args.train_pack:
        counts = train_coding(args.train_pack, args.annotation, dict(f.split("=", 1) for f in args.fasta))
        print(json.dumps(counts, indent=1))
        if args.output:
            args.output.write_text(json.dumps(counts, indent=1) + "\n")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.control_genbank:
        result = bacterial_control(args.control_genbank, args.models, args.windows, args.seed)
        if args.output:
            args.output.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if not args.reference:
        ap.error("--reference is required (the region's chromosome FASTA)")
    contig, start, end = parse_region(args.region)
    chrom = read_contig(args.reference, contig)
    rep = repeat_mask(chrom)[start:end]
    genome = chrom[start:end]
    del chrom
    code = standard_code()
    kind, coding = annotate(genome, start, read_genes(args.annotation, contig, start, end), code)
    starts = pick_windows(len(genome), kind, args.windows, np.random.default_rng(args.seed))
    pos = np.concatenate([np.arange(s + WINDOW - SCORED, s + WINDOW) for s in starts])
    upper = genome.upper()
    ok = np.array([upper[p] in "ACGT" for p in pos])
    masked = rep[pos]
    ref_idx = np.array(["ACGT".find(upper[p]) for p in pos])
    at = {int(p): i for i, p in enumerate(pos)}
    snvs = [(at[s["pos"] - start], "ACGT".index(b), cls) for s in coding if s["pos"] - start in at
            for b, cls in s["alts"].items()]
    result = {"region": args.region, "windows": len(starts), "window_starts": [start + s for s in starts],
              "positions": int(ok.sum()), "models": {}}
    for spec in args.models:
        t0 = time.time()
        model = load_model(None if spec == "default" else spec, device="cpu", dtype="float32").eval()
        lp = np.concatenate([window_logprobs(model, encode(upper[s:s + WINDOW])) for s in starts])
        bits = -lp[np.arange(len(pos)), np.maximum(ref_idx, 0)] / math.log(2)
        by_kind = {"all": float(bits[ok].mean())}
        for name, sel in (("repeat", masked), ("unique", ~masked)):
            by_kind[name] = float(bits[ok & sel].mean())
        for k, name in enumerate(KINDS[2:], start=2):
            for suffix, sel in (("", np.ones_like(ok)), ("_unique", ~masked)):
                m = ok & (kind[pos] == k) & sel
                by_kind[name + suffix] = float(bits[m].mean()) if m.any() else None
        counts = {name: int((ok & (kind[pos] == k)).sum()) for k, name in enumerate(KINDS[2:], start=2)}
        result["models"][spec] = {"context": model.config.context_len, "bits_per_base": by_kind,
                                  "positions_per_kind": counts, "repeat_positions": int((ok & masked).sum()),
                                  **direct_deltas(lp, ref_idx, snvs), "wall_s": time.time() - t0}
        print(spec, json.dumps(result["models"][spec], indent=1), flush=True)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
