"""Forward throughput of a model on CPU at its trained context: fp32, batch 1, `model(ids)` under
torch.inference_mode(), with a fixed number of threads (default 2, the laptop target of the default model).

    python benchmarks/cpu_forward.py [--model DIR] [--threads 2] [--length L] [--reps 10]

Prints the best and the median tokens/s over the repetitions and the 1-minute load average (the numbers
are only meaningful on an otherwise idle machine).
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
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--length", type=int, default=None)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", dtype="float32")
    length = args.length or model.config.context_len
    ids = torch.randint(0, 4, (1, length))
    ids = torch.tensor(list(b"ACGT"))[ids]
    times = []
    with torch.inference_mode():
        model(ids)
        for _ in range(args.reps):
            t0 = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - t0)
    out = {"model": args.model or "shipped default", "threads": args.threads, "length": length,
           "tokens_per_s_best": length / min(times), "tokens_per_s_median": length / statistics.median(times),
           "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
