"""Benchmark of `evo2lite embed`: bases/s and peak memory against sequence length, exact streaming.

    python benchmarks/embed.py                         # everything this device can do, defaults below
    python benchmarks/embed.py --parts stream --lengths 1k,8k,1M --out /tmp/b
    python benchmarks/embed.py --parts stream --lengths 1M --stop-after 200   # #13's 1 Mb, evo2_7b shape

Parts (`--parts`, comma-separated; default all that apply):
  exact   streamed == full pass on this device's code path: the debug model in fp32 (several chunk sizes),
          and in bf16 next to the error bf16 itself makes (tolerance rule of DESIGN.md).
  stream  evo2lite's exact streamed embedding (per-token to host memory) of one random sequence at growing
          lengths until one is out of memory, over `--max-seconds`, or predicted to overrun `--budget`.
          CUDA default: the evo2_7b shape (32 blocks, D=4096, 5 attention blocks) with random bf16 weights,
          layer `final`, so all 32 blocks run. CPU default: the shipped model, or the debug preset when the
          installation has none (said so in the output). `--stop-after S` cuts an embedding that runs past S
          seconds: its row gives the bases done and the rate so far (a progress line every 30 s meanwhile).
  stack   CUDA only: the 7-block D=4096 stack (SMLASML) on evo2lite (full pass and streamed) next to vtx 1.1
          (stateless forward, use_flash_attn False, fp8 False), if `vortex` imports.
Peak memory: torch.cuda.max_memory_allocated (CUDA) or the process's peak RSS so far (CPU). KV cache: the
analytic size, 2 x attention blocks x L x D x bytes. Writes embed.json and embed.md under --out (default
$OUT, else benchmarks/out). Needs torch and numpy only (no typer, h5py, pysam); runs from a source checkout
without installing evo2lite.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GiB, ROOT, bootstrap, default_out, human, parse_length  # noqa: E402

bootstrap()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evo2lite.apps.embed import Embedder, SeqInput  # noqa: E402
from evo2lite.config import PRESETS, ModelConfig  # noqa: E402
from evo2lite.model import StripedHyena2, init_weights_  # noqa: E402

STACK = dict(layout="SMLASML", d_model=4096, num_heads=32, d_mlp=11264, num_se_groups=256, num_mr_groups=256,
             rotary_scale=128.0, context_len=1 << 20, name="evo2_7b 7-block stack")


def random_dna(n: int, seed: int) -> bytes:
    return np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(seed).integers(0, 4, n)].tobytes()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def build_model(config: ModelConfig, device, dtype, seed: int = 0) -> StripedHyena2:
    with torch.device(device):
        model = StripedHyena2(config)
    return init_weights_(model, seed).cast(dtype).eval()


def kv_bytes(config: ModelConfig, layer_blocks: int, length: int, item: int) -> int:
    return 2 * config.layout[:layer_blocks].count("A") * length * config.d_model * item


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --- parts -------------------------------------------------------------------------------------------

def part_exact(device) -> dict:
    """Streamed vs full pass on this device, debug model: fp32 max |diff| per chunk size, and bf16."""
    out = {}
    seq = random_dna(3000, 1)
    for dtype in (torch.float32, torch.bfloat16):
        model = build_model(PRESETS["debug"], device, torch.float32, seed=1)
        capture = dict.fromkeys(["final", "blocks.3"])
        with torch.inference_mode():
            model.hidden_states(torch.as_tensor(np.frombuffer(seq, dtype=np.uint8).astype(np.int64))[None],
                                capture=capture)
        reference = {k: v[0].float().cpu().numpy() for k, v in capture.items()}
        model.cast(dtype)
        rows = {}
        for chunk in (1 << 20, 1000, 257):
            got = Embedder(model, ["final", "blocks.3"], chunk_size=chunk).embed_one(SeqInput("x", seq)).arrays
            rows[str(chunk)] = max(float(np.abs(got[k] - reference[k]).max()) for k in got)
        rows["scale"] = max(float(np.abs(v).max()) for v in reference.values())
        out[str(dtype).replace("torch.", "")] = rows
    f32, b16 = out["float32"], out["bfloat16"]
    out["fp32_streamed_equals_full"] = max(f32["1000"], f32["257"]) <= 1e-4 * max(1.0, f32["scale"])
    # bf16: streaming may not add more than the error bf16 makes in one full pass (x2, DESIGN.md rule)
    out["bf16_within_rule"] = max(b16["1000"], b16["257"]) <= 2 * b16[str(1 << 20)] + 1e-3 * b16["scale"]
    return out


class Stopped(Exception):
    """An embedding cut at --stop-after: what it had done by then."""

    def __init__(self, done: int, seconds: float):
        super().__init__(f"stopped after {seconds:.0f} s at {done:,} bases")
        self.done, self.seconds = done, seconds


def measure(model, seq: bytes, device, *, layer: str, chunk: int, pool: str | None,
            stop_after: float | None = None, report_every: float = 30.0) -> dict:
    embedder = Embedder(model, layer, chunk_size=chunk, pool=pool)
    reset_peak(device)
    base = torch.cuda.memory_allocated() if torch.device(device).type == "cuda" else 0
    sync(device)
    began = time.perf_counter()
    done, last_report = 0, began

    def progress(n: int) -> None:  # after each chunk: a progress line, and the --stop-after cut
        nonlocal done, last_report
        done += n
        now = time.perf_counter()
        if now - last_report >= report_every:
            print(f"    {done:,} of {len(seq):,} bases in {now - began:.0f} s", flush=True)
            last_report = now
        if stop_after is not None and now - began > stop_after and done < len(seq):
            sync(device)
            raise Stopped(done, time.perf_counter() - began)
    try:
        emb = embedder.embed_one(SeqInput("x", seq), progress=progress)
    except Stopped as cut:
        return {"length": len(seq), "status": f"cut by --stop-after: {cut}", "bases_done": cut.done,
                "seconds": cut.seconds, "bases_per_s": cut.done / cut.seconds, "peak_gib": peak_bytes(device) / GiB}
    sync(device)
    seconds = time.perf_counter() - began
    array = emb.arrays[embedder.layers[0]]
    finite = bool(np.isfinite(array[-4096:] if array.ndim == 2 else array).all())
    del emb, array
    peak = peak_bytes(device)
    item = torch.empty((), dtype=model.dtype).element_size()
    return {"length": len(seq), "seconds": seconds, "bases_per_s": len(seq) / seconds,
            "peak_gib": peak / GiB, "peak_above_weights_gib": (peak - base) / GiB,
            "kv_cache_gib": kv_bytes(model.config, embedder.num_blocks, len(seq), item) / GiB,
            "finite": finite, "status": "ok"}


def predict_seconds(done: list[dict], length: int) -> float:
    """time = a L + b L^2 (linear layers + attention) through the two longest runs (b >= 0)."""
    if len(done) == 1:
        return done[0]["seconds"] * (length / done[0]["length"]) ** 2
    (l1, t1), (l2, t2) = [(r["length"], r["seconds"]) for r in done[-2:]]
    b = max(0.0, (t2 / l2 - t1 / l1) / (l2 - l1))
    a = max(0.0, t2 / l2 - b * l2)
    return a * length + b * length ** 2


def sweep(model, lengths, device, *, layer, chunk, pool, budget, max_seconds, label,
          stop_after: float | None = None) -> list[dict]:
    measure(model, random_dna(min(chunk, 1024) + 7, 0), device, layer=layer, chunk=min(chunk, 1024), pool=pool)
    rows, began, last = [], time.perf_counter(), None  # (after a warm-up: kernel loading is not timed)
    for length in lengths:
        if last is not None:
            predicted = predict_seconds([r for r in rows if r.get("status") == "ok"], length)
            remaining = budget - (time.perf_counter() - began)
            if predicted > min(remaining, max_seconds):
                why = (f"predicted {predicted:.0f} s > --max-seconds {max_seconds:.0f}" if predicted > max_seconds
                       else f"predicted {predicted:.0f} s > {remaining:.0f} s left of --budget")
                rows.append({"length": length, "status": f"skipped: {why}"})
                print(f"  {label} L={human(length)}: skipped ({why})", flush=True)
                break
        seq = random_dna(length, length)
        try:
            row = measure(model, seq, device, layer=layer, chunk=chunk, pool=pool, stop_after=stop_after)
        except torch.OutOfMemoryError as exc:
            rows.append({"length": length, "status": "out of memory", "detail": str(exc).splitlines()[0]})
            print(f"  {label} L={human(length)}: out of memory", flush=True)
            reset_peak(device)
            break
        rows.append(row)
        if row["status"] != "ok":
            print(f"  {label} L={human(length)}: {row['status']}, {row['bases_per_s']:,.0f} bases/s so far, "
                  f"peak {row['peak_gib']:.2f} GiB", flush=True)
            break
        last = row
        print(f"  {label} L={human(length)}: {row['seconds']:.2f} s, {row['bases_per_s']:,.0f} bases/s, "
              f"peak {row['peak_gib']:.2f} GiB (KV {row['kv_cache_gib']:.2f} GiB)", flush=True)
    return rows


def capacity_estimate(rows: list[dict], total_gib: float) -> int | None:
    """Longest length the memory model predicts to fit: a line through the two longest measured peaks."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if len(ok) < 2 or ok[-1]["length"] == ok[-2]["length"]:
        return None
    (l1, p1), (l2, p2) = [(r["length"], r["peak_gib"]) for r in ok[-2:]]
    slope = (p2 - p1) / (l2 - l1)
    return int(l2 + (total_gib - p2) / slope) if slope > 0 else None


