"""Activation checkpointing per block (the `activation_checkpointing` training option): the same gradients as
without it, a lower peak memory on a long window, and wired through TrainConfig."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evo2lite.apps.train import ConfigError, TrainConfig, _build_model, load_train_config
from evo2lite.config import PRESETS
from evo2lite.model import StripedHyena2, init_weights_
from evo2lite.train_params import make_trainable
from helpers import run_peak_probe


def _loss_and_grads(model, ids_BL, recompute):
    model.activation_checkpointing = recompute
    model.zero_grad(set_to_none=True)
    logits = model(ids_BL[:, :-1])
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids_BL[:, 1:].reshape(-1))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_gradients_equal_plain_ones():
    torch.manual_seed(0)
    model = make_trainable(init_weights_(StripedHyena2(PRESETS["debug"]), seed=7).train())
    ids = torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (2, 301))]
    loss_a, grads_a = _loss_and_grads(model, ids, False)
    loss_b, grads_b = _loss_and_grads(model, ids, True)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(model.parameters()))
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-6, atol=1e-9, msg=name)
    # a no-grad forward (scoring, eval) takes the plain path: the same logits bit for bit
    with torch.no_grad():
        on = model(ids)
        model.activation_checkpointing = False
        assert torch.equal(on, model(ids))


def test_train_config_option(tmp_path):
    (tmp_path / "t.yaml").write_text("corpus: c\nactivation_checkpointing: true\n")
    cfg = load_train_config(tmp_path / "t.yaml")
    assert cfg.activation_checkpointing and not TrainConfig(corpus="c").activation_checkpointing
    with pytest.raises(ConfigError, match="activation_checkpointing"):
        TrainConfig(corpus="c", activation_checkpointing="yes")
    assert _build_model(cfg, None).activation_checkpointing  # what train() runs
    assert not _build_model(TrainConfig(corpus="c"), None).activation_checkpointing


_PEAK_SCRIPT = """
import dataclasses, sys, torch
import torch.nn.functional as F
from evo2lite.config import PRESETS
from evo2lite.model import StripedHyena2, init_weights_

torch.set_num_threads(1)
cfg = dataclasses.replace(PRESETS["debug"], layout="SMLASML" * 3)  # many blocks: what checkpointing saves
model = init_weights_(StripedHyena2(cfg), seed=1).train()
L = int(sys.argv[1])
ids = torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (1, L + 1), generator=torch.Generator().manual_seed(3))]

def step(recompute):
    model.activation_checkpointing = recompute
    model.zero_grad(set_to_none=False)
    logits = model(ids[:, :-1])
    F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).backward()

step(False)  # warm-up: allocator, gradient buffers
plain = peak_growth(lambda: step(False))
ckpt = peak_growth(lambda: step(True))
print(plain, ckpt, cfg.d_model, cfg.vocab_size)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads /proc (Linux)")
def test_checkpointing_lowers_the_peak_memory_of_a_training_step():
    L = 8192
    plain, ckpt, d_model, vocab = run_peak_probe(_PEAK_SCRIPT, L)
    # both keep the logits and their gradient (L x V fp32 each); the blocks' saved activations go
    logits = 2 * L * vocab * 4
    assert plain > logits + 20 * L * d_model * 4, (plain, ckpt)  # many (L, D) activations per block saved
    assert ckpt < 0.5 * plain, (plain, ckpt)


def test_a_training_run_with_checkpointing_has_the_same_losses(tmp_path):
    from pathlib import Path

    from evo2lite.apps.train import train
    from evo2lite.pipelines.corpus import build_corpus

    fixtures = Path(__file__).resolve().parents[2] / "data" / "fixtures"
    build_corpus(fixtures / "manifest.yaml", tmp_path / "corpus", progress=False, overwrite=True)
    tiny = {"preset": "debug", "layout": "SMLA", "d_model": 32, "num_heads": 2, "d_mlp": 64, "num_se_groups": 4,
            "num_mr_groups": 4, "mr_filter_len": 32}
    losses = []
    for recompute in (False, True):
        out = tmp_path / f"run_{recompute}"
        cfg = TrainConfig(corpus=str(tmp_path / "corpus"), model=tiny, out_dir=str(out), seq_len=64,
                          global_batch_size=2, micro_batch_size=2, warmup_steps=1, max_steps=3, eval_every=0,
                          eval_windows=1, log_every=1, save_every=0, export_dir=None, precision="fp32",
                          activation_checkpointing=recompute)
        train(cfg, device="cpu")
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in log if "loss" in r])
    assert len(losses[0]) == 3
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
