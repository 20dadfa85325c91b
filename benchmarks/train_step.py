#!/usr/bin/env python
"""Training step: the evo2_1b_base shape (random weights, fp32 master weights + bf16 autocast, AdamW fused on
CUDA, a fixed number of tokens per step) with our kernels, with the reference path, and a Llama-style
Transformer of the same parameter count (SDPA causal attention: flash on CUDA, RMSNorm, RoPE, SwiGLU), eager
and torch.compile, in one run: tokens/s and peak memory per configuration, plus one batch-1 step at a long
context (256K) with activation checkpointing.

Every configuration runs in this process one after the other with a time budget of its own (the first step,
compilation included, is untimed), and the whole run stops starting new ones past --budget. An out-of-memory
or any other error is a row with the error, not a crash. Writes train_step.json + train_step.md under --out
(default $OUT, else benchmarks/out), rewritten after every row, and prints the table.

  GPU (new configurations stop starting after --budget, 225 s):  python benchmarks/train_step.py
  CPU smoke test (seconds):                                         python benchmarks/train_step.py --dry-run

Legend: B batch, L length, D d_model, H heads, E head size, I MLP inner size, V vocabulary.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import sys
import time
from pathlib import Path

from _common import bootstrap, default_out, human, parse_length

bootstrap()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from evo2lite.config import PRESETS  # noqa: E402
from evo2lite.mixers import set_backend  # noqa: E402
from evo2lite.model import StripedHyena2, init_weights_  # noqa: E402
from evo2lite.train_params import make_trainable  # noqa: E402


# --- the peer: a Llama-style Transformer ------------------------------------------------------------------

class LlamaBlock(nn.Module):
    def __init__(self, d: int, heads: int, d_mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
        self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_up, self.down = nn.Linear(d, 2 * d_mlp, bias=False), nn.Linear(d_mlp, d, bias=False)

    def forward(self, x_BLD: torch.Tensor, cos_LE: torch.Tensor, sin_LE: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        q, k, v = self.qkv(self.attn_norm(x_BLD)).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = (t * cos_LE + torch.cat((-t[..., t.shape[-1] // 2:], t[..., :t.shape[-1] // 2]), -1) * sin_LE
                for t in (q, k))  # rotate-half RoPE
        o_BHLE = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x_BLD = x_BLD + self.out(o_BHLE.transpose(1, 2).reshape(B, L, D))
        gate_BLI, up_BLI = self.gate_up(self.mlp_norm(x_BLD)).chunk(2, -1)
        return x_BLD + self.down(F.silu(gate_BLI) * up_BLI)


class Llama(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, d_mlp: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(LlamaBlock(d, heads, d_mlp) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=1e-6)
        self.head_dim = d // heads
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids_BL: torch.Tensor) -> torch.Tensor:
        L = ids_BL.shape[1]
        inv_freq = 1e4 ** (-torch.arange(0, self.head_dim, 2, device=ids_BL.device) / self.head_dim)
        angle_LE = torch.outer(torch.arange(L, device=ids_BL.device), inv_freq).repeat(1, 2)
        cos_LE, sin_LE = angle_LE.cos(), angle_LE.sin()
        x_BLD = self.embedding(ids_BL)
        for block in self.blocks:
            x_BLD = block(x_BLD, cos_LE.to(x_BLD.dtype), sin_LE.to(x_BLD.dtype))
        return F.linear(self.norm(x_BLD), self.embedding.weight)  # tied, as Evo 2


def num_params(config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in StripedHyena2(config).parameters())


def llama_like(config) -> tuple[Llama, dict]:
    """A Llama of the model's width, head size and vocabulary, Llama's MLP ratio (8/3 D, to a multiple of 64)
    and as many layers as bring it closest to the model's parameter count."""
    d, heads = config.d_model, config.num_heads
    d_mlp = -(-int(8 * d / 3) // 64) * 64
    target = num_params(config)
    per_layer = 4 * d * d + 3 * d * d_mlp + 2 * d
    layers = max(1, round((target - config.vocab_size * d - d) / per_layer))
    return Llama(config.vocab_size, d, heads, d_mlp, layers), {"layers": layers, "d_mlp": d_mlp}


# --- one configuration ------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build(name: str, config, device: torch.device) -> tuple[nn.Module, dict]:
    """(model in fp32 on the device, what the row should say about it)."""
    if name == "llama":
        with torch.device(device):
            model, info = llama_like(config)
        return model, info
    with torch.device(device):
        model = init_weights_(StripedHyena2(config), seed=0)
    make_trainable(model)  # the parametrised filters `evo2lite train` trains
    set_backend(model, "reference" if name == "evo2lite-reference" else "auto")
    return model, {}


def measure(spec: dict, config, device: torch.device, args) -> dict:
    """Train steps of one configuration: the first (compilation, autotuning) untimed, then timed ones until
    --steps or the configuration's time budget. Returns the row."""
    name, L, compiled, ckpt = spec["model"], spec["length"], spec["compile"], spec.get("checkpointing", False)
    batch = max(1, args.tokens_per_step // L)
    row = {**spec, "batch": batch}
    model = optimizer = fwd = None
    try:
        model, info = build(name, config, device)
        row.update(info, params_m=sum(p.numel() for p in model.parameters()) / 1e6)
        model.train()
        if ckpt:
            model.activation_checkpointing = True
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
        fwd = torch.compile(model) if compiled else model
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                    else contextlib.nullcontext())
        gen = torch.Generator(device).manual_seed(0)
        acgt = torch.tensor([65, 67, 71, 84], device=device)

        def step() -> None:
            ids_BL = acgt[torch.randint(0, 4, (batch, L + 1), generator=gen, device=device)]
            with autocast:
                logits_BLV = fwd(ids_BL[:, :-1])
            loss = F.cross_entropy(logits_BLV.float().flatten(0, 1), ids_BL[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        step()
        sync(device)
        row["first_step_s"] = time.perf_counter() - t
        times, deadline = [], time.perf_counter() + args.config_budget
        while len(times) < args.steps and (not times or time.perf_counter() + times[-1] < deadline):
            t = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t)
        row.update(steps=len(times), step_s=sum(times) / len(times),
                   tokens_per_s=batch * L * len(times) / sum(times))
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    except Exception as exc:  # noqa: BLE001
        oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
        row["error"] = "OOM" if oom else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, optimizer, fwd
    torch._dynamo.reset()
    free(device)
    return row


# --- the run ----------------------------------------------------------------------------------------------

def plan(args) -> list[dict]:
    """Configurations, most important first (the budget may cut the tail): compiled ours vs the Transformer at
    each length, the long checkpointed step, the same eager, then the reference path."""
    lengths = [parse_length(x) for x in args.lengths.split(",")]
    modes = [m == "compiled" for m in args.modes.split(",")]
    def pairs(compiled: bool) -> list[dict]:
        return [{"model": name, "length": L, "compile": compiled} for L in lengths for name in ("evo2lite", "llama")]
    specs = pairs(True) if True in modes else []
    if args.long:
        specs.append({"model": "evo2lite", "length": parse_length(args.long), "compile": False,
                      "checkpointing": True})
    specs += pairs(False) if False in modes else []
    if False in modes:  # the longest regular context eager again, checkpointed (eager alone may not fit)
        specs.append({"model": "evo2lite", "length": max(lengths), "compile": False, "checkpointing": True})
    specs += [{"model": "evo2lite-reference", "length": L, "compile": False} for L in lengths]
    return specs


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"## Training step, {m['model']} ({m['params_m']:.4g} M params), {m['date']}", "",
             f"- device: {m['device_name']}; torch {m['torch']}; fp32 weights + bf16 autocast on CUDA, AdamW "
             f"(fused on CUDA); ~{m['tokens_per_step']} tokens per step; command `{m['command']}`",
             "- evo2lite = our kernels (backend auto); evo2lite-reference = the plain-PyTorch path; llama = "
             "Llama-style Transformer, same width and ~same parameter count, SDPA causal attention", "",
             "| model | context | batch | mode | checkpointing | params M | tokens/s | step s | peak GiB | first step s | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        def f(key, spec):
            return format(r[key], spec) if r.get(key) is not None else "-"
        lines.append(f"| {r['model']} | {human(r['length'])} | {r['batch']} | {'compiled' if r['compile'] else 'eager'} | "
                     f"{'yes' if r.get('checkpointing') else 'no'} | {f('params_m', '.4g')} | {f('tokens_per_s', ',.0f')} | "
                     f"{f('step_s', '.3f')} | {f('peak_gib', '.1f')} | {f('first_step_s', '.1f')} | {r.get('error', '')} |")
    if report.get("skipped"):
        lines.append(f"\nskipped (budget): {', '.join(report['skipped'])}")
    if report.get("profile"):
        lines += ["", "### torch.profiler, one eager step of evo2lite (top ops)", "", "```", report["profile"], "```"]
    return "\n".join(lines) + "\n"


def profile_step(config, device: torch.device, L: int, batch: int) -> str:
    """The key-averages table of one eager evo2lite training step (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile

    model, _ = build("evo2lite", config, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    ids_BL = torch.tensor([65, 67, 71, 84], device=device)[torch.randint(0, 4, (batch, L + 1), device=device)]

    def step():
        with autocast:
            logits = model(ids_BL[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), ids_BL[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    del model, optimizer
    free(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="evo2_1b_base", help="a preset name")
    p.add_argument("--lengths", default="8k,32k")
    p.add_argument("--modes", default="compiled,eager", help="compiled and/or eager")
    p.add_argument("--long", default="256k", help="context of the batch-1 checkpointed step ('' : none)")
    p.add_argument("--tokens-per-step", type=int, default=32768)
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (at most)")
    p.add_argument("--config-budget", type=float, default=8.0, help="seconds of timed steps per configuration")
    p.add_argument("--budget", type=float, default=225.0, help="no configuration starts after this many seconds")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler table of one eager step")
    p.add_argument("--out", default=default_out())
    p.add_argument("--dry-run", action="store_true", help="CPU, the debug preset, tiny shapes: seconds")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.model, args.lengths, args.modes = "cpu", "debug", "128,256", "eager"
        args.long, args.tokens_per_step, args.steps, args.config_budget = "512", 512, 1, 5.0
    began = time.perf_counter()
    device = torch.device(args.device)
    config = PRESETS[args.model]
    if config.fp8_input_projections:  # training uses plain projections (as `evo2lite train` does)
        import dataclasses
        config = dataclasses.replace(config, fp8_input_projections=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model,
                       "params_m": num_params(config) / 1e6,
                       "tokens_per_step": args.tokens_per_step, "torch": torch.__version__,
                       "command": " ".join(sys.argv),
                       "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                       else platform.processor() or "cpu"},
              "rows": [], "skipped": []}

    def write() -> None:
        (out / "train_step.json").write_text(json.dumps(report, indent=1))
        (out / "train_step.md").write_text(markdown(report))
    for spec in plan(args):
        label = f"{spec['model']} L={human(spec['length'])} {'compiled' if spec['compile'] else 'eager'}" + \
                (" ckpt" if spec.get("checkpointing") else "")
        if time.perf_counter() - began > args.budget:
            report["skipped"].append(label)
            continue
        row = measure(spec, config, device, args)
        report["rows"].append(row)
        print(f"[{time.perf_counter() - began:5.0f}s] {label}: "
              f"{row.get('tokens_per_s', 0):,.0f} tok/s peak {row.get('peak_gib') or 0:.1f} GiB {row.get('error', '')}",
              file=sys.stderr, flush=True)
        write()
    if args.profile and time.perf_counter() - began < args.budget:
        L = parse_length(args.lengths.split(",")[0])
        try:
            report["profile"] = profile_step(config, device, L, max(1, args.tokens_per_step // L))
        except Exception as exc:  # noqa: BLE001
            report["profile"] = f"profile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            free(device)
    write()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
