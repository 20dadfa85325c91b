"""Hyena-LR core on the CPU (issue #12): the chunked PyTorch form (the CPU path of `modal_conv`) against the
FFT reference (the spec: materialised filter + 2L fp32 FFT), forward and forward + backward, fp32, one
table, both measured in the same run. This is what makes backend="auto" pick "chunked" on the CPU.

    python benchmarks/lr_cpu.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from evo2lite.kernels.modal import modal_conv


def best_ms(fn, reps=3):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# CPU, torch {torch.__version__}, {args.threads} thread(s), fp32, S = 16, best of 3\n")
    print("| B | L | D | backend | fwd ms | fwd+bwd ms |\n|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for B, L, D in [(1, 2048, 64), (4, 1024, 256), (1, 8192, 128)]:
        u = torch.randn(B, L, D, generator=g, requires_grad=True)
        lam = (-(10 ** (torch.rand(D, 16, generator=g) * 4 - 4))).requires_grad_()
        R = (torch.randn(D, 16, generator=g) / 4).requires_grad_()
        skip = torch.randn(D, generator=g, requires_grad=True)
        for backend in ("chunked", "reference"):
            def fwd():
                with torch.no_grad():
                    modal_conv(u, lam, R, skip, backend=backend)

            def fwd_bwd():
                modal_conv(u, lam, R, skip, backend=backend).sum().backward()
            print(f"| {B} | {L} | {D} | {backend} | {best_ms(fwd):.1f} | {best_ms(fwd_bwd):.1f} |", flush=True)


if __name__ == "__main__":
    main()
