"""How much N in a scoring window moves variant scores: the evidence behind score-vcf's `n_rich` threshold.

For every scorable ALT of data/examples (chr20), the REF and ALT windows (the shipped model's 2,048 bases,
centred on the variant) get a share f of their bases set to N, in two layouts: one run at the far left
end (an assembly gap at the edge of the context) and isolated Ns scattered over the window (never on the
variant). The score (ALT minus REF log-likelihood, sum) is recomputed with one plain forward pass per
window, and the table gives, per f, the median and 90th percentile of |score(f) - score(0)| relative to
the median |score(0)|.

    python benchmarks/score_vcf_n_share.py [--window 2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch

from evo2lite import load_model
from evo2lite.apps.score import token_logprobs
from evo2lite.pipelines import vcf as V
from evo2lite.pipelines.fasta import ReferenceGenome
from evo2lite.tokenizer import encode

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples"
SHARES = (0.0, 0.01, 0.02, 0.05, 0.10, 0.20, 0.30, 0.50)


@torch.inference_mode()
def logliks(model, windows: list[str]) -> np.ndarray:
    out = []
    for i in range(0, len(windows), 32):
        ids = torch.stack([encode(w) for w in windows[i: i + 32]])
        out.append(token_logprobs(model(ids), ids).double().sum(-1).numpy())
    return np.concatenate(out)


def with_n(window: str, positions) -> str:
    chars = list(window)
    for p in positions:
        chars[p] = "N"
    return "".join(chars)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None)
    ref = ReferenceGenome(EXAMPLES / "chr20_GRCh37_example.fa.gz")
    pairs = []
    for v in V.read_variants(EXAMPLES / "chr20_example.vcf.gz"):
        contig = ref.resolve(v.chrom)
        if not V.check_ref(v.ref, ref.fetch(contig, v.start, v.end)):
            continue
        site = V.site_context(lambda s, e: ref.fetch(contig, s, e), ref.contigs[contig], v.start, args.window,
                              len(v.ref))
        for alt in v.alts:
            if V.classify_allele(alt) == V.STATUS_OK:
                r, a = V.allele_windows(site, v.ref, alt)
                if len(r) == args.window:
                    pairs.append((r, a, v.start - site.win_start, len(v.ref)))
    print(f"{len(pairs)} variants, window {args.window}, model: {model.source}")
    base = None
    rows = []
    for layout in ("left run", "scattered"):
        for f in SHARES:
            k = int(round(f * args.window))
            windows = []
            for i, (r, a, offset, ref_len) in enumerate(pairs):
                if layout == "left run":
                    positions = range(min(k, offset))
                else:
                    rng = random.Random(i)
                    free = [p for p in range(args.window) if not offset <= p < offset + max(ref_len, 1)]
                    positions = rng.sample(free, k)
                windows += [with_n(r, positions), with_n(a, positions)]
            ll = logliks(model, windows)
            scores = ll[1::2] - ll[0::2]
            if f == 0.0:
                base = scores
                scale = float(np.median(np.abs(base)))
            shift = np.abs(scores - base) / scale
            rows.append((layout, f, float(np.median(shift)), float(np.quantile(shift, 0.9))))
    print(f"median |score| at f=0: {scale:.4f}")
    print("| layout | N share | median |Δscore| / median |score| | p90 |")
    print("|---|---|---|---|")
    for layout, f, med, p90 in rows:
        print(f"| {layout} | {f:.0%} | {med:.3f} | {p90:.3f} |")


if __name__ == "__main__":
    main()
