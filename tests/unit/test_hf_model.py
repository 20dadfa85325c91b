"""transformers integration: the HF classes wrap our model (same tensors, same outputs), the tokenizer is
ours, directories round-trip through save_pretrained / `evo2lite convert --to hf` / from_pretrained with and
without trust_remote_code, `import evo2lite` registers with the Auto classes without importing transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification,  # noqa: E402
                          AutoTokenizer)

from evo2lite import tokenizer as ours  # noqa: E402
from evo2lite.apps.embed import embed  # noqa: E402
from evo2lite.checkpoint import load_state, save_model, save_vortex  # noqa: E402
from evo2lite.config import PRESETS  # noqa: E402
from evo2lite.errors import ConfigError, Evo2LiteError  # noqa: E402
from evo2lite.hf import (Evo2LiteConfig, Evo2LiteForCausalLM, Evo2LiteForSequenceClassification,  # noqa: E402
                         Evo2LiteTokenizer, save_pretrained_dir)
from evo2lite.model import StripedHyena2, init_weights_  # noqa: E402

SEQS = ["ACGTTGCAAGGCTTACGATCGATCGGATTACA", "ggctagctacgatcgNNatcgatcgatttagca"]


@pytest.fixture(scope="module")
def net():
    return init_weights_(StripedHyena2(PRESETS["debug"]), 3).eval()


@pytest.fixture(scope="module")
def hf(net):
    return _wrap(net)


def _wrap(net):
    model = Evo2LiteForCausalLM(Evo2LiteConfig.from_model_config(net.config)).eval()
    model.load_state_dict({f"model.{k}": v for k, v in net.state_dict().items()})
    return model


def _random_ids(B=2, L=40, seed=0):
    return torch.randint(0, 256, (B, L), generator=torch.Generator().manual_seed(seed))


# --- config and tokenizer ------------------------------------------------------------------------------

def test_config_holds_our_model_config_and_validates():
    for name in ("debug", "debug_odd", "evo2_7b"):
        cfg = Evo2LiteConfig.from_model_config(PRESETS[name])
        assert cfg.to_model_config() == PRESETS[name]
        assert Evo2LiteConfig.from_dict(cfg.to_dict()).to_model_config() == PRESETS[name]
    assert (cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (ours.EOS_ID, ours.PAD_ID, None)
    with pytest.raises(ConfigError, match="num_heads"):
        Evo2LiteConfig(d_model=66)


def test_tokenizer_is_ours():
    tok = Evo2LiteTokenizer()
    for seq in SEQS + ["|d__Bacteria;p__Pseudomonadota|acgtn", "ACGT\x00ac\x01", "é"]:
        ids = tok(seq)["input_ids"]
        assert ids == ours.encode(seq).tolist()  # our case policy, no special tokens added
        assert tok.decode(ids) == ours.decode(ids)
    assert tok.decode([65, 300, 0], skip_special_tokens=True) == ours.decode([65, 300])
    batch = tok(["ACGT", "AC"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[65, 67, 71, 84], [65, 67, ours.PAD_ID, ours.PAD_ID]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (ours.EOS_ID, ours.PAD_ID, None)


# --- the model -----------------------------------------------------------------------------------------

def test_wraps_our_module_tree_and_logits_equal_ours(net, hf):
    assert isinstance(hf.model, StripedHyena2)
    assert set(hf.state_dict()) == {f"model.{k}" for k in net.state_dict()}
    ids = _random_ids()
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, net(ids))


def test_labels_give_our_trainers_loss_with_gradients(net):
    hf = _wrap(net).train()
    ids = _random_ids(2, 33, seed=1)
    weights = torch.rand(2, 33, generator=torch.Generator().manual_seed(2))
    out = hf(ids, labels=ids, loss_weights=weights)
    # evo2lite train (apps/train.py): sum of weighted next-token nll / total weight of positions 1..
    logits = net(ids[:, :-1])
    nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 512), ids[:, 1:].reshape(-1), reduction="none")
    w = weights[:, 1:].reshape(-1)
    ref = (nll * w).sum() / w.sum()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    ref.backward()
    for (name, p), q in zip(hf.model.named_parameters(), net.parameters()):
        # fp32 rounding of an FFT convolution over 33 vs 32 positions: compare against the gradient's scale
        scale = float(q.grad.abs().max())
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")
    net.zero_grad(set_to_none=True)
    # plain labels: -100 skipped, the rest weigh 1
    labels = ids.clone()
    labels[0, 10:] = -100
    loss = hf(ids, labels=labels).loss
    keep = labels[:, 1:] != -100
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
    torch.testing.assert_close(loss.detach(), nll[keep].mean(), rtol=1e-5, atol=1e-6)


def test_hidden_states_are_embed_layers(net, hf):
    seq = SEQS[0]
    with torch.no_grad():
        out = hf(ours.encode(seq)[None], output_hidden_states=True)
    n = net.config.num_blocks
    assert len(out.hidden_states) == n + 1
    torch.testing.assert_close(out.hidden_states[0][0], net.embedding(ours.encode(seq)))
    names = [f"blocks.{i}" for i in range(n - 1)] + ["final"]
    ref = embed(net, seq, layers=names)
    for i, name in enumerate(names):
        np.testing.assert_allclose(out.hidden_states[i + 1][0].numpy(), ref[name], rtol=1e-5, atol=1e-6)


def test_left_padding_is_refused(hf):
    ids = _random_ids(2, 8)
    with pytest.raises(Evo2LiteError, match="right-padded"):
        hf(ids, attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8]))
    hf(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8]))  # right padding is fine


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
def test_classifier_pools_like_embed(net, pool):
    cfg = Evo2LiteConfig.from_model_config(net.config, classifier_pool=pool, classifier_layer="blocks.4",
                                           num_labels=3)
    clf = Evo2LiteForSequenceClassification(cfg).eval()
    clf.model.load_state_dict(net.state_dict())
    batch = Evo2LiteTokenizer()(SEQS + ["ACG"], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = clf.pooled(batch["input_ids"], batch["attention_mask"])
        logits = clf(**batch).logits
    ref = embed(net, SEQS + ["ACG"], layers="blocks.4", pool=pool)
    for row, r in zip(pooled, ref):
        np.testing.assert_allclose(row.numpy(), r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, clf.score(pooled))


# --- directories ---------------------------------------------------------------------------------------

def test_save_pretrained_round_trip_safetensors_only(net, hf, tmp_path):
    save_pretrained_dir(hf, tmp_path / "m")
    files = set(os.listdir(tmp_path / "m"))
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "modeling_evo2lite.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "evo2lite"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(model) is Evo2LiteForCausalLM
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "m"), Evo2LiteTokenizer)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), Evo2LiteConfig)
    ids = _random_ids(1, 30)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, net(ids))
    # the text-generation pipeline runs the same greedy decoding
    from transformers import pipeline

    prompt = "ACGTTGCAAGGCTTACG"
    text = pipeline("text-generation", model=tmp_path / "m")(prompt, max_new_tokens=6, do_sample=False,
                                                              eos_token_id=None)[0]["generated_text"]
    greedy = model.generate(ours.encode(prompt)[None], max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert text == ours.decode(greedy[0])
    # a classifier starts from the causal LM's backbone; its new head is drawn, the backbone is loaded
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m", num_labels=2)
    assert type(clf) is Evo2LiteForSequenceClassification
    assert torch.equal(clf.model.embedding.weight, net.embedding.weight)
    assert clf.score.weight.abs().sum() > 0
    # bf16: the LR poles/residues and rotary frequencies stay fp32 (spec §2.10)
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    dtypes = {name.rsplit(".", 1)[-1]: t.dtype for name, t in half.state_dict().items()}
    assert dtypes["log_poles"] == dtypes["residues"] == dtypes["inv_freq"] == torch.float32
    assert dtypes["weight"] == torch.bfloat16


def test_convert_to_hf_cli(net, tmp_path):
    from typer.testing import CliRunner

    from evo2lite.cli import app

    save_model(net, tmp_path / "ours")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "ours"), "--to", "hf", "-o", str(tmp_path / "hfdir")])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hfdir").eval()
    ids = _random_ids(1, 30, seed=5)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, net(ids))
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "ours"), "--to", "hf", "-o", str(tmp_path / "hfdir")])
    assert result.exit_code == 2  # exists: needs --force
    # an Evo 2 / vortex checkpoint: the imported tensors (bf16 bulk, fp32 poles) reach the HF model unchanged
    save_vortex(net.config, net.state_dict(), tmp_path / "evo2.pt")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "evo2.pt"), "--config", str(tmp_path / "evo2.yml"),
                                      "--to", "hf", "-o", str(tmp_path / "evo2_hf")])
    assert result.exit_code == 0, result.output
    _, imported, _ = load_state(tmp_path / "evo2.pt", tmp_path / "evo2.yml")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "evo2_hf", dtype="auto")
    state = model.model.state_dict()
    assert set(state) == set(net.state_dict())
    for name, tensor in state.items():
        assert tensor.dtype == imported[name].dtype and torch.equal(tensor, imported[name]), name


_REMOTE = """
import sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
d = sys.argv[1]
try:
    AutoConfig.from_pretrained(d)
    raise SystemExit("loaded without trust_remote_code: evo2lite was registered")
