"""Training on CPU: the loss falls, resume equals an uninterrupted run, the export loads and scores, the
2-bit corpus pack round-trips, and --init-from starts from the given weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evo2lite.apps.train import TrainConfig, WarmupCosine, load_train_config, train
from evo2lite.apps.train_data import pack_corpus, unpack_corpus

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"
TINY = {"preset": "debug", "layout": "SMLA", "d_model": 32, "num_heads": 2, "d_mlp": 64,
        "num_se_groups": 4, "num_mr_groups": 4, "mr_filter_len": 32}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from evo2lite.pipelines.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus")
    build_corpus(FIXTURES / "manifest.yaml", out, progress=False, overwrite=True)
    return out


def _cfg(corpus, out, **kw):
    base = dict(corpus=str(corpus), model=TINY, out_dir=str(out), seq_len=64, global_batch_size=4,
                micro_batch_size=2, lr=3e-3, min_lr=3e-4, warmup_steps=2, max_steps=6, eval_every=0,
                eval_windows=2, eval_batch_size=4, log_every=1, save_every=0, keep_checkpoints=5)
    base.update(kw)
    return TrainConfig(**base)


def _losses(out):
    return [r["loss"] for r in map(json.loads, (Path(out) / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_tiny_run_decreases_the_loss_and_exports(corpus, tmp_path):
    summary = train(_cfg(corpus, tmp_path / "run", max_steps=25, lr=1e-2, warmup_steps=3), device="cpu")
    losses = _losses(tmp_path / "run")
    assert len(losses) == 25
    assert np.mean(losses[-5:]) < losses[0] - 1.0  # from ~ln(512) towards ~ln(4)
    assert summary["eval"]["all"]["bits_per_base"] < 4.0

    # the exported model is what load_model reads, and it scores DNA
    import evo2lite
    from evo2lite.apps.score import score_sequences

    model = evo2lite.load_model(summary["export"])
    assert model.config.context_len == 64 and model.config.layout == "SMLA"
    (res,) = score_sequences(model, [("s", "ACGTTGCAAGGCTTAACCGGTTAACG" * 6)])
    assert np.isfinite(res.sum_logprob) and -3.0 < res.mean_logprob < 0


def test_resume_equals_uninterrupted(corpus, tmp_path):
    full = train(_cfg(corpus, tmp_path / "full"), device="cpu")
    train(_cfg(corpus, tmp_path / "part", max_steps=6, save_every=3), device="cpu")
    # resume from the step-3 checkpoint of a run that went on: the log past step 3 is rewritten
    resumed = train(_cfg(corpus, tmp_path / "part", save_every=3),
                    resume=tmp_path / "part" / "checkpoints" / "step_0000003", device="cpu")
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")  # bit-identical on CPU
    from safetensors.torch import load_file

    a = load_file(str(Path(full["checkpoint"]) / "trainable.safetensors"))
    b = load_file(str(Path(resumed["checkpoint"]) / "trainable.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the resumable state loads without unpickling arbitrary objects (issue #9)
    trainer = torch.load(Path(resumed["checkpoint"]) / "trainer.pt", map_location="cpu", weights_only=True)
    assert isinstance(trainer["rng"]["torch"], torch.Tensor)


def test_two_bit_pack_round_trip_and_training_from_it(corpus, tmp_path):
    pack_corpus(corpus, tmp_path / "pack", splits=("train", "val"))
    out = unpack_corpus(tmp_path / "pack", tmp_path / "unpacked")
    for split in ("train", "val"):
        for name in ("tokens.bin", "mask.bin", "index.json"):
            assert (out / split / name).read_bytes() == (corpus / split / name).read_bytes()
    a = train(_cfg(tmp_path / "pack", tmp_path / "from_pack", max_steps=2), device="cpu")
    b = train(_cfg(corpus, tmp_path / "from_dir", max_steps=2), device="cpu")
    assert _losses(tmp_path / "from_pack") == _losses(tmp_path / "from_dir")
    assert a["steps"] == b["steps"] == 2


def test_init_from_fine_tunes_the_given_weights(corpus, tmp_path):
    import evo2lite
    from evo2lite.checkpoint import save_model
    from evo2lite.config import ModelConfig
    from evo2lite.model import StripedHyena2, init_weights_

    cfg = ModelConfig(**{k: v for k, v in TINY.items() if k != "preset"}, context_len=64)
    src = save_model(init_weights_(StripedHyena2(cfg), seed=7), tmp_path / "src")
    summary = train(_cfg(corpus, tmp_path / "ft", init_from=str(src), max_steps=1, lr=0.0, min_lr=0.0),
                    device="cpu")
    before, after = evo2lite.load_model(src), evo2lite.load_model(summary["export"])
    for (k, x), (_, y) in zip(before.state_dict().items(), after.state_dict().items()):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-7), k  # lr 0: only the parametrization round trip


def test_schedule_and_config(tmp_path):
    s = WarmupCosine(10, 110, 0.1)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55) and s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    path = tmp_path / "t.yaml"
    path.write_text("corpus: x\nmodel: debug\nmax_steps: 7\n")
    assert load_train_config(path, max_steps=9).max_steps == 9
    path.write_text("corpus: x\nmax_step: 7\n")
    from evo2lite.errors import ConfigError

    with pytest.raises(ConfigError, match="max_step"):
        load_train_config(path)


def test_train_command_through_typer(corpus, tmp_path):
    import typer
    import yaml
    from typer.testing import CliRunner

    from evo2lite.apps.train_cli import train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # two commands: typer keeps the `train` sub-command name
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"corpus": str(corpus), "model": TINY, "seq_len": 64, "global_batch_size": 2,
                                   "micro_batch_size": 2, "max_steps": 1, "warmup_steps": 1, "eval_windows": 1}))
    result = CliRunner().invoke(app, ["train", str(cfg), "--out-dir", str(tmp_path / "cli"), "--device", "cpu",
                                      "--set", "log_every=1", "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "model" / "model.safetensors").is_file()
    assert len(_losses(tmp_path / "cli")) == 2
    bad = CliRunner().invoke(app, ["train", str(cfg), "--set", "no_such_key=1"])
    assert bad.exit_code == 2 and "no_such_key" in bad.output


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    import io
    import random

    from evo2lite.apps.train import _rng_state, _set_rng_state

    np.random.seed(3), random.seed(4), torch.manual_seed(5)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    buffer = io.BytesIO()
    torch.save(_rng_state(), buffer)
    want = (np.random.normal(size=3).tolist(), random.random(), random.gauss(0, 1), torch.rand(3))
    buffer.seek(0)
    _set_rng_state(torch.load(buffer, weights_only=True))
    got = (np.random.normal(size=3).tolist(), random.random(), random.gauss(0, 1), torch.rand(3))
    assert got[:3] == want[:3] and torch.equal(got[3], want[3])
