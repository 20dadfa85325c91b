"""Helpers shared by several test files (tests/ is on sys.path: see conftest.py). Fixtures built on them live
in tests/conftest.py (`hf_cache`, the tiny random `model` and its saved `model_dir`)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data" / "fixtures"
EXAMPLES = REPO / "data" / "examples"
EXAMPLE_VCF = EXAMPLES / "chr20_example.vcf.gz"
EXAMPLE_REF = EXAMPLES / "chr20_GRCh37_example.fa.gz"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a process group's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_losses(out) -> list[float]:
    """The losses the trainer logged in OUT/log.jsonl, in order."""
    return [r["loss"] for r in map(json.loads, (Path(out) / "log.jsonl").read_text().splitlines()) if "loss" in r]


def run_one_and_context_parallel(args: list[str], one_out: Path, cp_out: Path, timeout: int = 300) -> None:
    """`python -m evo2lite ARGS -o ONE_OUT` in one process, then the same under torchrun on 2 gloo ranks with
    `--context-parallel 2 -o CP_OUT`; both must exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVO2LITE_DIST_TIMEOUT": "120"}
    one = subprocess.run([sys.executable, "-m", "evo2lite", *args, "-o", str(one_out)],
                         env=env, capture_output=True, text=True, timeout=timeout)
    assert one.returncode == 0, one.stderr
    cp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                         str(free_port()), "-m", "evo2lite", *args, "-o", str(cp_out), "--context-parallel", "2"],
                        env=env, capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, cp.stderr


def vcf_body(path) -> list[str]:
    """The data lines of a VCF (plain or gzip/BGZF), as text."""
    with (gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)) as fh:
        return [line for line in fh if not line.startswith("#")]


def invoke_score_vcf(model_dir: str, *args, window: str, input=None):
    """`evo2lite score-vcf ARGS --model MODEL_DIR` through typer's CliRunner, one thread, no progress bar, and
    `--window WINDOW` unless ARGS give one."""
    import typer
    from typer.testing import CliRunner

    from evo2lite.apps.score_vcf_cli import score_vcf_command

    app = typer.Typer()
    app.command()(score_vcf_command)
    argv = [str(a) for a in args] + ["--model", model_dir, "--threads", "1", "--no-progress"]
    if "--window" not in argv:
        argv += ["--window", window]
    return CliRunner().invoke(app, argv, input=input)


HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def offline_hf_cache(hub: Path, monkeypatch):
    """Point huggingface_hub at an empty offline cache in HUB; returns add_repo(repo_id, files) that adds a
    snapshot of a repo, files {name: str text | bytes | path (hard-linked, as HF snapshots link blobs)}."""
    import huggingface_hub.constants as hf_constants

    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both at import time: patch the imported constants as well
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    def add_repo(repo_id: str, files: dict) -> None:
        org, name = repo_id.split("/")
        root = hub / f"models--{org}--{name}"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(HF_COMMIT)
        snap = root / "snapshots" / HF_COMMIT
        snap.mkdir(parents=True)
        for fname, src in files.items():
            if isinstance(src, str):
                (snap / fname).write_text(src)
            elif isinstance(src, bytes):
                (snap / fname).write_bytes(src)
            else:
                os.link(src, snap / fname)

    return add_repo


_PEAK_PROBE = """
def kib(key):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])

def peak_growth(fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = kib("VmRSS")
    fn()
    return (kib("VmHWM") - before) * 1024
"""


def run_peak_probe(script: str, *args) -> list[int]:
    """Run `script` (which may call peak_growth(fn): bytes of peak RSS growth while fn runs, Linux) in a fresh
    process whose malloc hands every large block back to the OS on free, so that RSS follows the live tensors
    (in a long-lived process freed heap pages keep RSS high and hide the peak); the integers it prints."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _PEAK_PROBE + script, *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return [int(x) for x in run.stdout.split()]
