"""evo2lite: byte-level DNA language models on the StripedHyena 2 architecture (Evo 2).

Public API: load_model, score_sequences, ModelConfig, PRESETS; the apps add their own entry points
(score_variants, embed, generate) as they land. Heavy modules load lazily so `import evo2lite` is quick.
"""

from __future__ import annotations

import os as _os
from importlib import import_module

__version__ = "0.1.0"

# Imported from a source checkout (e.g. `python -c` in the repo root shadowing the installed package):
# kernels/ and pipelines/ sit beside the package, where pyproject's package-dir mapping puts them on install.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "kernels"))
        and _os.path.isfile(_os.path.join(_root, "kernels", "__init__.py"))):
    __path__.append(_root)  # noqa: F821  (the package's own __path__)

_LAZY = {
    "ModelConfig": "evo2lite.config",
    "PRESETS": "evo2lite.config",
    "StripedHyena2": "evo2lite.model",
    "load_model": "evo2lite.loading",
    "save_model": "evo2lite.checkpoint",
    "score_sequences": "evo2lite.apps.score",
    "embed": "evo2lite.apps.embed",
    "embed_file": "evo2lite.apps.embed_io",
    "generate": "evo2lite.apps.generate",
    "score_variants": "evo2lite.apps.score_vcf",
    "Evo2LiteError": "evo2lite.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


# transformers Auto classes learn model_type "evo2lite" when their modules load, without importing
# transformers here (seconds): see evo2lite/hf/__init__.py
from .hf import install_import_hook as _install_hf_hook  # noqa: E402

_install_hf_hook()


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evo2lite' has no attribute {name!r}")
