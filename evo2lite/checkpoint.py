"""Checkpoints: our format (a directory with model.safetensors + config.json) and the official Evo 2 /
vortex format (a torch zip pickle of a flat dict, possibly split in byte shards X.pt.part0, .part1, ...,
plus a YAML config), imported and exported exactly as spec §4 says.

Import does what vtx's load_checkpoint does: drops extra keys (unembed.weight duplicate, TE _extra_state),
permutes the Wqkv rows from the stored per-head (h, q|k|v, e) layout to (q|k|v, h, e), and rounds every
parameter to bf16 except log_poles, residues and inv_freq, so fp32 compute matches vtx's fp32 results.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from .config import PRESETS, ModelConfig
from .errors import CheckpointError, ConfigError, Evo2LiteError
from .log import warn
from .model import FP32_PARAMS, StripedHyena2, init_weights_

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "default"

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


def state_dict_from_vortex(raw: dict, config: ModelConfig, source: str = "checkpoint") -> dict:
    """Our state dict (bf16 bulk, fp32 poles/residues/inv_freq) from a vortex flat dict."""
    with torch.device("meta"):
        expected = StripedHyena2(config).state_dict()
    mapping = key_map(config)
    out = {}
    for ours, theirs in mapping.items():
        if theirs not in raw:
            raise CheckpointError(f"{source}: missing tensor {theirs!r} (block kinds from the config: "
                                  f"{config.layout}); is this the right --config?")
        t = raw[theirs]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{source}: {theirs!r} is not a tensor")
        want = expected[ours].shape
        if tuple(t.shape) != _vortex_shape(theirs, want):
            raise CheckpointError(f"{source}: tensor {theirs!r} has shape {tuple(t.shape)}, the config "
                                  f"expects {_vortex_shape(theirs, want)}")
        t = t.reshape(want)
        if ours.endswith("qkv_proj.weight"):
            t = _wqkv_to_runtime(t, config.num_heads)
        out[ours] = _round_like_vtx(ours, t).contiguous()
    extra = sorted(k for k in raw if k not in set(mapping.values()) and not _EXPECTED_EXTRA.search(k))
    if extra:
        warn(f"{source}: dropping {len(extra)} tensor(s) the model does not use: {', '.join(extra)}")
    if "unembed.weight" in raw and isinstance(raw["unembed.weight"], torch.Tensor):
        if not torch.equal(raw["unembed.weight"].to(torch.bfloat16), out["embedding.weight"].to(torch.bfloat16)):
            warn(f"{source}: unembed.weight differs from the embedding; the model ties them and uses "
                 "embedding_layer.weight")
    return out


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

def save_state(config: ModelConfig, state: dict, directory: str | Path) -> Path:
    """Write model.safetensors + config.json atomically (a temp directory renamed into place)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "evo2lite"})
        config.save(tmp / CONFIG_FILE)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def save_model(model: StripedHyena2, directory: str | Path) -> Path:
    return save_state(model.config, model.state_dict(), directory)


def save_vortex(config: ModelConfig, state: dict, path: str | Path) -> Path:
    """Write the official format: OUT.pt (flat dict, vtx's dtypes and layouts) and OUT.yml beside it."""
    import yaml

    from .io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state_dict_to_vortex(state, config), tmp)
    with atomic_path(path.with_suffix(".yml")) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_vortex_yaml(config), sort_keys=False))
    return path


def convert(source: str | Path, output: str | Path, *, config: str | Path | ModelConfig | None = None,
            to: str = "evo2lite") -> Path:
    """Import an official checkpoint into our format (to="evo2lite") or export ours (to="vortex"). The
    tensors pass through unchanged apart from the layout and rounding rules of spec §4, so import ->
    export -> import is bit-exact."""
    if to not in ("evo2lite", "vortex"):
        raise Evo2LiteError(f"--to must be evo2lite or vortex, got {to!r}")
    cfg, state, _ = load_state(source, config)
    return save_state(cfg, state, output) if to == "evo2lite" else save_vortex(cfg, state, output)


