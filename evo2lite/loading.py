"""The one model-loading helper behind every command's --model (and the Python API's load_model).

A model spec is: None (the shipped default, evo2lite-small), a shipped model's name (small, base,
evo2lite-small, evo2lite-base; a local path of that name wins), an evo2lite directory, an Evo 2 .pt /
.pt.part0 with a config (YAML path or preset name), hf:REPO, or an Evo 2 name (evo2_7b, evo2_40b, ...; spec
§3, §4.1). An Evo 2 name is looked up in the local Hugging Face cache (never downloaded implicitly: tens of
GB) and imported once into $EVO2LITE_CACHE/NAME (default ~/.cache/evo2lite/NAME) in evo2lite's format, which
later runs reuse.

Import streams: the model is built on the meta device and every tensor goes from the checkpoint's mmap (or
safetensors) straight to the target dtype and device, so host memory peaks at about one tensor above the
output (no fp32 copy of the whole state).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch

from .checkpoint import (FP8_KEY, SHIPPED_MODELS, Opened, official_in, open_checkpoint, parse_device, parse_dtype,
                         save_state, shipped_name)
from .config import PRESETS, ModelConfig
from .errors import CheckpointError, ConfigError
from .log import note, warn
from .model import FP32_PARAMS, StripedHyena2, init_weights_

# evo2's HF_MODEL_NAME_MAP (spec §4.1): name -> Hugging Face repository
EVO2_REPOS = {
    "evo2_40b": "arcinstitute/evo2_40b",
    "evo2_7b": "arcinstitute/evo2_7b",
    "evo2_20b": "arcinstitute/evo2_20b",
    "evo2_40b_base": "arcinstitute/evo2_40b_base",
    "evo2_7b_base": "arcinstitute/evo2_7b_base",
    "evo2_1b_base": "arcinstitute/evo2_1b_base",
    "evo2_7b_262k": "arcinstitute/evo2_7b_262k",
    "evo2_7b_microviridae": "evo-design/evo-2-7b-8k-microviridae",
}
CACHE_ENV = "EVO2LITE_CACHE"
SCORING_WINDOW = 8192  # Evo 2's own scoring recipe (spec §7): longer defaults cost hours per variant


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evo2lite")


def _hf_cached_repo(name: str) -> Path:
    """The snapshot directory of an Evo 2 repo in the local HF cache; a one-line error saying what is
    expected when it is not there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo = EVO2_REPOS[name]
    expected = f"{name}.pt (or {name}.pt.part0, .part1, ...)"
    try:
        directory = Path(snapshot_download(repo_id=repo, local_files_only=True))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        raise CheckpointError(f"{name}: not in the local Hugging Face cache (expected {expected} of {repo}; "
                              f"the preset {name} is only its shape): fetch it once with `huggingface-cli "
                              f"download {repo}`, or pass the .pt with --config {name}") from None
    if official_in(directory) is None:
        raise CheckpointError(f"{name}: the cached {repo} holds no {expected}; the download is incomplete")
    return directory


