#!/usr/bin/env python
"""Generation benchmark: cached decoding (eager, CUDA graph, optionally torch.compile + graph) against
recompute-everything, per-block-kind decode cost, state memory against context length, a long chunked
prefill, and vtx 1.1 (the official engine) side by side on the same stack.

One invocation measures everything and writes `generate_bench.json` + `generate_bench.md` under --out
(default $OUT, else ./bench_out), rewriting both after every measurement so a timeout keeps what was
done. Needs only torch (+ numpy); vtx is used when `vortex` imports (its wheel in .whl/ is put on
sys.path if it is not installed; it needs einops, rich, tqdm, PyYAML). Random weights throughout.

  GPU (all sections, ~6 min on an H200):
    python benchmarks/generate.py --device cuda
  CPU smoke test:
    python benchmarks/generate.py --device cpu --preset debug --lengths 256,1024

Models: `stack7` = the 7-block SMLASML stack at Evo 2 7B width (D 4096, 32 heads, groups 256, MLP
11008): the stack the issue measured vtx on; `cpu_small` = the same layout at D 256 (2 heads of 128);
or any preset name (evo2_1b_base, evo2_7b, debug, ...). Timings synchronise the device; decode latency
is the mean over --steps steps after warm-up, batch --batch, feeding fixed tokens (no sampling) unless
the row says "+ sampling". Recompute = decoding without a cache: one warm stateless forward over the
whole context per new token, timed at the prompt length itself (see `recompute_ms`). vtx runs with its fused
Hyena kernels on CUDA (VTX_KERNELS), and without the harness's CPU shims there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from _common import ROOT, bootstrap  # noqa: E402

T0 = time.perf_counter()
bootstrap()

import torch  # noqa: E402

from evo2lite.config import PRESETS, ModelConfig  # noqa: E402
from evo2lite.inference import (Decoder, SamplingParams, draw_uniforms, make_generators, prefill,  # noqa: E402
                                sample_next, state_nbytes)
from evo2lite.model import StripedHyena2, init_weights_  # noqa: E402

CUSTOM = {
    "stack7": ModelConfig(layout="SMLASML", d_model=4096, num_heads=32, d_mlp=11008, num_se_groups=256,
                          num_mr_groups=256, name="stack7 (SMLASML @ 7B width)"),
    "cpu_small": ModelConfig(layout="SMLASML", d_model=256, num_heads=2, d_mlp=688, num_se_groups=16,
                             num_mr_groups=16, name="cpu_small (SMLASML @ D 256)"),
}


# --- helpers -----------------------------------------------------------------------------------------

def model_config(name: str) -> ModelConfig:
    if name in CUSTOM:
        return CUSTOM[name]
    if name in PRESETS:
        return PRESETS[name]
    raise SystemExit(f"unknown model {name!r}: use {', '.join(list(CUSTOM) + list(PRESETS))}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def elapsed() -> float:
    return time.perf_counter() - T0


def random_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> StripedHyena2:
    """Random weights of the spec's initialisation, drawn on the device (fast for 7B)."""
    with torch.device(device):
        model = StripedHyena2(cfg)
    return init_weights_(model, seed).cast(dtype).eval()


