"""The synthetic token-manipulation tasks (evo2lite/evals): generators, splits, the runner and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from evo2lite.cli import app
from evo2lite.evals import IGNORE, TASKS, make_data, run_synthetic
from evo2lite.evals.report import difficulty_curves, markdown_summary, plot_task
from evo2lite.evals.runner import RunSpec, run_one
from evo2lite.evals.tasks import memorization_map


def small(task: str, **changes) -> dict:
    return {**TASKS[task].baseline, **changes}


@pytest.mark.parametrize("task", ["in-context-recall", "noisy-in-context-recall"])
def test_recall_answers_are_recoverable_from_the_inputs(task):
    data = make_data(TASKS[task], small(task), num_train=8, num_test=32)
    checked = 0
    for x, y in zip(data.test_inputs, data.test_targets):
        for t in np.flatnonzero(y != IGNORE):
            # the input at t is a key; its value is the target, and the same pair occurred earlier
            earlier = [j for j in range(t - 1) if x[j] == x[t] and x[j + 1] == y[t]]
            assert earlier, f"target {y[t]} at {t} is not recoverable"
            checked += 1
    assert checked > 100


def test_fuzzy_recall_probe_value_follows_its_key_earlier():
    task = TASKS["fuzzy-in-context-recall"]
    data = make_data(task, small("fuzzy-in-context-recall"), num_train=4, num_test=16)
    for x, y in zip(data.test_inputs, data.test_targets):
        scored = np.flatnonzero(y != IGNORE)
        assert len(scored)
        # the last scored run of targets is the probe's value motif; the motif (shifted by one) occurs earlier
        value = y[scored[-len(scored):]][-1]
        assert value in x[: scored[-1]]


def test_selective_copying_targets_are_the_scattered_tokens_in_order():
    data = make_data(TASKS["selective-copying"], small("selective-copying", seq_len=64, num_tokens_to_copy=8),
                     num_train=4, num_test=8)
    blank = 16 - 2
    for x, y in zip(data.test_inputs, data.test_targets):
        copy_at = int(np.flatnonzero(x == 15)[0])
        to_copy = [t for t in x[:copy_at] if t != blank]
        assert list(y[y != IGNORE]) == to_copy


def test_compression_and_memorization_targets():
    comp = make_data(TASKS["compression"], small("compression"), num_train=4, num_test=4)
    assert (comp.test_targets == comp.test_inputs).all() and (comp.test_inputs[:, -1] == 15).all()
    mem = make_data(TASKS["memorization"], small("memorization"), seed=7, num_train=4, num_test=4)
    kv = memorization_map(256, 7)
    for x, y in zip(mem.test_inputs, mem.test_targets):
        assert all(y[i + 1] == kv[int(x[i])] for i in range(0, len(x), 2))
        assert (y[::2] == IGNORE).all() and (x[1::2] == 255).all()


@pytest.mark.parametrize("task", [t for t in TASKS if t != "memorization"])
def test_data_is_deterministic_and_splits_are_disjoint(task):
    setting = small(task, seq_len=64) if task != "selective-copying" else small(task, seq_len=64,
                                                                                num_tokens_to_copy=8)
    a = make_data(TASKS[task], setting, seed=3, num_train=64, num_test=32)
    b = make_data(TASKS[task], setting, seed=3, num_train=64, num_test=32)
    c = make_data(TASKS[task], setting, seed=4, num_train=64, num_test=32)
    assert (a.train_inputs == b.train_inputs).all() and (a.test_targets == b.test_targets).all()
    assert not np.array_equal(a.train_inputs, c.train_inputs)
    train = {row.tobytes() for row in a.train_inputs}
    assert not any(row.tobytes() in train for row in a.test_inputs)
    assert a.train_inputs.shape[1] == a.test_inputs.shape[1]


@pytest.mark.parametrize("frac_noise", [0.0, 0.5])
def test_recall_keys_keep_their_value_and_first_occurrences_are_not_scored(frac_noise):
    setting = small("noisy-in-context-recall", frac_noise=frac_noise)
    data = make_data(TASKS["noisy-in-context-recall"], setting, num_train=4, num_test=64)
    plain, noise_pairs, pairs = 32 - 16, 0, 0
    for x, y in zip(data.test_inputs, data.test_targets):
        seq = np.concatenate([x, y[-1:]])  # the full sequence: the last target is the last token
        value_of: dict[int, int] = {}
        for j in range(0, len(seq) - 2, 2):  # pairs before the probe
            k, v = int(seq[j]), int(seq[j + 1])
            pairs += 1
            if k >= plain:  # a noise pair: both tokens noise, never scored
                assert v >= plain and y[j] == IGNORE
                noise_pairs += 1
                continue
            assert k < plain // 2 <= v < plain
            assert y[j] == (v if k in value_of else IGNORE)  # scored iff the key was seen before
            assert value_of.setdefault(k, v) == v
        assert value_of[int(seq[-2])] == seq[-1]  # the probe asks a key seen before
    assert abs(noise_pairs / pairs - frac_noise) < 0.05


def test_settings_follow_mads_grid():
    recall = TASKS["in-context-recall"]
    assert len(recall.settings("baseline")) == 1
    assert len(recall.settings("reduced")) == 4
    assert len(recall.settings("full")) == 1 + 3 + 3 + 4
    assert {s["seq_len"] for s in recall.settings("full")} == {128, 256, 512, 1024}


def test_a_tiny_model_learns_the_easiest_in_context_recall():
    setting = dict(vocab_size=8, seq_len=16, num_train_examples=1024, multi_query=True)
    spec = RunSpec("SS", "in-context-recall", tuple(sorted(setting.items())), "", 3e-3, 0.0, 200, 150, 64, 1,
                   "cpu")
    row = run_one(spec)
    # 4 keys, 4 values: chance is 0.25
    assert row["test_acc"] > 0.6, row
    assert row["steps"] == 150


def test_runner_resumes_and_reports(tmp_path):
    out = tmp_path / "r.parquet"
    kw = dict(grid="reduced", max_steps=2, batch_size=32)
    df = run_synthetic(["S", "A"], ["compression"], out, **kw)
    assert len(df) == 2 * 4 and out.exists()
    calls = []
    df2 = run_synthetic(["S", "A"], ["compression"], out, resume=True, progress=lambda *a: calls.append(a), **kw)
    assert calls == [] and len(df2) == len(df)
    pd.testing.assert_frame_equal(pd.read_parquet(out), df2.astype(pd.read_parquet(out).dtypes.to_dict()))
    curves = difficulty_curves(df, "compression")
    assert set(curves) == {"vocab_size", "seq_len", "num_train_examples"}
    assert [x for x, _ in curves["seq_len"]["S"]] == [32.0, 64.0]
    fig = plot_task(df, "compression", tmp_path / "c.png")
    line = fig.axes[1].get_lines()[0]
    assert list(line.get_xdata()) == [32.0, 64.0]
    assert (tmp_path / "c.png").stat().st_size > 0
    assert "| S |" in markdown_summary(df)


def test_cli_eval_synthetic(tmp_path):
    runner = CliRunner()
    out = tmp_path / "o.parquet"
    res = runner.invoke(app, ["eval", "synthetic", "--layouts", "S", "--tasks", "compression", "--grid",
                              "baseline", "--max-steps", "1", "--batch-size", "16", "--num-test", "8",
                              "--backend", "reference", "-o", str(out), "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert "| S |" in res.stdout and (tmp_path / "plots" / "compression.png").exists()
    assert "[1/1] S C-" in res.stderr and "1 steps" in res.stderr  # a line per finished run
    row = pd.read_parquet(out).iloc[0]
    assert row["num_test"] == 8 and row["backend"] == "reference" and row["steps"] == 1
    res = runner.invoke(app, ["eval", "synthetic", "--tasks", "compression", "--backend", "cuda", "-o",
                              str(tmp_path / "d.parquet")])
    assert res.exit_code == 2 and "unknown backend" in res.stderr
    res = runner.invoke(app, ["eval", "synthetic", "--layouts", "SX", "--tasks", "compression", "-o",
                              str(tmp_path / "b.parquet")])
    assert res.exit_code == 2 and "layout" in res.stderr
    res = runner.invoke(app, ["eval", "synthetic", "--tasks", "nope", "-o", str(tmp_path / "c.parquet")])
    assert res.exit_code == 2 and "unknown task" in res.stderr
    res = runner.invoke(app, ["eval", "synthetic", "--tasks", "compression", "-o", str(out)])
    assert res.exit_code == 2  # exists, no --force / --resume
    res = runner.invoke(app, ["eval", "synthetic", "--tasks", "compression", "--device", "gpu", "-o",
                              str(tmp_path / "e.parquet")])
    assert res.exit_code == 2 and "--device must be" in res.stderr  # one line, not torch's traceback


def test_parallel_jobs_give_the_rows_of_one_process(tmp_path):
    kw = dict(grid="baseline", max_steps=2, batch_size=32)
    one = run_synthetic(["S", "A"], ["compression"], tmp_path / "a.parquet", **kw)
    two = run_synthetic(["S", "A"], ["compression"], tmp_path / "b.parquet", jobs=2, **kw)
    key = ["layout", "setting"]
    a, b = one.sort_values(key).reset_index(drop=True), two.sort_values(key).reset_index(drop=True)
    assert list(a["test_acc"]) == list(b["test_acc"])


def test_callbacks_report_every_step_and_run(tmp_path):
    events = []
    run_synthetic(["S", "A"], ["compression"], tmp_path / "e.parquet", grid="baseline", max_steps=3, batch_size=8,
                  num_test=4, on_start=lambda spec, todo: events.append(("start", spec.layout, todo)),
                  on_step=lambda step, total: events.append(("step", step, total)),
                  progress=lambda row, todo: events.append(("done", row["layout"], todo)))
    one = [("step", 1, 3), ("step", 2, 3), ("step", 3, 3)]
    assert events == [("start", "S", 2), *one, ("done", "S", 2), ("start", "A", 2), *one, ("done", "A", 2)]


def test_plan_puts_every_tasks_baseline_first():
    from evo2lite.evals import plan_runs

    runs = plan_runs(["S", "A"], ["in-context-recall", "compression"], grid="reduced")
    first = [(r.task, r.change_key) for r in runs[:4]]
    assert first == [("in-context-recall", "")] * 2 + [("compression", "")] * 2
    assert len(runs) == 2 * (4 + 4) and len({r.key for r in runs}) == len(runs)


def test_time_budget_stops_new_runs_and_resume_finishes(tmp_path):
    out = tmp_path / "t.parquet"
    kw = dict(grid="baseline", max_steps=1, batch_size=16)
    assert len(run_synthetic(["S", "A"], ["compression"], out, time_budget=0, **kw)) == 0
    assert len(run_synthetic(["S", "A"], ["compression"], out, resume=True, **kw)) == 2
    # worker processes: chunks waiting in the queue see the same wall-clock deadline
    assert len(run_synthetic(["S", "A"], ["compression"], tmp_path / "j.parquet", time_budget=0, jobs=2, **kw)) == 0
