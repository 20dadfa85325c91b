"""Train and evaluate task models over a grid of (layout, task setting, learning rate, weight decay).

One run = one row of the results table; the table is rewritten atomically after every run, so an
interrupted sweep resumes where it stopped (`resume=True` skips rows already present). Runs are independent
and may go to several worker processes (`jobs`), which is how a GPU is kept busy with models this small.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Evo2LiteError
from .tasks import NUM_TEST_EXAMPLES, TASKS, make_data, setting_id

RESULT_COLUMNS = ["layout", "task", "setting", "change_key", "change_value", "lr", "weight_decay", "seed",
                  "epochs", "steps", "batch_size", "num_test", "num_params", "train_loss", "test_loss", "test_acc",
                  "seconds", "device", "backend", "version"]


@dataclass(frozen=True)
class RunSpec:
    layout: str
    task: str
    setting: tuple  # sorted (key, value) pairs: hashable and JSON-able
    change_key: str  # the axis this setting moves from the baseline ("" for the baseline itself)
    lr: float
    weight_decay: float
    epochs: int
    max_steps: int | None
    batch_size: int
    seed: int
    device: str
    num_test: int = NUM_TEST_EXAMPLES
    backend: str = "auto"  # the Hyena kernel switch (evo2lite.mixers.set_backend)

    @property
    def key(self) -> tuple:
        return (self.layout, setting_id(TASKS[self.task], dict(self.setting)), float(self.lr),
                float(self.weight_decay), int(self.seed))


def plan_runs(layouts: list[str], tasks: list[str], grid: str = "reduced", lrs=(5e-4,), weight_decays=(0.0,),
              epochs: int = 200, max_steps: int | None = None, batch_size: int = 128, seed: int = 12345,
              device: str = "cpu", num_test: int = NUM_TEST_EXAMPLES, backend: str = "auto") -> list[RunSpec]:
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise Evo2LiteError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if grid not in ("baseline", "reduced", "full"):
        raise Evo2LiteError(f"grid must be baseline, reduced or full, not {grid!r}")
    # every task's baseline first, then every task's first change, ...: a sweep cut short by its time budget
    # still covers every task
    ranked = []
    for task_name in tasks:
        task = TASKS[task_name]
        for rank, setting in enumerate(task.settings(grid)):
            change = next((k for k in setting if setting[k] != task.baseline.get(k)), "")
            ranked += [(rank, RunSpec(layout, task_name, tuple(sorted(setting.items())), change, lr, wd, epochs,
                                      max_steps, batch_size, seed, device, num_test, backend))
                       for layout in layouts for lr in lrs for wd in weight_decays]
    return [spec for _, spec in sorted(ranked, key=lambda item: item[0])]


def run_one(spec: RunSpec, threads: int | None = None, on_step=None) -> dict:
    """Train one model on one setting and return its result row. `on_step(step, total)` after each step."""
    import torch

    from .. import __version__
    from ..mixers import set_backend
    from ..train_params import make_trainable, param_groups
    from .models import build_task_model, masked_loss_and_hits

    if threads:
        torch.set_num_threads(threads)
    task = TASKS[spec.task]
    setting = dict(spec.setting)
    data = _cached_data(spec.task, spec.setting, spec.seed, spec.num_test)
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    model = build_task_model(spec.layout, setting["vocab_size"], data.train_inputs.shape[1],
                             task.encoder_decoder, seed=spec.seed).to(device)
    set_backend(model, spec.backend)
    make_trainable(model.backbone, decay_len=data.train_inputs.shape[1])
    optimizer = torch.optim.AdamW(param_groups(model, spec.weight_decay), lr=spec.lr)
    n = len(data.train_inputs)
    steps_per_epoch = math.ceil(n / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    if spec.max_steps is not None:
        total = min(total, spec.max_steps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1), eta_min=1e-6)
    train_x = torch.from_numpy(data.train_inputs).to(device)
    train_y = torch.from_numpy(data.train_targets).to(device)
    gen = torch.Generator().manual_seed(spec.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    start = time.perf_counter()
    model.train()
    recent: list[float] = []
    step = 0
    while step < total:
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, spec.batch_size):
            if step >= total:
                break
            idx = order[i:i + spec.batch_size]
            with autocast:
                logits = model(train_x[idx])
            loss, _, _ = masked_loss_and_hits(logits, train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step % 25 == 0 or step == total:  # .item() syncs the GPU: sample the loss sparsely
                recent = (recent + [loss.item()])[-4:]
            if on_step is not None:
                on_step(step, total)
    test_loss, test_acc = _evaluate(model, data.test_inputs, data.test_targets, device, autocast)
    return dict(layout=spec.layout, task=spec.task, setting=setting_id(task, setting), change_key=spec.change_key,
                change_value=json.dumps(setting.get(spec.change_key)) if spec.change_key else "",
                lr=spec.lr, weight_decay=spec.weight_decay, seed=spec.seed, epochs=spec.epochs, steps=step,
                batch_size=spec.batch_size, num_test=len(data.test_inputs),
                num_params=sum(p.numel() for p in model.parameters()),
                train_loss=float(np.mean(recent)) if recent else float("nan"), test_loss=test_loss,
                test_acc=test_acc, seconds=time.perf_counter() - start, device=str(device), backend=spec.backend,
                version=__version__)


def _run_group(specs: list[RunSpec], threads: int, deadline: float) -> list[dict]:
    # deadline on the wall clock (time.time): monotonic clocks differ between processes, and a chunk may wait
    # in the pool's queue long after it was submitted
    rows = []
    for spec in specs:
        if time.time() > deadline:
            break
        rows.append(run_one(spec, threads))
    return rows


@functools.lru_cache(maxsize=4)
def _cached_data(task: str, setting: tuple, seed: int, num_test: int = NUM_TEST_EXAMPLES):
    # the layouts and the lr x wd sweep of one setting share its data; generating it takes ~1 s
    return make_data(TASKS[task], dict(setting), seed=seed, num_test=num_test)


def _evaluate(model, inputs, targets, device, autocast, batch: int = 256) -> tuple[float, float]:
    import torch

    from .models import masked_loss_and_hits

    model.eval()
    hits = scored = 0
    loss_sum = 0.0
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            x = torch.from_numpy(inputs[i:i + batch]).to(device)
            y = torch.from_numpy(targets[i:i + batch]).to(device)
            with autocast:
                logits = model(x)
            loss, h, s = masked_loss_and_hits(logits, y)
            hits, scored, loss_sum = hits + h, scored + s, loss_sum + float(loss) * s
    return loss_sum / max(scored, 1), hits / max(scored, 1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _read_table(path: Path):
    import pandas as pd

    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)


def _write_table(df, path: Path) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def run_synthetic(layouts: list[str], tasks: list[str], output: str | os.PathLike, *, grid: str = "reduced",
                  lrs=(5e-4,), weight_decays=(0.0,), epochs: int = 200, max_steps: int | None = None,
                  batch_size: int = 128, seed: int = 12345, device: str = "cpu", jobs: int = 1,
                  resume: bool = False, progress=None, time_budget: float | None = None,
                  num_test: int = NUM_TEST_EXAMPLES, backend: str = "auto", on_start=None, on_step=None):
    """Run every (layout, task setting, lr, wd) of the grid; returns the results table (pandas).
    Callbacks: `on_start(spec, todo)` before a run (in-process runs only), `on_step(step, total)` after each
    optimizer step (in-process runs only), `progress(row, todo)` after each run with its result row; `todo`
    is the number of runs this call has to do. time_budget (seconds): start no run after it has passed (the
    runs in flight finish; `resume=True` later runs the rest). num_test: test examples per setting (MAD:
    1280; fewer for a cheap CPU protocol, recorded per row)."""
    import pandas as pd

    from ..config import ModelConfig

    for layout in layouts:  # validate the layout strings before any training
        ModelConfig(layout=layout, d_model=128, num_heads=16, d_mlp=344, num_se_groups=16, num_mr_groups=16)
    output = Path(output)
    if num_test < 1:
        raise Evo2LiteError(f"num_test must be at least 1, got {num_test}")
    from ..mixers import BACKENDS

    if backend not in BACKENDS:
        raise Evo2LiteError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    runs = plan_runs(layouts, tasks, grid, lrs, weight_decays, epochs, max_steps, batch_size, seed, device,
                     num_test, backend)
    table = _read_table(output) if resume else pd.DataFrame(columns=RESULT_COLUMNS)
    done = {(r.layout, r.setting, float(r.lr), float(r.weight_decay), int(r.seed)) for r in table.itertuples()}
    todo = [r for r in runs if r.key not in done]
    rows = table.to_dict("records")

    def record(row: dict) -> None:
        rows.append(row)
        _write_table(pd.DataFrame(rows, columns=RESULT_COLUMNS), output)
        if progress is not None:
            progress(row, len(todo))

    deadline = time.time() + time_budget if time_budget is not None else math.inf
    if jobs <= 1:
        for spec in todo:
            if time.time() > deadline:
                break
            if on_start is not None:
                on_start(spec, len(todo))
            record(run_one(spec, on_step=on_step))
    else:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // jobs)
        # chunks of one setting's runs, so a worker generates a setting's data once per chunk; a chunk holds at
        # most ~1/(2 jobs) of the runs, so every worker gets work
        groups: dict[tuple, list[RunSpec]] = {}
        for spec in todo:
            groups.setdefault((spec.task, spec.setting), []).append(spec)
        per = max(1, math.ceil(len(todo) / (2 * jobs)))
        chunks = []
        for group in groups.values():
            pieces = math.ceil(len(group) / per)
            chunks += [group[i::pieces] for i in range(pieces)]
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_group, chunk, threads, deadline) for chunk in chunks]
            for fut in as_completed(futures):
                for row in fut.result():
                    record(row)
    if not rows:
        _write_table(pd.DataFrame(columns=RESULT_COLUMNS), output)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def best_over_sweep(df):
    """MAD's protocol: per (layout, setting) the best test accuracy over the lr x wd sweep."""
    if df.empty:
        return df
    idx = df.groupby(["layout", "setting"])["test_acc"].idxmax()
    return df.loc[idx].reset_index(drop=True)


def summary_table(df):
    """Layouts x tasks: mean over settings of the best-over-sweep test accuracy (MAD's per-task score)."""
    best = best_over_sweep(df)
    if best.empty:
        return best
    table = best.pivot_table(index="layout", columns="task", values="test_acc", aggfunc="mean")
    table["mean"] = table.mean(axis=1, skipna=False)  # no mean over a partial row: it would not compare
    return table.sort_values("mean", ascending=False, na_position="last")


__all__ = ["RunSpec", "plan_runs", "run_one", "run_synthetic", "best_over_sweep", "summary_table",
           "RESULT_COLUMNS"]