def random_ids(batch: int, length: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    acgt = torch.tensor([65, 67, 71, 84])
    idx = torch.randint(0, 4, (batch, length), generator=torch.Generator().manual_seed(seed))
    return acgt[idx].to(device)


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def err(exc: BaseException) -> str:
    return "OOM" if is_oom(exc) else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def recompute_ms(next_token, device: torch.device, steps: int) -> float:
    """Decoding without a cache: one warm stateless forward over the whole context per new token. Timed at the
    prompt length itself, repeated (two untimed warm-ups first), so every call reuses the same shapes (kernel
    specialisations, FFT plans, allocator blocks): a lower bound on the cost at lengths L+1, L+2, ... (each new
    length would otherwise pay for a fresh shape and inflate the baseline)."""
    for _ in range(2):
        next_token()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        next_token()
    sync(device)
    return (time.perf_counter() - t) / steps * 1e3


# --- evo2lite measurements ---------------------------------------------------------------------------

def time_decoder(dec: Decoder, tokens: torch.Tensor, steps: int, warmup: int) -> tuple[float, float]:
    """(ms per step, seconds of the first step: CUDA-graph capture / compilation included)."""
    device = dec.device
    sync(device)
    t = time.perf_counter()
    dec.step(tokens)
    sync(device)
    first = time.perf_counter() - t
    for _ in range(warmup):
        dec.step(tokens)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        dec.step(tokens)
    sync(device)
    return (time.perf_counter() - t) / steps * 1e3, first


@torch.inference_mode()
def profile_kinds(model, dec: Decoder, tokens: torch.Tensor, steps: int) -> dict[str, float]:
    """Eager decode time per block kind (ms per token, summed over the blocks of that kind; the median
    over `steps` steps), measured between blocks with CUDA events / perf_counter. Eager, so it includes
    launch overhead."""
    import statistics

    device = dec.device
    per_step: dict[str, list[float]] = {}
    dec.tokens.copy_(tokens)
    for step in range(steps + 1):
        marks = []
        x = model.embedding(dec.tokens)[:, None]
        for i, block in enumerate(model.blocks):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                start = time.perf_counter()
            mix = dec._attention if block.kind == "A" else dec._hyena
            x = x + mix(i, block, block.pre_norm(x))
            x = x + block.mlp(block.post_norm(x))
            if device.type == "cuda":
                end.record()
            else:
                end = time.perf_counter()
            marks.append((block.kind, start, end))
        dec.positions.add_(1)
        dec._last_position += 1
        sync(device)
        if step == 0:
            continue  # warm-up
        sums: dict[str, float] = {}
        for kind, start, end in marks:
            sums[kind] = sums.get(kind, 0.0) + (start.elapsed_time(end) if device.type == "cuda"
                                                else (end - start) * 1e3)
        for kind, ms in sums.items():
            per_step.setdefault(kind, []).append(ms)
    return {k: statistics.median(per_step[k]) for k in sorted(per_step, key="SMLA".index)}


@torch.inference_mode()
def bench_length(model, L: int, args) -> dict:
    device, B = model.device, args.batch
    steps, warm = args.steps, args.warmup
    r: dict = {"length": L, "batch": B}
    ids = random_ids(B, L + max(args.recompute_steps, 1) + 1, device, seed=L)
    tokens = ids[:, L]
    cap = L + 2 * (steps + warm) + 64
    free(device)
    peak_reset(device)
    try:
        sync(device)
        t = time.perf_counter()
        _, state = prefill(model, ids[:, :L], chunk_len=args.chunk_len, capacity=cap)
        sync(device)
        r["prefill_s"] = time.perf_counter() - t
        r["prefill_tok_s"] = B * L / r["prefill_s"]
        r["prefill_peak_gb"] = peak_gb(device)
        kinds = state.nbytes_by_kind()
        r["state_hyena_mb"], r["state_kv_mb"] = kinds["hyena"] / 2**20, kinds["kv"] / 2**20
    except Exception as exc:  # noqa: BLE001
        r["prefill_error"] = err(exc)
        return r
    # every decoder starts from the same prefilled state (Hyena states are copied; the KV buffer is
    # shared and rewritten from position L by each)
    try:
        dec = Decoder(model, state, capacity=cap, cuda_graph=False)
        r["eager_ms"], _ = time_decoder(dec, tokens, steps, warm)
        if args.profile:
            dec = Decoder(model, state, capacity=cap, cuda_graph=False)
            r["eager_ms_by_kind"] = profile_kinds(model, dec, tokens, min(steps, 16))
    except Exception as exc:  # noqa: BLE001
        r["eager_error"] = err(exc)
    if device.type == "cuda" and args.graph:
        try:
            check = Decoder(model, state, capacity=cap, cuda_graph=False)
            want = [check.step(ids[:, L]).float().clone() for _ in range(4)]
            dec = Decoder(model, state, capacity=cap, cuda_graph=True)
            got = [dec.step(ids[:, L]).float().clone() for _ in range(4)]
            r["graph_vs_eager_maxdiff"] = max(float((a - b).abs().max()) for a, b in zip(want, got))
            dec = Decoder(model, state, capacity=cap, cuda_graph=True)
            r["graph_ms"], r["graph_capture_s"] = time_decoder(dec, tokens, steps, warm)
        except Exception as exc:  # noqa: BLE001
            r["graph_error"] = err(exc)
        if L >= args.split_min_len:
            try:
                dec = Decoder(model, state, capacity=cap, cuda_graph=True, attention="split")
                r["graph_split_ms"], _ = time_decoder(dec, tokens, steps, warm)
            except Exception as exc:  # noqa: BLE001
                r["graph_split_error"] = err(exc)
    if args.step_backends != ["auto"]:  # the same decode with each Hyena step backend, side by side
        time_step_backends(model, state, L, ids, cap, args, r)
    # the generation loop as the app runs it: decode step + sampling + host transfer per token
    try:
        dec = Decoder(model, state, capacity=cap, cuda_graph=device.type == "cuda" and args.graph)
        params, gens = SamplingParams(), make_generators(list(range(B)))
        logits = dec.step(tokens)
        for _ in range(warm):
            logits = dec.step(sample_next(logits, params, draw_uniforms(gens)))
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            tok = sample_next(logits, params, draw_uniforms(gens))
            tok.tolist()
            logits = dec.step(tok)
        sync(device)
        r["sampling_loop_ms"] = (time.perf_counter() - t) / steps * 1e3
    except Exception as exc:  # noqa: BLE001
        r["sampling_loop_error"] = err(exc)
    del state
    free(device)
    # recompute-everything baseline
    if args.recompute_steps > 0 and L <= args.recompute_max_len:
        try:
            peak_reset(device)
            r["recompute_ms"] = recompute_ms(lambda: model(ids[:, :L])[:, -1].float().argmax(-1), device,
                                             args.recompute_steps)
            r["recompute_peak_gb"] = peak_gb(device)
        except Exception as exc:  # noqa: BLE001
            r["recompute_error"] = err(exc)
        free(device)
    best = min((r[k] for k in ("compiled_ms", "graph_ms", "graph_split_ms", "eager_ms") if k in r), default=None)
    if best is not None:
        r["best_ms"] = best
        if "recompute_ms" in r:
            r["speedup_vs_recompute"] = r["recompute_ms"] / best
    return r


def time_step_backends(model, state, L: int, ids, cap: int, args, r: dict) -> None:
    """Decode ms/token (CUDA graph on CUDA unless --no-graph, else eager) for each --step-backend, and the
    largest logit difference of its first 4 steps against the eager reference-step decoder."""
    device = model.device
    graph = device.type == "cuda" and args.graph
    r["step_backend_ms"], r["step_backend_maxdiff"] = {}, {}
    try:
        check = Decoder(model, state, capacity=cap, cuda_graph=False, step_backend="reference")
        want = [check.step(ids[:, L]).float().clone() for _ in range(4)]
    except Exception as exc:  # noqa: BLE001
        r["step_backend_check_error"] = err(exc)
        return
    for backend in args.step_backends:
        try:
            dec = Decoder(model, state, capacity=cap, cuda_graph=graph, step_backend=backend)
            got = [dec.step(ids[:, L]).float().clone() for _ in range(4)]
            r["step_backend_maxdiff"][backend] = max(float((a - b).abs().max()) for a, b in zip(want, got))
            dec = Decoder(model, state, capacity=cap, cuda_graph=graph, step_backend=backend)
            r["step_backend_ms"][backend], _ = time_decoder(dec, ids[:, L], args.steps, args.warmup)
        except Exception as exc:  # noqa: BLE001
            r[f"step_backend_{backend}_error"] = err(exc)


@torch.inference_mode()
def bench_compiled(model, L: int, args, r: dict) -> None:
    """torch.compile + CUDA graph decode at prompt length L, added to the row r of that length."""
    device, B = model.device, args.batch
    ids = random_ids(B, L + 1, device, seed=L)
    cap = L + 2 * (args.steps + args.warmup) + 64
    try:
        _, state = prefill(model, ids[:, :L], chunk_len=args.chunk_len, capacity=cap)
        check = Decoder(model, state, capacity=cap, cuda_graph=False)
        want = [check.step(ids[:, L]).float().clone() for _ in range(4)]
        dec = Decoder(model, state, capacity=cap, cuda_graph=device.type == "cuda", compile=True)
        t = time.perf_counter()
        got = [dec.step(ids[:, L]).float().clone() for _ in range(4)]
        sync(device)
        r["compile_s"] = time.perf_counter() - t
        r["compiled_vs_eager_maxdiff"] = max(float((a - b).abs().max()) for a, b in zip(want, got))
        dec = Decoder(model, state, capacity=cap, cuda_graph=device.type == "cuda", compile=True)
        r["compiled_ms"], _ = time_decoder(dec, ids[:, L], args.steps, args.warmup)
        r["best_ms"] = min(r.get("best_ms", float("inf")), r["compiled_ms"])
        if "recompute_ms" in r:
            r["speedup_vs_recompute"] = r["recompute_ms"] / r["best_ms"]
    except Exception as exc:  # noqa: BLE001
        r["compiled_error"] = err(exc)
        traceback.print_exc()
    free(device)


@torch.inference_mode()
def long_prefill(model, L: int, args) -> dict:
    device = model.device
    r: dict = {"length": L, "chunk_len": args.chunk_len}
    free(device)
    peak_reset(device)
    try:
        ids = random_ids(1, L + 1, device, seed=99)
        sync(device)
        t = time.perf_counter()
        _, state = prefill(model, ids[:, :L], chunk_len=args.chunk_len, capacity=L + 256)
        sync(device)
        r["prefill_s"] = time.perf_counter() - t
        r["prefill_tok_s"] = L / r["prefill_s"]
        r["peak_gb"] = peak_gb(device)
        kinds = state.nbytes_by_kind()
        r["state_hyena_mb"], r["state_kv_mb"] = kinds["hyena"] / 2**20, kinds["kv"] / 2**20
        graph = device.type == "cuda" and args.graph
        for attention in ("sdpa", "split"):
            try:
                dec = Decoder(model, state, capacity=L + 256, cuda_graph=graph, attention=attention)
                r[f"decode_ms_{attention}"], _ = time_decoder(dec, ids[:, L], 16, 2)
            except Exception as exc:  # noqa: BLE001
                r[f"decode_{attention}_error"] = err(exc)
            del dec
            free(device)
    except Exception as exc:  # noqa: BLE001
        r["error"] = err(exc)
        r["peak_gb"] = peak_gb(device)
    free(device)
    return r


# --- vtx -------------------------------------------------------------------------------------------------

def load_vtx():
    """The test harness (CPU shims of spec §8) and vortex, or (None, reason)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import vtx_harness

        vtx_harness.import_vtx()
        return vtx_harness, None
    except ImportError:
        # not installed: pure-Python wheels carried in .whl/ (vtx, and rich/tqdm/... if the machine lacks
        # them) are importable as zip files
        for wheel in sorted((ROOT / ".whl").glob("*-none-any.whl")):
            if str(wheel) not in sys.path:
                sys.path.append(str(wheel))
        for name in [m for m in sys.modules if m == "vortex" or m.startswith("vortex.")]:
            del sys.modules[name]
        try:
            import vtx_harness

            vtx_harness.import_vtx()
            return vtx_harness, None
        except Exception as exc:  # noqa: BLE001
            return None, err(exc)
    except Exception as exc:  # noqa: BLE001
        return None, err(exc)


# vtx 1.1's fused Hyena kernels (CUDA/Triton only): the engine as it is meant to run on a GPU
VTX_KERNELS = {"use_hcs_kernel": True, "use_hcm_kernel": True, "use_hcl_kernel": True}


@torch.no_grad()
def vtx_model(harness, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, max_seqlen: int,
              **overrides):
    """A random-weight vtx model of `cfg`'s shape; `overrides` are vtx config keys (VTX_KERNELS)."""
    vcfg = harness.make_vtx_config(cfg.layout, cfg.d_model, cfg.num_heads, cfg.num_se_groups, cfg.d_mlp,
                                   hcm_groups=cfg.num_mr_groups, rotary_base=cfg.rotary_base,
                                   rotary_scale=None if cfg.rotary_scale == 1 else cfg.rotary_scale,
                                   max_seqlen=max_seqlen, **overrides)
    vtx = harness.import_vtx()
    # built without the CPU shims on a GPU: vortex places its blocks on the device it sees (and moves the
    # residual stream back to block 0's device after the last block)
    with harness.vtx_context(device), contextlib.redirect_stdout(io.StringIO()):
        model = vtx.StripedHyena(vtx.dotdict(vcfg))
    gen = torch.Generator(device).manual_seed(0)
    d = cfg.d_model
    for name, p in model.named_parameters():
        p.data = p.data.to(device=device, dtype=torch.float32)
        if name.endswith(".scale"):
            p.data.fill_(1.0)
        elif name.endswith("log_poles"):
            p.data.copy_(-0.36787944 * (0.01 + 0.09 * torch.rand(p.shape, generator=gen, device=device)))
        elif name.endswith("residues"):
            p.data.copy_(torch.randn(p.shape, generator=gen, device=device) * 0.025)
        elif name.endswith("bias"):
            p.data.zero_()
        else:
            p.data.copy_(torch.randn(p.shape, generator=gen, device=device) * (2 / (5 * d)) ** 0.5)
    for name, b in model.named_buffers():
        b.data = b.data.to(device)
    harness.set_vtx_precision(model, dtype)
    return model.eval()


@torch.inference_mode()
def bench_vtx(harness, vmodel, L: int, args, device) -> dict:
    r: dict = {"length": L, "batch": 1}
    steps, warm = args.steps, args.warmup
    ids = random_ids(1, L + max(args.recompute_steps, 1) + 1, device, seed=L)
    free(device)
    peak_reset(device)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with harness.vtx_context(device), quiet:
        try:
            params = vmodel.initialize_inference_params(max_seqlen=L + steps + warm + 16)
            params["mha"].max_batch_size = 1
            sync(device)
            t = time.perf_counter()
            vmodel(ids[:, :L], inference_params_dict=params)
            sync(device)
            r["prefill_s"] = time.perf_counter() - t
            r["prefill_peak_gb"] = peak_gb(device)
            for p in params.values():
                p.seqlen_offset = L
            tok = ids[:, L:L + 1]

            def step():
                vmodel(tok, inference_params_dict=params)
                for p in params.values():
                    p.seqlen_offset += 1

            for _ in range(warm):
                step()
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            r["decode_ms"] = (time.perf_counter() - t) / steps * 1e3
        except Exception as exc:  # noqa: BLE001
            r["cached_error"] = err(exc)
            r["prefill_peak_gb"] = peak_gb(device)
        params = None
        free(device)
        if args.recompute_steps > 0 and L <= args.recompute_max_len:
            try:
                r["recompute_ms"] = recompute_ms(lambda: vmodel(ids[:, :L])[0][:, -1].float().argmax(-1), device,
                                                 args.recompute_steps)
            except Exception as exc:  # noqa: BLE001
                r["recompute_error"] = err(exc)
    if "decode_ms" in r and "recompute_ms" in r:
        r["speedup_vs_recompute"] = r["recompute_ms"] / r["decode_ms"]
    free(device)
    return r


# --- report ----------------------------------------------------------------------------------------------

def fmt(v, spec=".3g"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"## Generation benchmark, {m['date']}", "",
             f"- device: {m['device_name']}; torch {m['torch']}; dtype {m['dtype']}; batch {m['batch']}; "
             f"threads {m['threads']}" + (f"; load average {m['loadavg']}" if m.get("loadavg") else ""),
             f"- command: `{m['command']}`", f"- wall time: {m.get('wall_s', 0):.0f} s", ""]
    cols = [("length", "prompt"), ("prefill_s", "prefill s"), ("prefill_tok_s", "prefill tok/s"),
            ("eager_ms", "eager ms/tok"), ("graph_ms", "graph ms/tok"), ("graph_split_ms", "graph split-KV ms/tok"),
            ("compiled_ms", "compile+graph ms/tok"),
            ("sampling_loop_ms", "decode + sampling ms/tok"), ("recompute_ms", "recompute ms/tok"),
            ("speedup_vs_recompute", "speed-up vs recompute"), ("state_hyena_mb", "Hyena state MiB"),
            ("state_kv_mb", "KV MiB (capacity)"), ("prefill_peak_gb", "prefill peak GiB")]
    for model_name, rows in report["evo2lite"].items():
        lines += [f"### evo2lite, {model_name}", "",
                  "| " + " | ".join(c[1] for c in cols) + " | notes |",
                  "|" + "---|" * (len(cols) + 1)]
        for r in rows:
            notes = "; ".join(f"{k}: {v}" for k, v in r.items() if k.endswith("error"))
            if "graph_vs_eager_maxdiff" in r:
                notes = (notes + "; " if notes else "") + f"graph vs eager max abs dlogit {r['graph_vs_eager_maxdiff']:.2g}"
            if "compile_s" in r:
                notes = (notes + "; " if notes else "") + (f"compile {r['compile_s']:.0f} s, compiled vs eager max "
                                                           f"abs dlogit {r.get('compiled_vs_eager_maxdiff', 0):.2g}")
            lines.append("| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + f" | {notes} |")
        by_backend = [r for r in rows if r.get("step_backend_ms")]
        if by_backend:
            lines += ["", "Decode by Hyena step backend (`--step-backend`; CUDA graph on CUDA), ms per token, and "
                      "the max abs logit difference of 4 steps against eager reference steps:", "",
                      "| prompt | step backend | ms/tok | max abs dlogit |", "|---|---|---|---|"]
            for r in by_backend:
                for b, ms in r["step_backend_ms"].items():
                    lines.append(f"| {r['length']} | {b} | {fmt(ms)} | {fmt(r['step_backend_maxdiff'].get(b), '.2g')} |")
            lines.append("")
        kinds = [r for r in rows if "eager_ms_by_kind" in r]
        if kinds:
            lines += ["", "Eager decode time per block kind (ms per token, all blocks of the kind; includes "
                      "launch overhead):", "", "| prompt | " + " | ".join("SMLA") + " |", "|---|---|---|---|---|"]
            for r in kinds:
                k = r["eager_ms_by_kind"]
                lines.append(f"| {r['length']} | " + " | ".join(fmt(k.get(c)) for c in "SMLA") + " |")
        lines.append("")
    if report.get("vtx"):
        for model_name, rows in report["vtx"].items():
            kernels = report.get("vtx_kernels")
            lines += [f"### vtx 1.1 (official engine), {model_name}, kernels "
                      f"{'on' if kernels else 'off'}{' (' + report['vtx_kernels_error'] + ')' if report.get('vtx_kernels_error') else ''}", ""]
            if isinstance(rows, str):
                lines += [f"not run: {rows}", ""]
                continue
            lines += ["| prompt | prefill s | decode ms/tok | recompute ms/tok | speed-up | prefill peak GiB | notes |",
                      "|---|---|---|---|---|---|---|"]
            for r in rows:
                notes = "; ".join(f"{k}: {v}" for k, v in r.items() if k.endswith("error"))
                lines.append(f"| {r['length']} | {fmt(r.get('prefill_s'))} | {fmt(r.get('decode_ms'))} | "
                             f"{fmt(r.get('recompute_ms'))} | {fmt(r.get('speedup_vs_recompute'))} | "
                             f"{fmt(r.get('prefill_peak_gb'))} | {notes} |")
            lines.append("")
    if report.get("long_prefill"):
        lines += ["### Long chunked prefill", "",
                  "| model | prompt | chunk | prefill s | tok/s | peak GiB | Hyena state MiB | KV MiB | decode ms/tok there (sdpa) | (split-KV) | notes |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for model_name, r in report["long_prefill"].items():
            lines.append(f"| {model_name} | {r['length']} | {r['chunk_len']} | {fmt(r.get('prefill_s'))} | "
                         f"{fmt(r.get('prefill_tok_s'))} | {fmt(r.get('peak_gb'))} | {fmt(r.get('state_hyena_mb'))} | "
                         f"{fmt(r.get('state_kv_mb'))} | {fmt(r.get('decode_ms_sdpa'))} | {fmt(r.get('decode_ms_split'))} | "
                         + "; ".join(f"{k}: {v}" for k, v in r.items() if k.endswith("error")) + " |")
        lines.append("")
    lines += ["### State memory against context (analytic, batch 1, KV in the model dtype)", "",
              "| model | context | Hyena state MiB (constant) | KV cache MiB | total MiB |", "|---|---|---|---|---|"]
    for r in report["state_memory"]:
        lines.append(f"| {r['model']} | {r['context']} | {r['hyena_mb']:.2f} | {r['kv_mb']:.1f} | {r['total_mb']:.1f} |")
    if report.get("skipped"):
        lines += ["", "Skipped (time budget or flags): " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    report["meta"]["wall_s"] = elapsed()
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate_bench.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "generate_bench.md").write_text(markdown(report))


def print_row(tag: str, r: dict) -> None:
    keys = ("prefill_s", "eager_ms", "graph_ms", "graph_split_ms", "compiled_ms", "sampling_loop_ms", "decode_ms", "recompute_ms",
            "speedup_vs_recompute")
    parts = [f"{k}={fmt(r[k])}" for k in keys if k in r]
    parts += [f"step_{b}_ms={fmt(ms)}" for b, ms in r.get("step_backend_ms", {}).items()]
    parts += [f"{k}={v}" for k, v in r.items() if k.endswith("error")]
    print(f"[{elapsed():6.0f}s] {tag} L={r.get('length')}: " + " ".join(parts), flush=True)


# --- main ------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="bfloat16 (CUDA default) or float32 (CPU default)")
    p.add_argument("--models", "--preset", dest="models", default=None,
                   help="comma list (default: cuda stack7,evo2_1b_base,evo2_7b; cpu cpu_small)")
    p.add_argument("--lengths", default=None, help="prompt lengths (default: 1024,8192,65536 on CUDA, 1024,8192 on CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="timed decode steps (default 64 CUDA, 16 CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--recompute-steps", type=int, default=None, help="timed recompute steps (default 3 CUDA, 2 CPU)")
    p.add_argument("--recompute-max-len", type=int, default=1 << 17, help="skip recompute above this prompt length")
    p.add_argument("--chunk-len", type=int, default=8192, help="prefill chunk length")
    p.add_argument("--no-graph", dest="graph", action="store_false", help="skip the CUDA-graph decode")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the per-block-kind profile")
    p.add_argument("--split-min-len", type=int, default=32768,
                   help="also time the split-KV decode attention (CUDA graph) from this prompt length")
    p.add_argument("--compile-lengths", default=None,
                   help="lengths at which to time torch.compile + graph on the first model, at the end "
                        "(default: 8192 on CUDA, none on CPU)")
    p.add_argument("--step-backend", dest="step_backends", default="auto",
                   help="comma list of Hyena step backends (auto, triton, reference): besides the default "
                        "path, time the decode with each in the same run (e.g. reference,triton)")
    p.add_argument("--no-vtx", dest="vtx", action="store_false", help="skip vtx")
    p.add_argument("--vtx-lengths", default=None, help="default: the --lengths")
    p.add_argument("--long-prefill", type=int, default=None,
                   help="prompt length of the long-prefill test on the first model (default 1048576 on CUDA, 0 = off on CPU)")
    p.add_argument("--budget", type=float, default=330.0, help="seconds; later sections are skipped past it")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=os.environ.get("OUT") or "bench_out")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.models = (args.models or ("stack7,evo2_1b_base,evo2_7b" if cuda else "cpu_small")).split(",")
    args.lengths = [int(x) for x in (args.lengths or ("1024,8192,65536" if cuda else "1024,8192")).split(",")]
    args.vtx_lengths = [int(x) for x in args.vtx_lengths.split(",")] if args.vtx_lengths else args.lengths
    args.steps = args.steps or (64 if cuda else 16)
    args.recompute_steps = (3 if cuda else 2) if args.recompute_steps is None else args.recompute_steps
    args.compile_lengths = [int(x) for x in (args.compile_lengths or ("8192" if cuda else "")).split(",") if x]
    args.long_prefill = (1 << 20 if cuda else 0) if args.long_prefill is None else args.long_prefill
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.step_backends = args.step_backends.split(",")
    if not set(args.step_backends) <= {"auto", "triton", "reference"}:
        raise SystemExit(f"--step-backend: use auto, triton or reference, got {','.join(args.step_backends)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
             "fp32": torch.float32}[args.dtype]
    out = Path(args.out)
    report = {"meta": {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python benchmarks/generate.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch": torch.__version__, "dtype": args.dtype, "batch": args.batch, "threads": torch.get_num_threads(),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "steps": args.steps, "recompute_steps": args.recompute_steps, "chunk_len": args.chunk_len},
        "evo2lite": {}, "vtx": {}, "long_prefill": {}, "state_memory": [], "skipped": []}
    for name in args.models:
        cfg = model_config(name)
        for ctx in sorted(set([1024, 8192, 65536, 1 << 20] + args.lengths)):
            s = state_nbytes(cfg, 1, ctx, dtype)
            report["state_memory"].append({"model": name, "context": ctx, "hyena_mb": s["hyena"] / 2**20,
                                           "kv_mb": s["kv"] / 2**20, "total_mb": s["total"] / 2**20})
    write(report, out)
    print(f"device {report['meta']['device_name']}, torch {torch.__version__}, {args.dtype}; out {out}", flush=True)

    for index, name in enumerate(args.models):
        cfg = model_config(name)
        if elapsed() > args.budget:
            report["skipped"].append(f"{name} (budget)")
            continue
        model = random_model(cfg, device, dtype)
        print(f"[{elapsed():6.0f}s] built {name}: {sum(p.numel() for p in model.parameters()) / 1e6:,.0f} M params",
              flush=True)
        with torch.inference_mode():  # first-call costs (allocator, FFT plans, kernels) out of the timings
            _, warm_state = prefill(model, random_ids(args.batch, 64, device), chunk_len=32)
            Decoder(model, warm_state, capacity=128, cuda_graph=False).step(random_ids(args.batch, 1, device)[:, 0])
            model(random_ids(args.batch, 64, device))
            del warm_state
        rows = report["evo2lite"].setdefault(name, [])
        for L in args.lengths:
            if elapsed() > args.budget:
                report["skipped"].append(f"{name} L={L} (budget)")
                continue
            r = bench_length(model, L, args)
            rows.append(r)
            print_row(name, r)
            write(report, out)
        if index == 0 and args.long_prefill:
            if elapsed() > args.budget:
                report["skipped"].append(f"long prefill {args.long_prefill} (budget)")
            else:
                r = long_prefill(model, args.long_prefill, args)
                report["long_prefill"][name] = r
                print(f"[{elapsed():6.0f}s] long prefill {name}: {r}", flush=True)
                write(report, out)
        del model
        free(device)
        if index == 0 and args.vtx:
            harness, why = load_vtx()
            if harness is None:
                report["vtx"][name] = f"vtx unavailable ({why})"
            else:
                try:
                    warm_args = argparse.Namespace(**{**vars(args), "steps": 2})
                    vmodel = vtx_model(harness, cfg, device, dtype, max(args.vtx_lengths) + args.steps + 64,
                                       **(VTX_KERNELS if device.type == "cuda" else {}))
                    warm = bench_vtx(harness, vmodel, 64, warm_args, device)  # warm-up
                    report["vtx_kernels"] = device.type == "cuda"
                    failed = [f"{k}: {v}" for k, v in warm.items() if k.endswith("error")]
                    if device.type == "cuda" and failed:  # a kernel vtx cannot run here: vtx without kernels
                        report["vtx_kernels"], report["vtx_kernels_error"] = False, "; ".join(failed)
                        del vmodel
                        free(device)
                        vmodel = vtx_model(harness, cfg, device, dtype, max(args.vtx_lengths) + args.steps + 64)
                        bench_vtx(harness, vmodel, 64, warm_args, device)
                    vrows = report["vtx"].setdefault(name, [])
                    for L in args.vtx_lengths:
                        if elapsed() > args.budget:
                            report["skipped"].append(f"vtx L={L} (budget)")
                            continue
                        r = bench_vtx(harness, vmodel, L, args, device)
                        vrows.append(r)
                        print_row(f"vtx {name}", r)
                        write(report, out)
                    del vmodel
                except Exception as exc:  # noqa: BLE001
                    report["vtx"][name] = f"failed: {err(exc)}"
                    traceback.print_exc()
                free(device)
            print(f"[{elapsed():6.0f}s] vtx: {report['vtx'].get(name) if isinstance(report['vtx'].get(name), str) else 'done'}",
                  flush=True)
            write(report, out)
    if args.compile_lengths and args.models:  # last: compiling takes a while
        name = args.models[0]
        rows = {r["length"]: r for r in report["evo2lite"].get(name, [])}
        todo = [L for L in args.compile_lengths if L in rows]
        if todo and elapsed() > args.budget:
            report["skipped"].append("torch.compile + graph (budget)")
        elif todo:
            model = random_model(model_config(name), device, dtype)
            for L in todo:
                bench_compiled(model, L, args, rows[L])
                print(f"[{elapsed():6.0f}s] compiled {name} L={L}: "
                      f"{ {k: rows[L].get(k) for k in ('compiled_ms', 'compile_s', 'compiled_error')} }", flush=True)
                write(report, out)
            del model
            free(device)
    write(report, out)
    print(markdown(report))


if __name__ == "__main__":
    main()
