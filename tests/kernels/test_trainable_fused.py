"""Training runs the fused Hyena kernels too: after train_params.make_trainable (the MR filter parametrised as
h_hat * decay) the SE and MR mixers still dispatch to the fused op, with the same output and the same gradients
(to h_hat through the parametrisation) as the reference ops. NaN-poisoned kernel outputs; on the CPU in
Triton's interpreter (tests/kernels/conftest.py) on tiny fp32 shapes."""

import dataclasses
import os

import pytest
import torch

import evo2lite.mixers as mixers
from evo2lite.config import PRESETS
from evo2lite.train_params import make_trainable

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs CUDA or the Triton interpreter")
DEV = "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    from evo2lite.kernels.hyena import triton as hyena_triton
    monkeypatch.setattr(hyena_triton, "POISON", True)


@pytest.mark.parametrize("kind", ["S", "M"])
def test_trainable_mixer_runs_fused_with_reference_gradients(kind, monkeypatch):
    cfg = dataclasses.replace(PRESETS["debug"], d_model=16, num_se_groups=2, num_mr_groups=2, num_heads=1)
    torch.manual_seed(5)
    mixer = mixers.MIXERS[kind](cfg).to(DEV)
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.3)
    make_trainable(mixer, decay_len=256)
    if kind == "M":
        assert type(mixer.filter).__name__ == "ParametrizedMediumFilter"
    calls = []
    fused = mixers.hyena_conv
    monkeypatch.setattr(mixers, "hyena_conv", lambda *a, **k: calls.append(1) or fused(*a, **k))
    a = torch.randn(2, 131, 16, device=DEV)
    outs = {}
    for backend in ("triton", "reference"):
        mixer.backend = backend
        mixer.zero_grad()
        y = mixer(a)
        y.square().sum().backward()
        outs[backend] = [y] + [p.grad.clone() for _, p in sorted(mixer.named_parameters())]
    assert len(calls) == 1  # the triton pass took the fused op, the reference pass did not
    assert len(outs["triton"]) == len(list(mixer.parameters())) + 1
    for got, want in zip(outs["triton"], outs["reference"]):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
