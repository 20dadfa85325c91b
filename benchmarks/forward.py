#!/usr/bin/env python
"""Inference forward: the 7-block SMLASML stack at Evo 2 7B width (bf16, batch 1, random weights), evo2lite
next to vtx 1.1 (the official engine, its fused Hyena kernels on) in the same run: ms per forward and the
peak memory of the whole pass (torch.cuda.max_memory_allocated, weights included) at each length.

Each engine runs in its own subprocess: vtx needs the test harness's import shims (tests/vtx_harness.py),
which on CPU also hide CUDA, and a fresh process gives each engine its own allocator (peaks not mixed, an
OOM or a crash in one engine leaves the other's rows). The parent prints one table and writes forward.json +
forward.md under --out (default $OUT, else benchmarks/out), rewritten after every engine.

  GPU (each engine capped by --timeout):   python benchmarks/forward.py
  CPU smoke test (seconds):                python benchmarks/forward.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import default_device_dtype, default_out, human, parse_length

ENGINES = ("evo2lite", "vtx")


# --- child: one engine ------------------------------------------------------------------------------------

def child(args) -> None:
    import torch

    import generate as g  # the stack configs, random models/ids, timers and the vtx loader, shared

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cfg = g.model_config(args.model)
    lengths = [parse_length(x) for x in args.lengths.split(",")]
    result: dict = {"engine": args.child, "rows": []}

    def save() -> None:
        Path(args.json).write_text(json.dumps(result, indent=1))

    if args.child == "evo2lite":
        model = g.random_model(cfg, device, dtype)
        result["backend"] = "auto (Triton kernels on CUDA)"

        def forward(ids):
            return model(ids)
        ctx = contextlib.nullcontext
    else:
        harness, why = g.load_vtx()
        if harness is None:
            result["error"] = f"vtx unavailable: {why}"
            return save()
        ctx = lambda: harness.vtx_context(device)  # noqa: E731

        def build(kernels: bool):
            extra = g.VTX_KERNELS if kernels else {}
            return g.vtx_model(harness, cfg, device, dtype, max(lengths) + 16, **extra)

        def forward(ids):
            with contextlib.redirect_stdout(io.StringIO()):
                return model(ids)[0]
        model = build(device.type == "cuda")
        result["kernels"] = device.type == "cuda"
        if result["kernels"]:  # a kernel that fails here: record it and measure vtx without kernels
            try:
                with torch.inference_mode(), ctx():
                    forward(g.random_ids(1, min(lengths), device))
            except Exception as exc:  # noqa: BLE001
                result["kernels"], result["kernels_error"] = False, g.err(exc)
                del model
                g.free(device)
                model = build(False)
    with torch.inference_mode(), ctx():
        forward(g.random_ids(1, min(lengths), device))  # warm-up: kernel compilation
        for L in lengths:
            row: dict = {"length": L}
            ids = g.random_ids(1, L, device, seed=L)
            g.free(device)
            g.peak_reset(device)
            try:
                forward(ids)  # untimed: kernels autotuned per shape, FFT plans, allocator blocks
                times = []
                t_end = time.perf_counter() + args.seconds_per_length
                while len(times) < args.reps and (not times or time.perf_counter() < t_end):
                    g.sync(device)
                    t = time.perf_counter()
                    logits = forward(ids)
                    g.sync(device)
                    times.append(time.perf_counter() - t)
                    del logits
                row.update(ms=statistics.median(times) * 1e3, reps=len(times), peak_gib=g.peak_gb(device))
            except Exception as exc:  # noqa: BLE001
                row.update(error=g.err(exc), peak_gib=g.peak_gb(device))
            result["rows"].append(row)
            save()
            print(f"  {args.child} L={human(L)}: {row}", file=sys.stderr, flush=True)
            if "error" in row:
                break  # longer lengths fail the same way
        if args.profile and result["rows"] and "error" not in result["rows"][0]:
            result["profile"] = profile_forward(forward, g.random_ids(1, lengths[len(lengths) // 2], device), device)
    save()


def profile_forward(forward, ids, device) -> str:
    """torch.profiler's key-averages table of one forward (top ops by device time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        forward(ids)
        if cuda:
            torch.cuda.synchronize(device)
    return prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=12,
                                     max_name_column_width=60)


