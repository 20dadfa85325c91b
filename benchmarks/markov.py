"""Order-k Markov baseline for DNA (k = 1..12), fitted on a built corpus's train split and evaluated in
bits/base on held-out sequence, on exactly the positions the neural model is scored on (`scored_mask`).

    python benchmarks/markov.py CORPUS_DIR --eval-split test --eval-organism "Homo sapiens" \
        [--fit-organism "Homo sapiens"] [--max-order 12] -o markov.json

Model: p(x | c) = (n(c, x) + alpha) / (n(c) + 4 alpha) over A/C/G/T, counts from every (k+1)-mer of pure
A/C/G/T in the training stream (k-mers never cross an N, an IUPAC code or a record boundary). The table of
13-mers is counted once and marginalised to every lower order. Several alphas are tried and the best
(k, alpha) on the evaluation positions is reported: a baseline tuned on the test data, i.e. a generous one.

Scored positions (shared with benchmarks/heldout_bits.py): position t of a record when the bases
t - 12 .. t are all A/C/G/T, so every order up to 12 has a full context and the neural model is scored on
the same set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MAX_ORDER = 12
ALPHAS = (0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
_CODE = np.full(256, 255, dtype=np.uint8)
_CODE[np.frombuffer(b"ACGT", dtype=np.uint8)] = np.arange(4, dtype=np.uint8)


def codes_of(tokens: np.ndarray) -> np.ndarray:
    """A/C/G/T -> 0..3, anything else (N, IUPAC, EOS, lower case was upper-cased at build) -> 255."""
    return _CODE[np.asarray(tokens, dtype=np.uint8)]


def scored_mask(codes: np.ndarray, order: int = MAX_ORDER) -> np.ndarray:
    """True at positions t >= order whose bases t-order..t are all A/C/G/T."""
    bad = np.concatenate([[0], np.cumsum(codes == 255)])
    n = codes.size
    mask = np.zeros(n, dtype=bool)
    if n > order:
        t = np.arange(order, n)
        mask[order:] = (bad[t + 1] - bad[t - order]) == 0
    return mask


def _kmer_index(codes: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """(index of the k1-mer ending at each position >= k1-1, valid) for one chunk."""
    n = codes.size - k1 + 1
    idx = np.zeros(max(n, 0), dtype=np.int64)
    for j in range(k1):
        idx = (idx << 2) | (codes[j:j + n] & 3).astype(np.int64)
    bad = np.concatenate([[0], np.cumsum(codes == 255)])
    valid = (bad[k1:] - bad[:-k1]) == 0
    return idx, valid


def count_kmers(tokens: np.ndarray, k1: int = MAX_ORDER + 1, chunk: int = 1 << 24) -> np.ndarray:
    """Counts of every pure-ACGT k1-mer in a token stream (int64, 4**k1)."""
    counts = np.zeros(4 ** k1, dtype=np.int64)
    for start in range(0, tokens.size, chunk):
        piece = codes_of(tokens[start:start + chunk + k1 - 1])
        if piece.size < k1:
            break
        idx, valid = _kmer_index(piece, k1)
        counts += np.bincount(idx[valid], minlength=4 ** k1)
    return counts


def marginal(counts_top: np.ndarray, k1_top: int, k1: int) -> np.ndarray:
    """(k1)-mer counts from (k1_top)-mer counts, summing out the oldest bases."""
    return counts_top.reshape(4 ** (k1_top - k1), 4 ** k1).sum(0)


def bits_per_base(counts: np.ndarray, order: int, codes: np.ndarray, mask: np.ndarray,
                  alphas=ALPHAS) -> dict[float, float]:
    """Mean -log2 p(x_t | x_{t-order..t-1}) over masked positions, for each alpha."""
    t = np.flatnonzero(mask)
    idx = np.zeros(t.size, dtype=np.int64)
    for j in range(order, -1, -1):
        idx = (idx << 2) | codes[t - j].astype(np.int64)
    ctx_tot = counts.reshape(-1, 4).sum(1)
    n_cx = counts[idx].astype(np.float64)
    n_c = ctx_tot[idx >> 2].astype(np.float64)
    return {a: float(-np.mean(np.log2((n_cx + a) / (n_c + 4 * a)))) for a in alphas}


def _split_records(corpus: Path, split: str, organism: str | None):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from evo2lite.pipelines.datasets import PackedSplit

    data = PackedSplit(corpus, split)
    for e in data.entries:
        if organism is None or e["organism"] == organism:
            yield e, np.asarray(data.tokens[e["offset"]:e["offset"] + e["length"]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--fit-split", default="train")
    ap.add_argument("--fit-organism", default=None, help="fit on this organism's records only")
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--eval-organism", default="Homo sapiens")
    ap.add_argument("--max-order", type=int, default=MAX_ORDER)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    t0 = time.time()
    k1 = args.max_order + 1
    fit_tokens = np.concatenate([np.append(tok, 0) for _, tok in _split_records(args.corpus, args.fit_split,
                                                                              args.fit_organism)])
    top = count_kmers(fit_tokens, k1)
    eval_codes = [codes_of(tok) for _, tok in _split_records(args.corpus, args.eval_split, args.eval_organism)]
    masks = [scored_mask(c, MAX_ORDER) for c in eval_codes]
    n_pos = int(sum(m.sum() for m in masks))
    results = {}
    for order in range(1, args.max_order + 1):
        counts = marginal(top, k1, order + 1)
        tot = {a: 0.0 for a in ALPHAS}
        for c, m in zip(eval_codes, masks):
            for a, b in bits_per_base(counts, order, c, m).items():
                tot[a] += b * m.sum()
        results[order] = {str(a): v / n_pos for a, v in tot.items()}
        print(f"order {order:2d}: " + "  ".join(f"a={a}: {v:.4f}" for a, v in results[order].items()),
              file=sys.stderr)
    best = min(((o, a, v) for o, r in results.items() for a, v in r.items()), key=lambda x: x[2])
    out = {"fit_split": args.fit_split, "fit_organism": args.fit_organism, "fit_kmers": int(top.sum()),
           "kmer_len": k1,
           "eval_split": args.eval_split, "eval_organism": args.eval_organism, "eval_positions": n_pos,
           "bits_per_base": results, "best": {"order": best[0], "alpha": float(best[1]), "bits_per_base": best[2]},
           "wall_s": time.time() - t0}
    text = json.dumps(out, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text if not args.output else f"best: order {best[0]}, alpha {best[1]}: {best[2]:.4f} bits/base")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
