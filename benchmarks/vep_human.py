"""Zero-shot human variant effects from offline annotations: in the annotated genes of held-out human sequence
(GRCh37 chr20:10,000,000-15,000,000 by default; never chr17), does a model's delta log-likelihood separate
stop-gain from synonymous SNVs, and canonical splice-site from deep-intronic SNVs? Reports AUROCs of -delta
beside two base-composition controls.

    python benchmarks/vep_human.py [--model DIR] [--markov-corpus CORPUS] [--sites 150] [--seed 0] -o vep.json
    python benchmarks/vep_human.py --export-inputs DIR   # the two small input files, for a machine offline
    python benchmarks/vep_human.py --summarize OUT.json[.gz] ...   # AUROCs of saved runs, with 95 % intervals

Inputs (both fetched with `apt-get download` and checked by sha256 unless --reference / --annotation are given):
GRCh37 chr20 (vt-examples 20.fa.gz, the corpus's file) and RefSeq exons of hg19 genes from Rsubread's built-in
featureCounts annotation (r-bioc-rsubread 2.12.2-1, annot/hg19_RefSeq_exon.txt: GeneID, Chr, Start, End,
Strand; 1-based inclusive; the exons of a gene's transcripts merged).

The annotation has exons but no CDS, so a gene's CDS is derived: its exons are spliced in order (reverse
complemented on the minus strand) and the longest ATG..stop open reading frame of that transcript (standard
code) is its CDS. Genes whose longest ORF is under --min-codons (150) codons are left out, introns included.
Merged isoform exons can put an exon the real mRNA skips into the transcript; the longest ORF then is a
shorter one, which --min-codons mostly removes (per-gene ORF lengths are in the output, to check against the
known proteins).

Classes, for every SNV of a site: coding sites (codons after the start, before the stop) give 'syn', 'stop'
(stop-gain) or 'other' (missense) on the gene strand; 'splice': the two intron bases at each end of an intron
whose ends are canonical (GT..AG on the gene strand); 'intron': intron bases >= --deep-intron bases from every
annotated exon (every 16th such base is a candidate). A site inside the span of two genes is left out.
--sites sites are drawn per class (with a stop-gain alternative, with a synonymous one, splice, deep
intronic; fixed seed) and every alternative of a drawn site is scored.

Score (benchmarks/vep_bacteria.py's scorer, reused): the model reads a window of its context, 3/4 before the
variant and 1/4 after; delta = log-likelihood(ALT window) - log-likelihood(REF window), on the forward window
and on its reverse complement, averaged. AUROC of -delta; positives: stop-gain (vs synonymous), splice (vs
deep intronic).

Base-composition controls: (1) order-k Markov models (add-alpha) fitted on the human records of a built
corpus's train split (--markov-corpus), scored the same way (delta over the k+1 positions whose context holds
the variant, both strands), on the model's variants and on a larger draw (--markov-sites per class);
(2) substitution-matched AUROC: the AUROC inside each strand-collapsed substitution type (C>A C>G C>T T>A
T>C T>G), averaged with weights n_pos x n_neg, so that stop codons being A/T-rich cannot by itself separate
the classes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bootstrap  # noqa: E402

bootstrap()

from markov import codes_of, count_kmers, marginal  # noqa: E402
from vep_bacteria import _COMP, BASES, auroc, score_sites, site_variants  # noqa: E402

REFERENCE = dict(name="grch37_chr20", organism="Homo sapiens", licence="MIT (Debian package vt-examples)",
                 sha256="83c80b3fb23822ff0a66f26306e46f5db3c83d48fcff68bcddc353a3d8ef581b",
                 debian={"package": "vt-examples", "version": "0.57721+ds-3",
                         "file": "usr/share/doc/vt/examples/ref/20.fa.gz"})
ANNOTATION = dict(name="hg19_refseq_exons", organism="Homo sapiens",
                  licence="GPL-3+ (Debian package r-bioc-rsubread)",
                  sha256="3e60486dd16a1ab7285dc97680b1e835de563fbaa04c5b8cb6af56fdf08c9134",
                  debian={"package": "r-bioc-rsubread", "version": "2.12.2-1",
                          "file": "usr/lib/R/site-library/Rsubread/annot/hg19_RefSeq_exon.txt"})
PAIRS = {"stop_vs_syn": ("stop", "syn"), "splice_vs_intron": ("splice", "intron")}
MARKOV_ORDERS = (2, 5, 8, 11)
TOP_K1 = max(MARKOV_ORDERS) + 1  # the counted k-mer length; lower orders are its marginals
INTRON_STRIDE = 16  # deep-intronic candidates: every 16th base (there are millions; a draw needs a few hundred)


def standard_code() -> dict[str, str]:
    """Codon -> amino acid ('*' stop) of the standard code (NCBI table 1), from its usual TCAG-ordered string,
    so that this script needs neither Biopython nor pysam (a GPU machine may have neither)."""
    aas = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
    return {a + b + c: aas[16 * i + 4 * j + k] for i, a in enumerate("TCAG") for j, b in enumerate("TCAG")
            for k, c in enumerate("TCAG")}


def read_contig(path: str | Path, contig: str) -> str:
    """One record of a FASTA (any compression; `chr20` finds `20`), upper-cased."""
    from evo2lite.pipelines.fasta import contig_key, read_fasta

    for rec in read_fasta(path):
        if contig_key(rec.name) == contig_key(contig):
            return rec.seq.decode().upper()
    raise SystemExit(f"{path}: no record named {contig} (or chr{contig.removeprefix('chr')})")


def revcomp(seq: str) -> str:
    return seq.translate(_COMP)[::-1]


def obtain(spec: dict, cache_dir: str | None) -> Path:
    from evo2lite.pipelines.corpus_manifest import Source
    from evo2lite.pipelines.corpus_sources import obtain_source, verify_checksum

    source = Source(split="test", **spec)
    path = obtain_source(source, Path.cwd(), Path(cache_dir) if cache_dir else None)
    verify_checksum(source, path, "benchmarks/vep_human.py")
    return path


def parse_region(text: str) -> tuple[str, int, int]:
    """'20:10000000-15000000' (0-based half-open, as the corpus manifests) -> (contig, start, end)."""
    contig, _, span = text.rpartition(":")
    start, _, end = span.partition("-")
    if chr17(contig):
        raise SystemExit("human chromosome 17 is never used here: it is kept for the held-out clinical benchmark")
    return contig, int(start.replace(",", "")), int(end.replace(",", ""))


def chr17(contig: str) -> bool:
    return contig.removeprefix("chr") == "17"


def read_genes(path: str | Path, contig: str, start: int, end: int) -> dict[str, dict]:
    """Genes of a SAF annotation (GeneID Chr Start End Strand; 1-based inclusive) lying wholly inside
    [start, end) of contig: {gene: {"strand": "+"|"-", "exons": [(s, e), ...] 0-based half-open, sorted}}."""
    genes: dict[str, dict] = {}
    key = contig.removeprefix("chr")
    with open(path) as fh:
        for line in fh:
            f = line.split()
            if len(f) < 5 or f[0] == "GeneID" or f[1].removeprefix("chr") != key:
                continue
            g = genes.setdefault(f[0], {"strand": f[4], "exons": []})
            g["exons"].append((int(f[2]) - 1, int(f[3])))
    out = {}
    for name, g in genes.items():
        exons = sorted(g["exons"])
        if exons[0][0] >= start and exons[-1][1] <= end and g["strand"] in "+-":
            out[name] = {"strand": g["strand"], "exons": exons}
    return out


def longest_orf(tx: str, code: dict[str, str]) -> tuple[int, int] | None:
    """(start, end) in tx of the longest ATG..stop ORF (end includes the stop codon), any frame."""
    best = None
    for frame in range(3):
        codons = [tx[i:i + 3] for i in range(frame, len(tx) - 2, 3)]
        open_at = None
        for ci, c in enumerate(codons):
            if open_at is None and c == "ATG":
                open_at = ci
            elif open_at is not None and code.get(c) == "*":
                s, e = frame + 3 * open_at, frame + 3 * ci + 3
                if best is None or e - s > best[1] - best[0]:
                    best = (s, e)
                open_at = None
    return best


def gene_sites(genome: str, offset: int, gene: dict, code: dict[str, str], min_codons: int,
               deep_intron: int) -> tuple[list[dict], dict]:
    """Sites of one gene (genome positions, forward-strand bases) and a summary of its derived CDS.
    `genome` holds the contig from `offset`."""
    exons, strand = gene["exons"], gene["strand"]
    gpos = np.concatenate([np.arange(s, e) for s, e in exons])  # transcript order on the + strand
    tx = "".join(genome[s - offset:e - offset] for s, e in exons)
    if strand == "-":
        gpos, tx = gpos[::-1], revcomp(tx)
    sites, info = [], {"strand": strand, "exons": len(exons), "tx_len": len(tx), "orf_codons": 0}
    orf = longest_orf(tx, code)
    if orf is None or (orf[1] - orf[0]) // 3 < min_codons:
        return sites, info  # no CDS: neither its codons nor its introns are used
    info["orf_codons"] = (orf[1] - orf[0]) // 3
    for ci in range(orf[0] + 3, orf[1] - 3, 3):  # skip the start and the stop codon
        codon = tx[ci:ci + 3]
        if set(codon) - set(BASES):
            continue
        for k in range(3):
            p = int(gpos[ci + k])
            alts = {}
            for b in BASES:
                if b != codon[k]:
                    aa = code[codon[:k] + b + codon[k + 1:]]
                    cls = "syn" if aa == code[codon] else ("stop" if aa == "*" else "other")
                    alts[b if strand == "+" else b.translate(_COMP)] = cls
            sites.append({"pos": p, "alts": alts})
    for (_, e0), (s1, _) in zip(exons, exons[1:]):  # introns, + strand coordinates [e0, s1)
        intron = genome[e0 - offset:s1 - offset]
        donor, acceptor = (intron[:2], intron[-2:]) if strand == "+" else (revcomp(intron[-2:]), revcomp(intron[:2]))
        if s1 - e0 < 4 or donor != "GT" or acceptor != "AG":
            continue
        info["introns"] = info.get("introns", 0) + 1
        for p in (e0, e0 + 1, s1 - 2, s1 - 1):
            sites.append({"pos": p, "alts": {b: "splice" for b in BASES if b != genome[p - offset]}})
        for p in range(e0 + deep_intron, s1 - deep_intron, INTRON_STRIDE):
            sites.append({"pos": p, "alts": {b: "intron" for b in BASES if b != genome[p - offset]}})
    return sites, info


def build_sites(genome: str, offset: int, genes: dict[str, dict], min_codons: int, deep_intron: int,
                reach: int) -> tuple[list[dict], dict]:
    """Every classified site of the genes with `reach` pure A/C/G/T bases on both sides (so any window up to
    that reach, either strand, holds no N), and the gene table. A site in the span of two genes is left out."""
    code = standard_code()
    n = len(genome)
    span_cover = np.zeros(n, dtype=np.int32)
    for g in genes.values():
        span_cover[g["exons"][0][0] - offset:g["exons"][-1][1] - offset] += 1
    acgt = np.isin(np.frombuffer(genome.encode(), dtype=np.uint8), np.frombuffer(b"ACGT", dtype=np.uint8))
    bad = np.concatenate([[0], np.cumsum(~acgt)])
    sites, table = [], {}
    for name, g in sorted(genes.items()):
        gsites, info = gene_sites(genome, offset, g, code, min_codons, deep_intron)
        table[name] = info
        for s in gsites:
            i = s["pos"] - offset
            if span_cover[i] != 1 or i < reach or i + reach >= n or bad[i + reach + 1] - bad[i - reach]:
                continue
            s.update(ref=genome[i], gene=name)
            sites.append(s)
    return sites, table


def draw(sites: list[dict], per_class: int, seed: int) -> list[dict]:
    """per_class sites with a stop-gain alternative, with a synonymous one, splice, deep intronic."""
    rng = np.random.default_rng(seed)
    pick: set[int] = set()
    for cls in ("stop", "syn", "splice", "intron"):
        having = [i for i, s in enumerate(sites) if cls in s["alts"].values()]
        pick |= set(rng.choice(having, min(per_class, len(having)), replace=False).tolist()) if having else set()
    return [sites[i] for i in sorted(pick)]


def model_deltas(model, genome: str, offset: int, sites: list[dict], up: int, down: int,
                 batch: int) -> list[dict]:
    """One row per (site, alt): the forward-window delta, the reverse-complement-window delta, their mean."""
    local = [dict(s, pos=s["pos"] - offset) for s in sites]
    fwd = score_sites(model, genome, local, up, down, batch)
    n = len(genome)
    rc_sites = [dict(s, pos=n - 1 - s["pos"], ref=s["ref"].translate(_COMP),
                     alts={b.translate(_COMP): c for b, c in s["alts"].items()}) for s in local]
    rev = score_sites(model, revcomp(genome), rc_sites, up, down, batch)
    rows = []
    for f, r in zip(fwd, rev):
        assert f["pos"] == n - 1 - r["pos"] and f["alt"] == r["alt"].translate(_COMP)
        rows.append({"pos": f["pos"] + offset, "ref": f["ref"], "alt": f["alt"], "class": f["class"],
                     "gene": f["gene"], "delta_fwd": f["delta"], "delta_rev": r["delta"],
                     "delta": 0.5 * (f["delta"] + r["delta"])})
    return rows


def markov_deltas(counts: np.ndarray, order: int, alpha: float, genome: str, offset: int,
                  rows: list[dict]) -> np.ndarray:
    """Both-strand mean delta log-likelihood of each (pos, alt) under an order-k Markov model: only the
    k + 1 positions whose context holds the variant change."""
    ctx_tot = counts.reshape(-1, 4).sum(1).astype(np.float64)
    k = order

    def loglik(seqs: np.ndarray) -> np.ndarray:  # (N, 2k+1) codes -> log-lik of positions k..2k
        total = np.zeros(len(seqs))
        for t in range(k, 2 * k + 1):
            idx = np.zeros(len(seqs), dtype=np.int64)
            for j in range(t - k, t + 1):
                idx = (idx << 2) | seqs[:, j].astype(np.int64)
            total += np.log((counts[idx] + alpha) / (ctx_tot[idx >> 2] + 4 * alpha))
        return total

    out = np.zeros(len(rows))
    for strand in (1, -1):
        ref, alt = [], []
        for r in rows:
            i = r["pos"] - offset
            seq = genome[i - k:i + k + 1]
            a = seq[:k] + r["alt"] + seq[k + 1:]
            ref.append(seq if strand == 1 else revcomp(seq))
            alt.append(a if strand == 1 else revcomp(a))
        enc = lambda xs: codes_of(np.frombuffer("".join(xs).encode(), dtype=np.uint8)).reshape(len(xs), -1)
        out += 0.5 * (loglik(enc(alt)) - loglik(enc(ref)))
    return out


def substitution(ref: str, alt: str) -> str:
    """Strand-collapsed substitution type: the pyrimidine reference strand (G>A is C>T)."""
    return f"{ref}>{alt}" if ref in "CT" else f"{ref.translate(_COMP)}>{alt.translate(_COMP)}"


def aurocs(rows: list[dict], scores: np.ndarray) -> dict:
    """AUROC(-score) per pair of classes, overall and substitution-matched, with the counts."""
    out = {}
    classes = np.array([r["class"] for r in rows])
    subs = np.array([substitution(r["ref"], r["alt"]) for r in rows])
    for key, (pos_cls, neg_cls) in PAIRS.items():
        pos, neg = classes == pos_cls, classes == neg_cls
        if not pos.any() or not neg.any():
            continue
        res = {"n_pos": int(pos.sum()), "n_neg": int(neg.sum()), "auroc": auroc(-scores[pos], -scores[neg])}
        num = den = 0.0
        for s in np.unique(subs):
            p, q = pos & (subs == s), neg & (subs == s)
            if p.any() and q.any():
                w = float(p.sum()) * float(q.sum())
                num += w * auroc(-scores[p], -scores[q])
                den += w
        res["auroc_substitution_matched"] = num / den if den else None
        out[key] = res
    return out


def site_bootstrap(rows: list[dict], scores: np.ndarray, reps: int = 2000, seed: int = 0) -> dict:
    """95 % intervals of aurocs() ({pair: {column: [2.5 %, 97.5 %]}}) by resampling drawn sites with replacement:
    the alternatives of one site share its context, so sites, not variants, are the independent draws."""
    by_site: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_site[r["pos"]].append(i)
    groups = list(by_site.values())
    rng = np.random.default_rng(seed)
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(reps):
        idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        for pair, res in aurocs([rows[i] for i in idx], scores[idx]).items():
            for col in ("auroc", "auroc_substitution_matched"):
                if res[col] is not None:
                    samples[pair][col].append(res[col])
    return {pair: {col: [float(v) for v in np.percentile(vals, [2.5, 97.5])] for col, vals in cols.items()}
            for pair, cols in samples.items()}


def summarize(paths: list[Path], reps: int) -> dict:
    """The model's AUROCs of saved outputs (-o), each with its site-bootstrap 95 % interval."""
    out = {}
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as fh:
            rows = [r for r in json.load(fh)["variants"] if "delta" in r]
        if not rows:
            raise SystemExit(f"{path}: no model deltas (a run with --model none?)")
        scores = np.array([r["delta"] for r in rows])
        ci = site_bootstrap(rows, scores, reps)
        per_pair = {}
        for pair, res in aurocs(rows, scores).items():
            per_pair[pair] = {col: [res[col], *ci.get(pair, {}).get(col, [None, None])]
                              for col in ("auroc", "auroc_substitution_matched")}
            per_pair[pair].update(n_pos=res["n_pos"], n_neg=res["n_neg"])
        out[str(path)] = per_pair
    return out


