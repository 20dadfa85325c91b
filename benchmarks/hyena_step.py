#!/usr/bin/env python
"""One cached-decode Hyena step (kernels/hyena/step.py) per block kind at Evo 2 7B width: the plain-PyTorch
reference (`hyena_step_ref`, ~15 small kernels) against the fused Triton kernel at several channel blocks, in
the same run. On CUDA each variant runs as a CUDA graph of --reps steps, replayed --iters times, so the gaps
between kernels count as they do in the decoder's graph; the table gives microseconds per step (one block, one
token, batch --batch). Writes hyena_step.md/.json under --out.

  python benchmarks/hyena_step.py                                   # CUDA, D 4096, bf16
  TRITON_INTERPRET=1 python benchmarks/hyena_step.py --device cpu --d-model 64 --reps 2 --iters 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import bootstrap, default_device_dtype, default_out  # noqa: E402

bootstrap()

import torch  # noqa: E402

from evo2lite.kernels.hyena.step import hyena_step_ref  # noqa: E402
from evo2lite.kernels.hyena.step_triton import hyena_step_triton  # noqa: E402

FILTER_LEN = {"S": 7, "M": 128, "L": 0}


def block_inputs(kind: str, B: int, D: int, dtype, device, S: int = 16):
    gen = torch.Generator(device=device).manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, device=device)  # noqa: E731
    kw = {"featurizer_tail_BFC": rnd(B, 2, 3 * D).to(dtype), "featurizer_FC": rnd(3, 3 * D)}
    if kind == "L":
        kw.update(sigma_BDS=rnd(B, D, S), poles_DS=torch.rand(D, S, generator=gen, device=device) * 0.9,
                  residues_DS=rnd(D, S), skip_D=rnd(D))
    else:
        K = FILTER_LEN[kind]
        kw.update(filter_tail_BKD=rnd(B, K - 1, D).to(dtype), filter_KD=rnd(K, D) / K ** 0.5)
        if kind == "M":
            kw["skip_D"] = rnd(D)
    return rnd(B, 3 * D).to(dtype), kw


def step_fn(kind: str, z, kw, variant: str):
    if variant == "reference":
        return lambda: hyena_step_ref(z, kind=kind, **kw)
    block_d = int(variant.split("=")[1])
    order = ("featurizer_tail_BFC", "featurizer_FC", "filter_tail_BKD", "filter_KD", "sigma_BDS", "poles_DS",
             "residues_DS", "skip_D")
    a = [kw.get(k) for k in order]
    return lambda: hyena_step_triton(z, a[0], a[1], kind, *a[2:], block_d=block_d)


def time_us(fn, device, reps: int, iters: int) -> float:
    """Microseconds per call: a CUDA graph of `reps` calls replayed `iters` times (eager on the CPU)."""
    for _ in range(3):
        fn()
    if device.type != "cuda":
        t = time.perf_counter()
        for _ in range(reps * iters):
            fn()
        return (time.perf_counter() - t) / (reps * iters) * 1e6
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * iters)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    p.add_argument("--dtype", default=None, help="bfloat16 (CUDA default) or float32 (CPU default)")
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block-d", default="32,64,128", help="the kernel's channels per program, comma list")
    p.add_argument("--reps", type=int, default=50, help="steps captured in one CUDA graph")
    p.add_argument("--iters", type=int, default=20, help="graph replays timed")
    p.add_argument("--out", default=default_out())
    args = p.parse_args(argv)
    default_device_dtype(args)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    variants = ["reference"] + [f"triton BD={b}" for b in args.block_d.split(",")]
    rows = []
    for kind in "SML":
        z, kw = block_inputs(kind, args.batch, args.d_model, dtype, device)
        row = {"kind": kind}
        for variant in variants:
            state = {k: v.clone() for k, v in kw.items()}  # every variant starts from the same state
            with torch.inference_mode():
                row[variant] = time_us(step_fn(kind, z, state, variant), device, args.reps, args.iters)
        rows.append(row)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"## Hyena decode step, {name}, D {args.d_model}, batch {args.batch}, {dtype}".replace("torch.", ""),
             "", f"us per step of one block ({'CUDA graph of ' + str(args.reps) + ' steps' if device.type == 'cuda' else 'eager'})",
             "", "| kind | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    lines += ["| " + r["kind"] + " | " + " | ".join(f"{r[v]:.2f}" for v in variants) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyena_step.md").write_text(text)
    (out / "hyena_step.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
