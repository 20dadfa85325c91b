"""benchmarks/checkpoint_scale.py --dry-run: every section runs on tiny shapes on the CPU, prints its table and
writes checkpoint_scale.json (the GPU run uses the same code at full size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures host memory through /proc")
def test_dry_run_writes_every_section(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "checkpoint_scale.py"), "--dry-run",
                          "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for title in ("(a) import", "(b) forward", "(c) FP8 GEMM", "(d) whole model"):
        assert f"## {title}" in run.stdout
    res = json.loads((tmp_path / "checkpoint_scale.json").read_text())
    s = res["sections"]
    assert set(s) == {"import", "forward", "gemm", "model_fp8"}
    assert not any("error" in sec for sec in s.values()), s
    rows = {r["importer"]: r for r in s["import"]["rows"]}
    assert set(rows) == {"streaming", "old (fp32 host copy)"} and all("seconds" in r for r in rows.values())
    fwd = {r["projections"]: r for r in s["forward"]["rows"]}
    assert fwd["off"]["finite"] and fwd["emulate"]["finite"]
    emulate = next(r for r in s["gemm"]["rows"] if r["backend"].startswith("evo2lite emulate"))
    assert emulate["bit_equal_frac"] == 1.0  # the reference on a CPU compared with itself