def load_vtx():
    sys.path.insert(0, str(ROOT / "tests"))
    import vtx_harness

    return vtx_harness, vtx_harness.import_vtx()


@torch.no_grad()
def vtx_random_(model, seed: int, device) -> None:
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(".scale"):
            p.fill_(1.0)
        elif name.endswith("log_poles"):
            p.uniform_(0.01, 0.1, generator=gen).mul_(-math.exp(-1.0))
        elif name.endswith(".bias"):
            p.zero_()
        else:
            p.normal_(0, 0.02, generator=gen)


def vtx_forward(model, harness, length: int, device) -> dict:
    """One stateless vtx forward (logits) of a random sequence: time and peak memory."""
    ids = torch.as_tensor(np.frombuffer(random_dna(length, length), dtype=np.uint8).astype(np.int64))[None]
    reset_peak(device)
    try:
        sync(device)
        began = time.perf_counter()
        with torch.inference_mode(), harness.vtx_context(device):
            model(ids.to(device))
        sync(device)
    except torch.OutOfMemoryError as exc:
        return {"length": length, "status": "out of memory", "detail": str(exc).splitlines()[0]}
    seconds = time.perf_counter() - began
    return {"length": length, "seconds": seconds, "bases_per_s": length / seconds, "status": "ok",
            "peak_gib": peak_bytes(device) / GiB}


