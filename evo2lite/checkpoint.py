"""Checkpoints: our format (a directory with model.safetensors + config.json) and the official Evo 2 /
vortex format (a torch zip pickle of a flat dict, possibly split in byte shards X.pt.part0, .part1, ...,
plus a YAML config), imported and exported exactly as spec §4 says.

Import does what vtx's load_checkpoint does: drops extra keys (the unembed.weight duplicate), permutes the
Wqkv rows from the stored per-head (h, q|k|v, e) layout to (q|k|v, h, e), and rounds every parameter to
bf16 except log_poles, residues and inv_freq, so fp32 compute matches vtx's fp32 results. The TE FP8
scaling state (`projections._extra_state`) is decoded (weights_only) and kept: our format stores it as
blocks.N.mixer.in_proj.fp8.{scale,scale_inv,amax_history}. Nothing is materialised whole: `open_checkpoint`
reads only the pickle / safetensors header and yields tensors one at a time from the memory map, and
`save_state` writes safetensors as they arrive (evo2lite.loading builds models the same way).
"""

from __future__ import annotations

import difflib
import io
import itertools
import json
import math
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .config import PRESETS, ModelConfig
from .errors import CheckpointError, ConfigError, Evo2LiteError
from .io import atomic_dir, atomic_path
from .log import warn
from .model import FP32_PARAMS, StripedHyena2

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "default"
# The shipped models by full name (the folders pyproject's package data ships); no --model is evo2lite-small.
SHIPPED_MODELS = {"evo2lite-small": DEFAULT_MODEL_DIR, "evo2lite-base": DEFAULT_MODEL_DIR.parent / "base"}
SHIPPED_ALIASES = {"small": "evo2lite-small", "base": "evo2lite-base"}

# Our name suffix <- vortex name suffix, per block kind (spec §4.2). Shapes are reshaped where the
# vortex tensor carries a singleton dim.
_HYENA_KEYS = {
    "mixer.in_proj.weight": "projections.weight",
    "mixer.featurizer.h": "filter.short_filter_weight",
    "mixer.out_proj.weight": "out_filter_dense.weight",
    "mixer.out_proj.bias": "out_filter_dense.bias",
}
_KIND_KEYS = {
    "S": {"mixer.filter.h": "filter.h"},
    "M": {"mixer.filter.h": "filter.h", "mixer.filter.D": "filter.D"},
    "L": {"mixer.filter.log_poles": "filter.log_poles", "mixer.filter.residues": "filter.residues",
          "mixer.filter.D": "filter.D"},
    "A": {"mixer.qkv_proj.weight": "inner_mha_cls.Wqkv.weight",
          "mixer.out_proj.weight": "inner_mha_cls.out_proj.weight",
          "mixer.out_proj.bias": "inner_mha_cls.out_proj.bias",
          "mixer.inv_freq": "inner_mha_cls.rotary_emb.inv_freq"},
}
_BLOCK_KEYS = {name: name for name in ("pre_norm.scale", "post_norm.scale", "mlp.l1.weight",
                                       "mlp.l2.weight", "mlp.l3.weight")}
# Present in official files, not model tensors: dropped without a warning.
_EXPECTED_EXTRA = re.compile(r"(^unembed\.weight$)|(_extra_state$)")


def key_map(config: ModelConfig) -> dict[str, str]:
    """Our state-dict key -> the vortex key, for every tensor of the model."""
    mapping = {"embedding.weight": "embedding_layer.weight", "norm.scale": "norm.scale"}
    for i, kind in enumerate(config.layout):
        keys = dict(_BLOCK_KEYS)
        if kind != "A":
            keys.update(_HYENA_KEYS)
        keys.update(_KIND_KEYS[kind])
        mapping.update({f"blocks.{i}.{ours}": f"blocks.{i}.{theirs}" for ours, theirs in keys.items()})
    return mapping


