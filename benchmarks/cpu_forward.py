"""Forward throughput of models on CPU: fp32, batch 1, `model(ids)` under torch.inference_mode(), with a
fixed number of threads (default 2, the laptop target of the default model).

    python benchmarks/cpu_forward.py [--model SPEC ...] [--length L ...] [--threads 2] [--reps 10]

--model and --length repeat (default: the shipped default model at its trained context); every model runs
at every length, the repetitions interleaved across the models so that a change of machine load hits them
alike. Prints a table of the best and the median tokens/s, then one JSON line per row, with the 1-minute
load average (the numbers are only meaningful on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch

    from evo2lite.checkpoint import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=None,
                    help="model spec (small, base, a directory, ...); repeatable (default: the shipped default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--length", type=int, action="append", default=None,
                    help="tokens per forward; repeatable (default: each model's trained context)")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = args.model or [None]
    models = [load_model(spec, device="cpu", dtype="float32") for spec in specs]
    lengths = args.length or sorted({m.config.context_len for m in models})
    rows = []
    for length in lengths:
        ids = torch.tensor(list(b"ACGT"))[torch.randint(0, 4, (1, length))]
        times = [[] for _ in models]
        with torch.inference_mode():
            for model in models:
                model(ids)  # warm-up
            for _ in range(args.reps):
                for model, spent in zip(models, times):
                    t0 = time.perf_counter()
                    model(ids)
                    spent.append(time.perf_counter() - t0)
        for spec, model, spent in zip(specs, models, times):
            rows.append({"model": model.config.name or spec or "shipped default", "spec": spec or "shipped default",
                         "threads": args.threads, "length": length, "reps": args.reps,
                         "tokens_per_s_best": length / min(spent),
                         "tokens_per_s_median": length / statistics.median(spent),
                         "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__})
    print("| model | tokens | best tokens/s | median tokens/s | load (1 min) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['length']:,} | {r['tokens_per_s_best']:,.0f} | {r['tokens_per_s_median']:,.0f} "
              f"| {r['load_avg_1min']:.1f} |")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
