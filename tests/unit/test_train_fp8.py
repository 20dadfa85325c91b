"""Fine-tuning from an official FP8-trained checkpoint (1B/20B/40B: FP8 Hyena input projections): training
loads it with fp8="off" and allow_inexact=True (Fp8Linear is inference-only: its E4M3 cast has no gradient
and its scaling state is not a parameter), trains plain projections on every device, and exports a model
whose config no longer asks for FP8 (its weights were trained without it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from evo2lite.apps.train import TrainConfig, train
from evo2lite.checkpoint import load_state
from evo2lite.fp8 import Fp8Linear
from evo2lite.loading import load_model

from test_loading import write_fp8_official  # noqa: E402  (tests/unit is on sys.path)

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from evo2lite.pipelines.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(FIXTURES / "manifest.yaml", out, progress=False, overwrite=True)
    return out


def test_fine_tune_from_an_fp8_checkpoint(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("EVO2LITE_FP8", raising=False)
    monkeypatch.delenv("EVO2LITE_ALLOW_INEXACT", raising=False)
    pt, yml, cfg = write_fp8_official(tmp_path / "evo2_1b_tiny.pt", name="evo2-tiny-1b-fp8")
    with pytest.raises(Exception, match="--allow-inexact"):  # inference on a CPU refuses it
        load_model(pt, config=yml)
    run = TrainConfig(corpus=str(corpus), init_from=str(pt), init_config=str(yml), out_dir=str(tmp_path / "ft"),
                      seq_len=64, global_batch_size=2, micro_batch_size=2, lr=0.0, min_lr=0.0, warmup_steps=1,
                      max_steps=1, eval_every=0, eval_windows=2, eval_batch_size=2, log_every=1, save_every=0)
    seen = []
    import evo2lite.apps.train as T

    real = T.load_model
    monkeypatch.setattr(T, "load_model", lambda *a, **k: seen.append(k) or real(*a, **k))
    summary = train(run, device="cpu")
    assert seen and seen[0]["fp8"] == "off" and seen[0]["allow_inexact"] is True
    export = load_model(summary["export"])  # no --allow-inexact needed: plain projections now
    assert not export.config.fp8_input_projections
    assert dataclasses.replace(export.config, fp8_input_projections=True) == cfg
    assert not any(isinstance(m, Fp8Linear) for m in export.modules()) and export.provenance["fp8"] == "off"
    _, start, _ = load_state(pt, yml)
    for k, v in export.state_dict().items():  # lr 0: the official weights, through the parametrization
        assert torch.allclose(v, start[k].float(), rtol=1e-5, atol=1e-6), k
