"""Hugging Face model directories: `save_pretrained_dir` (any StripedHyena2 or HF wrapper) and
`convert_to_hf` (`evo2lite convert SRC --to hf -o DIR`: any model spec --model accepts).

A directory holds model.safetensors (keys `model.<our key>`), config.json (model_type "evo2lite" and
`auto_map`), generation_config.json, tokenizer_config.json, and three remote-code files for
`trust_remote_code=True` users who do not import evo2lite themselves. Those files are shims that import
the classes from the installed evo2lite package: shipping a self-contained copy of the model would be a
second implementation, which this project does not keep. Without evo2lite installed they fail with an
ImportError saying `pip install evo2lite`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import atomic_dir

AUTO_MAP = {
    "AutoConfig": "configuration_evo2lite.Evo2LiteConfig",
    "AutoModelForCausalLM": "modeling_evo2lite.Evo2LiteForCausalLM",
    "AutoModelForSequenceClassification": "modeling_evo2lite.Evo2LiteForSequenceClassification",
}
TOKENIZER_AUTO_MAP = {"AutoTokenizer": ["tokenization_evo2lite.Evo2LiteTokenizer", None]}

_SHIM = '''"""Remote code of an evo2lite model directory. The classes are those of the installed evo2lite package
(pip install evo2lite); this file holds no model code of its own."""

try:
    from evo2lite.hf.{module} import {names}
except ImportError as exc:
    raise ImportError("this model directory needs the evo2lite package: pip install evo2lite") from exc

__all__ = [{quoted}]
'''
REMOTE_FILES = {
    "configuration_evo2lite.py": ("configuration", ["Evo2LiteConfig"]),
    "modeling_evo2lite.py": ("modeling", ["Evo2LiteForCausalLM", "Evo2LiteForSequenceClassification"]),
    "tokenization_evo2lite.py": ("tokenization", ["Evo2LiteTokenizer"]),
}


def write_remote_code(directory: str | Path) -> None:
    for filename, (module, names) in REMOTE_FILES.items():
        text = _SHIM.format(module=module, names=", ".join(names), quoted=", ".join(f'"{n}"' for n in names))
        (Path(directory) / filename).write_text(text)


def _as_hf(model):
    from ..model import StripedHyena2
    from .configuration import Evo2LiteConfig
    from .modeling import Evo2LiteForCausalLM, Evo2LitePreTrainedModel

    if isinstance(model, Evo2LitePreTrainedModel):
        return model
    if not isinstance(model, StripedHyena2):
        raise TypeError(f"expected a StripedHyena2 or an evo2lite HF model, got {type(model).__name__}")
    with torch.device("meta"):  # the wrapper adopts `model` itself: no weights are allocated or copied
        hf = Evo2LiteForCausalLM(Evo2LiteConfig.from_model_config(model.config))
    hf.model = model
    return hf


def save_pretrained_dir(model, directory: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write an HF directory for `model` (StripedHyena2 or Evo2LiteFor*) with the tokenizer and the
    remote-code shims, atomically (a temporary directory renamed into place)."""
    from .tokenization import Evo2LiteTokenizer

    hf = _as_hf(model)
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        if dtype is not None:
            hf.config.dtype = dtype  # read back by from_pretrained(dtype="auto")
        hf.save_pretrained(tmp)  # safetensors; our save_pretrained adds auto_map and the shims
        Evo2LiteTokenizer().save_pretrained(tmp)
    return directory


def convert_to_hf(source, output: str | Path, *, config=None) -> Path:
    """`evo2lite convert SOURCE --to hf -o OUTPUT`: any model spec of --model (our directory, an Evo 2
    .pt with its config, hf:REPO) as an HF directory. The tensors keep their stored dtypes (Evo 2 imports:
    bf16 with fp32 poles, residues and inv_freq), so the round trip through our format is exact."""
    from ..checkpoint import load_state
    from ..errors import CheckpointError
    from ..model import StripedHyena2

    cfg, state, source_text = load_state(source, config)
    with torch.device("meta"):
        net = StripedHyena2(cfg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{source_text}: missing tensor {missing[0]!r}")
    # assign: the loaded tensors themselves, in their stored dtypes (extra entries, e.g. FP8 scaling
    # state, have no place in the transformers model and are left out)
    net.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return save_pretrained_dir(net, output)