def _check_evo2_name(text: str | None) -> None:
    """A spec that looks like an Evo 2 name but is none (and no file): one line listing the names."""
    if (text is None or text in EVO2_REPOS or not text.lower().startswith("evo2") or any(c in text for c in "/.:")
            or Path(text).exists() or shipped_name(text)):  # paths (evo2_7b.pt) keep open_checkpoint's error
        return
    close = difflib.get_close_matches(text.lower(), [*EVO2_REPOS, *SHIPPED_MODELS], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise CheckpointError(f"unknown Evo 2 model {text!r}: {hint}the names are {', '.join(EVO2_REPOS)} "
                          "(or pass a shipped model: small, base; a model directory, an Evo 2 .pt with --config, "
                          "or hf:REPO)")


def open_model(spec, config=None) -> Opened:
    """Open any --model spec (Evo 2 names included) without reading the weights."""
    text = None if spec is None else str(spec)
    _check_evo2_name(text)
    if text in EVO2_REPOS and not Path(text).exists():
        cached = cache_dir() / text
        if not (cached / "model.safetensors").exists():
            directory = _hf_cached_repo(text)
            official = open_checkpoint(official_in(directory), config if config is not None else text)
            note(f"importing {text} once into {cached}")
            save_state(official.config, official.tensors(), cached, official.fp8_states, official.layout())
        opened = open_checkpoint(cached, None)
        opened.source = f"{text} ({EVO2_REPOS[text]}, imported into {cached})"
        return opened
    return open_checkpoint(spec, config)


def read_config(spec, config=None) -> tuple[ModelConfig, str]:
    """(config, source) without reading any weights (for `info`): opening a checkpoint reads only its
    pickle / safetensors header (the tensors stay memory-mapped)."""
    text = None if spec is None else str(spec)
    _check_evo2_name(text)
    if text in EVO2_REPOS and not Path(text).exists():
        cached = cache_dir() / text
        if (cached / "config.json").exists():
            return ModelConfig.load(cached / "config.json"), f"{cached} (imported from {EVO2_REPOS[text]})"
        return PRESETS[text], f"{EVO2_REPOS[text]} (not imported yet: the shape of the preset)"
    if text in PRESETS and not Path(text).exists():
        return PRESETS[text], "preset (shape only, no weights)"
    opened = open_checkpoint(spec, config)
    return opened.config, opened.source


def load_model(spec: str | Path | None = None, *, config: str | Path | ModelConfig | None = None,
               device: str | torch.device | None = "cpu", dtype: str | torch.dtype | None = None,
               random_init: bool = False, seed: int = 0, fp8: str | None = None,
               allow_inexact: bool | None = None) -> StripedHyena2:
    """A model for inference (eval mode), straight on `device` in `dtype` (default fp32 on CPU, bf16 on
    CUDA; log_poles, residues and inv_freq stay fp32).

    spec: see the module docstring; with `random_init=True` a preset name (spec §9 initialisation).
    fp8: the Hyena input projections: "auto" | "off" | "scaled_mm" | "mmaemu" | "emulate" (evo2lite.fp8);
    1B/20B/40B refuse to run without an exact FP8 backend unless allow_inexact. None takes $EVO2LITE_FP8
    (default "auto") and $EVO2LITE_ALLOW_INEXACT=1, so every command honours them. The choice is recorded
    in `model.provenance` with the dtype and the source."""
    from .fp8 import choose_fp8, enable_fp8

    fp8 = fp8 or os.environ.get("EVO2LITE_FP8") or "auto"
    if allow_inexact is None:
        allow_inexact = os.environ.get("EVO2LITE_ALLOW_INEXACT") == "1"

    dev = parse_device(device)
    dt = parse_dtype(dtype, dev)
    if random_init:
        cfg = config if isinstance(config, ModelConfig) else PRESETS.get(str(spec)) if spec else None
        if cfg is None:
            raise ConfigError(f"random_init needs a preset name or a ModelConfig, got {spec!r}")
        mode = choose_fp8(cfg, dev, fp8, allow_inexact)
        model = init_weights_(StripedHyena2(cfg), seed).cast(dt).to(dev)
        source, states = f"random weights (preset {spec}, seed {seed})", {}
    else:
        if str(spec) in EVO2_REPOS and config is None:  # refuse before a first import of tens of GB
            choose_fp8(PRESETS[str(spec)], dev, fp8, allow_inexact)
        opened = open_model(spec, config)
        cfg, source, states = opened.config, opened.source, opened.fp8_states
        mode = choose_fp8(cfg, dev, fp8, allow_inexact)
        model = _materialise(opened, dev, dt)
    if mode != "off":
        enable_fp8(model, mode, states)
        if mode == "emulate":
            warn(f"{cfg.name or source}: FP8 input projections emulated (same quantisation, fp32 accumulation): "
                 "close to, not equal to, the official Hopper numbers")
    model.source = source
    model.provenance = {"model": source, "dtype": str(dt).removeprefix("torch."),
                        "fp8": mode if mode != "emulate" else "emulate (inexact)", "device": dev.type}
    return model.eval()


def _materialise(opened: Opened, device: torch.device, dtype: torch.dtype) -> StripedHyena2:
    """Build on meta, then fill tensor by tensor: each arrives (mmap / safetensors), is converted to its
    target dtype on `device`, and is dropped before the next."""
    with torch.device("meta"):
        model = StripedHyena2(opened.config)
    expected = model.state_dict()
    filled = {}
    for name, tensor in opened.tensors():
        if FP8_KEY in name:
            continue
        if name not in expected:
            warn(f"{opened.source}: dropping tensor {name!r} the model does not use")
            continue
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{opened.source}: tensor {name!r} has shape {tuple(tensor.shape)}, the config "
                                  f"expects {tuple(expected[name].shape)}")
        target = torch.float32 if name.endswith(FP32_PARAMS) else dtype
        filled[name] = tensor.to(device=device, dtype=target, copy=True)
        del tensor
    missing = [k for k in expected if k not in filled]
    if missing:
        raise CheckpointError(f"{opened.source}: missing tensor {missing[0]!r}" +
                              (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    model.load_state_dict(filled, strict=True, assign=True)
    return model


def scoring_window(model, requested: int | None, option: str = "--window") -> int:
    """The scoring window: `requested`, or min(trained context, 8192) (evo2lite-small keeps its 2,048,
    evo2lite-base its 8,192); a warning when the request exceeds what the model was trained on."""
    trained = int(model.config.context_len)
    if requested is None:
        return min(trained, SCORING_WINDOW)
    if requested > trained:
        warn(f"{option} {requested:,} exceeds the model's trained context ({trained:,}): positions past it were "
             "never seen in training")
    return int(requested)
