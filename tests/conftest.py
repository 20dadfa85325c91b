import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # the tests run tiny shapes: intra-op threads cost more in start-up and contention than they save on
    # a 2-core machine (seen 10x slower with 2 threads while other jobs ran)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