def _wqkv_to_runtime(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Stored row h*3*E + j*E + e -> runtime row j*D + h*E + e (spec §4.3)."""
    d3, d = w.shape
    return w.view(num_heads, 3, d3 // (3 * num_heads), d).transpose(0, 1).reshape(d3, d)


def _wqkv_to_stored(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    d3, d = w.shape
    return w.view(3, num_heads, d3 // (3 * num_heads), d).transpose(0, 1).reshape(d3, d)


def _round_like_vtx(name: str, t: torch.Tensor) -> torch.Tensor:
    return t.float() if name.endswith(FP32_PARAMS) else t.to(torch.bfloat16)


def _check_vortex_keys(raw: dict, config: ModelConfig, source: str) -> dict[str, str]:
    """Every tensor the model needs is present with its shape (fail before any work); warn about the
    unused ones. Returns key_map(config)."""
    with torch.device("meta"):
        expected = StripedHyena2(config).state_dict()
    mapping = key_map(config)
    for ours, theirs in mapping.items():
        if theirs not in raw:
            raise CheckpointError(f"{source}: missing tensor {theirs!r} (block kinds from the config: "
                                  f"{config.layout}); is this the right --config?")
        t = raw[theirs]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{source}: {theirs!r} is not a tensor")
        if tuple(t.shape) != _vortex_shape(theirs, expected[ours].shape):
            raise CheckpointError(f"{source}: tensor {theirs!r} has shape {tuple(t.shape)}, the config "
                                  f"expects {_vortex_shape(theirs, expected[ours].shape)}")
    extra = sorted(k for k in raw if k not in set(mapping.values()) and not _EXPECTED_EXTRA.search(k))
    if extra:
        warn(f"{source}: dropping {len(extra)} tensor(s) the model does not use: {', '.join(extra)}")
    return mapping


def iter_vortex_tensors(raw: dict, config: ModelConfig, source: str = "checkpoint"):
    """(our name, tensor in vtx's dtypes) one at a time from a vortex flat dict (mmap-backed when read by
    read_vortex_file), so an import holds at most one converted tensor beside its output."""
    for ours, theirs in _check_vortex_keys(raw, config, source).items():
        t = raw[theirs]
        t = t.reshape(t.shape[:-1] if theirs.endswith("log_poles") else
                      (t.shape[0], t.shape[2]) if theirs.endswith(("filter.h", "short_filter_weight")) else t.shape)
        if ours.endswith("qkv_proj.weight"):
            t = _wqkv_to_runtime(t, config.num_heads)
        yield ours, _round_like_vtx(ours, t).contiguous()
    if "unembed.weight" in raw and isinstance(raw["unembed.weight"], torch.Tensor):
        if not torch.equal(raw["unembed.weight"].to(torch.bfloat16), raw["embedding_layer.weight"].to(torch.bfloat16)):
            warn(f"{source}: unembed.weight differs from the embedding; the model ties them and uses "
                 "embedding_layer.weight")


def state_dict_from_vortex(raw: dict, config: ModelConfig, source: str = "checkpoint") -> dict:
    """Our state dict (bf16 bulk, fp32 poles/residues/inv_freq) from a vortex flat dict."""
    return dict(iter_vortex_tensors(raw, config, source))


def fp8_states_from_vortex(raw: dict, config: ModelConfig, source: str = "checkpoint") -> dict:
    """{block index: DelayedScaling} decoded from the TE `projections._extra_state` entries."""
    from .fp8 import decode_extra_state

    states = {}
    for i, kind in enumerate(config.layout):
        key = f"blocks.{i}.projections._extra_state"
        if kind != "A" and key in raw:
            state = decode_extra_state(raw[key], f"{source}: {key}")
            if state is not None:
                states[i] = state
    return states


def _vortex_shape(theirs: str, ours: torch.Size) -> tuple[int, ...]:
    if theirs.endswith(("filter.h", "short_filter_weight")):
        return (ours[0], 1, ours[1])
    if theirs.endswith("log_poles"):
        return (*ours, 1)
    return tuple(ours)


def state_dict_to_vortex(state: dict, config: ModelConfig) -> dict:
    """The official flat dict (bf16 bulk, fp32 poles/residues/inv_freq, singleton dims restored)."""
    out = {}
    for ours, theirs in key_map(config).items():
        t = state[ours]
        if ours.endswith("qkv_proj.weight"):
            t = _wqkv_to_stored(t, config.num_heads)
        out[theirs] = _round_like_vtx(ours, t.reshape(_vortex_shape(theirs, t.shape))).contiguous()
    return out


def config_to_vortex_yaml(config: ModelConfig) -> dict:
    """An evo2/vortex YAML config dict describing `config` (the fields vtx reads)."""
    idx = {k: [i for i, c in enumerate(config.layout) if c == k] for k in "SMLA"}
    return {
        "model_name": config.name or "evo2lite-export", "vocab_size": config.vocab_size,
        "hidden_size": config.d_model, "num_filters": config.d_model, "num_layers": config.num_blocks,
        "hcs_layer_idxs": idx["S"], "hcm_layer_idxs": idx["M"], "hcl_layer_idxs": idx["L"],
        "attn_layer_idxs": idx["A"], "num_attention_heads": config.num_heads,
        "short_filter_length": config.featurizer_len, "hcs_filter_length": config.se_filter_len,
        "hcs_filter_groups": config.num_se_groups, "hcm_filter_length": config.mr_filter_len,
        "hcm_filter_groups": config.num_mr_groups, "hcl_filter_groups": config.d_model,
        "state_size": config.state_size, "inner_mlp_size": config.d_mlp, "eps": config.eps,
        "max_seqlen": config.context_len, "context_len": config.context_len,
        "rotary_emb_base": config.rotary_base,
        "use_interpolated_rotary_pos_emb": config.rotary_scale != 1.0,
        "rotary_emb_scaling_factor": config.rotary_scale,
        "use_fp8_input_projections": config.fp8_input_projections,
        "proj_groups": 1, "hyena_filter_groups": 1, "column_split_hyena": False, "column_split": True,
        "interleave": True, "evo2_style_activations": True, "tie_embeddings": True,
        "mha_out_proj_bias": True, "hyena_out_proj_bias": True, "qkv_proj_bias": False,
        "short_filter_bias": False, "hyena_flip_x1x2": False, "final_norm": True, "use_flash_attn": False,
        "use_flashfft": False, "use_flash_depthwise": False, "use_flash_rmsnorm": False,
        "prefill_style": "fft", "mlp_activation": "gelu", "max_batch_size": 1, "model_parallel_size": 1,
        "inner_size_multiple_of": 16, "make_vocab_size_divisible_by": 8, "tokenizer_type": "CharLevelTokenizer",
        "use_fp8_output_projections": False,
    }


# --- reading official files ---------------------------------------------------------------------------

def _shard_paths(path: Path) -> list[Path]:
    match = re.fullmatch(r"(.*\.pt)\.part(\d+)", path.name)
    if not match:
        return [path]
    stem = match.group(1)
    shards, n = [], 0
    while (path.parent / f"{stem}.part{n}").exists():
        shards.append(path.parent / f"{stem}.part{n}")
        n += 1
    if not shards:
        raise CheckpointError(f"{path}: byte shards must start at {stem}.part0")
    return shards


def join_shards(shards: list[Path], directory: Path | None = None) -> Path:
    """Concatenate byte shards streaming into one temp file, after checking the free disk space."""
    need = sum(p.stat().st_size for p in shards)
    directory = Path(directory or tempfile.gettempdir())
    free = shutil.disk_usage(directory).free
    if free < need * 1.05:
        raise CheckpointError(f"joining {len(shards)} shards needs {need / 2**30:.1f} GiB in {directory}, "
                              f"only {free / 2**30:.1f} GiB free; set TMPDIR to a larger disk")
    fd, name = tempfile.mkstemp(suffix=".pt", dir=directory)
    with os.fdopen(fd, "wb") as out:
        for shard in shards:
            with open(shard, "rb") as src:
                shutil.copyfileobj(src, out, length=64 << 20)
    return Path(name)


def read_vortex_file(path: str | Path) -> dict:
    """The flat dict of an official .pt (or .pt.part0 of byte shards), without executing code."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    shards = _shard_paths(path)
    joined = join_shards(shards) if len(shards) > 1 or shards[0] != path else None
    target = joined or path
    try:
        with torch.serialization.safe_globals([io.BytesIO]):
            raw = torch.load(target, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # truncated zip, not a checkpoint, unsafe pickle content ...
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    finally:
        if joined is not None:
            joined.unlink(missing_ok=True)  # the mmap keeps the data readable on POSIX
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    return raw


def resolve_config(config: str | Path | ModelConfig | None, source: str) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if config is None:
        raise ConfigError(f"{source} is an Evo 2 / vortex checkpoint: give its YAML with --config "
                          f"(or a preset name: {', '.join(p for p in PRESETS if p.startswith('evo2'))})")
    if str(config) in PRESETS:
        return PRESETS[str(config)]
    path = Path(config)
    if not path.exists():
        raise ConfigError(f"config not found: {config}")
    if path.suffix == ".json":
        return ModelConfig.load(path)
    return ModelConfig.from_vortex_yaml(path)


# --- our format -----------------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64",
              torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
FP8_KEY = ".fp8."  # our format stores a block's FP8 scaling state as blocks.N.mixer.in_proj.fp8.{scale,...}


def write_safetensors(path: Path, layout: list[tuple[str, tuple, torch.dtype]], tensors,
                      metadata: dict[str, str]) -> None:
    """Write a safetensors file from (name, tensor) pairs arriving one at a time in `layout` order: the
    header is laid out from the shapes first, so no complete state is ever held in memory."""
    header, offset = {}, 0
    for name, shape, dtype in layout:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        count = 0
        for (name, t), (want, shape, dtype) in zip(tensors, layout):
            if name != want or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise AssertionError(f"tensor {name} {tuple(t.shape)} {t.dtype} != layout {want} {shape} {dtype}")
            out.write(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())
            count += 1
        if count != len(layout):
            raise AssertionError(f"{count} tensors written, {len(layout)} laid out")


def _fp8_tensors(fp8_states: dict | None) -> dict[str, torch.Tensor]:
    out = {}
    for i, s in sorted((fp8_states or {}).items()):
        prefix = f"blocks.{i}.mixer.in_proj{FP8_KEY}"
        out.update({prefix + "scale": s.scale.cpu(), prefix + "scale_inv": s.scale_inv.cpu(),
                    prefix + "amax_history": s.amax_history.cpu()})
    return out


def save_state(config: ModelConfig, state, directory: str | Path, fp8_states: dict | None = None,
               layout: list | None = None) -> Path:
    """Write model.safetensors + config.json atomically (a temp directory renamed into place). `state` is a
    dict, or an iterator of (name, tensor) with its `layout` [(name, shape, dtype)] given up front."""
    directory = Path(directory)
    extra = _fp8_tensors(fp8_states)
    if layout is None:
        layout = [(k, tuple(v.shape), v.dtype) for k, v in state.items()]
        state = state.items()
    layout = layout + [(k, tuple(v.shape), v.dtype) for k, v in extra.items()]
    with atomic_dir(directory) as tmp:
        write_safetensors(tmp / WEIGHTS_FILE, layout, itertools.chain(state, extra.items()),
                          {"format": "evo2lite"})
        config.save(tmp / CONFIG_FILE)
    return directory


def save_model(model: StripedHyena2, directory: str | Path) -> Path:
    return save_state(model.config, model.state_dict(), directory)


def save_vortex(config: ModelConfig, state: dict, path: str | Path) -> Path:
    """Write the official format: OUT.pt (flat dict, vtx's dtypes and layouts) and OUT.yml beside it."""
    import yaml


    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state_dict_to_vortex(state, config), tmp)
    with atomic_path(path.with_suffix(".yml")) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_vortex_yaml(config), sort_keys=False))
    return path


