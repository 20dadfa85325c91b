#!/usr/bin/env python
"""Variant scoring speed (issue #13): `score-vcf`'s engine against the official recipe as vtx runs it, same
random weights, same SNV sites, in the same run: variants/s and peak GPU memory, plus an fp32 check that the
two engines' deltas agree (to 1e-3 of the delta scale).

- evo2lite: score-vcf's own scoring of a block (evo2lite.apps.score_vcf_sites.score_block: site windows,
  shared prefixes, batches of --batch windows, strand both), in blocks of --batch / 2 sites (each block is
  then one batch per strand, the batches score-vcf makes for SNVs). VCF parsing and writing are left out
  (pysam is not on the device image); the reference is an in-memory random contig.
- vtx 1.1 (kernels on when on CUDA): the official recipe: REF and ALT full windows, forward and reverse
  complement, one stateless forward per --vtx-batch windows, score = mean over strands of
  sum log P(ALT window) - sum log P(REF window) (Evo 2's score_sequences, reduce sum). Its weights are
  evo2lite's random weights converted by evo2lite.checkpoint.state_dict_to_vortex.

Each engine runs in its own subprocess (own allocator, so peaks are not mixed; a crash or an OOM costs one row)
with --budget / engines seconds: model build, an untimed warm-up block, timed blocks until its share of the
time is used (at least one), then the fp32 check on the first --check-sites sites (weights cast to fp32,
TF32 off). Peak memory: torch.cuda.max_memory_allocated over the timed blocks, weights included. Writes
score_vcf_gpu.json + score_vcf_gpu.md under --out (default $OUT, else benchmarks/out), after every engine.

  GPU (evo2_7b shape, bf16, window 8192, ~150 s):  python benchmarks/score_vcf_gpu.py
  CPU smoke test (tiny shapes, seconds):           python benchmarks/score_vcf_gpu.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

from _common import default_device_dtype, default_out, run_child

ENGINES = ("evo2lite", "vtx")
CONTIG = "chrB"
SPACING = 997  # bases between consecutive sites: every site distinct, windows overlapping


# --- sites: an in-memory reference and SNVs (the same in every process: seeded) ---------------------------

class MemoryReference:
    """One random contig, with the part of ReferenceGenome's interface that score_block uses."""

    def __init__(self, seq: str):
        self.seq = seq
        self.contigs = {CONTIG: len(seq)}

    def resolve(self, contig: str) -> str:
        from evo2lite.errors import Evo2LiteError

        if contig != CONTIG:
            raise Evo2LiteError(f"no contig {contig}")
        return contig

    def fetch(self, contig: str, start: int, end: int) -> str:
        return self.seq[start:end]


def make_sites(n: int, window: int, seed: int = 0):
    """(reference, [Variant]): n SNVs SPACING apart, each with a full window on both sides."""
    import numpy as np

    from evo2lite.pipelines import vcf as V

    rng = np.random.default_rng(seed)
    length = window + n * SPACING + 1
    seq = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, length)].tobytes().decode()
    variants = []
    for k in range(n):
        start = window // 2 + k * SPACING
        ref = seq[start]
        alt = "ACGT".replace(ref, "")[int(rng.integers(0, 3))]
        variants.append(V.Variant(index=k, chrom=CONTIG, pos=start + 1, start=start, id=None, ref=ref, alts=(alt,)))
    return MemoryReference(seq), variants


# --- child: one engine ------------------------------------------------------------------------------------

def random_weights(g, cfg, device, dtype, seed: int):
    """evo2lite's random model with bf16-rounded weights (what vtx receives: state_dict_to_vortex keeps the
    official bf16 bulk), cast to the run's dtype: both engines hold the same values in any dtype."""
    import torch

    return g.random_model(cfg, device, torch.bfloat16, seed=seed).cast(dtype)


def evo2lite_engine(g, cfg, device, dtype, ref, args):
    """(score(variants) -> deltas, to_fp32(), model): score-vcf's block scoring."""
    import torch

    from evo2lite.apps import score_vcf_sites as sites

    model = random_weights(g, cfg, device, dtype, args.seed)

    def score(variants):
        ctx = sites.Context(ref, model, args.window, "sum", "both", args.batch)
        results = sites.score_block([(v, "") for v in variants], ctx)
        return [results[v.index][0][0] for v in variants]

    def to_fp32():
        model.cast(torch.float32)
    return score, to_fp32, model


