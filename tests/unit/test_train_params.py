"""Trainable parametrizations (spec §9): export round trip, decay, stable poles, weight-decay groups."""

import torch

from evo2lite.config import PRESETS
from evo2lite.model import StripedHyena2, init_weights_
from evo2lite.train_params import (export_state_dict, make_trainable, mr_decay, param_groups,
                                   strip_trainable)


def _model(seed=0):
    return init_weights_(StripedHyena2(PRESETS["debug"]), seed)


def test_make_trainable_keeps_values_and_exports_model_keys():
    model = _model()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        before = model(ids)
        make_trainable(model)
        after = model(ids)
    assert torch.allclose(before, after, atol=1e-5)
    names = [n for n, _ in model.named_parameters()]
    assert any(n.endswith("parametrizations.h.original") for n in names)  # MR h_hat
    assert any(n.endswith("parametrizations.log_poles.original1") for n in names)  # LR gamma
    exported = export_state_dict(model)
    assert set(exported) == set(plain)
    for k in plain:
        assert torch.allclose(exported[k], plain[k], rtol=1e-5, atol=1e-7), k
    fresh = StripedHyena2(PRESETS["debug"])
    fresh.load_state_dict(exported)
    with torch.no_grad():
        assert torch.allclose(fresh(ids), after, atol=1e-5)
    strip_trainable(model)
    assert set(model.state_dict()) == set(plain)


def test_mr_decay_is_the_init_decay():
    cfg = PRESETS["debug"]
    decay = mr_decay(cfg.num_mr_groups, cfg.mr_filter_len, cfg.context_len)
    assert decay.shape == (cfg.num_mr_groups, cfg.mr_filter_len)
    assert torch.all(decay[:, 0] == 1) and torch.all(decay[:, 1:] < decay[:, :-1])
    model = make_trainable(_model())
    h_hat = model.blocks[1].mixer.filter.parametrizations.h.original
    # init_weights_ draws h_hat ~ N(0, 1/K) and folds the same decay in: dividing it out recovers that scale
    assert 0.5 < float(h_hat.detach().std() * cfg.mr_filter_len ** 0.5) < 1.5


def test_lr_poles_stay_inside_the_unit_interval():
    model = make_trainable(_model())
    filt = model.blocks[2].mixer.filter
    with torch.no_grad():
        for p in filt.parametrizations.log_poles.original0, filt.parametrizations.log_poles.original1:
            p.add_(torch.randn_like(p))
    assert torch.all(filt.log_poles < 0)  # -exp(p) exp(gamma): every pole exp(log_poles) is in (0, 1)
    poles = torch.exp(filt.log_poles)
    assert torch.all(poles > 0) and torch.all(poles < 1)


def test_weight_decay_groups():
    model = make_trainable(_model())
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    d = {names[id(p)] for p in decay["params"]}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert not d & nd and len(d) + len(nd) == len(names)
    assert "embedding.weight" in d and "blocks.0.mlp.l1.weight" in d and "blocks.3.mixer.qkv_proj.weight" in d
    assert all(not n.endswith((".scale", "bias")) and ".filter." not in n and ".featurizer." not in n for n in d)
    assert "blocks.2.mixer.filter.residues" in nd and "blocks.0.mixer.featurizer.h" in nd
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
