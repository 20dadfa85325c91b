"""Fixtures of the end-to-end tests: the tiny random model (preset "debug", seed 0) and a saved copy of it.
A test file may define its own `model` / `model_dir`, which then take precedence."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def model():
    from evo2lite import load_model

    return load_model("debug", random_init=True, seed=0)


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    from evo2lite.checkpoint import save_model

    return str(save_model(model, tmp_path_factory.mktemp("model") / "debug"))
