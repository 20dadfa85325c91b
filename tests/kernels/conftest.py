import os
import sys
from pathlib import Path

import pytest
import torch

# Without CUDA the Triton kernels run in Triton's interpreter (numpy on the CPU). It must be switched on before
# a kernel module is imported; ours import triton lazily, so setting it at collection is early enough.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# On a GPU host the checkout may not be installed: map kernels/ to evo2lite.kernels by hand, as setup does
try:
    import evo2lite.kernels  # noqa: F401
except ImportError:
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    import evo2lite

    evo2lite.__path__.append(str(root))


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Every Triton kernel's output starts as NaN (kernels/hyena and kernels/modal share the POISON switch
    pattern), so an element a kernel never writes fails its test."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        from evo2lite.kernels.hyena import triton as hyena_triton
        from evo2lite.kernels.modal import triton as modal_triton

        monkeypatch.setattr(hyena_triton, "POISON", True)
        monkeypatch.setattr(modal_triton, "POISON", True)
