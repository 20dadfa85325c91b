"""`evo2lite train CONFIG`: pretrain or fine-tune a StripedHyena 2 model on a built corpus (spec §9).

What one optimizer step does (the same on 1 process and under torchrun + DDP):
  * every rank draws `global_batch_size / world_size` windows of seq_len + 1 tokens from the train split
    (evo2lite.pipelines.datasets.TokenWindowDataset: rank r takes global samples r, r + w, ...; with
    `region_weights`, windows overlapping a BED of train regions are drawn `weight` times as often), in
    micro-batches of `micro_batch_size` (gradient accumulation, DDP's no_sync on all but the last);
  * the loss is the weighted next-token cross entropy summed over the whole global batch and divided by
    its total weight (an all-reduced scalar), so the gradient equals one process's with the same batch;
  * clip the global gradient norm, AdamW (decay groups in evo2lite/train_params.py), warm-up + cosine.
With context parallelism (`context_parallel=C`, evo2lite/parallel/) the C ranks of a group draw the same
windows and each runs its zigzag shard of them; the data-parallel world is then world_size / C.
Hyena filters train in the parametrizations of spec §9 (train_params.make_trainable) and are exported
to the inference form (MR h with the decay folded in, LR log_poles/residues) in every checkpoint.

Checkpoints (out_dir/checkpoints/step_NNNNNNN/): model.safetensors + config.json (the exported model:
`evo2lite.load_model(dir)` reads it), trainable.safetensors (the parametrized weights) and trainer.pt
(optimizer, scheduler, RNG states, data position, step, tokens, wall time). Resume restores all of them:
on CPU the losses after resuming are bit-identical to an uninterrupted run. The log is JSONL
(out_dir/log.jsonl): one line per `log_every` steps and one per evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import CONFIG_FILE, load_model, save_state
from ..config import PRESETS, ModelConfig
from ..errors import ConfigError, Evo2LiteError
from ..log import note
from ..model import StripedHyena2, init_weights_
from ..train_params import export_state_dict, make_trainable, param_groups
from .train_data import evaluate, resolve_corpus

TRAINER_FILE = "trainer.pt"
TRAINABLE_FILE = "trainable.safetensors"


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a training run needs; read from YAML by `load_train_config`. Paths are relative to the
    working directory."""

    corpus: str  # a built corpus folder (corpus.json) or its 2-bit pack (packed.json)
    model: str | dict = "debug"  # preset name, or a dict of ModelConfig fields ({preset: NAME, ...overrides})
    init_from: str | None = None  # fine-tune: any checkpoint load_model reads (our dir, Evo 2 .pt, hf:REPO)
    init_config: str | None = None  # YAML or preset for an Evo 2 .pt in init_from
    out_dir: str = "runs/train"
    checkpoint_dir: str | None = None  # default out_dir/checkpoints
    export_dir: str | None = "model"  # the final exported model, relative to out_dir; null: none
    work_dir: str | None = None  # where a 2-bit pack is unpacked; default out_dir
    # data
    seq_len: int = 2048  # tokens the model sees per window (windows hold seq_len + 1 for the targets)
    rc_prob: float = 0.5
    soft_mask_weight: float = 1.0
    # {bed: PATH, weight: W[, organism: NAME]}: windows overlapping the BED (contigs: that organism's records)
    # are drawn W times as often
    region_weights: dict | None = None
    # batch
    global_batch_size: int = 8  # windows per optimizer step, all ranks together
    micro_batch_size: int = 8  # windows per forward pass on one rank
    # optimizer and schedule
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    max_steps: int = 1000
    time_budget_s: float | None = None  # fit max_steps to this wall time (measured after calibrate_steps)
    time_reserve_s: float = 0.0  # kept free of training inside the budget (final eval, save)
    calibrate_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    decay_len: int | None = None  # normalises the Hyena-MR decay; default the model's context_len
    # evaluation, logging, checkpoints
    eval_split: str = "val"
    eval_every: int = 500  # 0: only at the end
    eval_windows: int = 16  # per organism
    eval_batch_size: int = 8
    log_every: int = 10
    save_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 2
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    activation_checkpointing: bool = False  # keep only the residual stream; recompute each block in the backward
    extra: dict = field(default_factory=dict)  # free-form notes copied into the log

    def __post_init__(self) -> None:
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                              f"micro_batch_size {self.micro_batch_size}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.seq_len < 2:
            raise ConfigError("seq_len must be at least 2")
        if not isinstance(self.activation_checkpointing, bool):
            raise ConfigError(f"activation_checkpointing must be true or false, got {self.activation_checkpointing!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError("need 0 <= min_lr <= lr")
        self.betas = tuple(self.betas)
        rw = self.region_weights
        rw_keys = set(rw) if isinstance(rw, dict) else set()
        if rw is not None and not ({"bed", "weight"} <= rw_keys <= {"bed", "weight", "organism"}
                                   and isinstance(rw["bed"], str) and isinstance(rw.get("organism", ""), str)
                                   and isinstance(rw["weight"], (int, float)) and not isinstance(rw["weight"], bool)):
            raise ConfigError(f"region_weights must be {{bed: PATH, weight: NUMBER[, organism: NAME]}}, got {rw!r}")


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A TrainConfig from YAML, with keyword overrides (None values ignored)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read training config {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a training config is a YAML mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown training config keys {unknown}; known: {sorted(known)}")
    if "corpus" not in raw:
        raise ConfigError(f"{path}: `corpus:` (a built corpus folder or a 2-bit pack) is required")
    for f in dataclasses.fields(TrainConfig):  # numbers, before __post_init__ compares them
        value = raw.get(f.name)
        if value is None or f.type.split(" |")[0] not in ("int", "float"):
            continue
        if f.type.startswith("float") and isinstance(value, str):
            try:  # YAML 1.1 reads 1e-4 (no dot) as a string
                value = raw[f.name] = float(value)
            except ValueError:
                pass
        ok = (int,) if f.type.startswith("int") else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok):
            raise ConfigError(f"{path}: {f.name} must be a number{' (integer)' if ok == (int,) else ''}, "
                              f"got {value!r}")
    return TrainConfig(**raw)


def model_config_from(spec: str | dict, seq_len: int) -> ModelConfig:
    """The architecture of a fresh model; its context_len is the training sequence length."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ConfigError(f"model: unknown preset {spec!r}; presets: {', '.join(PRESETS)}")
        base = PRESETS[spec]
        fields: dict = {}
    else:
        fields = dict(spec)
        base_name = fields.pop("preset", None)
        base = PRESETS[base_name] if base_name else None
        if base_name and base_name not in PRESETS:
            raise ConfigError(f"model.preset: unknown preset {base_name!r}")
    fields.setdefault("context_len", seq_len)
    if base is None:
        return ModelConfig.from_dict(fields)
    try:
        return dataclasses.replace(base, **fields)
    except TypeError as exc:
        raise ConfigError(f"model: {exc}") from None


# --- schedule --------------------------------------------------------------------------------------

class WarmupCosine:
    """lr factor: linear warm-up to 1 over warmup_steps, then cosine to min_ratio at max_steps. A callable
    object, so LambdaLR.state_dict() saves (and resume restores) its fields, max_steps included."""

    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float) -> None:
        self.warmup_steps, self.max_steps, self.min_ratio = warmup_steps, max_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --- model, optimizer, checkpoints -------------------------------------------------------------------

def _build_model(cfg: TrainConfig, resume_dir: Path | None) -> StripedHyena2:
    if resume_dir is not None:
        mcfg = ModelConfig.load(resume_dir / CONFIG_FILE)
        model = StripedHyena2(mcfg)
        init_weights_(model, cfg.seed)  # overwritten below; keeps every tensor materialised
    elif cfg.init_from:
        # FP8 input projections (official 1B/20B/40B) are inference-only: the E4M3 cast has no gradient and
        # TE's scaling state is no parameter. Fine-tuning trains plain projections, so the exported config
        # stops asking for FP8 (its weights no longer match the FP8 scales) and loads without --allow-inexact.
        model = load_model(cfg.init_from, config=cfg.init_config, device="cpu", dtype=torch.float32, fp8="off",
                           allow_inexact=True)
        model.config = dataclasses.replace(model.config, fp8_input_projections=False)
    else:
        model = init_weights_(StripedHyena2(model_config_from(cfg.model, cfg.seq_len)), cfg.seed)
    model.train()
    make_trainable(model, cfg.decay_len)
    model.activation_checkpointing = cfg.activation_checkpointing
    if resume_dir is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resume_dir / TRAINABLE_FILE)), strict=True)
    return model


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values, so trainer.pt loads with weights_only=True."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy, py = state["numpy"], state["python"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, model: StripedHyena2, optimizer, scheduler, trainer: dict) -> Path:
    """Write one resumable checkpoint (see the module docstring); trainer.pt goes last, so a folder
    without it is an interrupted write and is never resumed from."""
    from safetensors.torch import save_file

    save_state(model.config, export_state_dict(model), directory)
    trainable = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(trainable, str(directory / TRAINABLE_FILE), metadata={"format": "evo2lite-trainable"})
    payload = {**trainer, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "rng": _rng_state()}
    tmp = directory / (TRAINER_FILE + ".tmp")
    torch.save(payload, tmp)
    tmp.rename(directory / TRAINER_FILE)
    return directory


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    done = sorted(p for p in checkpoint_dir.glob("step_*") if (p / TRAINER_FILE).is_file())
    return done[-1] if done else None


def _prune(checkpoint_dir: Path, keep: int) -> None:
    done = sorted(p for p in checkpoint_dir.glob("step_*") if (p / TRAINER_FILE).is_file())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


# --- the loop ----------------------------------------------------------------------------------------

class _Log:
    def __init__(self, path: Path | None, start_step: int) -> None:
        self.path = path
        if path is not None and path.exists():  # drop lines past the resumed step (an interrupted run)
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
            path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, record: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def _progress(total: int, start: int):
    if not (sys.stderr.isatty() or os.environ.get("EVO2LITE_PROGRESS") == "1"):
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeRemainingColumn(), console=Console(stderr=True))


def _context_parallel(model: StripedHyena2, cfg: TrainConfig, dist_info):
    """Apply context parallelism to the model when the job has a context-parallel axis; returns the map
    from a full window (B, L) to this rank's zigzag shard (the identity without one)."""
    if dist_info.cp == 1:
        return lambda t: t
    from evo2lite.parallel import apply_context_parallel, chunk_len, shard_sequence

    c = model.config
    chunk_len(cfg.seq_len, dist_info.cp, max(c.featurizer_len, c.se_filter_len, c.mr_filter_len) - 1)
    apply_context_parallel(model, dist_info.cp_group)
    return lambda t: shard_sequence(t, dist_info.cp, dist_info.cp_rank)


def train(cfg: TrainConfig, *, resume: str | Path | None = None, device: str | None = None,
          context_parallel: int = 1) -> dict:
    """Run (or resume) training. resume: a checkpoint folder, or "auto" for the latest in checkpoint_dir
    (a fresh start when there is none). context_parallel: ranks that share each window (zigzag shards,
    evo2lite.parallel); the others are data-parallel. Returns the summary also written to
    out_dir/summary.json."""
    from evo2lite.parallel.dist import init_distributed, wrap_ddp
    from evo2lite.pipelines.datasets import PackedSplit, TokenWindowDataset

    t_start = time.perf_counter()
    dist_info, dev = init_distributed(device, context_parallel=context_parallel)
    out_dir = Path(cfg.out_dir)
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else out_dir / "checkpoints"
    if dist_info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume_dir = None
    if resume is not None:
        resume_dir = latest_checkpoint(ckpt_dir) if str(resume) == "auto" else Path(resume)
        if resume_dir is not None and not (resume_dir / TRAINER_FILE).is_file():
            raise Evo2LiteError(f"cannot resume from {resume_dir}: no {TRAINER_FILE} (not a finished checkpoint)")
    trainer = torch.load(resume_dir / TRAINER_FILE, map_location="cpu", weights_only=True) if resume_dir else {}

    # data: rank 0 unpacks a 2-bit pack once; the other ranks wait, then find it unpacked
    work = Path(cfg.work_dir) if cfg.work_dir else out_dir
    if dist_info.main:
        corpus = resolve_corpus(cfg.corpus, work)
    dist_info.barrier()
    corpus = resolve_corpus(cfg.corpus, work)
    per_rank = cfg.global_batch_size // dist_info.dp  # windows per data-parallel rank
    if per_rank * dist_info.dp != cfg.global_batch_size or per_rank % cfg.micro_batch_size:
        raise ConfigError(f"global_batch_size {cfg.global_batch_size} must split into {dist_info.dp} "
                          f"ranks x whole micro-batches of {cfg.micro_batch_size}")
    accum = per_rank // cfg.micro_batch_size
    regions = cfg.region_weights or {}
    train_ds = TokenWindowDataset(corpus, "train", cfg.seq_len + 1, seed=cfg.seed, shuffle=True,
                                  rc_prob=cfg.rc_prob, soft_mask_weight=cfg.soft_mask_weight,
                                  rank=dist_info.dp_rank, world_size=dist_info.dp,
                                  region_bed=regions.get("bed"), region_weight=regions.get("weight", 1.0),
                                  region_organism=regions.get("organism"))
    if trainer:
        train_ds.load_state_dict({**trainer["data"], "rank": dist_info.dp_rank})
    region_stats = train_ds.region_stats() if train_ds.regions is not None else None
    if region_stats and dist_info.main:
        r = region_stats
        note(f"region_weights x{r['weight']:g}: windows holding BED bases {r['window_share']:.1%} of draws "
             f"(uniform {r['uniform_window_share']:.1%}), BED bases {r['token_share']:.2%} of drawn tokens "
             f"(uniform {r['uniform_token_share']:.2%}); {r['bed_bases_outside_split']:,} BED bases outside the split")
    eval_split = PackedSplit(corpus, cfg.eval_split) if (corpus / cfg.eval_split / "index.json").is_file() else None

    # model and optimizer
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg, resume_dir).to(dev)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                  eps=cfg.adam_eps, **({"fused": True} if dev.type == "cuda" else {}))
    schedule = WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr / cfg.lr if cfg.lr else 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if trainer:
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])  # restores the schedule's fields too
        by_budget = trainer.get("calibrated_by_budget", trainer.get("train_config", {}).get("time_budget_s"))
        if not by_budget:  # an explicit schedule follows the config,
            schedule.warmup_steps, schedule.max_steps = cfg.warmup_steps, cfg.max_steps  # so runs can be extended
        _set_rng_state(trainer["rng"])
    step = int(trainer.get("step", 0))
    tokens_seen = int(trainer.get("tokens", 0))
    elapsed_before = float(trainer.get("wall_s", 0.0))
    calibrated = bool(trainer.get("calibrated", cfg.time_budget_s is None))

    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    local = _context_parallel(model, cfg, dist_info)  # a window -> this rank's zigzag shard of it
    net = wrap_ddp(model, dist_info, dev)
    fwd = torch.compile(net) if cfg.compile else net

    log = _Log(out_dir / "log.jsonl" if dist_info.main else None, step)
    if dist_info.main and not trainer:
        log.write({"event": "start", "step": 0, "config": dataclasses.asdict(cfg),
                   "model": model.config.to_dict(), "num_params": sum(p.numel() for p in model.parameters()),
                   "world_size": dist_info.world, "context_parallel": dist_info.cp, "device": str(dev),
                   "bf16": use_bf16, "accum": accum, "region_stats": region_stats})

    def checkpoint() -> None:
        if dist_info.main:
            payload = {"step": step, "tokens": tokens_seen, "wall_s": elapsed_before + time.perf_counter() - t_start,
                       "data": train_ds.state_dict(), "calibrated": calibrated,
                       "calibrated_by_budget": calibrated and cfg.time_budget_s is not None,
                       "train_config": dataclasses.asdict(cfg), "world_size": dist_info.world}
            save_checkpoint(ckpt_dir / f"step_{step:07d}", model, optimizer, scheduler, payload)
            _prune(ckpt_dir, cfg.keep_checkpoints)
        dist_info.barrier()

    def run_eval() -> dict | None:
        result = None
        if dist_info.main and eval_split is not None:
            t0 = time.perf_counter()
            from evo2lite.parallel import context_parallel_disabled

            with context_parallel_disabled(model):  # rank 0 alone, whole windows
                result = evaluate(model, eval_split, cfg.seq_len, cfg.eval_windows, cfg.eval_batch_size, dev,
                                  autocast)
            log.write({"event": "eval", "step": step, "split": cfg.eval_split, "eval_s": time.perf_counter() - t0,
                       "results": result})
        dist_info.barrier()
        return result

    batches = train_ds.batches(cfg.micro_batch_size)
    tokens_per_step = cfg.global_batch_size * cfg.seq_len
    window_t0, window_steps = time.perf_counter(), 0
    calib_t0 = None
    last_eval = None
    loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
    progress = _progress(schedule.max_steps, step) if dist_info.main else contextlib.nullcontext(None)
    with progress as bar:
        task = bar.add_task("train", total=schedule.max_steps, completed=step, info="") if bar else None
        while step < schedule.max_steps:
            micro = [next(batches) for _ in range(accum)]
            weight = torch.tensor(sum(float(local(m["loss_weights"][:, 1:]).sum()) for m in micro),
                                  dtype=torch.float64, device=dev)
            weight = dist_info.all_sum(weight)
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), dtype=torch.float64, device=dev)
            for i, mb in enumerate(micro):
                ids = mb["input_ids"].to(dev, non_blocking=True)
                inputs, targets = local(ids[:, :-1]), local(ids[:, 1:])
                w = local(mb["loss_weights"][:, 1:]).to(dev, non_blocking=True)
                sync = contextlib.nullcontext() if (dist_info.world == 1 or i == accum - 1) else net.no_sync()
                with sync:
                    with autocast():
                        logits = fwd(inputs)
                    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                          reduction="none")
                    loss_sum = (nll * w.reshape(-1)).sum()
                    (loss_sum * (dist_info.world / weight.float())).backward()
                step_loss += loss_sum.detach().double()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window_steps += 1
            tokens_seen += tokens_per_step
            loss_acc += step_loss / weight
            if step % cfg.log_every == 0 or step == schedule.max_steps:
                mean_loss = float(dist_info.all_sum(loss_acc.clone())) / window_steps
                now = time.perf_counter()
                rec = {"step": step, "loss": mean_loss, "bits_per_token": mean_loss / math.log(2),
                       "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "tokens": tokens_seen,
                       "tokens_per_s": window_steps * tokens_per_step / (now - window_t0),
                       "wall_s": elapsed_before + now - t_start}
                log.write(rec)
                if bar is not None:
                    bar.update(task, completed=step, total=schedule.max_steps,
                               info=f"loss {mean_loss:.4f}  {rec['tokens_per_s']:,.0f} tok/s")
                loss_acc.zero_()
                window_t0, window_steps = now, 0
            if not calibrated:
                if step == 3:  # the first steps carry warm-up costs (allocator, kernels, compile)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    calib_t0 = time.perf_counter()
                elif calib_t0 is not None and step == 3 + cfg.calibrate_steps:
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    per_step = (time.perf_counter() - calib_t0) / cfg.calibrate_steps
                    left = cfg.time_budget_s - (time.perf_counter() - t_start) - cfg.time_reserve_s
                    n_evals = (schedule.max_steps // cfg.eval_every) if cfg.eval_every else 0
                    eval_cost = n_evals * per_step * 4  # rough; evaluations are short
                    fit = step + max(1, int((left - eval_cost) / per_step))
                    fit = dist_info.broadcast_int(min(schedule.max_steps, fit), dev)
                    schedule.max_steps = fit
                    calibrated = True
                    log.write({"event": "calibrate", "step": step, "s_per_step": per_step, "max_steps": fit})
            if cfg.eval_every and step % cfg.eval_every == 0 and step < schedule.max_steps:
                last_eval = run_eval()
            if cfg.save_every and step % cfg.save_every == 0 and step < schedule.max_steps:
                checkpoint()
            if cfg.time_budget_s is not None:
                over = time.perf_counter() - t_start > cfg.time_budget_s - cfg.time_reserve_s
                if dist_info.broadcast_int(int(over), dev):
                    log.write({"event": "time_budget_stop", "step": step})
                    break
    last_eval = run_eval()
    checkpoint()
    wall = elapsed_before + time.perf_counter() - t_start
    summary = {"steps": step, "tokens": tokens_seen, "wall_s": wall, "max_steps": schedule.max_steps,
               "world_size": dist_info.world, "device": str(dev), "eval": last_eval,
               "checkpoint": str(ckpt_dir / f"step_{step:07d}")}
    if dist_info.main:
        if cfg.export_dir:
            export = out_dir / cfg.export_dir
            save_state(model.config, export_state_dict(model), export)
            summary["export"] = str(export)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        log.write({"event": "end", **summary})
        note(f"trained {step} steps, {tokens_seen:,} tokens in {wall:,.0f} s; "
             f"{'exported to ' + summary['export'] if 'export' in summary else 'checkpoint ' + summary['checkpoint']}")
    dist_info.barrier()
    return summary

