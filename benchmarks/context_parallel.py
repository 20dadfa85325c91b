"""Context parallelism benchmark: N ranks sharing one sequence against one device, in one bounded run.

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \\
      torchrun --nproc-per-node 2 benchmarks/context_parallel.py --budget 240 --out $OUT
    torchrun --nproc-per-node 2 benchmarks/context_parallel.py --quick --device cpu   # CPU/gloo smoke run

Parts, in order, each skipped (and said so) when the time left cannot hold it:
  check   CP == one device: a small fp32 model (every block kind), logits and every gradient, each scheme;
          and one bf16 attention block, whose ring error must stay within 2x + floor of the error plain
          PyTorch bf16 makes (DESIGN.md tolerance rule).
  blocks  one block of each kind at the model shape (default evo2_7b: D=4096, 32 heads, random bf16 weights):
          forward and forward+backward ms on 1 device (whole sequence) vs N (shards), p2p vs a2a for MR and
          LR, and the communication alone (halo, all-to-all round trip, ring K/V passes, state all-gather).
          SE and MR p2p run the fused op per chunk where it serves one device (CUDA); the "p2p seams" rows
          time the same blocks on the wrapped seams (reference FIR/FFT ops, ContextParallel.fused_hyena off).
  model   the whole model: forward (no grad) and a training step (forward + backward with per-block
          activation checkpointing, + the gradient all-reduce over the CP ranks; no optimizer) at each
          --lengths on 1 device (plain forward, or our streaming prefill when the plain one runs out of
          memory) and on N; scaling efficiency = t1 / (N tN).
  fit     the longest sequence that fits, by doubling from the last measured length, forward and training
          step, on 1 and on N devices; a doubling predicted (time or memory) to overrun is not tried.
Timing: CUDA-synchronised wall time, best of --repeats after one warm-up (the warm-up skipped at lengths
whose single run costs over 10 s). Results: context_parallel.json (rewritten after every measurement, so a
killed run keeps what it measured) and context_parallel.md in --out (default $OUT, else benchmarks/out).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path

START = time.perf_counter()  # the budget counts from here: imports and process-group start included
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GiB, bootstrap, default_out, human, parse_length  # noqa: E402

bootstrap()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from evo2lite.config import PRESETS, ModelConfig  # noqa: E402
from evo2lite.inference.engine import prefill  # noqa: E402
from evo2lite.model import StripedHyena2, init_weights_  # noqa: E402
from evo2lite.parallel import (apply_context_parallel, context_parallel_disabled, gather_sequence,  # noqa: E402
                               shard_sequence)
from evo2lite.parallel.comm import (CPGroup, all_gather, channel_to_seq, halo_exchange, ring_shift,  # noqa: E402
                                    seq_to_channel, wait)
from evo2lite.parallel.dist import init_distributed  # noqa: E402


class Bench:
    def __init__(self, args, d, dev) -> None:
        self.args, self.d, self.dev = args, d, dev
        self.t0 = START
        self.cp = CPGroup.of(d.cp_group)
        self.result = {"command": " ".join(sys.argv), "world": d.world, "device": self.device_name(),
                       "torch": torch.__version__, "budget_s": args.budget,
                       "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "check": [], "blocks": [], "comm": [], "model": [], "fit": [], "skipped": []}

    # --- plumbing ------------------------------------------------------------------------------------
    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else "cpu"

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def agree(self, flag: bool) -> bool:
        """True only if it is true on every rank: all ranks take the same branch (clocks and memory differ)."""
        t = torch.tensor([int(flag)], device=self.dev)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def reset_peak(self) -> None:
        gc.collect()
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.resident_gib = torch.cuda.memory_allocated(self.dev) / GiB  # weights: do not grow with L

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.dev) / GiB if self.dev.type == "cuda" else None

    def capacity_gib(self) -> float | None:
        return torch.cuda.get_device_properties(self.dev).total_memory / GiB if self.dev.type == "cuda" else None

    def timeit(self, fn, *, solo: bool = False) -> tuple[float, float | None]:
        """(best seconds, peak GiB) of fn(); collective unless solo (rank 0 alone, the others wait)."""
        times = []
        self.reset_peak()
        for i in range(self.args.repeats + 1):
            self.sync()
            if not solo:
                dist.barrier(group=self.d.cp_group)
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
            if i == 0 and times[0] > 10:  # too slow to repeat within a budget
                break
        best = min(times[1:] or times)
        return best, self.peak_gib()

    def skip(self, what: str, why: str) -> None:
        self.result["skipped"].append(f"{what}: {why}")
        self.log(f"skip {what}: {why}")

    def log(self, text: str) -> None:
        if self.d.main:
            print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", flush=True)

    def save(self) -> None:
        if self.d.main:
            out = Path(self.args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "context_parallel.json").write_text(json.dumps(self.result, indent=1) + "\n")
            (out / "context_parallel.md").write_text(report(self.result) + "\n")

    def solo(self, fn):
        """Run fn on rank 0 only (a 1-device measurement); the others wait. Returns rank 0's result."""
        out = fn() if self.d.main else None
        dist.barrier()
        return out

    def shard(self, t):
        return shard_sequence(t, self.cp.size, self.cp.rank)

    # --- parts -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """CP == one device in fp32 for every scheme; bf16 ring attention within the tolerance rule."""
        cfg = ModelConfig(layout="SMLA", d_model=256, num_heads=2, d_mlp=512, num_se_groups=16, num_mr_groups=16,
                          context_len=8192)
        L = self.args.check_len
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 256, (1, L + 1), generator=gen).to(self.dev)
        for mr, lr in (("p2p", "a2a"), ("a2a", "p2p")):
            model = init_weights_(StripedHyena2(cfg).to(self.dev), seed=1)
            ctx = apply_context_parallel(model, self.d.cp_group, mr_scheme=mr, lr_scheme=lr)
            with context_parallel_disabled(model):
                loss_ref = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1).float(), ids[0, 1:])
                loss_ref.backward()
            ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad()
            logits = model(self.shard(ids[:, :-1]))
            loss = F.cross_entropy(logits.flatten(0, 1).float(), self.shard(ids[:, 1:])[0], reduction="sum") / L
            loss.backward()
            with torch.no_grad():
                with context_parallel_disabled(model):
                    logits_ref = model(ids[:, :-1])
                full = gather_sequence(logits, self.d.cp_group)
            worst = 0.0
            for n, p in model.named_parameters():
                dist.all_reduce(p.grad, group=self.d.cp_group)
                scale = ref_grads[n].abs().max().clamp_min(1e-30)
                worst = max(worst, float((p.grad - ref_grads[n]).abs().max() / scale))
            err = float((full - logits_ref).abs().max() / logits_ref.abs().max())
            ok = err < 1e-4 and worst < 1e-3
            self.result["check"].append({"what": f"fp32 model SMLA, MR {mr}, LR {lr}, L={L}", "logits_rel": err,
                                         "grad_rel_max": worst, "ok": ok})
            self.log(f"check fp32 MR {mr} LR {lr}: logits {err:.2e}, grads {worst:.2e} {'ok' if ok else 'FAIL'}")
            del ctx
        # bf16 attention block: ring vs one device, both against fp32
        acfg = ModelConfig(layout="A", d_model=1024, num_heads=8, d_mlp=1024, num_se_groups=8, num_mr_groups=8)
        model = init_weights_(StripedHyena2(acfg).to(self.dev), seed=2)
        apply_context_parallel(model, self.d.cp_group)
        x = torch.randn(1, L, acfg.d_model, generator=gen).to(self.dev)
        mixer = model.blocks[0].mixer
        with torch.no_grad(), context_parallel_disabled(model):
            ref = mixer(x)
            model.cast(torch.bfloat16)  # inv_freq stays fp32
            one = mixer(x.bfloat16()).float()
        with torch.no_grad():
            ring = gather_sequence(mixer(self.shard(x).bfloat16()), self.d.cp_group).float()
        e_one, e_ring = float((one - ref).abs().max()), float((ring - ref).abs().max())
        ok = e_ring <= 2 * e_one + 1e-3 * float(ref.abs().max())
        self.result["check"].append({"what": f"bf16 attention mixer (D=1024, 8 heads), L={L}", "err_ring": e_ring,
                                     "err_one_device": e_one, "ok": ok})
        self.log(f"check bf16 attention: ring {e_ring:.3e} vs one device {e_one:.3e} {'ok' if ok else 'FAIL'}")
        self.save()

    def big_config(self) -> ModelConfig:
        return PRESETS[self.args.preset]

    def blocks(self, L: int) -> None:
        """One block of each kind at the model shape: 1 device vs N, p2p vs a2a, and the communication alone."""
        base = self.big_config()
        cfg = ModelConfig(**{**base.to_dict(), "layout": "SMLA", "name": f"{base.name} SMLA"})
        with torch.device(self.dev):
            model = StripedHyena2(cfg)
        model = init_weights_(model, seed=0).cast(torch.bfloat16)
        ctx = apply_context_parallel(model, self.d.cp_group)
        D, n = cfg.d_model, self.cp.size
        gen = torch.Generator(self.dev).manual_seed(0)
        x_full = torch.randn(1, L, D, generator=gen, device=self.dev, dtype=torch.bfloat16)
        x_loc = self.shard(x_full)
        runs = [("S", "p2p"), ("S", "p2p seams"), ("M", "p2p"), ("M", "p2p seams"), ("M", "a2a"), ("L", "a2a"),
                ("L", "p2p"), ("A", "ring")]
        seen = set()
        for kind, scheme in runs:
            if not self.agree(self.left() > 20):
                self.skip(f"block {kind} {scheme} at {human(L)}", "budget")
                continue
            block = model.blocks[cfg.layout.index(kind)]
            ctx.mr_scheme = scheme.split()[0] if kind == "M" else ctx.mr_scheme
            ctx.lr_scheme = scheme if kind == "L" else ctx.lr_scheme
            ctx.fused_hyena = not scheme.endswith("seams")

            def fwd(x):
                with torch.no_grad():
                    block(x)

            def fwd_bwd(x):
                y = block(x.requires_grad_())[0]
                y.backward(torch.ones_like(y))
                block.zero_grad(set_to_none=True)

            row = {"kind": kind, "scheme": scheme, "length": L}
            for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                try:
                    row[f"{name}_N_s"], row[f"{name}_N_gib"] = self.timeit(lambda: fn(x_loc.detach().clone()))
                except torch.OutOfMemoryError:
                    row[f"{name}_N_s"] = None
                if kind not in seen and self.args.single:  # the 1-device figure is the same for both schemes

                    def one(fn=fn):
                        with context_parallel_disabled(model):
                            try:
                                return self.timeit(lambda: fn(x_full.detach().clone()), solo=True)
                            except torch.OutOfMemoryError:
                                return (None, None)

                    row[f"{name}_1_s"], row[f"{name}_1_gib"] = self.solo(one) or (None, None)
            seen.add(kind)
            ctx.fused_hyena = True
            self.result["blocks"].append(row)
            self.log(f"block {kind} {scheme} L={human(L)}: " + ", ".join(
                f"{k} {v * 1e3:.1f} ms" for k, v in row.items() if k.endswith("_s") and v is not None))
            self.save()
        self.comm(L, D, cfg)
        del model, ctx

    def comm(self, L: int, D: int, cfg: ModelConfig) -> None:
        """The communication alone, at the shapes the blocks exchange."""
        n, c = self.cp.size, L // (2 * self.cp.size)
        bf = torch.bfloat16
        z = torch.randn(1, 2 * c, 3 * D, device=self.dev, dtype=bf)
        u = torch.randn(1, 2 * c, D, device=self.dev, dtype=bf)
        s = torch.randn(1, L, D // n, device=self.dev, dtype=torch.float32)
        kv = torch.randn(2, 1, cfg.num_heads, 2 * c, cfg.head_dim, device=self.dev, dtype=bf)
        states = torch.randn(2, 1, D, cfg.state_size, device=self.dev)

        def ring():
            buf = kv
            for _ in range(n - 1):
                nxt, reqs = ring_shift(buf, self.cp)
                wait(reqs)
                buf = nxt

        tests = {"halo featurizer (K=3, 3D channels)": lambda: halo_exchange(z, 3, self.cp),
                 "halo MR (K=128, D channels)": lambda: halo_exchange(u, 128, self.cp),
                 "a2a round trip (u bf16 out, s fp32 back)": lambda: (seq_to_channel(u, self.cp),
                                                                       channel_to_seq(s, self.cp)),
                 "ring K/V passes (N-1 shifts)": ring,
                 "LR p2p state all-gather": lambda: all_gather(states, self.cp)}
        for name, fn in tests.items():
            with torch.no_grad():
                sec, _ = self.timeit(fn)
            self.result["comm"].append({"what": name, "length": L, "ms": sec * 1e3})
            self.log(f"comm {name} L={human(L)}: {sec * 1e3:.2f} ms")
        self.save()

    def model_parts(self) -> None:
        cfg = self.big_config()
        with torch.device(self.dev):
            model = StripedHyena2(cfg)
        model = init_weights_(model, seed=0).cast(torch.bfloat16)
        apply_context_parallel(model, self.d.cp_group)
        self.model = model
        gen = torch.Generator().manual_seed(0)
        last = {}
        for L in self.args.lengths:
            ids = torch.randint(0, 256, (1, L + 1), generator=gen).to(self.dev)
            for mode in ("forward", "train"):
                self.reset_peak()
                est, mem = self.estimate(mode, last.get(mode), L)
                cap = self.capacity_gib()
                fits = est is None or est * self.SAFETY < self.left() - 15
                if not self.agree(fits and not (cap and mem > 0.9 * cap)):
                    self.skip(f"model {mode} at {human(L)} on {self.cp.size}",
                              f"predicted {est or 0:.0f} s / {mem:.0f} GiB, {self.left():.0f} s left")
                    continue
                row = {"mode": mode, "length": L, **self.measure(mode, ids)}
                self.result["model"].append(row)
                if row.get("N_s") is not None:
                    last[mode] = (L, row["N_s"], row.get("N_gib") or 0.0, row.get("resident_gib", 0.0))
                self.log(f"model {mode} L={human(L)}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()
                                                                     if isinstance(v, float)))
                self.save()
        self.last = last

    GROWTH = 1.6  # time ~ L^GROWTH between a linear (Hyena, MLP) and a quadratic (attention) share
    SAFETY = 1.5  # a run is tried only if 1.5x its prediction fits: on the H200 a 256K training step overran

    def estimate(self, mode, prev, L):
        """(seconds, GiB) of the N-device run at length L: from the last measured (length, seconds, peak,
        resident) when there is one (memory above the resident weights grows linearly), else no time
        and an analytic memory bound (a per-rank transient of ~40 bytes x local length x D, as the fp32
        featurizer of 3D channels, plus for training the per-block checkpoints and bf16 gradients)."""
        if prev is None:
            cfg, l = self.model.config, L // self.cp.size
            mem = getattr(self, "resident_gib", 0.0) + 40 * l * cfg.d_model / GiB
            if mode == "train":
                mem += 2 * l * cfg.d_model * cfg.num_blocks / GiB + getattr(self, "resident_gib", 0.0)
            return None, mem
        L0, s0, g0, r0 = prev
        one = s0 * (L / L0) ** self.GROWTH
        return one * (self.args.repeats + 1 if one < 10 else 1), r0 + (g0 - r0) * L / L0

    def step_fn(self, mode, ids, sharded: bool):
        model = self.model
        inp, tgt = ids[:, :-1], ids[:, 1:]
        if sharded:
            inp, tgt = self.shard(inp), self.shard(tgt)
        L_total = ids.shape[1] - 1

        def forward():
            with torch.no_grad():
                model.hidden_states(inp)

        def train():
            x = model.embedding(inp)
            for block in model.blocks:  # per-block activation checkpointing
                x = checkpoint(lambda x, b=block: b(x)[0], x, use_reentrant=False)
            x = model.norm(x)
            loss = F.cross_entropy(F.linear(x, model.embedding.weight).flatten(0, 1).float(), tgt[0],
                                   reduction="sum") / L_total
            loss.backward()
            if sharded:  # each rank holds its tokens' share of every gradient
                for p in model.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad, group=self.d.cp_group)
            model.zero_grad(set_to_none=True)

        return forward if mode == "forward" else train

    def measure(self, mode, ids) -> dict:
        row = {}
        try:
            row["N_s"], row["N_gib"] = self.timeit(self.step_fn(mode, ids, True))
            row["resident_gib"] = getattr(self, "resident_gib", 0.0)
        except torch.OutOfMemoryError:
            row["N_s"], row["N_oom"] = None, True
        self.reset_peak()
        ok = self.agree(row.get("N_s") is not None)
        if not ok:
            row["N_s"] = None

        def one():
            with context_parallel_disabled(self.model):
                try:
                    s, g = self.timeit(self.step_fn(mode, ids, False), solo=True)
                    return {"one_s": s, "one_gib": g, "one_path": "plain"}
                except torch.OutOfMemoryError:
                    pass
                self.reset_peak()
                if mode == "train":
                    return {"one_s": None, "one_oom": True}
                try:  # the streaming prefill: constant activations, KV cache of the full length
                    s, g = self.timeit(lambda: prefill(self.model, ids[:, :-1], chunk_len=self.args.chunk,
                                                       capacity=ids.shape[1]), solo=True)
                    return {"one_s": s, "one_gib": g, "one_path": f"streaming prefill, chunks of {self.args.chunk}"}
                except torch.OutOfMemoryError:
                    return {"one_s": None, "one_oom": True}

        if self.args.single:
            est = (row.get("N_s") or 0.0) * self.cp.size * 1.3 * (self.args.repeats + 1)
            if not self.agree(est < self.left() - 15):
                self.skip(f"1-device {mode} at {human(ids.shape[1] - 1)}", f"predicted {est:.0f} s")
            else:
                row.update(self.solo(one) or {})
        if row.get("N_s") and row.get("one_s"):
            row["efficiency"] = row["one_s"] / (self.cp.size * row["N_s"])
        self.reset_peak()
        return row

    def fit(self) -> None:
        """Double the length from the last one measured until memory or the budget stops it."""
        cap = self.capacity_gib()
        for mode in ("forward", "train"):
            rows = [r for r in self.result["model"] if r["mode"] == mode and r.get("N_s") is not None]
            if not rows:
                continue
            L = rows[-1]["length"]
            while True:
                L2 = 2 * L
                r = next(x for x in reversed(rows))
                est_t = r["N_s"] * (L2 / r["length"]) ** self.GROWTH * (1 + (self.cp.size if self.args.single else 0))
                r0 = r.get("resident_gib", 0.0)
                est_m = r0 + ((r.get("N_gib") or 0) - r0) * L2 / r["length"]
                if not self.agree(est_t * self.SAFETY < self.left() - 15 and not (cap and est_m > 0.9 * cap)):
                    why = (f"{human(L2)} predicted {est_t:.0f} s / {est_m:.0f} GiB "
                           f"({self.left():.0f} s left, {cap or 0:.0f} GiB)")
                    self.result["fit"].append({"mode": mode, "devices": self.cp.size, "longest_measured": L,
                                               "stopped": why})
                    self.log(f"fit {mode} on {self.cp.size}: {human(L)} measured; {why}")
                    break
                ids = torch.randint(0, 256, (1, L2 + 1)).to(self.dev)
                row = {"mode": mode, "length": L2, **self.measure(mode, ids), "search": True}
                self.result["model"].append(row)
                rows.append(row)
                self.save()
                if row.get("N_s") is None:
                    self.result["fit"].append({"mode": mode, "devices": self.cp.size, "longest_measured": L,
                                               "stopped": f"{human(L2)} out of memory"})
                    break
                L = L2
            ones = [x["length"] for x in self.result["model"] if x["mode"] == mode and x.get("one_s") is not None]
            self.result["fit"].append({"mode": mode, "devices": 1, "longest_measured": max(ones) if ones else 0,
                                       "stopped": "see the whole-model table (OOM or not tried past it)"})
        self.save()


