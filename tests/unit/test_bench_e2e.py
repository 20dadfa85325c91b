"""The end-to-end benchmarks of issue #13 on tiny CPU shapes: benchmarks/e2e_h200.sh with E2E_DRY=1 runs
train_step.py (every row measured, none failed, the long checkpointed step included), forward.py (evo2lite
and vtx each in a subprocess, vtx through the test harness), generate.py (the recompute baseline, vtx),
score_vcf_gpu.py (score-vcf's engine against the official recipe on vtx, same weights and sites, the fp32
check) and embed.py (the streamed embedding part, --stop-after); E2E_PARTS picks parts. Plus train_step's
out-of-memory row, generate's recompute timer and its vtx context, the child-process runner the benchmarks
share (a crashed or hung child is a result, not the end of the run), operators_lr.py's one process per row and
operators.py's --help and sweep labels without a GPU.
"""

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
    for part in ("train_step", "forward", "generate", "score", "embed"):
        assert f"== {part}: exit 0" in log, log[-3000:]
    # what comes back from the device machine: few files
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["e2e.log", "train_step.json", "train_step.md", "forward.json", "forward.md", "generate_bench.json",
         "generate_bench.md", "score_vcf_gpu.json", "score_vcf_gpu.md", "embed.json", "embed.md"])


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


@needs_vtx
@pytest.mark.slow
def test_score_vcf_dry_run_same_sites_same_scores(e2e):
    out, _ = e2e
    report = json.loads((out / "score_vcf_gpu.json").read_text())
    ours, theirs = report["engines"]["evo2lite"], report["engines"]["vtx"]
    for r in (ours, theirs):
        assert "error" not in r and "exit" not in r, r.get("error") or r.get("exit")
        assert r["sites"] >= 1 and r["variants_per_s"] > 0 and len(r["deltas"]) == r["sites"]
    assert theirs["kernels"] is False  # CPU: vtx's CUDA kernels off
    # same random weights, same sites: score-vcf's shared-prefix engine and the full-window recipe agree
    check = report["fp32_check"]
    assert check["sites"] == 2 and check["ok"] and check["max_abs_diff"] <= 1e-3 * max(1.0, check["delta_scale"])
    assert report["agreement"]["max_abs_diff"] <= 1e-3 * max(1.0, report["agreement"]["delta_scale"])
    assert check["delta_scale"] > 1e-3  # the deltas are not all zero
    table = (out / "score_vcf_gpu.md").read_text()
    assert "| evo2lite | 4 |" in table and "PASS" in table


@pytest.mark.slow
def test_embed_dry_run_streams_the_whole_sequence(e2e):
    out, _ = e2e
    rows = json.loads((out / "embed.json").read_text())["stream"]["rows"]
    assert [(r["length"], r["status"]) for r in rows] == [(4096, "ok")] and rows[0]["finite"]


@pytest.mark.slow
def test_e2e_parts_choose_what_runs(tmp_path):
    script, env = ["bash", str(ROOT / "benchmarks" / "e2e_h200.sh")], {**ENV, "E2E_DRY": "1", "OUT": str(tmp_path)}
    bad = subprocess.run(script, capture_output=True, text=True, timeout=120,
                         env={**env, "E2E_PARTS": "forward,nonsense"})
    assert bad.returncode == 2 and "unknown part nonsense" in bad.stdout + bad.stderr
    run = subprocess.run(script, capture_output=True, text=True, timeout=300, env={**env, "E2E_PARTS": "embed"})
    assert run.returncode == 0 and "== embed: exit 0" in run.stdout, run.stdout[-3000:]
    assert "== train_step: not in E2E_PARTS" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2e.log", "embed.json", "embed.md"]


def test_embed_stop_after_cuts_with_the_rate_so_far(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import embed
    from evo2lite.config import PRESETS

    model = embed.build_model(PRESETS["debug"], "cpu", torch.float32)
    row = embed.measure(model, embed.random_dna(4096, 0), "cpu", layer="final", chunk=256, pool=None, stop_after=0.0)
    assert row["status"].startswith("cut by --stop-after") and row["bases_done"] == 256  # after the first chunk
    assert row["bases_per_s"] > 0
    assert embed.measure(model, embed.random_dna(600, 0), "cpu", layer="final", chunk=256, pool=None,
                         stop_after=1e9)["status"] == "ok"


def _common_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _common

    return _common


def test_run_child_keeps_what_a_crashed_child_saved(tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import json, os, sys, time\n"
                      "path = sys.argv[sys.argv.index('--json') + 1]\n"
                      "open(path, 'w').write(json.dumps({'rows': [1]}))\n"
                      "print('RuntimeError: CUDA error: an illegal memory access was encountered', file=sys.stderr)\n"
                      "sys.stderr.flush()\n"
                      "os.abort() if sys.argv[1] == 'crash' else time.sleep(60)\n")
    result, failure, tail = _common_module().run_child(str(script), ["crash"], timeout=60)
    assert result == {"rows": [1]} and failure.startswith("exit -6") and "illegal memory access" in tail
    result, failure, _ = _common_module().run_child(str(script), ["hang"], timeout=2)
    assert result == {"rows": [1]} and failure == "timeout after 2 s"


@needs_vtx
@pytest.mark.slow
def test_operators_lr_rows_in_child_processes_an_error_row_and_the_table_goes_on(tmp_path):
    out = tmp_path / "lr.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "operators_lr.py"), "--dry-run", "--ops",
                          "hcl,sdpa", "--out", str(out)], capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {(r["op"], r["mode"]): r["ms"] for r in json.loads(out.read_text())["rows"]}
    # vtx's HCL kernel needs a GPU (and has no backward): one error row; SDPA after it is measured
    assert set(rows) == {("vtx hcl triton", "fwd"), ("sdpa causal", "fwd"), ("sdpa causal", "fwd+bwd")}
    assert str(rows[("vtx hcl triton", "fwd")]).startswith("error")
    assert rows[("sdpa causal", "fwd")] > 0 and rows[("sdpa causal", "fwd+bwd")] > 0
    assert "| 256 | 2 | sdpa causal | fwd+bwd |" in run.stdout


def test_operators_help_without_a_gpu_and_every_sweep_row_labelled():
    # in a child: importing operators.py puts the .whl/ wheels (fla, mmaemu, vtx) on sys.path
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import operators; "
            "print('unlabelled', sorted({row[0] for row in operators.SWEEP} - operators.SWEEP_LABELS.keys())); "
            "sys.argv[1:] = ['--help']; operators.main()")
    run = subprocess.run([sys.executable, "-c", code, str(ROOT / "benchmarks")], capture_output=True, text=True,
                         timeout=120, env=ENV)
    assert run.returncode == 0 and "--sweep-ops" in run.stdout, run.stderr[-3000:]
    # a filter length without a label would be a KeyError on the GPU only, rows into the sweep
    assert "unlabelled []" in run.stdout