except ValueError:
    pass
model = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)
ids = tok("ACGTacgtNNGGCCTTAA", return_tensors="pt").input_ids
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[2])
print()  # ends transformers' unanswered prompt line
print("RESULT", type(model).__name__, type(tok).__name__)
# the shims imported evo2lite after transformers' Auto classes: that import registered them at once
assert "evo2lite" in sys.modules
print("RESULT", type(AutoModelForCausalLM.from_pretrained(d)).__module__)
"""


def _run(code: str, *args, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, stdin=subprocess.DEVNULL)


def test_trust_remote_code_without_importing_evo2lite(net, hf, tmp_path):
    save_pretrained_dir(hf, tmp_path / "m")
    proc = _run(_REMOTE, tmp_path / "m", tmp_path / "logits.pt",
                env_extra={"HF_MODULES_CACHE": str(tmp_path / "mods")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert results == [["Evo2LiteForCausalLM", "Evo2LiteTokenizer"], ["evo2lite.hf.modeling"]]
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    with torch.no_grad():
        assert torch.equal(logits, net(ours.encode("ACGTacgtNNGGCCTTAA")[None]))


def test_import_evo2lite_registers_without_importing_transformers(hf, tmp_path):
    save_pretrained_dir(hf, tmp_path / "m")
    code = """
import sys
import evo2lite
assert "transformers" not in sys.modules, "import evo2lite imported transformers"
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
cfg = AutoConfig.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
print(type(cfg).__module__, type(model).__module__, type(tok).__module__)
"""
    proc = _run(code, tmp_path / "m")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["evo2lite.hf.configuration", "evo2lite.hf.modeling", "evo2lite.hf.tokenization"]
