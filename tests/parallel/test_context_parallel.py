"""Context parallelism on gloo: 2 ranks (4 in a slow test) give the single-process outputs and gradients of
every block kind and of a whole tiny model, for every scheme, at lengths where the zigzag chunks are exactly
as long as the Hyena-MR halo and longer (tests/parallel/cp_worker.py runs the checks on each rank)."""

from __future__ import annotations

import json

import pytest
import torch

from cp_worker import worker  # pytest puts this test's folder (no __init__.py) on sys.path
from helpers import free_port

RTOL = 2e-5  # fp32: |cp - ref| <= RTOL * max|ref| + a tiny floor


def _run(tmp_path, world: int, which: str) -> dict:
    import torch.multiprocessing as mp

    path = tmp_path / f"cp{world}_{which}.json"
    mp.spawn(worker, args=(world, free_port(), str(path), which), nprocs=world, join=True)
    return json.loads(path.read_text())


def _check(results: dict, prefix: str) -> None:
    selected = {k: v for k, v in results.items() if k.startswith(prefix) and not k.endswith(" calls")}
    assert selected, f"no checks named {prefix!r}"
    bad = {k: v for k, v in selected.items() if not v[0] <= RTOL * v[1] + 1e-7}
    assert not bad, f"{len(bad)} of {len(selected)} off: {dict(list(bad.items())[:5])}"
    assert all(v[1] > 0 for k, v in selected.items() if k.endswith(" out"))  # non-trivial outputs


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cp2"), 2, "all")


@pytest.mark.parametrize("prefix", [
    "block S", "block M mr=p2p", "block M mr=a2a", "block L mr=p2p lr=a2a", "block L mr=p2p lr=p2p",
    "block A mr=p2p lr=a2a attn=reference", "block A mr=p2p lr=a2a attn=fused",
])
def test_block_equals_one_process(two_ranks, prefix):
    _check(two_ranks, prefix)


def test_bf16_ring_attention_within_the_tolerance_rule(two_ranks):
    (ring, one, scale), = [v for k, v in two_ranks.items() if k.startswith("bf16 attention")]
    assert one > 0 and ring <= 2 * one + 1e-3 * scale


def test_device_mesh_cp_dimension(two_ranks):
    _check(two_ranks, "mesh")


@pytest.mark.parametrize("prefix", ["model SMLA mr=p2p lr=a2a", "model SMLA mr=a2a lr=p2p"])
def test_training_step_equals_one_process(two_ranks, prefix):
    _check(two_ranks, prefix)
    assert any(k.endswith(" loss") for k in two_ranks if k.startswith(prefix))


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cpf"), 2, "fused")  # the workers set TRITON_INTERPRET=1


@pytest.mark.parametrize("prefix,ops", [("fused block S c=8 ", 4), ("fused block M c=17 ", 4),
                                        ("fused block M c=23 ", 8), ("fused model SM ", 8)])
def test_fused_hyena_equals_one_process_on_the_fused_op(fused, prefix, ops):
    # SE and MR under CP on the fused Triton op (interpreted), chunks exactly the halo R long (c=8 SE, 17 MR)
    # and longer (MR c=23 in two pieces per chunk), and a trainable S/M model: outputs, input and every
    # parameter gradient against one process on the same op; the op ran once per chunk or piece (2 ranks x 2
    # chunks per block) and no wrapped seam ran
    _check(fused, prefix)
    (calls,) = [v for k, v in fused.items() if k.startswith(prefix) and k.endswith(" calls")]
    assert calls == [0, ops]


def test_fused_hyena_chunks_shorter_than_the_halo_take_the_seams(fused):
    # MR chunks of K-1 = 15 tokens, shorter than R = 17: the wrapped seams (exact), not the fused op
    _check(fused, "fused block M c=15 (< R) ")
    assert fused["fused block M c=15 (< R) calls"][0] > 0 and fused["fused block M c=15 (< R) calls"][1] == 0


@pytest.mark.slow
def test_four_ranks(tmp_path):
    results = _run(tmp_path, 4, "all")
    for prefix in ("block", "model", "mesh"):
        _check(results, prefix)


def test_zigzag_round_trip():
    from evo2lite.parallel import shard_sequence, unshard_sequence, zigzag_positions

    x = torch.arange(24).view(1, 24)
    shards = [shard_sequence(x, 3, r) for r in range(3)]
    assert shards[0].tolist() == [[0, 1, 2, 3, 20, 21, 22, 23]]
    assert torch.equal(unshard_sequence(shards), x)
    assert zigzag_positions(24, 3, 1).tolist() == [4, 5, 6, 7, 16, 17, 18, 19]


def test_bad_lengths_are_one_line_errors():
    from evo2lite.parallel import ContextParallelError, shard_sequence

    with pytest.raises(ContextParallelError, match="multiple of 2 x context-parallel size"):
        shard_sequence(torch.zeros(1, 30), 4, 0)
    with pytest.raises(ContextParallelError, match="at least"):
        shard_sequence(torch.zeros(1, 32), 4, 0, min_chunk=127)


def test_validate_names_the_field():
    from evo2lite.config import PRESETS
    from evo2lite.parallel import ContextParallelError, validate

    cfg = PRESETS["debug_odd"]  # d_model 48, 6 MR groups
    with pytest.raises(ContextParallelError, match="d_model 48"):
        validate(cfg, 5, "p2p", "a2a")
    with pytest.raises(ContextParallelError, match="MR filter groups"):
        validate(cfg, 4, "a2a", "p2p")
    validate(cfg, 5, "p2p", "p2p")  # p2p needs no divisibility


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_dead_rank_fails_the_job_with_one_line(tmp_path, how):
    """Rank 1 is killed (SIGKILL: its connections close) or hangs (SIGSTOP: nothing closes) mid-run: rank 0
    exits with code 2 and one line on stderr within the process-group timeout (EVO2LITE_DIST_TIMEOUT)
    instead of hanging."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    timeout_s = 8
    script = Path(__file__).with_name("dead_rank_worker.py")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "EVO2LITE_DIST_TIMEOUT": str(timeout_s), "OMP_NUM_THREADS": "1"}
    env.pop("EVO2LITE_DEBUG", None)
    procs = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        assert procs[1].stdout.readline().startswith("step"), procs[1].stderr.read()
        procs[1].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=timeout_s + 30)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("evo2lite: error: rank 0: a peer rank died"), err
    assert waited < timeout_s + 5