# --- parent: both engines, the table ----------------------------------------------------------------------

def run_engine(engine: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{engine}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--json", str(path),
               "--device", args.device, "--dtype", args.dtype, "--model", args.model, "--lengths", args.lengths,
               "--reps", str(args.reps), "--seconds-per-length", str(args.seconds_per_length)] + \
            (["--profile"] if args.profile else [])
        began = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=args.timeout, capture_output=True, text=True)
            rc, tail = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, tail = "timeout", (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        result = json.loads(path.read_text()) if path.is_file() else {"engine": engine, "rows": []}
        result["wall_s"] = time.perf_counter() - began
        if rc != 0:
            result.setdefault("error", f"exit {rc}: " + (tail.strip().splitlines() or [""])[-1][:300])
        result["stderr_tail"] = tail[-3000:]  # in the JSON: the e2e run keeps few files
        return result


def markdown(report: dict) -> str:
    m = report["meta"]
    rows = {e: {r["length"]: r for r in report["engines"].get(e, {}).get("rows", [])} for e in ENGINES}
    lengths = sorted(set(rows["evo2lite"]) | set(rows["vtx"]))
    vtx = report["engines"].get("vtx", {})
    lines = [f"## Forward, {m['model']} ({m['dtype']}, batch 1), {m['date']}", "",
             f"- device: {m['device_name']}; torch {m['torch']}; command `{m['command']}`",
             f"- vtx 1.1 kernels: {'on' if vtx.get('kernels') else 'off'}"
             + (f" ({vtx['kernels_error']})" if vtx.get("kernels_error") else ""), "",
             "| length | evo2lite ms | evo2lite peak GiB | vtx ms | vtx peak GiB | speed-up | peak ratio |",
             "|---|---|---|---|---|---|---|"]

    def cell(r, key, spec):
        if r is None:
            return "-"
        return format(r[key], spec) if r.get(key) is not None and key in r and "error" not in r else r.get("error", "-")
    for L in lengths:
        a, b = rows["evo2lite"].get(L), rows["vtx"].get(L)
        ok = a and b and "ms" in a and "ms" in b
        speed = f"{b['ms'] / a['ms']:.2f}x" if ok else "-"
        ratio = f"{a['peak_gib'] / b['peak_gib']:.2f}" if ok and a.get("peak_gib") and b.get("peak_gib") else "-"
        lines.append(f"| {human(L)} | {cell(a, 'ms', '.1f')} | {cell(a, 'peak_gib', '.2f')} | {cell(b, 'ms', '.1f')} | "
                     f"{cell(b, 'peak_gib', '.2f')} | {speed} | {ratio} |")
    for e in ENGINES:
        if report["engines"].get(e, {}).get("error"):
            lines.append(f"\n{e}: {report['engines'][e]['error']}")
    for e in ENGINES:
        if report["engines"].get(e, {}).get("profile"):
            lines += ["", f"### torch.profiler, one {e} forward (top ops)", "", "```", report["engines"][e]["profile"],
                      "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="default cuda when available")
    p.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--model", default="stack7", help="stack7 (7B width), cpu_small, or a preset name")
    p.add_argument("--lengths", default="8k,32k,128k")
    p.add_argument("--engines", default="evo2lite,vtx")
    p.add_argument("--reps", type=int, default=3,
                   help="timed forwards per length (median) after an untimed one, within the time below")
    p.add_argument("--seconds-per-length", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per engine subprocess")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler table of one forward per engine "
                   "(the middle length)")
    p.add_argument("--out", default=default_out())
    p.add_argument("--dry-run", action="store_true", help="CPU, cpu_small stack, 256/512 tokens: seconds")
    p.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.model, args.lengths, args.reps, args.timeout = "cpu", "cpu_small", "256,512", 1, 120.0
    default_device_dtype(args)
    if args.child:
        child(args)
        return 0
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device.startswith("cuda")
    report = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model,
                       "dtype": args.dtype, "torch": torch.__version__, "command": " ".join(sys.argv),
                       "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"},
              "engines": {}}
    for engine in args.engines.split(","):
        print(f"forward: {engine} ...", file=sys.stderr, flush=True)
        report["engines"][engine] = run_engine(engine, args)
        (out / "forward.json").write_text(json.dumps(report, indent=1))
        (out / "forward.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
