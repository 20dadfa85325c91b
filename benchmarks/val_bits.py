"""Bits/base per organism of a model on a split of a built corpus (the windows train.py evaluates on:
non-overlapping windows of the model's context over each organism's records, thinned evenly).

    python benchmarks/val_bits.py CORPUS_DIR [--model DIR] [--split val] [--windows 32] [--device cpu] -o out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch

    from evo2lite.apps.train_data import evaluate
    from evo2lite.checkpoint import load_model
    from evo2lite.pipelines.datasets import PackedSplit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model = load_model(args.model, device=args.device, dtype="float32")
    split = PackedSplit(args.corpus, args.split)
    res = evaluate(model, split, model.config.context_len, args.windows, args.batch_size,
                   torch.device(args.device), contextlib.nullcontext)
    out = {"model": args.model or "shipped default model", "split": args.split, "windows_per_organism": args.windows,
           "context": model.config.context_len, "results": res, "wall_s": time.time() - t0}
    if args.output:
        args.output.write_text(json.dumps(out, indent=1) + "\n")
    for name, r in res.items():
        print(f"{name:45s} {r['bits_per_base']:.4f} bits/base  ({r['bases']:,} bases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
