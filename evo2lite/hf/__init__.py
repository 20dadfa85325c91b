"""Hugging Face transformers integration: Evo2LiteConfig, Evo2LiteForCausalLM,
Evo2LiteForSequenceClassification, Evo2LiteTokenizer (docs/hf.md).

Registration with AutoConfig / AutoModelForCausalLM / AutoModelForSequenceClassification / AutoTokenizer
happens without importing transformers at `import evo2lite` (that import takes seconds): `import evo2lite`
calls `install_import_hook()`, which registers at once if transformers' auto modules are already loaded,
and otherwise adds a finder to sys.meta_path that registers right after Python executes
`transformers.models.auto.configuration_auto` / `modeling_auto` / `tokenization_auto`, i.e. the first
time the program touches an Auto class. `register()` does it explicitly. Importing this package is
cheap; the classes load on first attribute access.
"""

from __future__ import annotations

import sys
import warnings
from importlib import import_module

_LAZY = {
    "Evo2LiteConfig": "evo2lite.hf.configuration",
    "Evo2LiteCache": "evo2lite.hf.modeling",
    "Evo2LiteForCausalLM": "evo2lite.hf.modeling",
    "Evo2LiteForSequenceClassification": "evo2lite.hf.modeling",
    "Evo2LiteTokenizer": "evo2lite.hf.tokenization",
    "save_pretrained_dir": "evo2lite.hf.export",
    "convert_to_hf": "evo2lite.hf.export",
}
__all__ = sorted(_LAZY) + ["install_import_hook", "register"]

_AUTO = "transformers.models.auto."
_TRIGGERS = (_AUTO + "configuration_auto", _AUTO + "modeling_auto", _AUTO + "tokenization_auto")
_done: set[str] = set()


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evo2lite.hf' has no attribute {name!r}")


def _register_part(module_name: str) -> None:
    if module_name in _done:
        return
    _done.add(module_name)
    from .configuration import Evo2LiteConfig

    if module_name.endswith("configuration_auto"):
        from transformers.models.auto.configuration_auto import AutoConfig

        AutoConfig.register(Evo2LiteConfig.model_type, Evo2LiteConfig, exist_ok=True)
    elif module_name.endswith("modeling_auto"):
        from transformers.models.auto.modeling_auto import AutoModelForCausalLM, AutoModelForSequenceClassification

        from .modeling import Evo2LiteForCausalLM, Evo2LiteForSequenceClassification

        AutoModelForCausalLM.register(Evo2LiteConfig, Evo2LiteForCausalLM, exist_ok=True)
        AutoModelForSequenceClassification.register(Evo2LiteConfig, Evo2LiteForSequenceClassification, exist_ok=True)
    else:
        from transformers.models.auto.tokenization_auto import AutoTokenizer

        from .tokenization import Evo2LiteTokenizer

        AutoTokenizer.register(Evo2LiteConfig, tokenizer_class=Evo2LiteTokenizer, exist_ok=True)


def register() -> None:
    """Register the classes with transformers' Auto classes now (imports transformers)."""
    for name in _TRIGGERS:
        import_module(name)
        _register_part(name)


class _RegisterAfterExec:  # an importlib Loader (no abc import: it costs more than the rest)
    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        try:
            _register_part(_TRIGGERS[0])  # the model and tokenizer registrations need AutoConfig's first
            _register_part(module.__name__)
        except Exception as exc:  # never break the user's transformers import; evo2lite.hf.register() retries
            _done.difference_update(_TRIGGERS)
            warnings.warn(f"evo2lite could not register its transformers classes: {exc}", stacklevel=2)


class _AutoFinder:  # an importlib MetaPathFinder
    """Wraps the loader of transformers' auto modules so that registration follows their execution."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TRIGGERS or fullname in _done:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


def install_import_hook() -> None:
    """Register now for the auto modules already imported, after import for the others (cheap, idempotent)."""
    if not any(isinstance(f, _AutoFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoFinder())
    loaded = [name for name in _TRIGGERS if name in sys.modules]
    if loaded:
        _register_part(_TRIGGERS[0])
        for name in loaded:
            _register_part(name)