def report(r: dict) -> str:
    n = r["world"]
    lines = [f"# evo2lite context parallelism ({r['date']})", "",
             f"{n} x {r['device']}; torch {r['torch']}; command: `{r['command']}`; budget {r['budget_s']} s", ""]
    if r["check"]:
        lines += ["## Correctness (CP vs one device)", "", "| check | result | ok |", "|---|---|---|"]
        for c in r["check"]:
            vals = ", ".join(f"{k} {v:.2e}" for k, v in c.items() if isinstance(v, float)) or c.get("error", "")
            lines.append(f"| {c['what']} | {vals} | {'yes' if c['ok'] else '**no**'} |")
        lines.append("")
    if r["blocks"]:
        lines += ["## One block at the model shape (ms)", "",
                  f"| block | scheme | length | fwd 1 dev | fwd {n} dev | fwd+bwd 1 dev | fwd+bwd {n} dev "
                  f"| peak GiB {n} dev |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]

        def ms(v):
            return f"{v * 1e3:.1f}" if v is not None else "-"

        for b in r["blocks"]:
            lines.append(f"| {b['kind']} | {b['scheme']} | {human(b['length'])} | {ms(b.get('fwd_1_s'))} | "
                         f"{ms(b.get('fwd_N_s'))} | {ms(b.get('fwd_bwd_1_s'))} | {ms(b.get('fwd_bwd_N_s'))} | "
                         f"{b.get('fwd_bwd_N_gib') or 0:.1f} |")
        lines.append("")
    if r["comm"]:
        lines += ["## Communication alone (ms)", "", "| exchange | length | ms |", "|---|---:|---:|"]
        lines += [f"| {c['what']} | {human(c['length'])} | {c['ms']:.2f} |" for c in r["comm"]]
        lines.append("")
    if r["model"]:
        lines += ["## Whole model", "",
                  f"| mode | length | 1 device s | 1-device path | {n} devices s | efficiency | peak GiB 1 / {n} |",
                  "|---|---:|---:|---|---:|---:|---|"]
        for m in r["model"]:
            one = f"{m['one_s']:.2f}" if m.get("one_s") is not None else ("OOM" if m.get("one_oom") else "-")
            many = f"{m['N_s']:.2f}" if m.get("N_s") is not None else ("OOM" if m.get("N_oom") else "-")
            eff = f"{m['efficiency']:.0%}" if "efficiency" in m else "-"
            lines.append(f"| {m['mode']} | {human(m['length'])} | {one} | {m.get('one_path', '-')} | {many} | {eff} | "
                         f"{m.get('one_gib') or 0:.1f} / {m.get('N_gib') or 0:.1f} |")
        lines.append("")
    if r["fit"]:
        lines += ["## Longest sequence", ""]
        lines += [f"- {f['mode']} on {f['devices']} device(s): {human(f['longest_measured'])} measured; next: "
                  f"{f['stopped']}" for f in r["fit"]] + [""]
    if r["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s}" for s in r["skipped"]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, help="model shape (default evo2_7b on CUDA, debug on CPU)")
    p.add_argument("--lengths", default=None, help="comma-separated, e.g. 128k,512k,1M")
    p.add_argument("--block-length", default=None, help="length of the per-block comparison")
    p.add_argument("--check-len", type=int, default=None)
    p.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run, from the script's start "
                                                                "(leave room for torchrun and the interpreter)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up")
    p.add_argument("--chunk", type=int, default=131072, help="chunk of the 1-device streaming prefill")
    p.add_argument("--parts", default="check,blocks,model,fit")
    p.add_argument("--no-single", dest="single", action="store_false", help="skip the 1-device runs")
    p.add_argument("--quick", action="store_true", help="small lengths (a smoke run, CPU/gloo)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=default_out())
    args = p.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        sys.exit("run under torchrun with --nproc-per-node >= 2")
    d, dev = init_distributed(args.device, context_parallel=world, timeout_s=max(120.0, args.budget))
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 check compares fp32 to fp32
    args.preset = args.preset or ("evo2_7b" if cuda and not args.quick else "debug")
    quick_lengths = "1k,2k" if not cuda else "16k,32k"
    lengths = args.lengths or (quick_lengths if args.quick else "128k,512k,1M")
    args.lengths = [parse_length(x) for x in lengths.split(",")]
    quick_block = "32k" if cuda else "1k"
    args.block_length = parse_length(args.block_length or (quick_block if args.quick else "128k"))
    args.check_len = args.check_len or (512 if args.quick else 8192)
    if args.quick:
        args.repeats = min(args.repeats, 1)
    torch.manual_seed(0)
    if not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    b = Bench(args, d, dev)
    parts = args.parts.split(",")
    b.log(f"{world} x {b.device_name()}, preset {args.preset}, lengths {[human(x) for x in args.lengths]}, "
          f"budget {args.budget:.0f} s")
    if "check" in parts:
        try:
            b.check()
        except Exception as exc:  # noqa: BLE001  (recorded; the timings still run)
            b.result["check"].append({"what": "check raised", "error": f"{type(exc).__name__}: {exc}"[:500],
                                      "ok": False})
            b.log(f"check raised {type(exc).__name__}: {exc}")
            b.save()
    if "blocks" in parts:
        if b.agree(b.left() > 60):
            b.blocks(args.block_length)
        else:
            b.skip("blocks", "budget")
    if "model" in parts or "fit" in parts:
        b.model_parts()
    if "fit" in parts:
        b.fit()
    b.save()
    if d.main:
        print(report(b.result), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