def fit_markov(corpus: Path) -> tuple[np.ndarray, int]:
    from evo2lite.pipelines.datasets import PackedSplit

    data = PackedSplit(corpus, "train")
    parts = [np.append(np.asarray(data.tokens[e["offset"]:e["offset"] + e["length"]]), 0)
             for e in data.entries if e["organism"] == "Homo sapiens"]
    if not parts:
        raise SystemExit(f"{corpus}: no Homo sapiens records in the train split")
    tokens = np.concatenate(parts)
    return count_kmers(tokens, TOP_K1), int(tokens.size)


def export_inputs(out: Path, reference: Path, annotation: Path, contig: str, start: int, end: int,
                  margin: int) -> None:
    """A gzip FASTA of the contig with everything outside [start - margin, end + margin) masked to N (same
    coordinates, ~2 MB), and the contig's lines of the annotation."""
    import gzip

    out.mkdir(parents=True, exist_ok=True)
    seq = read_contig(reference, contig)
    lo, hi = max(0, start - margin), min(len(seq), end + margin)
    name = contig.removeprefix("chr")
    with gzip.open(out / "chr20_masked.fa.gz", "wt", compresslevel=9) as fh:
        fh.write(f">{name} GRCh37; only [{lo},{hi}) kept, the rest masked to N (vep_human.py)\n")
        masked = "N" * lo + seq[lo:hi] + "N" * (len(seq) - hi)
        fh.writelines(masked[i:i + 60] + "\n" for i in range(0, len(masked), 60))
    key = contig.removeprefix("chr")
    lines = [ln for ln in open(annotation) if ln.startswith("GeneID") or
             (len(ln.split()) > 1 and ln.split()[1].removeprefix("chr") == key)]
    (out / "hg19_RefSeq_exon_chr20.txt").write_text("".join(lines))
    print(f"wrote {out}/chr20_masked.fa.gz and {out}/hg19_RefSeq_exon_chr20.txt ({len(lines) - 1} exons)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model); 'none': "
                    "Markov controls only")
    ap.add_argument("--reference", type=Path, help="GRCh37 chr20 FASTA (default: vt-examples' 20.fa.gz)")
    ap.add_argument("--annotation", type=Path, help="SAF exon table (default: Rsubread's hg19 RefSeq exons)")
    ap.add_argument("--cache-dir", default=None, help="where the Debian packages are kept")
    ap.add_argument("--region", default="20:10000000-15000000", help="0-based half-open; held-out human")
    ap.add_argument("--markov-corpus", type=Path, help="built corpus whose human train records fit the Markov controls")
    ap.add_argument("--markov-alpha", type=float, default=4.0)
    ap.add_argument("--sites", type=int, default=150, help="sites drawn per class (4 classes) for the model")
    ap.add_argument("--markov-sites", type=int, default=3000, help="sites per class of the Markov controls' "
                    "larger draw")
    ap.add_argument("--min-codons", type=int, default=150)
    ap.add_argument("--deep-intron", type=int, default=500)
    ap.add_argument("--upstream", type=int, default=None, help="default: 3/4 of the model's context")
    ap.add_argument("--downstream", type=int, default=None, help="default: 1/4 of the model's context")
    ap.add_argument("--site-reach", type=int, default=6144, help="sites need this many A/C/G/T bases on each "
                    "side: 3/4 of 8,192, so models of any context up to 8,192 score the same variants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--export-inputs", type=Path, help="write the masked reference and the annotation here, exit")
    ap.add_argument("--summarize", type=Path, nargs="+", help="saved outputs (-o): print each model's AUROCs "
                    "[value, 2.5 %, 97.5 %] (sites resampled), exit")
    ap.add_argument("--bootstrap", type=int, default=2000, help="resamples of --summarize")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    if args.summarize:
        print(json.dumps(summarize(args.summarize, args.bootstrap), indent=1))
        return 0
    t0 = time.time()
    contig, start, end = parse_region(args.region)
    reference = args.reference or obtain(REFERENCE, args.cache_dir)
    annotation = args.annotation or obtain(ANNOTATION, args.cache_dir)
    if args.export_inputs:
        export_inputs(args.export_inputs, reference, annotation, contig, start, end, margin=20_000)
        return 0

    import torch

    from evo2lite.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = None if args.model == "none" else load_model(args.model, device=args.device, dtype="float32")
    ctx = model.config.context_len if model is not None else 2048
    up = args.upstream or ctx * 3 // 4
    down = args.downstream or ctx - up
    reach = max(args.site_reach, up, down)
    margin = reach + 2
    offset = max(0, start - margin)
    genome = read_contig(reference, contig)[offset:end + margin]
    genes = read_genes(annotation, contig, start, end)
    sites, gene_table = build_sites(genome, offset, genes, args.min_codons, args.deep_intron, reach)
    if not sites:
        raise SystemExit(f"no annotated sites in {args.region}")
    counts = defaultdict(int)
    for s in sites:
        for c in s["alts"].values():
            counts[c] += 1
    chosen = draw(sites, args.sites, args.seed)
    big_rows = site_variants(draw(sites, args.markov_sites, args.seed + 1))
    result = {"region": args.region, "reference": str(reference), "annotation": str(annotation),
              "genes": gene_table, "genes_with_cds": sum(1 for g in gene_table.values() if g["orf_codons"]),
              "candidate_variants": dict(counts), "intron_stride": INTRON_STRIDE,
              "min_codons": args.min_codons, "sites_drawn": len(chosen), "seed": args.seed,
              "upstream": up, "downstream": down, "site_reach": reach, "deep_intron": args.deep_intron}
    chosen_rows = site_variants(chosen)
    if model is not None:
        t1 = time.time()
        scored = model_deltas(model, genome, offset, chosen, up, down, args.batch_size)
        result["model"] = {"path": args.model or "shipped default model", "source": getattr(model, "source", ""),
                           "context": ctx, "score_s": time.time() - t1,
                           **aurocs(scored, np.array([r["delta"] for r in scored])),
                           "forward_strand_only": aurocs(scored, np.array([r["delta_fwd"] for r in scored]))}
        chosen_rows = scored
    if args.markov_corpus:
        t1 = time.time()
        top, fit_bases = fit_markov(args.markov_corpus)
        result["markov"] = {"corpus": str(args.markov_corpus), "fit_bases": fit_bases, "alpha": args.markov_alpha}
        for order in MARKOV_ORDERS:
            table = marginal(top, TOP_K1, order + 1)
            on_chosen = markov_deltas(table, order, args.markov_alpha, genome, offset, chosen_rows)
            on_big = markov_deltas(table, order, args.markov_alpha, genome, offset, big_rows)
            for r, d in zip(chosen_rows, on_chosen):
                r[f"markov{order}"] = float(d)
            result["markov"][f"order_{order}"] = {"same_variants": aurocs(chosen_rows, on_chosen),
                                                  "larger_draw": aurocs(big_rows, on_big)}
        result["markov"]["wall_s"] = time.time() - t1
    result["wall_s"] = time.time() - t0
    if args.output:
        args.output.write_text(json.dumps({**result, "variants": chosen_rows}, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