def convert(source: str | Path, output: str | Path, *, config: str | Path | ModelConfig | None = None,
            to: str = "evo2lite") -> Path:
    """Import an official checkpoint into our format (to="evo2lite", streamed tensor by tensor, the FP8
    scaling state kept) or export ours (to="vortex"). The tensors pass through unchanged apart from the
    layout and rounding rules of spec §4, so import -> export -> import is bit-exact."""
    if to not in ("evo2lite", "vortex"):
        raise Evo2LiteError(f"--to must be evo2lite or vortex, got {to!r}")
    opened = open_checkpoint(source, config)
    if to == "evo2lite":
        return save_state(opened.config, opened.tensors(), output, opened.fp8_states, opened.layout())
    return save_vortex(opened.config, dict(opened.tensors()), output)


@dataclass
class Opened:
    """A checkpoint opened without reading its weights: the config, where it came from, the FP8 scaling
    states, and `tensors()`, which yields (our name, tensor) one at a time (mmap / safetensors reads)."""

    config: ModelConfig
    source: str
    tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]
    fp8_states: dict = field(default_factory=dict)

    def layout(self) -> list[tuple[str, tuple, torch.dtype]]:
        """(name, shape, dtype) of what tensors() yields for an official import (vtx's dtypes)."""
        with torch.device("meta"):
            expected = StripedHyena2(self.config).state_dict()
        return [(k, tuple(expected[k].shape), torch.float32 if k.endswith(FP32_PARAMS) else torch.bfloat16)
                for k in key_map(self.config)]


