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
