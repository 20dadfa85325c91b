import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from helpers import offline_hf_cache  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # the tests run tiny shapes: intra-op threads cost more in start-up and contention than they save on
    # a 2-core machine (seen 10x slower with 2 threads while other jobs ran)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache in tmp_path/hub; returns add_repo(repo_id, files) (tests/helpers.py)."""
    return offline_hf_cache(tmp_path / "hub", monkeypatch)


@pytest.fixture(scope="module")
def model():
    """The tiny random model: preset "debug", seed 0, fp32, eval mode; one per test module, which may define
    its own `model` (another seed or shape) instead."""
    from evo2lite import load_model

    return load_model("debug", random_init=True, seed=0)


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    """`model` saved in evo2lite's format (safetensors + JSON); the folder, as a str for --model."""
    from evo2lite.checkpoint import save_model

    return str(save_model(model, tmp_path_factory.mktemp("model") / "debug"))