def vtx_engine(g, cfg, device, dtype, ref, args, result):
    """(score(variants) -> deltas, to_fp32(), model): the official recipe on vtx with evo2lite's random
    weights."""
    import torch

    from evo2lite.checkpoint import state_dict_to_vortex
    from evo2lite.pipelines import vcf as V
    from evo2lite.pipelines.windows import reverse_complement
    from evo2lite.tokenizer import encode_batch

    harness, why = g.load_vtx()
    if harness is None:
        raise RuntimeError(f"vtx unavailable: {why}")
    kernels = device.type == "cuda"
    result["kernels"] = kernels
    vmodel = g.vtx_model(harness, cfg, device, dtype, args.window + 16, **(g.VTX_KERNELS if kernels else {}))
    ours = random_weights(g, cfg, device, dtype, args.seed)
    state = state_dict_to_vortex(ours.state_dict(), cfg)
    params = {k for k, _ in vmodel.named_parameters()} | {k for k, _ in vmodel.named_buffers()}
    missing = sorted(k for k in params - state.keys() if not k.endswith("_extra_state"))
    if missing:
        raise RuntimeError(f"no evo2lite weight for vtx tensors {missing[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):
        vmodel.custom_load_state_dict(state, strict=False)
    del ours, state
    harness.set_vtx_precision(vmodel, dtype)
    g.free(device)

    def windows(variant):
        site = V.site_context(lambda s, e: ref.fetch(CONTIG, s, e), ref.contigs[CONTIG], variant.start, args.window,
                              len(variant.ref))
        r, a = V.allele_windows(site, variant.ref, variant.alts[0])
        return [r, a, reverse_complement(r), reverse_complement(a)]

    @torch.inference_mode()
    def loglik(batch):
        ids_BL, _ = encode_batch(batch)  # equal lengths: full windows
        ids_BL = ids_BL.to(device)
        with harness.vtx_context(device), contextlib.redirect_stdout(io.StringIO()):
            logits = vmodel(ids_BL)[0]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        return logp.gather(-1, ids_BL[:, 1:, None])[..., 0].double().sum(-1).tolist()

    def score(variants):
        wins = [w for v in variants for w in windows(v)]
        ll = []
        for i in range(0, len(wins), args.vtx_batch):
            ll += loglik(wins[i: i + args.vtx_batch])
        return [((ll[4 * k + 1] - ll[4 * k]) + (ll[4 * k + 3] - ll[4 * k + 2])) / 2 for k in range(len(variants))]

    def to_fp32():
        harness.set_vtx_precision(vmodel, torch.float32)
    return score, to_fp32, vmodel


def kernels_off(vmodel) -> None:
    """vtx's fused Hyena kernels off (its engines read these flags per call)."""
    for module in vmodel.modules():
        for flag in ("use_hcs_kernel", "use_hcm_kernel", "use_hcl_kernel"):
            if hasattr(module, flag):
                setattr(module, flag, False)


def child(args) -> None:
    import torch

    import generate as g  # random models, the vtx loader, timers and memory helpers, shared

    began = time.perf_counter()
    deadline = began + args.child_budget
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # the fp32 check is fp32
    cfg = g.model_config(args.model)
    units = {"evo2lite": max(1, args.batch // 2), "vtx": max(1, args.vtx_batch // 4)}  # sites per timed block
    unit = units[args.child]
    # the same sites in both engines: the timed ones, then one warm-up block of the larger unit
    ref, variants = make_sites(args.sites + max(units.values()), args.window, args.seed)
    warm, timed = variants[args.sites:][:unit], variants[:args.sites]
    result: dict = {"engine": args.child, "unit_sites": unit}

    def save() -> None:  # atomic: the parent may read it after a kill
        Path(args.json + ".tmp").write_text(json.dumps(result, indent=1))
        os.replace(args.json + ".tmp", args.json)

    try:
        if args.child == "evo2lite":
            result["batch"] = args.batch
            score, to_fp32, model = evo2lite_engine(g, cfg, device, dtype, ref, args)
        else:
            result["batch"] = args.vtx_batch
            score, to_fp32, model = vtx_engine(g, cfg, device, dtype, ref, args, result)
        result["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
        result["build_s"] = time.perf_counter() - began
        save()
        t = time.perf_counter()
        try:
            score(warm)  # untimed: kernel compilation and autotuning, allocator blocks
        except Exception as exc:  # noqa: BLE001
            if not result.get("kernels"):
                raise
            # a vtx kernel that fails here: recorded, and vtx measured without its kernels (as forward.py does)
            result["kernels"], result["kernels_error"] = False, g.err(exc)
            kernels_off(model)
            g.free(device)
            score(warm)
        result["warmup_s"] = time.perf_counter() - t
        g.free(device)
        g.peak_reset(device)
        # the fp32 check keeps a fixed reserve: on the H200 it compiles the fp32 kernels and casts 7B weights,
        # which a share of the time left (0.45 before) did not cover (session 11)
        room = deadline - time.perf_counter() - (args.check_reserve if args.check_sites else 0.0)
        stop = time.perf_counter() + 0.9 * max(0.0, room)  # at least one block is timed
        deltas: list[float] = []
        seconds = 0.0
        for i in range(0, len(timed), unit):
            g.sync(device)
            t = time.perf_counter()
            deltas += score(timed[i: i + unit])
            g.sync(device)
            seconds += time.perf_counter() - t
            result.update(sites=len(deltas), seconds=seconds, variants_per_s=len(deltas) / seconds,
                          peak_gib=g.peak_gb(device), deltas=deltas)
            save()
            print(f"  {args.child}: {len(deltas)} sites in {seconds:.1f} s", file=sys.stderr, flush=True)
            if time.perf_counter() > stop:
                break
    except Exception as exc:  # noqa: BLE001
        result.update(error=g.err(exc), peak_gib=g.peak_gb(device))
        return save()
    if args.check_sites:
        check = timed[:args.check_sites]
        try:
            to_fp32()  # in place: the same closures score the same first sites in fp32
            if args.child == "evo2lite":
                from evo2lite.mixers import set_backend

                set_backend(model, args.check_backend)
            g.free(device)
            try:
                result["fp32_deltas"] = score(check)
            except Exception as exc:  # noqa: BLE001
                if not result.get("kernels"):
                    raise
                # vtx's fused kernels are bf16 inference kernels: the fp32 recipe without them
                result["fp32_kernels_error"] = g.err(exc)
                kernels_off(model)
                g.free(device)
                result["fp32_deltas"] = score(check)
        except Exception as exc:  # noqa: BLE001
            result["fp32_error"] = g.err(exc)
    result["wall_s"] = time.perf_counter() - began
    save()


# --- parent: both engines, the table ----------------------------------------------------------------------

def run_engine(engine: str, args, timeout: float) -> dict:
    argv = ["--child", engine, "--child-budget", str(max(1.0, timeout - 10)), "--device", args.device,
            "--dtype", args.dtype, "--model", args.model, "--window", str(args.window), "--sites", str(args.sites),
            "--batch", str(args.batch), "--vtx-batch", str(args.vtx_batch), "--check-sites", str(args.check_sites),
            "--check-backend", args.check_backend, "--check-reserve", str(args.check_reserve),
            "--seed", str(args.seed)]
    began = time.perf_counter()
    result, failure, tail = run_child(str(Path(__file__).resolve()), argv, timeout)
    result = result or {"engine": engine}
    result["wall_s"] = time.perf_counter() - began
    if failure and "error" not in result:
        result["exit"] = failure  # a crash or the timeout after some timed blocks keeps them
    result["stderr_tail"] = tail  # in the JSON: the e2e run keeps few files
    return result


def compare(a: list | None, b: list | None) -> dict | None:
    """Max |a - b| over the sites both scored, the delta scale (max |b|) and their ratio."""
    if not a or not b:
        return None
    n = min(len(a), len(b))
    diff = max(abs(x - y) for x, y in zip(a[:n], b[:n]))
    scale = max(abs(y) for y in b[:n])
    return {"sites": n, "max_abs_diff": diff, "delta_scale": scale, "rel_diff": diff / max(scale, 1e-30)}


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"## score-vcf vs the official recipe on vtx: {m['model']} ({m['dtype']}, window {m['window']}, "
             f"strand both, random weights), {m['date']}", "",
             f"- device: {m['device_name']}; torch {m['torch']}; command `{m['command']}`",
             f"- {m['sites']} distinct SNV sites offered to each engine; each times whole blocks within its share "
             "of --budget", "",
             "| engine | batch | sites timed | seconds | variants/s | peak GiB | weights GiB | speed-up vs vtx | "
             "peak / vtx peak |", "|---|---|---|---|---|---|---|---|---|"]
    vtx = report["engines"].get("vtx", {})
    for e, r in report["engines"].items():
        name = e + (" (kernels " + ("on" if r.get("kernels") else "off") + ")" if e == "vtx" else "")
        if "variants_per_s" not in r:
            why = r.get("error") or r.get("exit") or "not run"
            lines.append(f"| {name} | {r.get('batch', '-')} | - | - | {why} | - | - | - | - |")
            continue
        speed = (f"{r['variants_per_s'] / vtx['variants_per_s']:.2f}x" if vtx.get("variants_per_s") and e != "vtx"
                 else "-")
        peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "-"
        ratio = (f"{r['peak_gib'] / vtx['peak_gib']:.2f}" if e != "vtx" and r.get("peak_gib") and vtx.get("peak_gib")
                 else "-")
        lines.append(f"| {name} | {r['batch']} | {r['sites']} | {r['seconds']:.1f} | {r['variants_per_s']:.3f} | "
                     f"{peak} | {r.get('weights_gib', 0):.2f} | {speed} | {ratio} |")
    for e, r in report["engines"].items():
        if r.get("exit") or r.get("error"):
            lines.append(f"\n{e}: {r.get('error') or r.get('exit')}")
    if vtx.get("kernels_error"):
        lines.append(f"\nvtx's kernels failed ({vtx['kernels_error']}): vtx measured without them")
    same, fp32 = report.get("agreement"), report.get("fp32_check")
    if same:
        lines.append(f"\n{m['dtype']} deltas, evo2lite vs vtx on {same['sites']} sites: max |diff| "
                     f"{same['max_abs_diff']:.3g} (delta scale {same['delta_scale']:.3g})")
    if fp32:
        lines.append(f"\nfp32 check on {fp32['sites']} sites: max |diff| {fp32['max_abs_diff']:.3g}, delta scale "
                     f"{fp32['delta_scale']:.3g}, relative {fp32['rel_diff']:.2e} -> "
                     f"{'PASS' if fp32['ok'] else 'FAIL'} (tolerance 1e-3 x max(1, scale); evo2lite backend "
                     f"{m['check_backend']})"
                     + ("; vtx kernels off for fp32" if vtx.get("fp32_kernels_error") else ""))
    for e, r in report["engines"].items():
        if r.get("fp32_error"):
            lines.append(f"\nfp32 check, {e}: {r['fp32_error']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="default cuda when available")
    p.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--model", default="evo2_7b", help="a preset name (random weights), or stack7 / cpu_small")
    p.add_argument("--window", type=int, default=8192)
    p.add_argument("--sites", type=int, default=64, help="distinct SNV sites offered to each engine")
    p.add_argument("--batch", type=int, default=16, help="evo2lite: windows per forward (score-vcf --batch-size)")
    p.add_argument("--vtx-batch", type=int, default=1, help="vtx: windows per forward (the official default 1)")
    p.add_argument("--check-sites", type=int, default=2, help="sites of the fp32 check (0: none)")
    p.add_argument("--check-backend", default="auto", choices=("auto", "triton", "reference"),
                   help="evo2lite's Hyena backend in the fp32 check (auto: what score-vcf runs)")
    p.add_argument("--check-reserve", type=float, default=None,
                   help="seconds each engine keeps for the fp32 check (default 90 on CUDA, 5 on a CPU)")
    p.add_argument("--budget", type=float, default=150.0, help="seconds for the whole run, shared by the engines")
    p.add_argument("--engines", default="evo2lite,vtx")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out())
    p.add_argument("--dry-run", action="store_true", help="CPU, cpu_small stack, window 256, 8 sites: seconds")
    p.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    p.add_argument("--child-budget", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.model, args.window, args.sites, args.batch = "cpu", "cpu_small", 256, 8, 4
        args.vtx_batch = 4
    default_device_dtype(args)
    if args.check_reserve is None:
        args.check_reserve = 90.0 if args.device.startswith("cuda") else 5.0
    if args.child:
        child(args)
        return 0
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = args.device.startswith("cuda")
    engines = args.engines.split(",")
    report = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model,
                       "dtype": args.dtype, "window": args.window, "sites": args.sites,
                       "check_backend": args.check_backend, "torch": torch.__version__,
                       "command": " ".join(sys.argv),
                       "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"},
              "engines": {}}
    began = time.perf_counter()
    for k, engine in enumerate(engines):
        left = args.budget - (time.perf_counter() - began)
        print(f"score_vcf_gpu: {engine} ({left / (len(engines) - k):.0f} s) ...", file=sys.stderr, flush=True)
        report["engines"][engine] = run_engine(engine, args, left / (len(engines) - k))
        ours, theirs = (report["engines"].get(e, {}) for e in ENGINES)
        report["agreement"] = compare(ours.get("deltas"), theirs.get("deltas"))
        check = compare(ours.get("fp32_deltas"), theirs.get("fp32_deltas"))
        if check:
            check["ok"] = check["max_abs_diff"] <= 1e-3 * max(1.0, check["delta_scale"])
        report["fp32_check"] = check
        (out / "score_vcf_gpu.json").write_text(json.dumps(report, indent=1))
        (out / "score_vcf_gpu.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