def part_stack(lengths, device, *, chunk, budget, stack: dict = STACK) -> dict:
    """The 7-block D=4096 stack: vtx stateless forward vs evo2lite full pass and streamed embedding."""
    out = {"config": stack, "vtx": [], "evo2lite_full": [], "evo2lite_streamed": []}
    config = ModelConfig(**stack)
    began = time.perf_counter()
    try:
        harness, vtx = load_vtx()
    except Exception as exc:  # vortex missing or not importable here
        out["vtx_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"  vtx: not run ({out['vtx_error']})", flush=True)
        vtx = None
    if vtx is not None:
        cfg = harness.make_vtx_config(stack["layout"], stack["d_model"], stack["num_heads"], stack["num_se_groups"],
                                      stack["d_mlp"], rotary_scale=stack["rotary_scale"], max_seqlen=max(lengths),
                                      model_name="vtx stack")
        with harness.vtx_context(device):
            model = vtx.StripedHyena(harness._as_vtx_config(cfg))
        model.to(device)
        vtx_random_(model, 0, device)
        harness.set_vtx_precision(model, "bfloat16")
        model.eval()
        vtx_forward(model, harness, 1024, device)  # warm-up (kernel loading), not reported
        for length in lengths:
            row = vtx_forward(model, harness, length, device)
            out["vtx"].append(row)
            print(f"  vtx L={human(length)}: {row['status']} peak {row.get('peak_gib', float('nan')):.2f} GiB "
                  f"{row.get('seconds', float('nan')):.2f} s", flush=True)
            if row["status"] != "ok":
                break
        del model
        reset_peak(device)
    model = build_model(config, device, torch.bfloat16)
    measure(model, random_dna(1024, 0), device, layer="final", chunk=1024, pool=None)  # warm-up
    for length in lengths:
        try:
            row = measure(model, random_dna(length, length), device, layer="final", chunk=max(lengths), pool=None)
        except torch.OutOfMemoryError as exc:
            row = {"length": length, "status": "out of memory", "detail": str(exc).splitlines()[0]}
            reset_peak(device)
        out["evo2lite_full"].append(row)
        print(f"  evo2lite full pass L={human(length)}: {row['status']} {row.get('peak_gib', float('nan')):.2f} GiB",
              flush=True)
    remaining = budget - (time.perf_counter() - began)
    out["evo2lite_streamed"] = sweep(model, lengths, device, layer="final", chunk=chunk, pool=None,
                                     budget=remaining, max_seconds=1e9, label="evo2lite streamed")
    del model
    reset_peak(device)
    return out


# --- report ------------------------------------------------------------------------------------------

def table(rows: list[dict], title: str) -> str:
    lines = [f"| {title} | seconds | bases/s | peak GiB | KV cache GiB | status |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("status") == "ok":
            lines.append(f"| {human(r['length'])} ({r['length']:,}) | {r['seconds']:.2f} | {r['bases_per_s']:,.0f} "
                         f"| {r['peak_gib']:.2f} | {r.get('kv_cache_gib', float('nan')):.2f} | ok |")
        elif "bases_done" in r:  # cut at --stop-after: the rate so far
            lines.append(f"| {human(r['length'])} ({r['length']:,}) | {r['seconds']:.2f} | {r['bases_per_s']:,.0f} "
                         f"| {r['peak_gib']:.2f} | | {r['status']} |")
        else:
            lines.append(f"| {human(r['length'])} ({r['length']:,}) | | | | | {r['status']} |")
    return "\n".join(lines)


def report(result: dict) -> str:
    env = result["environment"]
    parts = [f"# evo2lite embed benchmark ({env['date']})", "",
             f"Device: {env['device_name']}; torch {env['torch']}; command: `{env['command']}`", ""]
    if "exact" in result:
        e = result["exact"]
        parts += ["## Streamed == full pass (debug model, this device)", "",
                  f"fp32 max |diff| (scale {e['float32']['scale']:.2f}): chunk 1000: {e['float32']['1000']:.2e}, "
                  f"chunk 257: {e['float32']['257']:.2e} -> "
                  f"{'exact' if e['fp32_streamed_equals_full'] else 'MISMATCH'}",
                  f"bf16 vs fp32 full: one bf16 full pass {e['bfloat16'][str(1 << 20)]:.2e}; streamed (1000) "
                  f"{e['bfloat16']['1000']:.2e}, (257) {e['bfloat16']['257']:.2e} -> "
                  f"{'within 2x' if e['bf16_within_rule'] else 'OUTSIDE 2x'}", ""]
    if "stream" in result:
        s = result["stream"]
        predicted = (f" Predicted to fit (line through the two longest peaks, not run): "
                     f"{s['predicted_capacity']:,} bases." if s.get("predicted_capacity") else "")
        parts += [f"## Exact streamed embedding: {s['model']} ({s['dtype']}, layer {s['layer']}, "
                  f"chunk {s['chunk_size']}, {s['threads']} threads)", "",
                  f"Weights {s['weights_gib']:.2f} GiB. Longest exact sequence embedded: "
                  f"{s['longest_exact']:,} bases." + predicted,
                  "", table(s["rows"], "length"), ""]
    if "stack" in result:
        st = result["stack"]
        parts += ["## 7-block D=4096 stack (SMLASML), bf16: vtx 1.1 vs evo2lite", ""]
        if st.get("vtx_error"):
            parts += [f"vtx not run: {st['vtx_error']}", ""]
        else:
            parts += [table(st["vtx"], "vtx 1.1 stateless forward"), ""]
        parts += [table(st["evo2lite_full"], "evo2lite full pass"), "",
                  table(st["evo2lite_streamed"], "evo2lite streamed"), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="exact,stream,stack" if cuda else "exact,stream")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--preset", default=None, help="random-weight shape for the stream part "
                    "(CUDA default evo2_7b; CPU default: the shipped model, else debug)")
    ap.add_argument("--model", default=None, help="a real model spec for load_model instead of --preset")
    ap.add_argument("--dtype", default=None, help="bfloat16 (CUDA default) or float32 (CPU default)")
    ap.add_argument("--lengths", default="1k,8k,32k,128k,512k,1M" if cuda else "1k,4k,16k,32k,64k,128k,256k,512k,1M")
    ap.add_argument("--stack-lengths", default="8k,32k,128k,256k")
    ap.add_argument("--layer", default="final")
    ap.add_argument("--pool", default=None, help="mean|max|last; default per-token into host memory")
    ap.add_argument("--chunk-size", type=int, default=8192)
    ap.add_argument("--budget", type=float, default=420.0 if cuda else 600.0, help="seconds for the stream sweep")
    ap.add_argument("--stack-budget", type=float, default=120.0)
    ap.add_argument("--max-seconds", type=float, default=1e9 if cuda else 120.0,
                    help="stop before a length predicted to take longer than this")
    ap.add_argument("--stop-after", type=float, default=None,
                    help="cut a stream-part embedding that runs longer than this many seconds (its row gives the "
                    "bases done and the rate so far), so a --lengths 1M run ends within a budget")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=default_out())
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    on_gpu = device.type == "cuda"
    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
           "python": platform.python_version(),
           "device_name": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "cpu",
           "gpu_total_gib": torch.cuda.get_device_properties(device).total_memory / GiB if on_gpu else None,
           "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "command": " ".join(sys.argv)}
    result: dict = {"environment": env}
    print(f"evo2lite embed benchmark on {env['device_name']} (torch {env['torch']})", flush=True)

    def save() -> None:
        (out_dir / "embed.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (out_dir / "embed.md").write_text(report(result) + "\n")

    if "exact" in parts:
        print("exact: streamed vs full pass, debug model", flush=True)
        result["exact"] = part_exact(device)
        print(f"  {json.dumps(result['exact'])}", flush=True)
        save()
    if "stream" in parts:
        dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype_name]
        if args.model:
            from evo2lite.checkpoint import load_model

            model, name = load_model(args.model, device=device, dtype=dtype), args.model
        else:
            preset = args.preset
            if preset is None and device.type == "cuda":
                preset = "evo2_7b"
            if preset is None:
                try:
                    from evo2lite.checkpoint import load_model

                    model, name = load_model(None, device=device, dtype=dtype), "shipped model"
                except Exception as exc:  # no shipped model in this installation yet
                    print(f"  shipped model unavailable ({str(exc).splitlines()[0]}); using the debug preset",
                          flush=True)
                    preset = "debug"
            if preset is not None:
                model, name = build_model(PRESETS[preset], device, dtype), f"{preset} (random weights)"
        lengths = [parse_length(x) for x in args.lengths.split(",")]
        print(f"stream: {name}, {dtype}, layer {args.layer}, chunk {args.chunk_size}", flush=True)
        rows = sweep(model, lengths, device, layer=args.layer, chunk=args.chunk_size, pool=args.pool,
                     budget=args.budget, max_seconds=args.max_seconds, label="evo2lite",
                     stop_after=args.stop_after)
        ok = [r["length"] for r in rows if r.get("status") == "ok"]
        result["stream"] = {"model": name, "config": model.config.to_dict(), "dtype": str(dtype).replace("torch.", ""),
                            "layer": args.layer, "pool": args.pool or "none", "chunk_size": args.chunk_size,
                            "threads": torch.get_num_threads(), "weights_gib": weight_bytes(model) / GiB,
                            "rows": rows, "longest_exact": max(ok) if ok else 0}
        if device.type == "cuda":
            result["stream"]["predicted_capacity"] = capacity_estimate(rows, env["gpu_total_gib"])
        del model
        reset_peak(device)
        save()
    if "stack" in parts and device.type == "cuda":
        print("stack: 7-block D=4096, vtx vs evo2lite", flush=True)
        result["stack"] = part_stack([parse_length(x) for x in args.stack_lengths.split(",")], device,
                                     chunk=args.chunk_size, budget=args.stack_budget)
        save()
    save()
    print(report(result), flush=True)
    print(f"wrote {out_dir / 'embed.json'} and {out_dir / 'embed.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
