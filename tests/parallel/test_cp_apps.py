"""`torchrun --nproc-per-node 2 -m evo2lite score ... --context-parallel 2` (gloo, the shipped model) writes
the scores of one process; only rank 0 writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FIXTURES, free_port, run_one_and_context_parallel


def _table(path: Path) -> dict[str, list[float]]:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#evo2lite_")]  # provenance first
    rows = [ln.split("\t") for ln in lines[1:]]
    return {r[0]: [float(x) for x in r[1:]] for r in rows}


@pytest.mark.slow
def test_score_under_context_parallel_equals_one_process(tmp_path):
    fasta = tmp_path / "in.fa"
    records = FIXTURES.joinpath("dicty_cdna20.fa").read_text().split(">")[1:4]
    fasta.write_text("".join(">" + r for r in records))
    run_one_and_context_parallel(["score", str(fasta), "--device", "cpu", "--context", "4096", "--batch-size", "2"],
                                 tmp_path / "one.tsv", tmp_path / "cp.tsv")
    a, b = _table(tmp_path / "one.tsv"), _table(tmp_path / "cp.tsv")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        assert b[name][0] == a[name][0]  # length
        assert b[name][1] == pytest.approx(a[name][1], rel=1e-6)  # sum log-prob


def test_context_parallel_without_torchrun_is_a_one_line_error(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\nACGTACGT\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "EVO2LITE_DEBUG")}
    run = subprocess.run([sys.executable, "-m", "evo2lite", "score", str(fasta), "--device", "cpu",
                          "--context-parallel", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "torchrun --nproc-per-node 2" in lines[0], run.stderr


@pytest.mark.slow
def test_benchmark_quick_on_gloo(tmp_path):
    """benchmarks/context_parallel.py end to end on 2 CPU ranks (the debug preset): the correctness checks
    pass and the whole-model rows are written."""
    import json

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "context_parallel.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(free_port()), str(script), "--quick", "--device", "cpu", "--parts", "check,model",
                          "--lengths", "1k", "--budget", "90", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "context_parallel.json").read_text())
    assert len(result["check"]) == 3 and all(c["ok"] for c in result["check"])
    modes = {(m["mode"], m["length"]) for m in result["model"] if m.get("N_s") and m.get("one_s")}
    assert modes == {("forward", 1024), ("train", 1024)}
    assert (tmp_path / "context_parallel.md").read_text().startswith("# evo2lite context parallelism")


@pytest.mark.slow
def test_embed_under_context_parallel_equals_one_process(tmp_path):
    import numpy as np

    fasta = tmp_path / "in.fa"
    records = FIXTURES.joinpath("dicty_cdna20.fa").read_text().split(">")[1:3]
    fasta.write_text("".join(">" + r for r in records))
    run_one_and_context_parallel(["embed", str(fasta), "--device", "cpu", "--layer", "blocks.3,final"],
                                 tmp_path / "one.npz", tmp_path / "cp.npz")
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "cp.npz")
    arrays = [k for k in a.files if a[k].dtype.kind == "f"]
    assert sorted(a.files) == sorted(b.files) and len(arrays) == 4
    for k in arrays:
        assert a[k].shape == b[k].shape
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=2e-5 * np.abs(a[k]).max())
