"""DDP: two gloo processes on CPU, each with half the global batch, give the losses of one process that
takes the whole global batch (the loss is normalised by the global batch's weight, not per rank)."""

import os

import pytest
import torch

from helpers import FIXTURES, free_port, train_losses
TINY = {"preset": "debug", "layout": "SMLA", "d_model": 32, "num_heads": 2, "d_mlp": 64,
        "num_se_groups": 4, "num_mr_groups": 4, "mr_filter_len": 32}


def _cfg(corpus, out, micro):
    from evo2lite.apps.train import TrainConfig

    return TrainConfig(corpus=str(corpus), model=TINY, out_dir=str(out), seq_len=64, global_batch_size=8,
                       micro_batch_size=micro, lr=3e-3, min_lr=3e-4, warmup_steps=1, max_steps=3,
                       eval_every=0, eval_windows=1, log_every=1, save_every=0)


def _worker(rank, world, port, corpus, out):
    import torch.distributed as dist

    from evo2lite.apps.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(_cfg(corpus, out, micro=2), device="cpu")  # 2 ranks x 2 micro-batches of 2 = 8
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    from evo2lite.apps.train import train
    from evo2lite.pipelines.corpus import build_corpus

    corpus = tmp_path / "corpus"
    build_corpus(FIXTURES / "manifest.yaml", corpus, progress=False)
    port = free_port()
    mp.spawn(_worker, args=(2, port, str(corpus), str(tmp_path / "ddp")), nprocs=2, join=True)
    torch.set_num_threads(1)
    train(_cfg(corpus, tmp_path / "one", micro=4), device="cpu")  # 1 rank x 2 micro-batches of 4 = 8
    ddp, one = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "one")
    assert len(ddp) == len(one) == 3
    assert ddp == pytest.approx(one, rel=1e-5, abs=1e-6)
    # and the exported weights agree
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
