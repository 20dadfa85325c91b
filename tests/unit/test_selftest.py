"""`evo2lite selftest`: the mechanics of evo2's upstream test (loss and accuracy) against a direct
calculation with the shipped model, and the CLI's exit codes (0 pass, 1 fail, 2 usage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from evo2lite.apps import selftest as S
from evo2lite.cli import app
from evo2lite.loading import load_model
from evo2lite.tokenizer import encode


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (300, 700, 1100)]
    path = tmp_path_factory.mktemp("p") / "prompts.csv"
    path.write_text("\ufeffSequence,Name,Percent\n" + "".join(f"{s},s{i},1\n" for i, s in enumerate(seqs)))
    return path, seqs


@pytest.fixture(scope="module")
def shipped():
    return load_model(None)


def direct(model, seq):
    ids = encode(seq)
    with torch.no_grad():
        logits = model(ids[None])[0, :-1].float()
    loss = F.cross_entropy(logits, ids[1:]).item()
    return loss, (logits.argmax(-1) == ids[1:]).float().mean().item()


def test_loss_and_accuracy_equal_a_direct_calculation(shipped, prompts):
    path, seqs = prompts
    assert S.read_prompts(path) == seqs
    result = S.selftest(shipped, seqs, "shipped", expected=(0.0, None), chunk_len=256)
    want = [direct(shipped, s) for s in seqs]
    np.testing.assert_allclose(result.losses, [w[0] for w in want], rtol=1e-5)
    np.testing.assert_allclose(result.accuracies, [w[1] for w in want], atol=1.5 / 300)  # argmax ties at most
    assert result.loss == pytest.approx(np.mean([w[0] for w in want]), rel=1e-5)
    assert not result.passed  # loss 0 is not reachable
    assert S.selftest(shipped, seqs[:1], "shipped", expected=(want[0][0], None)).passed


def test_published_values_are_upstreams():
    assert S.EXPECTED["evo2_1b_base"] == (0.501953125, 79.556)
    assert S.EXPECTED["evo2_40b"][0] == 0.2159424
    with pytest.raises(Exception, match="--expect-loss"):
        S.selftest(None, ["ACGT"], "my_finetune")


def test_cli_exit_codes(shipped, prompts, monkeypatch):
    monkeypatch.setattr(S, "SHIPPED_PROMPTS", (S.Path("/nonexistent/prompts.csv"),))  # as if not shipped
    path, seqs = prompts
    mean = float(np.mean([direct(shipped, s)[0] for s in seqs]))
    runner = CliRunner()
    common = ["selftest", "--model", str(S.Path(__file__).parents[2] / "evo2lite" / "weights" / "default"),
              "--prompts", str(path), "--device", "cpu"]
    ok = runner.invoke(app, common + ["--expect-loss", f"{mean:.7f}"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("PASS:") and "fp8 off" in ok.stdout
    from evo2lite.apps.provenance import weights_digest

    assert f"weights {weights_digest(shipped)[:16]}" in ok.stdout
    bad = runner.invoke(app, common + ["--expect-loss", f"{mean + 0.01:.7f}"])
    assert bad.exit_code == 1 and bad.stdout.startswith("FAIL:")
    missing = runner.invoke(app, common[:3] + ["--device", "cpu"])  # no --prompts, none shipped
    assert missing.exit_code == 2 and "prompts.csv" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_shipped_prompts_are_upstreams(tmp_path, monkeypatch):
    """data/evo2_selftest/prompts.csv is evo2's file (sha256 pinned; 4 sequences of the published test);
    a changed copy is refused in one line rather than giving a meaningless PASS."""
    import hashlib

    path = S.find_prompts()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == S.PROMPTS_SHA256
    assert [len(s) for s in S.read_prompts(path)] == [6538, 7056, 6160, 7616]
    changed = tmp_path / "prompts.csv"
    changed.write_bytes(path.read_bytes().replace(b"GAATAGG", b"GAATAGC", 1))
    monkeypatch.setattr(S, "SHIPPED_PROMPTS", (changed,))
    with pytest.raises(S.Evo2LiteError, match="not evo2's prompts.csv"):
        S.find_prompts()
    assert S.find_prompts(changed) == changed  # --prompts: the user's own file, as given


def test_models_without_a_published_loss_stop_before_loading(monkeypatch):
    import evo2lite.loading as L

    monkeypatch.setattr(L, "load_model", lambda *a, **k: pytest.fail("loaded"))
    result = CliRunner().invoke(app, ["selftest", "--model", "evo2_7b_262k", "--device", "cpu"])
    assert result.exit_code == 2 and "--expect-loss" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
