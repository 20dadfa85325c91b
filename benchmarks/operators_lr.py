"""Hyena-LR operator benchmark (issue #12): the LR core (y = h * u + D u, modal filter, S = 16) and the full
HyenaLR mixer, forward and forward + backward, time and peak memory, peers measured in the same run.

Rows: ours (chunked Triton kernel), ours (FFT reference: materialised filter + 2L fp32 FFT, the spec), ours
fused full op (featurizer + gates + modal kernel from z; "unfused": the same with the featurizer and gates in
PyTorch around the modal kernel; "ours full": the whole mixer, fused on CUDA), vtx's torch.fft path
(compute_filter + fftconv_func), vtx's Triton HCL path (forward only: tiled filter + cuFFT + fused
epilogue), flash-linear-attention's chunk_linear_attn and SDPA (causal) at the same tokens and width
(H = D / 128 heads of 128). Tokens per step = max(L, --tokens), so B = tokens / L. Needs CUDA.

Every row (operator, length, mode) runs in its own process under --timeout (benchmarks/_common.run_child):
a kernel that crashes (vtx's HCL kernel hits an illegal memory access at 1M tokens, which poisons the CUDA
context) or hangs is one row "error ..." and the table goes on. `--dry-run` runs the plumbing on a CPU.

    python benchmarks/operators_lr.py [--quick] [--tune] [--d 4096] [--lengths 8192,32768] [--out r.json]
    python benchmarks/operators_lr.py --dry-run --ops "fft ref,sdpa"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

from _common import ROOT, bootstrap, run_child

bootstrap()
for whl in sorted((ROOT / ".whl").glob("*.whl")):  # vtx, fla: pure-Python wheels import from the zip
    sys.path.append(str(whl))

import torch  # noqa: E402

MiB = 1 << 20
DEV = "cuda"  # "cpu" on a --dry-run (the plumbing only: CPU times, no peak memory, Triton rows fail)


def bench(fn, reps=5, warmup=1):
    """Median ms and peak extra memory (MiB) over the allocation before the call; 'OOM' on out-of-memory."""
    if DEV == "cpu":
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[len(times) // 2], None
    torch.cuda.synchronize()
    try:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        peak = (torch.cuda.max_memory_allocated() - base) / MiB
        return sorted(times)[len(times) // 2], peak
    except torch.OutOfMemoryError:
        return "OOM", None
    finally:
        torch.cuda.empty_cache()


def lr_inputs(B, L, D, S=16, dtype=torch.bfloat16, grad=False):
    g = torch.Generator(device=DEV).manual_seed(0)
    u = torch.randn(B, L, D, device=DEV, dtype=dtype, generator=g)
    lam = -(10 ** (torch.rand(D, S, device=DEV, generator=g) * 4 - 4))
    R = torch.randn(D, S, device=DEV, generator=g) / 4
    skip = torch.randn(D, device=DEV, generator=g)
    for t in (u, lam, R, skip):
        t.requires_grad_(grad)
    return u, lam, R, skip


def _import_vtx_ops_without_flash_attn():
    """vortex/ops/__init__.py imports flash-attn's CUDA extension, which the HCL kernel does not use: where it
    is missing, register the package without running that __init__ so its submodules import alone."""
    import importlib
    import os
    import types

    try:
        importlib.import_module("vortex.ops")
    except ImportError:
        import vortex

        pkg = types.ModuleType("vortex.ops")
        pkg.__path__ = [os.path.join(os.path.dirname(vortex.__file__), "ops")]
        sys.modules["vortex.ops"] = pkg


def core_fns(B, L, D):
    """name -> (forward fn, or None) per mode: each closure builds nothing but its own computation."""
    from evo2lite.kernels.modal import modal_conv

    fns = {}
    for name, backend in (("ours triton", "triton"), ("ours fft ref", "reference")):
        def run(mode, backend=backend):
            u, lam, R, skip = lr_inputs(B, L, D, grad=mode == "fwd+bwd")
            if mode == "fwd":
                def f():
                    with torch.no_grad():
                        modal_conv(u, lam, R, skip, backend=backend)
            else:
                def f():
                    y = modal_conv(u, lam, R, skip, backend=backend)
                    y.backward(torch.ones_like(y))
            return f
        fns[name] = run
    try:
        from vortex.model.engine import fftconv_func

        def vtx_torch(mode):
            u, lam, R, skip = lr_inputs(B, L, D, grad=mode == "fwd+bwd")

            def f():
                with torch.set_grad_enabled(mode == "fwd+bwd"):
                    t = torch.arange(L, device=DEV, dtype=torch.float32)
                    h = (R[..., None] * torch.exp(lam[..., None] * t)).sum(1)  # vtx compute_filter: (D, S, L)
                    y = fftconv_func(u.transpose(1, 2), h, skip, None, gelu=False)
                    if mode == "fwd+bwd":
                        y.backward(torch.ones_like(y))
            return f
        fns["vtx torch.fft"] = vtx_torch
    except ImportError as e:
        print(f"# vtx torch path unavailable: {e}", file=sys.stderr)
    try:
        _import_vtx_ops_without_flash_attn()
        from vortex.ops.hcl_interface import _hcl_compute_filter, hcl_fft_conv

        def vtx_hcl(mode):
            if mode != "fwd":
                return None  # inference kernel: no backward
            u, lam, R, skip = lr_inputs(B, L, D)
            x1v = u.transpose(1, 2).contiguous()
            gate = torch.ones_like(x1v[:1])
            t = torch.arange(L, device=DEV, dtype=torch.float32)

            def f():
                with torch.no_grad():
                    h = _hcl_compute_filter(R, lam, t)
                    for b in range(B):  # the kernel takes one sequence
                        hcl_fft_conv(h[None], x1v[b:b + 1], gate, skip, L, 2 * L)
            return f
        fns["vtx hcl triton"] = vtx_hcl
    except ImportError as e:
        print(f"# vtx HCL kernel unavailable: {e}", file=sys.stderr)
    H = max(1, D // 128)
    if importlib.util.find_spec("fla") is not None:
        def fla(mode):
            # imported by the row that runs it: fla.ops takes ~15 s to import, and every row is a process
            from fla.ops.linear_attn import chunk_linear_attn

            g = torch.Generator(device=DEV).manual_seed(1)
            q, k, v = (torch.randn(B, L, H, 128, device=DEV, dtype=torch.bfloat16, generator=g)
                       .requires_grad_(mode == "fwd+bwd") for _ in range(3))

            def f():
                with torch.set_grad_enabled(mode == "fwd+bwd"):
                    o = chunk_linear_attn(q, k, v, normalize=False)
                    o = o[0] if isinstance(o, tuple) else o
                    if mode == "fwd+bwd":
                        o.backward(torch.ones_like(o))
            return f
        fns["fla chunk_linear_attn"] = fla
    else:
        print("# fla unavailable: flash-linear-attention is not installed", file=sys.stderr)

    def sdpa(mode):
        if L > 131072:
            return None  # quadratic: minutes per call
        g = torch.Generator(device=DEV).manual_seed(2)
        q, k, v = (torch.randn(B, H, L, 128, device=DEV, dtype=torch.bfloat16, generator=g)
                   .requires_grad_(mode == "fwd+bwd") for _ in range(3))

        def f():
            with torch.set_grad_enabled(mode == "fwd+bwd"):
                o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
                if mode == "fwd+bwd":
                    o.backward(torch.ones_like(o))
        return f
    fns["sdpa causal"] = sdpa
    return fns


def fused_fns(B, L, D):
    """The LR core from the projected features z (B, L, 3D) to the gated output: featurizer, k v, modal
    convolution, q gate. "fused" is kernels/modal/fused.py (one op, u and q^ rebuilt in the kernels);
    "unfused" is what the mixer ran before it: the featurizer and gates in PyTorch around the modal kernel."""
    from evo2lite.kernels.modal import modal_conv, modal_hyena, modal_hyena_ref

    def conv(u, lam, R, skip, sigma, with_state):
        return modal_conv(u, lam, R, skip, sigma, backend="triton"), None

    fns = {}
    for name, fused in (("ours fused full op", True), ("ours unfused full op", False)):
        def run(mode, fused=fused):
            g = torch.Generator(device=DEV).manual_seed(3)
            grad = mode == "fwd+bwd"
            z = torch.randn(B, L, 3 * D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_(grad)
            w = (torch.randn(3 * D, 3, device=DEV, generator=g) / 2).requires_grad_(grad)
            _, lam, R, skip = lr_inputs(1, 1, D, grad=grad)

            def f():
                with torch.set_grad_enabled(grad):
                    if fused:
                        y = modal_hyena(z, w, lam, R, skip, backend="auto" if DEV == "cpu" else "triton")
                    else:
                        y = modal_hyena_ref(z, w, lam, R, skip, conv=conv if DEV == "cuda" else None,
                                            with_state=False)[0]
                    if grad:
                        y.backward(torch.ones_like(y))
            return f
        fns[name] = run
    return fns


def full_fns(B, L, D):
    """The whole HyenaLR mixer (projection, featurizer, gates, LR core, out-projection), bf16."""
    import dataclasses

    from evo2lite.config import PRESETS
    from evo2lite.mixers import HyenaLR

    cfg = dataclasses.replace(PRESETS["debug"], d_model=D, num_heads=max(1, D // 128), d_mlp=2 * D,
                              num_se_groups=D // 16, num_mr_groups=D // 16)
    fns = {}
    for name, backend in (("ours full triton", "triton"), ("ours full fft ref", "reference")):
        def run(mode, backend=backend):
            mixer = HyenaLR(cfg).to(DEV).to(torch.bfloat16)
            with torch.no_grad():
                for p in mixer.parameters():
                    p.normal_(0, 0.02)
                mixer.filter.log_poles.copy_(-(10 ** (torch.rand_like(mixer.filter.log_poles.float()) * 4 - 4)))
            mixer.backend = backend
            x = torch.randn(B, L, D, device=DEV, dtype=torch.bfloat16, requires_grad=mode == "fwd+bwd")

            def f():
                with torch.set_grad_enabled(mode == "fwd+bwd"):
                    y = mixer(x)
                    if mode == "fwd+bwd":
                        y.backward(torch.ones_like(y))
            return f
        fns[name] = run
    return fns


def tune(D, L=32768, tokens=65536):
    from evo2lite.kernels.modal import triton as mt

    B = max(1, tokens // L)
    u, lam, R, skip = lr_inputs(B, L, D, grad=True)
    rows = []
    for T, CH, BD, W in [(8, 256, 128, 4), (8, 256, 64, 2), (16, 256, 128, 4), (8, 512, 128, 4), (8, 128, 128, 4),
                         (8, 256, 256, 8)]:
        cfg = {"T": T, "CH": CH, "BD": BD, "num_warps": W}

        def fwd():
            with torch.no_grad():
                mt.modal_conv_triton(u, lam, R, skip, None, cfg)

        def fb():
            y, _ = mt.modal_conv_triton(u, lam, R, skip, None, cfg)
            y.backward(torch.ones_like(y))
        try:
            rows.append((cfg, bench(fwd)[0], bench(fb)[0]))
        except Exception as e:  # a tiling the compiler rejects (registers, shared memory): report, go on
            rows.append((cfg, f"error {type(e).__name__}", ""))
        print(f"tune {cfg}: fwd {rows[-1][1]} ms, fwd+bwd {rows[-1][2]} ms", flush=True)
    return rows


def row_child(args) -> dict:
    """One row, in this (child) process: {"ms", "peak_mib"}, or {"skip": True} where the peer has no such mode."""
    L = args.lengths[0]
    B = max(1, args.tokens // L)
    fns = {**core_fns(B, L, args.d), **fused_fns(B, L, args.d), **full_fns(B, L, args.d)}
    try:
        f = fns[args.op](args.mode)
        if f is None:
            return {"skip": True}
        ms, mem = bench(f, reps=3 if L >= 131072 else 5)
    except torch.OutOfMemoryError:  # while building the inputs or the module
        ms, mem = "OOM", None
    except Exception as e:  # a peer that fails is a row with its error, not the end of the run
        ms, mem = f"error {type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]}", None
    return {"ms": ms, "peak_mib": mem}


def rows_of(L, B, D, ops) -> list[str]:
    """The operators timed at length L (names only: nothing runs here)."""
    names = list(core_fns(B, L, D)) + list(fused_fns(B, L, D)) + list(full_fns(B, L, D))
    return [n for n in names if not ops or any(o in n for o in ops.split(","))]


def run_row(L, B, name, mode, args) -> dict:
    """A row in its own process under --timeout: an illegal memory access (vtx's HCL kernel at 1M) or a hang
    ends only that child, and the table goes on with the row "error ..."."""
    argv = ["--child", "row", "--lengths", str(L), "--op", name, "--mode", mode, "--d", str(args.d),
            "--tokens", str(args.tokens)] + (["--dry-run"] if args.dry_run else [])
    result, failure, tail = run_child(str(Path(__file__).resolve()), argv, args.timeout)
    if result is None:
        reason = failure or "no result"
        if "timeout" not in reason:
            lines = [x for x in tail.strip().splitlines() if "Error" in x or "error" in x]
            reason = (lines[-1] if lines else reason)[:120]
        result = {"ms": f"error {reason}", "peak_mib": None}
    return result


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="L = 8K and 32K only")
    ap.add_argument("--tune", action="store_true", help="also time several tilings at L = 32K")
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--lengths", default=None, help="comma-separated L values (default 8K,32K,128K,1M)")
    ap.add_argument("--ops", default=None, help="comma-separated substrings: time only the operators named so")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per row (each row is its own process)")
    ap.add_argument("--out", default=None, help="JSON file, or a folder to write operators_lr.json in")
    ap.add_argument("--dry-run", action="store_true", help="CPU, D = 64, L = 256: the plumbing in seconds")
    ap.add_argument("--child", choices=("row", "tune"), help=argparse.SUPPRESS)
    ap.add_argument("--op", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.out and Path(args.out).is_dir():  # $OUT on the device: a folder (a file path there crashed a run)
        args.out = str(Path(args.out) / "operators_lr.json")
    global DEV
    if args.dry_run:
        DEV = "cpu"
        if not args.child:  # a child gets its shapes from the parent
            args.d, args.tokens, args.lengths = 64, 512, args.lengths or "256"
    lengths = [8192, 32768] if args.quick else [8192, 32768, 131072, 1 << 20]
    if args.lengths:
        lengths = [int(x) for x in args.lengths.split(",")]
    args.lengths = lengths
    if args.child:
        result = row_child(args) if args.child == "row" else \
            {"tune": [(c, f, b) for c, f, b in tune(args.d, tokens=args.tokens)]}
        Path(args.json).write_text(json.dumps(result))
        return
    if DEV == "cuda" and not torch.cuda.is_available():
        sys.exit("operators_lr.py needs CUDA (or --dry-run)")
    # the parent never touches the GPU: a crashed child cannot poison its CUDA context
    device = os.popen("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null").read().strip() or DEV
    print(f"# {device}, torch {torch.__version__}, D = {args.d}, tokens >= {args.tokens}, one process per row")
    results = {"device": device, "d": args.d, "rows": []}
    if args.tune:
        tuned, failure, _ = run_child(str(Path(__file__).resolve()), ["--child", "tune", "--d", str(args.d),
                                      "--tokens", str(args.tokens)], args.timeout)
        results["tune"] = (tuned or {}).get("tune") or f"error {failure}"
        for cfg, fwd, fb in results["tune"] if isinstance(results["tune"], list) else []:
            print(f"tune {cfg}: fwd {fwd} ms, fwd+bwd {fb} ms", flush=True)
    for L in lengths:
        B = max(1, args.tokens // L)
        for name in rows_of(L, B, args.d, args.ops):
            for mode in ("fwd", "fwd+bwd"):
                r = run_row(L, B, name, mode, args)
                if r.get("skip"):
                    continue
                ms, mem = r["ms"], r["peak_mib"]
                results["rows"].append({"L": L, "B": B, "op": name, "mode": mode, "ms": ms, "peak_mib": mem})
                print(f"L={L:>8} B={B:>2} {name:<22} {mode:<8} "
                      f"{ms if isinstance(ms, str) else f'{ms:9.2f} ms'} "
                      f"{'' if mem is None else f'{mem:10.0f} MiB'}", flush=True)
                if args.out:  # rewritten after every row: a run cut short keeps what it measured
                    Path(args.out).write_text(json.dumps(results, indent=1))
    print("\n| L | B | operator | mode | ms | peak MiB |\n|---|---|---|---|---|---|")
    for r in results["rows"]:
        ms = r["ms"] if isinstance(r["ms"], str) else f"{r['ms']:.2f}"
        mem = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"| {r['L']} | {r['B']} | {r['op']} | {r['mode']} | {ms} | {mem} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