def _open_our_dir(directory: Path, source: str) -> Opened:
    from safetensors import SafetensorError, safe_open

    if not (directory / CONFIG_FILE).exists():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE} (an evo2lite model directory holds "
                              f"{WEIGHTS_FILE} and {CONFIG_FILE})")
    if not (directory / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    config = ModelConfig.load(directory / CONFIG_FILE)
    path = str(directory / WEIGHTS_FILE)
    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            fp8 = {k: f.get_tensor(k) for k in keys if FP8_KEY in k}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None

    def tensors():
        with safe_open(path, framework="pt") as f:
            for k in keys:
                if FP8_KEY not in k:
                    yield k, f.get_tensor(k)

    return Opened(config, source, tensors, _fp8_states_from_ours(fp8))


def _fp8_states_from_ours(flat: dict) -> dict:
    from .fp8 import DelayedScaling

    states = {}
    for key in flat:
        if key.endswith(FP8_KEY + "scale"):
            prefix = key[: -len("scale")]
            states[int(key.split(".")[1])] = DelayedScaling(flat[key], flat[prefix + "scale_inv"],
                                                            flat[prefix + "amax_history"])
    return states


def _open_official(path: Path, config, source: str) -> Opened:
    cfg = resolve_config(config, source)
    raw = read_vortex_file(path)
    _check_vortex_keys(raw, cfg, source)
    return Opened(cfg, source, lambda: iter_vortex_tensors(raw, cfg, source),
                  fp8_states_from_vortex(raw, cfg, source))


def _hf_resolve(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"hf:{repo}: cannot resolve ({str(exc).splitlines()[0]}); check the name, "
                              "your network or HF_HUB_OFFLINE and the cache") from None


def official_in(directory: Path) -> Path | None:
    candidates = sorted(directory.glob("*.pt")) + sorted(directory.glob("*.pt.part0"))
    return candidates[0] if candidates else None


def shipped_name(spec) -> str | None:
    """The full name of the shipped model `spec` names (small, base, evo2lite-small, evo2lite-base), else
    None. As with the Evo 2 names, an existing local path of that name wins (it is opened as a path)."""
    text = str(spec)
    name = SHIPPED_ALIASES.get(text, text)
    return name if name in SHIPPED_MODELS and not Path(text).exists() else None


def _open_shipped(directory: Path, what: str, source: str) -> Opened:
    if not (directory / WEIGHTS_FILE).exists():
        raise CheckpointError(f"the {what} is missing from this installation (no {directory / WEIGHTS_FILE}); "
                              "pass --model DIR | X.pt --config Y.yml | hf:REPO")
    return _open_our_dir(directory, source)


def open_checkpoint(spec: str | Path | None, config: str | Path | ModelConfig | None = None) -> Opened:
    """Open any model spec accepted by --model except the Evo 2 short names (evo2lite.loading resolves
    those): None (the shipped default), a shipped model's name, our directory, an Evo 2 .pt / .pt.part0
    with `config`, hf:REPO."""
    if spec is None:
        return _open_shipped(DEFAULT_MODEL_DIR, "shipped default model evo2lite-small", "shipped default model")
    name = shipped_name(spec)
    if name is not None:
        return _open_shipped(SHIPPED_MODELS[name], f"shipped model {name}", f"shipped model {name}")
    text = str(spec)
    if text.startswith("hf:"):
        repo = text[3:]
        directory = _hf_resolve(repo)
        if (directory / WEIGHTS_FILE).exists():
            return _open_our_dir(directory, text)
        official = official_in(directory)
        if official is None:
            raise CheckpointError(f"{text}: the repository holds neither {WEIGHTS_FILE} nor a .pt checkpoint")
        name = repo.split("/")[-1]
        return _open_official(official, config if config is not None else (name if name in PRESETS else None), text)
    if text in PRESETS and not Path(text).exists():
        raise ConfigError(f"{text!r} is a preset: a shape without weights. Pass a model directory, an Evo 2 "
                          f".pt with --config {text}, or hf:REPO")
    path = Path(text)
    if path.is_dir():
        official = official_in(path)
        # a local copy of an Evo 2 HF repo holds X.pt beside a tiny config.json that is not ours (spec §4.1)
        if (path / WEIGHTS_FILE).exists() or ((path / CONFIG_FILE).exists() and official is None):
            return _open_our_dir(path, str(path))
        if official is None:
            full = SHIPPED_ALIASES.get(text, text)
            hint = "" if full not in SHIPPED_MODELS else f"; this local path hides the shipped model {full}" + (
                f" (--model {full} still names it)" if full != text else "")
            raise CheckpointError(f"{path}: not a model directory (no {CONFIG_FILE}/{WEIGHTS_FILE}, no .pt){hint}")
        path = official
    if re.search(r"\.pt(\.part\d+)?$", path.name) or path.suffix in (".pt", ".pth", ".ckpt"):
        return _open_official(path, config, str(path))
    if not path.exists():
        close = difflib.get_close_matches(text, [*SHIPPED_ALIASES, *SHIPPED_MODELS], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise Evo2LiteError(f"model not found: {text!r} ({hint}expected a model directory, an Evo 2 .pt, "
                            f"hf:REPO, an Evo 2 name, or a shipped model: small (the default) or base)")
    raise CheckpointError(f"{text}: unknown model format (expected a directory or a .pt checkpoint)")


def load_state(spec: str | Path | None, config: str | Path | ModelConfig | None = None
               ) -> tuple[ModelConfig, dict, str]:
    """(config, state dict, description of the source) for any model spec accepted by --model."""
    opened = open_checkpoint(spec, config)
    return opened.config, dict(opened.tensors()), opened.source


def parse_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16}
    if dtype not in names:
        raise Evo2LiteError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    return names[dtype]


def parse_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise Evo2LiteError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise Evo2LiteError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def load_model(spec=None, **kwargs) -> StripedHyena2:
    """evo2lite.loading.load_model (kept here for existing imports)."""
    from .loading import load_model as _load_model

    return _load_model(spec, **kwargs)
