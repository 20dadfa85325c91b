"""Bits/base of a model on held-out records of a built corpus, on the positions benchmarks/markov.py
scores (bases t-12..t all A/C/G/T), with the scorer of `evo2lite score` (sliding windows of the model's
context, every position scored once with at least half a context of left context).

    python benchmarks/heldout_bits.py MODEL_DIR CORPUS_DIR --split test --organism "Homo sapiens" \
        [--max-bases N] [--device cuda] -o heldout.json
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

from markov import MAX_ORDER, codes_of, scored_mask  # noqa: E402


def main(argv=None) -> int:
    import torch

    from evo2lite.apps.score import score_sequences
    from evo2lite.checkpoint import load_model
    from evo2lite.pipelines.datasets import PackedSplit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--organism", default="Homo sapiens")
    ap.add_argument("--max-bases", type=int, default=None, help="score only the first N bases (in record order)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model = load_model(args.model, device=args.device, dtype="float32")
    data = PackedSplit(args.corpus, args.split)
    bits, n, records, budget = 0.0, 0, [], args.max_bases
    for e in data.entries:
        if e["organism"] != args.organism:
            continue
        tok = np.asarray(data.tokens[e["offset"]:e["offset"] + e["length"]])
        if budget is not None:
            if budget <= MAX_ORDER:
                break
            tok = tok[:budget]
            budget -= tok.size
        (res,) = score_sequences(model, [(e["name"], tok.tobytes())], batch_size=args.batch_size)
        mask = scored_mask(codes_of(tok), MAX_ORDER)
        b = float(-res.per_position[mask].sum() / math.log(2))
        bits += b
        n += int(mask.sum())
        records.append({"name": e["name"], "positions": int(mask.sum()), "bits_per_base": b / max(1, mask.sum())})
    out = {"model": str(args.model), "split": args.split, "organism": args.organism, "positions": n,
           "bits_per_base": bits / n, "context": model.config.context_len, "device": args.device,
           "records": records, "wall_s": time.time() - t0}
    text = json.dumps(out, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(f"{args.organism} ({args.split}): {out['bits_per_base']:.4f} bits/base over {n:,} positions "
          f"in {out['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
