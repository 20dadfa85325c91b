"""The trainer under context parallelism: 2 gloo ranks sharing every window (evo2lite train
--context-parallel 2), and 4 ranks as 2 data-parallel x 2 context-parallel, log the losses and export the
weights of one process with the same batches."""

import os

import pytest
import torch

from helpers import FIXTURES, free_port, train_losses
TINY = {"preset": "debug", "layout": "SMLA", "d_model": 32, "num_heads": 2, "d_mlp": 64,
        "num_se_groups": 4, "num_mr_groups": 4, "mr_filter_len": 16}


def _cfg(corpus, out):
    from evo2lite.apps.train import TrainConfig

    return TrainConfig(corpus=str(corpus), model=TINY, out_dir=str(out), seq_len=64, global_batch_size=4,
                       micro_batch_size=2, lr=3e-3, min_lr=3e-4, warmup_steps=1, max_steps=3,
                       eval_every=0, eval_windows=1, log_every=1, save_every=0)


def _worker(rank, world, port, corpus, out, cp):
    import torch.distributed as dist

    from evo2lite.apps.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(_cfg(corpus, out), device="cpu", context_parallel=cp)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world,cp", [(2, 2), (4, 2)])
def test_context_parallel_training_equals_one_process(tmp_path, world, cp):
    import torch.multiprocessing as mp

    from evo2lite.apps.train import train
    from evo2lite.pipelines.corpus import build_corpus

    corpus = tmp_path / "corpus"
    build_corpus(FIXTURES / "manifest.yaml", corpus, progress=False)
    port = free_port()
    mp.spawn(_worker, args=(world, port, str(corpus), str(tmp_path / "cp"), cp), nprocs=world, join=True)
    torch.set_num_threads(1)
    train(_cfg(corpus, tmp_path / "one"), device="cpu")
    cp, one = train_losses(tmp_path / "cp"), train_losses(tmp_path / "one")
    assert len(cp) == len(one) == 3
    assert cp == pytest.approx(one, rel=1e-5, abs=1e-6)
    assert cp[0] != cp[-1]  # it trained
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "cp" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
