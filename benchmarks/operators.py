#!/usr/bin/env python
"""Operator benchmark (issue #11): our fused Hyena-SE / Hyena-MR cores and full operators (with projections)
against torch conv1d depthwise (cuDNN), SDPA causal, flash-linear-attention 0.6 (`chunk_linear_attn`,
`chunk_gla`), vtx 1.1's Triton Hyena kernels and our reference path, in one run, one table.

  python benchmarks/operators.py                      # L = 8K, 32K, 128K; 65,536 tokens; D 4096; bf16
  python benchmarks/operators.py --quick              # fewer repeats (the one-command GPU run)
  python benchmarks/operators.py --lengths 8192       # one length
  python benchmarks/operators.py --ops se,mr --sweep  # also a block-size / warps sweep of our kernels

Rows: ms (median of timed repeats after warm-up, CUDA events), tokens/s, and x floor = time / floor, where
the floor is the larger of the HBM floor (bytes that must move at 4.3 TB/s, the copy rate measured on the
H200) and the tensor-core floor (matrix FLOPs at 790 TFLOP/s, measured). Core rows move q, k, v in and y out
forward (4 N D elements); forward + backward adds dy, q, k, v in and dq, dk, dv out (11 N D in all). Full
operators add x in and the projections' FLOPs (8 N D^2 forward, 3x that forward + backward).
Peers that fail are kept as rows with the error. Writes operators_<tag>.md/.json under --out (default $OUT,
else benchmarks/results). The `--ops` sections are functions in SECTIONS: another operator adds its own.
fla and vtx come from wheels in .whl/ (put on sys.path when not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from _common import ROOT, bootstrap  # noqa: E402

bootstrap()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HBM_BPS, MMA_FLOPS = 4.3e12, 790e12
for whl in sorted((ROOT / ".whl").glob("*.whl")):  # pure-Python wheels import straight from the zip
    sys.path.append(str(whl))


def timed(fn, min_reps=3, max_reps=20, budget_s=0.3):
    """Median ms of fn() after two warm-ups (compilation, autotuning)."""
    fn()
    fn()
    torch.cuda.synchronize()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def fwd_bwd(fn, inputs, dy):
    def run():
        torch.autograd.grad(fn(), inputs, dy)
    return run


def floors(N, D, full=False):
    """(forward, forward + backward) floors in ms."""
    b = 2  # bf16
    hbm = (4 * N * D * b + (N * D * b if full else 0), 11 * N * D * b + (3 * N * D * b if full else 0))
    mma = (8 * N * D * D, 24 * N * D * D) if full else (0, 0)
    return tuple(max(h / HBM_BPS, f / MMA_FLOPS) * 1e3 for h, f in zip(hbm, mma))


def rnd(*shape, grad=True, scale=1.0, dtype=torch.bfloat16):
    return (torch.randn(*shape, device="cuda", dtype=torch.float32) * scale).to(dtype).requires_grad_(grad)


def _vortex_ops():
    """vortex.ops' package __init__ imports flash-attn's CUDA extension, which the Hyena kernels timed here
    never call; an empty stand-in lets them import without it."""
    import types
    sys.modules.setdefault("flash_attn_2_cuda", types.ModuleType("flash_attn_2_cuda"))


def hyena_rows(kind, B, L, D, G):
    """Our fused core and full operator, the reference path, cuDNN conv1d, vtx's kernels, for SE or MR."""
    from evo2lite.kernels.hyena import hyena_conv
    mr = kind == "mr"
    K, tap = (128, "first") if mr else (7, "last")
    z = rnd(B, L, 3 * D)
    w = rnd(3 * D, 3, dtype=torch.float32, scale=0.5)
    h = rnd(G, K, dtype=torch.float32, scale=K ** -0.5)
    skip = rnd(D, dtype=torch.float32) if mr else None
    params = [w, h] + ([skip] if mr else [])
    dy = rnd(B, L, D, grad=False)
    name = kind.upper()
    rows = []
    for backend in ("triton", "reference"):
        f = (lambda be=backend: hyena_conv(z, w, h, skip, current_tap=tap, backend=be))
        rows.append((f"{name} core, ours ({backend})", "core", f, fwd_bwd(f, [z] + params, dy)))
    # full operator: in-projection, fused core, out-projection
    x = rnd(B, L, D)
    w_in, w_out = rnd(3 * D, D, scale=D ** -0.5), rnd(D, D, scale=D ** -0.5)
    for backend in ("triton", "reference"):
        f = (lambda be=backend: F.linear(hyena_conv(F.linear(x, w_in), w, h, skip, current_tap=tap, backend=be),
                                         w_out))
        rows.append((f"{name} full op, ours ({backend})", "full", f, fwd_bwd(f, [x, w_in, w_out] + params, dy)))
    # peers on q, k, v already split, (B, D, L) layout: cuDNN depthwise conv1d, gated
    q, k, v = (rnd(B, D, L) for _ in range(3))
    dy_BDL = dy.transpose(1, 2).contiguous()
    hw = h.detach().to(torch.bfloat16).repeat_interleave(D // G, 0)[:, None]  # (D, 1, K)
    hw = (hw if not mr else hw.flip(-1)).requires_grad_()
    f = lambda: q * F.conv1d(k * v, hw, padding=K - 1, groups=D)[..., :L]
    rows.append((f"{name} core, torch conv1d depthwise (cuDNN)", "core", f, fwd_bwd(f, [q, k, v, hw], dy_BDL)))
    _vortex_ops()
    try:
        if mr:
            from vortex.ops.hcm_interface import hcm_fft_conv
            hk = h.detach().repeat_interleave(D // G, 0)[:, None].contiguous()
            f = lambda: q * hcm_fft_conv(k * v, hk, skip.detach(), None).to(q.dtype)
            rows.append((f"{name} core, vtx hcm_fft_conv (fwd only)", "core", f, None))
        else:
            from vortex.ops.hcs_interface import hcs_conv
            hk = h.detach().repeat_interleave(D // G, 0)[:, None].contiguous()
            f = lambda: hcs_conv(k, q, v, hk)
            rows.append((f"{name} core, vtx hcs_conv (fwd only)", "core", f, None))
    except Exception as e:  # noqa: BLE001 - a failing peer is a row, not a crash
        rows.append((f"{name} core, vtx Triton", "core", e, None))
    if not mr:
        try:
            from vortex.ops.hyena_se.interface import two_pass_chunked_gate_conv_gate
            from vortex.ops.hyena_se.kernel_utils import BwdKernelConfig, FwdKernelConfig
            xs, bs, cs = (rnd(B, L, G, D // G) for _ in range(3))
            hs = rnd(G, 1, K, scale=K ** -0.5)
            cfg = dict(schedule="default", CHUNK_SIZE=32, BLOCK_D=D // G, THREADBLOCK_SWIZZLE="row", num_warps=4)
            f = lambda: two_pass_chunked_gate_conv_gate(
                xs, bs, cs, hs, return_toeplitz=False, fwd_kernel_cfg=FwdKernelConfig(**cfg),
                bwd_kernel_cfg=BwdKernelConfig(LOAD_TOEPLITZ=False, **cfg))
            rows.append((f"{name} core, vtx cgcg two-pass", "core", f,
                         fwd_bwd(f, [xs, bs, cs, hs], dy.view(B, L, G, D // G))))
        except Exception as e:  # noqa: BLE001
            rows.append((f"{name} core, vtx cgcg two-pass", "core", e, None))
    return rows


def attention_rows(B, L, D, H=32):
    E = D // H
    rows = []
    q, k, v = (rnd(B, H, L, E) for _ in range(3))
    dy = rnd(B, H, L, E, grad=False)
    f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    rows.append(("attention core, SDPA causal", "core", f, fwd_bwd(f, [q, k, v], dy)))
    qf, kf, vf = (rnd(B, L, H, E, scale=E ** -0.5) for _ in range(3))
    dyf = rnd(B, L, H, E, grad=False)
    try:
        from fla.ops.linear_attn import chunk_linear_attn
        f = lambda: chunk_linear_attn(qf, kf, vf)[0]
        rows.append(("linear attention core, fla chunk_linear_attn", "core", f, fwd_bwd(f, [qf, kf, vf], dyf)))
    except Exception as e:  # noqa: BLE001
        rows.append(("linear attention core, fla chunk_linear_attn", "core", e, None))
    try:
        from fla.ops.gla import chunk_gla
        g = F.logsigmoid(rnd(B, L, H, E, grad=False).float() + 4).detach().requires_grad_()
        f = lambda: chunk_gla(qf, kf, vf, g)[0]
        rows.append(("gated linear attention core, fla chunk_gla", "core", f, fwd_bwd(f, [qf, kf, vf, g], dyf)))
    except Exception as e:  # noqa: BLE001
        rows.append(("gated linear attention core, fla chunk_gla", "core", e, None))
    x = rnd(B, L, D)
    w_qkv, w_out = rnd(3 * D, D, scale=D ** -0.5), rnd(D, D, scale=D ** -0.5)
    dyx = rnd(B, L, D, grad=False)

    def full():
        qkv = F.linear(x, w_qkv).view(B, L, 3, H, E).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        return F.linear(o.transpose(1, 2).reshape(B, L, D), w_out)
    rows.append(("attention full op, SDPA causal", "full", full, fwd_bwd(full, [x, w_qkv, w_out], dyx)))
    return rows


def lr_rows(B, L, D, S=16):
    """Hyena-LR (issue #12): the modal long convolution y = h * u + D u (fp32 out) and the HyenaLR mixer:
    ours (chunked Triton recurrence) against our FFT reference, vtx's torch.fft path and vtx's HCL kernel.
    The floors are the hyena rows' (q, k, v in); the LR core moves u in and y out. Time and peak memory per
    row: benchmarks/operators_lr.py."""
    import dataclasses

    from evo2lite.config import PRESETS
    from evo2lite.kernels.modal import modal_conv
    from evo2lite.mixers import HyenaLR

    u = rnd(B, L, D)
    lam = (-(10 ** (torch.rand(D, S, device="cuda") * 4 - 4))).requires_grad_()
    R = rnd(D, S, dtype=torch.float32, scale=S ** -0.5)
    skip = rnd(D, dtype=torch.float32)
    dy = rnd(B, L, D, grad=False, dtype=torch.float32)
    rows = []
    for backend in ("triton", "reference"):
        f = (lambda be=backend: modal_conv(u, lam, R, skip, backend=be))
        rows.append((f"LR core, ours ({backend})", "core", f, fwd_bwd(f, [u, lam, R, skip], dy)))
    try:
        from vortex.model.engine import fftconv_func
        t = torch.arange(L, device="cuda", dtype=torch.float32)

        def f():  # vtx's compute_filter ((D, S, L) in fp32) and fftconv_func, (B, D, L) layout
            h = (R[..., None] * torch.exp(lam[..., None] * t)).sum(1)
            return fftconv_func(u.transpose(1, 2), h, skip, None, gelu=False)
        rows.append(("LR core, vtx torch.fft", "core", f, fwd_bwd(f, [u, lam, R, skip], dy.transpose(1, 2))))
    except Exception as e:  # noqa: BLE001
        rows.append(("LR core, vtx torch.fft", "core", e, None))
    _vortex_ops()
    try:
        from vortex.ops.hcl_interface import _hcl_compute_filter, hcl_fft_conv
        x1v = u.detach().transpose(1, 2).contiguous()
        gate = torch.ones_like(x1v[:1])
        t = torch.arange(L, device="cuda", dtype=torch.float32)

        def f():  # inference kernel: one sequence a call, no backward
            h = _hcl_compute_filter(R.detach(), lam.detach(), t)[None]
            return [hcl_fft_conv(h, x1v[b:b + 1], gate, skip.detach(), L, 2 * L) for b in range(B)]
        rows.append(("LR core, vtx hcl (fwd only)", "core", f, None))
    except Exception as e:  # noqa: BLE001
        rows.append(("LR core, vtx hcl", "core", e, None))
    cfg = dataclasses.replace(PRESETS["debug"], d_model=D, num_heads=max(1, D // 128), d_mlp=2 * D,
                              num_se_groups=max(1, D // 16), num_mr_groups=max(1, D // 16))
    mixer = HyenaLR(cfg).cuda().to(torch.bfloat16)
    with torch.no_grad():
        for prm in mixer.parameters():
            prm.normal_(0, D ** -0.5)
        mixer.filter.log_poles.copy_(lam.detach())
    x = rnd(B, L, D)
    dyx = rnd(B, L, D, grad=False)
    for backend in ("triton", "reference"):
        def f(be=backend):
            mixer.backend = be
            return mixer(x)
        rows.append((f"LR full op (HyenaLR), ours ({backend})", "full", f,
                     fwd_bwd(f, [x] + list(mixer.parameters()), dyx)))
    return rows


SECTIONS = {
    "se": lambda B, L, D, G: hyena_rows("se", B, L, D, G),
    "mr": lambda B, L, D, G: hyena_rows("mr", B, L, D, G),
    "attn": lambda B, L, D, G: attention_rows(B, L, D),
    "lr": lambda B, L, D, G: lr_rows(B, L, D),
}


def measure(rows, N, D, L, results, reps, write):
    for name, kind, fwd, fb in rows:
        fl_f, fl_fb = floors(N, D, full=kind == "full")
        rec = {"op": name, "L": L, "batch": N // L, "floor_fwd_ms": fl_f, "floor_fwdbwd_ms": fl_fb}
        for key, fn in (("fwd", fwd), ("fwdbwd", fb)):
            if isinstance(fn, Exception):
                rec[key] = f"error: {type(fn).__name__}: {str(fn).splitlines()[0][:120] if str(fn) else ''}"
                continue
            if fn is None:
                rec[key] = "n/a"
                continue
            try:
                rec[key + "_ms"] = timed(fn, **reps)
            except Exception as e:  # noqa: BLE001
                rec[key] = f"error: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
                traceback.print_exc(file=sys.stderr)
            torch.cuda.empty_cache()
        results.append(rec)
        write()
        print(fmt_row(rec, N), flush=True)


def fmt_row(r, N):
    cells = []
    for key, fl in (("fwd", r["floor_fwd_ms"]), ("fwdbwd", r["floor_fwdbwd_ms"])):
        ms = r.get(key + "_ms")
        cells += ([f"{ms:.3f}", f"{N / ms / 1e3:.3g}", f"{ms / fl:.2f}"] if ms is not None
                  else [r.get(key, "?"), "", ""])
    floor = f"{r['floor_fwd_ms']:.3f} / {r['floor_fwdbwd_ms']:.3f}"
    return f"| {r['L']} | {r['batch']} | {r['op']} | " + " | ".join(cells) + f" | {floor} |"


HEADER = ("| L | batch | operator | fwd ms | fwd Mtok/s | fwd x floor | fwd+bwd ms | fwd+bwd Mtok/s | "
          "fwd+bwd x floor | floor ms (fwd / fwd+bwd) |\n|---|---|---|---|---|---|---|---|---|---|")


# (filter length, block length, warps, programs aimed at, forward and backward alike). The 7-tap rows time
# triton.py's tensor-core gather kernels at SE's filter length, which SE no longer runs (it dispatches to
# se_triton.py, swept by benchmarks/se_sweep.py): kept beside the session-8 figures in operators_h200_sweep.md
SWEEP = [(7, 16, 4, 2048), (7, 16, 4, 16384), (7, 16, 1, 16384), (7, 16, 2, 131072), (7, 32, 2, 16384),
         (7, 64, 4, 16384), (128, 64, 4, 2048), (128, 64, 4, 16384), (128, 64, 8, 16384), (128, 128, 8, 16384)]
# MR (issue #11): the stride-3 "gather" kernels against the "split" ones (mr_triton.py; the rows above with
# BL 64 run them with their defaults), options as (filter length, block length, warps, programs, options)
_G, _S, _NP = dict(variant="gather"), dict(variant="split"), dict(variant="split", prefetch=False)
SWEEP += [(128, 64, 4, 16384, _G), (128, 64, 8, 16384, _G)] + [
    (128, 64, nw, progs, dict(base, **opts)) for base, nw, progs, opts in (
        (_S, 4, 4096, {}), (_S, 4, 16384, dict(h_in_loop=True)), (_S, 4, 16384, dict(two_pass=True)),
        (_S, 8, 16384, dict(two_pass=True)), (_NP, 4, 16384, {}), (_NP, 8, 16384, {}))]

SWEEP_LABELS = {7: "gather, 7 taps (old SE path)", 128: "MR"}


def sweep(N, D, G, L, write, kinds=("se", "mr")):
    """Our kernels' block length, warps and programs: forward and backward separately, bf16, the same shapes;
    the floors are the core rows' (forward 4 N D elements, backward 7 N D)."""
    from evo2lite.kernels.hyena.triton import hyena_conv_bwd, hyena_conv_fwd
    B = N // L
    fl_f, fl_fb = floors(N, D)
    head = "| op | BL | warps | programs | options | fwd ms | fwd x floor | bwd ms | bwd x floor |"
    out, inputs = [head, "|---|---|---|---|---|---|---|---|---|"], {}
    print("\n" + "\n".join(out), flush=True)
    for K, BL, nw, progs, *opts in SWEEP:
        if ("mr" if K == 128 else "se") not in kinds:
            continue
        opts = opts[0] if opts else {}
        fwd_opts = {k: v for k, v in opts.items() if k != "two_pass"}
        if K not in inputs:
            inputs.clear()
            torch.cuda.empty_cache()
            inputs[K] = (rnd(B, L, 3 * D, grad=False), rnd(3 * D, 3, grad=False, dtype=torch.float32),
                         rnd(G, K, grad=False, dtype=torch.float32),
                         rnd(D, grad=False, dtype=torch.float32) if K == 128 else None, rnd(B, L, D, grad=False))
        z, w, h, skip, dy = inputs[K]
        opt_s = " ".join(f"{k}={v}" for k, v in opts.items())
        cfg = f"| {SWEEP_LABELS[K]} | {BL} | {nw} | {progs} | {opt_s} |"
        try:
            f = timed(lambda: hyena_conv_fwd(z, w, h, skip, BL, num_warps=nw, programs=progs, **fwd_opts))
            b = timed(lambda: hyena_conv_bwd(dy, z, w, h, skip, BL, num_warps=nw, programs=progs, **opts))
            line = f"{cfg} {f:.3f} | {f / fl_f:.2f} | {b:.3f} | {b / (fl_fb - fl_f):.2f} |"
        except Exception as e:  # noqa: BLE001
            line = f"{cfg} error: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]} | | | |"
        print(line, flush=True)
        out.append(line)
        write(out)
    # where the time goes at the defaults: one forward + backward per operator under the profiler
    from torch.profiler import ProfilerActivity, profile

    from evo2lite.kernels.hyena import hyena_conv
    for K in (7, 128):
        z = rnd(B, L, 3 * D)
        w, h = rnd(3 * D, 3, dtype=torch.float32), rnd(G, K, dtype=torch.float32)
        skip = rnd(D, dtype=torch.float32) if K == 128 else None
        tap = "first" if K == 128 else "last"
        params = [z, w, h] + ([skip] if skip is not None else [])
        fb = fwd_bwd(lambda: hyena_conv(z, w, h, skip, current_tap=tap), params, rnd(B, L, D, grad=False))
        fb()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fb()
            torch.cuda.synchronize()
        try:
            table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=8, max_name_column_width=50)
        except Exception:  # noqa: BLE001 - the key's name moved between torch versions
            table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=50)
        print(f"\nprofile K={K}:\n{table}", flush=True)
        out += ["", f"profile K={K} (one forward + backward):", "```", table, "```"]
        write(out)
        del z
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default="se,mr,attn", help="comma list of sections: " + ",".join(SECTIONS))
    ap.add_argument("--lengths", default="8192,32768,131072")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--d-model", type=int, default=4096)
    ap.add_argument("--groups", type=int, default=256, help="filter groups (Evo 2 7B: 256, group size 16)")
    ap.add_argument("--quick", action="store_true", help="fewer timed repeats (2 after 2 warm-ups)")
    ap.add_argument("--sweep-only", action="store_true", help="only the sweep (kernel tuning)")
    ap.add_argument("--sweep", action="store_true", help="also sweep our kernels' block length and warps")
    ap.add_argument("--sweep-ops", default="se,mr", help="which kernels the sweep times (comma list: mr; se = "
                    "the gather kernels at 7 taps, no longer SE's path: benchmarks/se_sweep.py times SE's)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("operators.py needs a CUDA device")
    ops = [o for o in args.ops.split(",") if o]
    bad = [o for o in ops if o not in SECTIONS]
    if bad:
        sys.exit(f"unknown --ops {bad}; choose from {sorted(SECTIONS)}")
    lengths = [int(x) for x in args.lengths.split(",")]
    reps = dict(min_reps=2, max_reps=5, budget_s=0.1) if args.quick else {}
    N, D = args.tokens, args.d_model
    print(f"# operators: {torch.cuda.get_device_name()}, torch {torch.__version__}, D {D}, G {args.groups}, "
          f"{N} tokens per row, bf16\n\n{HEADER}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, swept = [], []

    def write(sw=None):  # after every row, so a run stopped at its time limit keeps what it measured
        if sw is not None:
            swept[:] = sw
        (out / f"operators_{args.tag}.json").write_text(json.dumps({"rows": results, "sweep": swept}, indent=1))
        md = [HEADER] + [fmt_row(r, r["batch"] * r["L"]) for r in results]
        (out / f"operators_{args.tag}.md").write_text("\n".join(md + [""] + swept) + "\n")

    if args.sweep or args.sweep_only:
        sweep(N, D, args.groups, lengths[0], write, args.sweep_ops.split(","))
    for L in ([] if args.sweep_only else lengths):
        for op in ops:
            try:
                rows = SECTIONS[op](max(1, N // L), L, D, args.groups)
            except Exception as e:  # noqa: BLE001
                rows = [(f"{op} (setup)", "core", e, None)]
            measure(rows, max(1, N // L) * L, D, L, results, reps, write)
            del rows
            torch.cuda.empty_cache()
    write()
    print("\n" + (out / f"operators_{args.tag}.md").read_text())


if __name__ == "__main__":
    main()
