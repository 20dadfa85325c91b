"""Saturation mutagenesis vs score-vcf on the same SNVs: variants/s, and how far the faster settings move the
scores from score-vcf's (its window score is the reference).

All SNVs of ``--positions`` consecutive positions of the lambda phage fixture are scored by score-vcf (a
VCF of them) and by ``mutagenize`` with several tile / downstream settings, in one process, on the same
model, window and threads. Columns: variants/s, speedup over score-vcf, max |score - score-vcf|, Pearson
and Spearman correlation with score-vcf's scores, and the same correlation for the site score
(log P(ALT)/P(REF) at the position, which every setting gives beside the window score; ``--score site``
gives only it, from one reference pass per tile).

    python benchmarks/mutagenize.py [--positions 16] [--start 20001] [--window 2048] [--threads 1]
        [--model PATH | --model evo2_7b --random-init] [--device cpu|cuda] [--dtype bfloat16]
        [--batch-size 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import ROOT, bootstrap

bootstrap()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evo2lite import load_model  # noqa: E402
from evo2lite.apps.mutagenize import mutagenize  # noqa: E402
from evo2lite.apps.score_vcf import score_variants  # noqa: E402

LAMBDA = ROOT / "data" / "fixtures" / "lambda.bgzf.fa.gz"
CONTIG = "gi|9626243|ref|NC_001416.1|"
SETTINGS = [("mutagenize tile=1 (exact)", 1, None, "window"), ("mutagenize tile=16", 16, None, "window"),
            ("mutagenize tile=64", 64, None, "window"), ("mutagenize tile=64 downstream=256", 64, 256, "window"),
            ("mutagenize tile=64 downstream=64", 64, 64, "window"), ("mutagenize --score site tile=1", 1, None, "site"),
            ("mutagenize --score site tile=64", 64, None, "site")]


def _rank(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def _corr(a, b) -> tuple[float, float]:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.corrcoef(a, b)[0, 1]), float(np.corrcoef(_rank(a), _rank(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=16)
    parser.add_argument("--start", type=int, default=20001, help="1-based first position on the lambda contig")
    parser.add_argument("--window", type=int, default=None, help="default: the model's scoring window")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-init", action="store_true",
                        help="--model is a preset (evo2_7b, ...) with random weights: the shape's speed only")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each method's fastest is reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device, dtype=args.dtype, random_init=args.random_init).eval()
    region = f"{CONTIG}:{args.start}-{args.start + args.positions - 1}"
    common = dict(model=model, window=args.window, batch_size=args.batch_size, progress=False)

    mutagenize(LAMBDA, f"{CONTIG}:101-102", **common)  # warm-up, not timed
    results = {}
    vcf_seconds = float("inf")
    # rounds over all methods; each method's best round (the machine may be shared)
    for _ in range(args.repeats):
        for name, tile, downstream, mode in SETTINGS:
            t0 = time.perf_counter()
            rows = mutagenize(LAMBDA, region, tile=tile, downstream=downstream, mode=mode, **common)
            seconds = min(time.perf_counter() - t0, results.get(name, (float("inf"),))[0])
            results[name] = (seconds, [r.score for r in rows], [r.site for r in rows])
        with tempfile.TemporaryDirectory() as folder:
            vcf = Path(folder) / "snvs.vcf"
            lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
            lines += [f"{CONTIG}\t{r.pos}\t.\t{r.ref}\t{r.alt}\t.\t.\t." for r in rows]
            vcf.write_text("\n".join(lines) + "\n")
            t0 = time.perf_counter()
            table = score_variants(str(vcf), LAMBDA, **common).table
            vcf_seconds = min(vcf_seconds, time.perf_counter() - t0)
    exact = np.asarray(table["score"], float)
    n = len(exact)

    window = args.window or min(model.config.context_len, 8192)
    print(f"# {n} SNVs ({args.positions} positions of lambda from {args.start}), window {window}, "
          f"model {getattr(model, 'source', 'model')}, {args.device}, {args.threads} thread(s), "
          f"batch {args.batch_size}, best of {args.repeats}")
    print(f"| {'method':<36} | variants/s | speedup | max abs diff | pearson | spearman | site pearson |")
    print(f"|{'-' * 38}|-----------:|--------:|-------------:|--------:|---------:|-------------:|")
    print(f"| {'score-vcf':<36} | {n / vcf_seconds:10.2f} | {1.0:7.2f} | {0.0:12.2e} | {1.0:7.4f} | "
          f"{1.0:8.4f} | {'':>12} |")
    for name, (seconds, scores, site) in results.items():
        scores = np.asarray(scores, float)
        if np.isnan(scores).all():  # --score site: no window score
            site_pearson, _ = _corr(site, exact)
            print(f"| {name:<36} | {n / seconds:10.2f} | {vcf_seconds / seconds:7.2f} | {'-':>12} | {'-':>7} | "
                  f"{'-':>8} | {site_pearson:12.4f} |")
            continue
        pearson, spearman = _corr(scores, exact)
        site_pearson, _ = _corr(site, exact)
        print(f"| {name:<36} | {n / seconds:10.2f} | {vcf_seconds / seconds:7.2f} | "
              f"{np.max(np.abs(scores - exact)):12.2e} | {pearson:7.4f} | {spearman:8.4f} | {site_pearson:12.4f} |")


if __name__ == "__main__":
    main()
