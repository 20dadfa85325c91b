"""One kernel switch per Hyena block (`HyenaMixer.backend`, `set_backend`): it reaches Hyena-LR's modal filter,
refuses unknown values, and the LR reference path it selects computes what the default path does (CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from evo2lite.config import PRESETS
from evo2lite.mixers import BACKENDS, HyenaLR, HyenaMixer, ModalFilter, set_backend
from evo2lite.model import StripedHyena2, init_weights_


def test_set_backend_reaches_every_hyena_block_and_the_modal_filter():
    model = init_weights_(StripedHyena2(PRESETS["debug"]), 0)
    mixers = [m for m in model.modules() if isinstance(m, HyenaMixer)]
    assert {type(m).__name__ for m in mixers} == {"HyenaSE", "HyenaMR", "HyenaLR"}
    assert all(m.backend == "auto" for m in mixers)
    for backend in BACKENDS:
        set_backend(model, backend)
        assert all(m.backend == backend for m in mixers)
        assert all(m.backend == backend for m in model.modules() if isinstance(m, ModalFilter))
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        set_backend(model, "fast")
    with pytest.raises(ValueError, match="auto, triton, reference"):
        mixers[0].backend = "chunked"
    assert mixers[0].backend == "reference"  # a refused value changes nothing


def test_lr_reference_switch_takes_the_fft_path_and_agrees():
    cfg = dataclasses.replace(PRESETS["debug"], d_model=16, num_heads=1, num_se_groups=2, num_mr_groups=2)
    torch.manual_seed(0)
    mixer = HyenaLR(cfg)
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.3)
        mixer.filter.log_poles.uniform_(-0.5, -0.01)
        a = torch.randn(2, 40, 16)
        auto = mixer(a)  # CPU: the chunked modal form, no materialised filter
        assert mixer.filter._cached_filter is None
        mixer.backend = "reference"
        ref = mixer(a)  # the FFT over the materialised (and, under no_grad, cached) filter
        assert mixer.filter._cached_filter is not None
    torch.testing.assert_close(auto, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
