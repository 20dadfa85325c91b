"""The end-to-end benchmarks of issue #13 on tiny CPU shapes: benchmarks/e2e_h200.sh with E2E_DRY=1 runs
train_step.py (every row measured, none failed, the long checkpointed step included), forward.py (evo2lite
and vtx each in a subprocess, vtx through the test harness) and generate.py (the recompute baseline, vtx);
plus train_step's out-of-memory row, generate's recompute timer and its vtx context."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
needs_vtx = pytest.mark.skipif(importlib.util.find_spec("vortex") is None, reason="vtx (vortex) not installed")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """benchmarks/e2e_h200.sh with E2E_DRY=1: every part on tiny CPU shapes, in one run (its $OUT)."""
    out = tmp_path_factory.mktemp("e2e")
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "e2e_h200.sh")], capture_output=True, text=True,
                         timeout=600, env={**ENV, "E2E_DRY": "1", "OUT": str(out)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out, run.stdout


@pytest.mark.slow  # one ~1 min run of the whole script, shared by the tests that read it
def test_e2e_script_runs_every_part_and_keeps_few_files(e2e):
    out, log = e2e
    for part in ("train_step", "forward", "generate"):
        assert f"== {part}: exit 0" in log, log[-3000:]
    # what comes back from the device machine: at most 8 files
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["e2e.log", "train_step.json", "train_step.md", "forward.json", "forward.md", "generate_bench.json",
         "generate_bench.md"])


@pytest.mark.slow
def test_train_step_dry_run(e2e):
    out, log = e2e
    report = json.loads((out / "train_step.json").read_text())
    rows = report["rows"]
    assert not report["skipped"] and all("error" not in r for r in rows), rows
    kinds = {(r["model"], r["length"], bool(r.get("checkpointing"))) for r in rows}
    assert kinds == {("evo2lite", 128, False), ("llama", 128, False), ("evo2lite", 256, False), ("llama", 256, False),
                     ("evo2lite", 512, True), ("evo2lite", 256, True), ("evo2lite-reference", 128, False),
                     ("evo2lite-reference", 256, False)}
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["steps"] >= 1 and r["batch"] == max(1, 512 // r["length"])
    # the peer has (to a few %) the parameters of the model it is compared with
    ours = next(r["params_m"] for r in rows if r["model"] == "evo2lite")
    peer = next(r["params_m"] for r in rows if r["model"] == "llama")
    assert abs(peer - ours) / ours < 0.25, (ours, peer)
    assert "aten::" in report["profile"]  # the profiler table
    table = (out / "train_step.md").read_text()
    assert "| llama | 256 | 2 | eager |" in table and "| evo2lite | 512 | 1 | eager | yes |" in log


def test_train_step_out_of_memory_is_a_row(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import argparse

    import train_step
    from evo2lite.config import PRESETS

    def oom(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
    monkeypatch.setattr(train_step, "build", oom)
    args = argparse.Namespace(tokens_per_step=512, steps=1, config_budget=1.0)
    row = train_step.measure({"model": "evo2lite", "length": 256, "compile": False}, PRESETS["debug"],
                             torch.device("cpu"), args)
    assert row["error"] == "OOM" and row["batch"] == 2 and "tokens_per_s" not in row


@needs_vtx
@pytest.mark.slow
def test_forward_dry_run_runs_both_engines_in_subprocesses(e2e):
    out, log = e2e
    report = json.loads((out / "forward.json").read_text())
    for engine in ("evo2lite", "vtx"):
        result = report["engines"][engine]
        assert "error" not in result, result
        assert [r["length"] for r in result["rows"]] == [256, 512]
        assert all(r["ms"] > 0 for r in result["rows"])
    assert report["engines"]["vtx"]["kernels"] is False  # CPU: vtx's CUDA kernels off
    assert all("aten::" in report["engines"][e]["profile"] for e in ("evo2lite", "vtx"))
    table = (out / "forward.md").read_text()
    assert "| 512 |" in table and "speed-up" in table and "| 512 |" in log


@needs_vtx
@pytest.mark.slow
def test_generate_dry_run_has_recompute_and_vtx_rows(e2e):
    out, _ = e2e
    report = json.loads((out / "generate_bench.json").read_text())
    ours, theirs = report["evo2lite"]["debug"][0], report["vtx"]["debug"][0]
    assert ours["recompute_ms"] > 0 and ours["speedup_vs_recompute"] > 0
    assert theirs["recompute_ms"] > 0 and theirs["decode_ms"] > 0


def _generate_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    import generate

    return generate


def test_recompute_baseline_is_warm_full_forwards_at_one_length():
    g = _generate_module()
    calls = []
    ms = g.recompute_ms(lambda: calls.append(1), torch.device("cpu"), steps=3)
    assert len(calls) == 5 and ms >= 0  # two untimed warm-ups, then the timed steps


@needs_vtx
def test_vtx_context_hides_cuda_only_on_cpu():
    import vtx_harness

    real = torch.cuda.is_available
    with vtx_harness.vtx_context(torch.device("cuda")):
        assert torch.cuda.is_available is real  # timers and vtx's kernels see the GPU
    with vtx_harness.vtx_context(torch.device("cpu")):
        assert torch.cuda.is_available is not real and not torch.cuda.is_available()
    assert torch.cuda.is_available is real