def _load_state_into(model: StripedHyena2, state: dict, source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{source}: missing tensor {missing[0]!r}" +
                              (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    for name, tensor in state.items():
        if name not in expected:
            continue
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, the config "
                                  f"expects {tuple(expected[name].shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        warn(f"{source}: dropping {len(extra)} tensor(s) the model does not use: {', '.join(extra)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True, assign=True)


def _read_our_dir(directory: Path) -> tuple[ModelConfig, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (directory / CONFIG_FILE).exists():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE} (an evo2lite model directory holds "
                              f"{WEIGHTS_FILE} and {CONFIG_FILE})")
    if not (directory / WEIGHTS_FILE).exists():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE}")
    config = ModelConfig.load(directory / CONFIG_FILE)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {directory / WEIGHTS_FILE}: {exc}") from None
    return config, state


def _hf_resolve(repo: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"hf:{repo}: cannot resolve ({str(exc).splitlines()[0]}); check the name, "
                              "your network or HF_HUB_OFFLINE and the cache") from None


def _official_in(directory: Path) -> Path | None:
    candidates = sorted(directory.glob("*.pt")) + sorted(directory.glob("*.pt.part0"))
    return candidates[0] if candidates else None


def load_state(spec: str | Path | None, config: str | Path | ModelConfig | None = None
               ) -> tuple[ModelConfig, dict, str]:
    """(config, state dict, description of the source) for any model spec accepted by --model."""
    if spec is None:
        if not (DEFAULT_MODEL_DIR / WEIGHTS_FILE).exists():
            raise CheckpointError("the shipped default model is missing from this installation; "
                                  "pass --model DIR | X.pt --config Y.yml | hf:REPO")
        cfg, state = _read_our_dir(DEFAULT_MODEL_DIR)
        return cfg, state, "shipped default model"
    text = str(spec)
    if text.startswith("hf:"):
        repo = text[3:]
        directory = _hf_resolve(repo)
        if (directory / WEIGHTS_FILE).exists():
            cfg, state = _read_our_dir(directory)
            return cfg, state, text
        official = _official_in(directory)
        if official is None:
            raise CheckpointError(f"{text}: the repository holds neither {WEIGHTS_FILE} nor a .pt checkpoint")
        name = repo.split("/")[-1]
        cfg = resolve_config(config if config is not None else (name if name in PRESETS else None), text)
        return cfg, state_dict_from_vortex(read_vortex_file(official), cfg, text), text
    if text in PRESETS and not Path(text).exists():
        raise ConfigError(f"{text!r} is a preset: a shape without weights. Pass a model directory, an Evo 2 "
                          f".pt with --config {text}, or hf:REPO")
    path = Path(text)
    if path.is_dir():
        official = _official_in(path)
        # a local copy of an Evo 2 HF repo holds X.pt beside a tiny config.json that is not ours (spec §4.1)
        if (path / WEIGHTS_FILE).exists() or ((path / CONFIG_FILE).exists() and official is None):
            cfg, state = _read_our_dir(path)
            return cfg, state, str(path)
        if official is None:
            raise CheckpointError(f"{path}: not a model directory (no {CONFIG_FILE}/{WEIGHTS_FILE}, no .pt)")
        path = official
    if re.search(r"\.pt(\.part\d+)?$", path.name) or path.suffix in (".pt", ".pth", ".ckpt"):
        cfg = resolve_config(config, str(path))
        return cfg, state_dict_from_vortex(read_vortex_file(path), cfg, str(path)), str(path)
    if not path.exists():
        raise Evo2LiteError(f"model not found: {text!r} (expected a model directory, an Evo 2 .pt, "
                            f"hf:REPO, or nothing for the shipped model)")
    raise CheckpointError(f"{text}: unknown model format (expected a directory or a .pt checkpoint)")


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


def load_model(spec: str | Path | None = None, *, config: str | Path | ModelConfig | None = None,
               device: str | torch.device | None = "cpu", dtype: str | torch.dtype | None = None,
               random_init: bool = False, seed: int = 0) -> StripedHyena2:
    """Load a model for inference (eval mode, no grad needed by callers).

    spec: None (the shipped default model), our model directory, an Evo 2 `.pt`/`.pt.part0` with
    `config` (YAML path or preset name), `hf:REPO`, or - with `random_init=True` - a preset name (random
    weights from the spec's initialisation, for tests and benchmarks)."""
    dev = parse_device(device)
    dt = parse_dtype(dtype, dev)
    if random_init:
        cfg = config if isinstance(config, ModelConfig) else PRESETS.get(str(spec)) if spec else None
        if cfg is None:
            raise ConfigError(f"random_init needs a preset name or a ModelConfig, got {spec!r}")
        model = init_weights_(StripedHyena2(cfg), seed)
        source = f"random weights (preset {spec}, seed {seed})"
    else:
        cfg, state, source = load_state(spec, config)
        with torch.device("meta"):
            model = StripedHyena2(cfg)
        _load_state_into(model, {k: v.float() for k, v in state.items()}, source)
        if cfg.fp8_input_projections and "7b" not in cfg.name.lower():
            warn(f"{cfg.name or source} was trained and published with FP8 input projections; evo2lite "
                 "runs them in bf16/fp32, so its outputs differ from the official numbers (FP8 is later work)")
    model.source = source
    return model.cast(dt).to(dev).eval()
