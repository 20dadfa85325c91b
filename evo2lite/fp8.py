"""FP8 input projections, as Transformer Engine runs Evo 2's Hyena `projections` (spec §2.10).

vtx wraps each Hyena input projection in a TE Linear under `DelayedScaling(Format.HYBRID,
amax_history_len=16, amax_compute_algo="max")`, zero-padding the rows to a multiple of 16. The rules this
module reproduces, each pinned by a test (tests/unit/test_fp8.py), checked against TE's source
(transformer_engine/common/recipe/delayed_scaling.cu, pytorch/module/base.py):

1. HYBRID = E4M3 for the forward tensors (input, weight; max 448), E5M2 only for gradients.
2. Cast: q = saturate(x * scale) to E4M3, round to nearest even; the amax of x (before scaling) is
   written into row 0 of the amax history.
3. GEMM: y = (q_x q_w^T) * scale_inv_x * scale_inv_w, bf16 out; on Hopper cuBLASLt with fast
   (reduced-precision) accumulation, which `torch._scaled_mm(..., use_fast_accum=True)` calls too.
4. After the call (the fp8_autocast exit): amax = max over the whole history; the history rolls by
   one (row i <- row i+1, the last row <- the old row 0) and row 0 is zeroed; scale = 448 / amax / 2^margin
   when amax is finite and positive, else the old scale; scale_inv = 1 / scale.
5. The first call after loading uses the checkpoint's scales (`projections._extra_state`).

Backends: "scaled_mm" (Hopper: exact up to cuBLAS's own choices), "mmaemu" (the PyPI package's bit-exact
model of an H100 PCIe's TE GEMM, any device; slow on CPU), "emulate" (this module's reference: the same
quantisation, then an fp32 matmul; NOT the tensor cores' truncating accumulation, so inexact).

Legend: N rows (batch x length, padded), K in features (D), C out features (3D), T history length.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn

from .errors import CheckpointError, Evo2LiteError

E4M3_MAX = 448.0
AMAX_HISTORY_LEN = 16
PAD_MULTIPLE = 16
FWD_INPUT, FWD_WEIGHT, FWD_OUTPUT = 0, 1, 2  # TE's forward meta slots for one GEMM
BACKENDS = ("scaled_mm", "mmaemu", "emulate")


@dataclass
class DelayedScaling:
    """One TE Linear's forward FP8 meta: scale (3,), scale_inv (3,), amax_history (T, 3), fp32."""

    scale: torch.Tensor
    scale_inv: torch.Tensor
    amax_history: torch.Tensor
    margin: float = 0.0

    @classmethod
    def fresh(cls, device=None) -> "DelayedScaling":
        """TE's initial meta: scales 1, empty history."""
        ones = torch.ones(3, dtype=torch.float32, device=device)
        return cls(ones, ones.clone(), torch.zeros(AMAX_HISTORY_LEN, 3, dtype=torch.float32, device=device))

    def to(self, device) -> "DelayedScaling":
        return DelayedScaling(self.scale.to(device), self.scale_inv.to(device), self.amax_history.to(device),
                              self.margin)

    def record(self, slot: int, amax: torch.Tensor) -> None:
        self.amax_history[0, slot] = amax.float()

    def update(self) -> None:
        self.amax_history, self.scale, self.scale_inv = amax_and_scale_update(
            self.amax_history, self.scale, self.margin)


def amax_and_scale_update(amax_history_TS: torch.Tensor, scale_S: torch.Tensor, margin: float = 0.0,
                          fp8_max: float = E4M3_MAX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TE's delayed-scaling update (rule 4), amax_compute_algo="max": (history, scale, scale_inv)."""
    amax_S = amax_history_TS.max(dim=0).values
    history = torch.roll(amax_history_TS, -1, dims=0)
    history[0] = 0
    scaled_max = fp8_max * 2.0 ** -margin
    ok = torch.isfinite(amax_S) & (amax_S > 0)
    scale = torch.where(ok, scaled_max / torch.where(ok, amax_S, 1.0), scale_S)
    return history, scale, 1.0 / scale


def quantize_e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rule 2: E4M3 of x * scale in fp32, saturated to +-448 (torch's own cast would overflow to NaN)."""
    return (x.float() * scale.float()).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def pad_rows(x_NK: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Zero rows up to a multiple of `multiple` (vtx's pad_to_multiple; zeros change no amax)."""
    extra = -x_NK.shape[0] % multiple
    return torch.nn.functional.pad(x_NK, (0, 0, 0, extra)) if extra else x_NK


def fp8_gemm_ref(q_NK: torch.Tensor, w_CK: torch.Tensor, scale_inv_x: torch.Tensor,
                 scale_inv_w: torch.Tensor) -> torch.Tensor:
    """Rule 3 with an fp32 accumulation (the products of two E4M3 values are exact in fp32; only the
    summation order and the tensor cores' truncation differ from Hopper). bf16 out."""
    acc_NC = q_NK.float() @ w_CK.float().t()
    return (acc_NC * (scale_inv_x.float() * scale_inv_w.float())).to(torch.bfloat16)


def fp8_gemm(q_NK: torch.Tensor, w_CK: torch.Tensor, scale_inv_x: torch.Tensor, scale_inv_w: torch.Tensor,
             backend: str) -> torch.Tensor:
    if backend == "scaled_mm":
        # fresh 0-d copies: the scales are elements of TE's (3,) meta vectors, and cuBLASLt refuses a scale
        # pointer that is not 16-byte aligned (CUBLAS_STATUS_NOT_SUPPORTED, seen on the H200)
        return torch._scaled_mm(q_NK, w_CK.t(), scale_a=scale_inv_x.reshape(()).clone(),
                                scale_b=scale_inv_w.reshape(()).clone(), out_dtype=torch.bfloat16,
                                use_fast_accum=True)
    if backend == "mmaemu":
        import mmaemu
        from mmaemu.errors import MmaemuError

        try:
            return mmaemu.scaled_mm(q_NK, w_CK.t(), scale_inv_x.reshape(()), scale_inv_w.reshape(()),
                                    out_dtype=torch.bfloat16, use_fast_accum=True, profile="hopper-te")
        except MmaemuError as exc:  # e.g. a GEMM shape outside what it has recorded of the H100's cuBLASLt
            raise Evo2LiteError(f"--fp8 mmaemu cannot compute this model's FP8 projections exactly "
                                f"({str(exc).split(':')[0]}); use another --fp8 backend") from None
    return fp8_gemm_ref(q_NK, w_CK, scale_inv_x, scale_inv_w)


class Fp8Linear(nn.Module):
    """A bias-free Linear whose forward runs as TE's FP8 Linear (rules 1-5). Keeps the parameter name
    `weight`, so state dicts are unchanged; the scaling state is not a parameter (inference only)."""

    def __init__(self, linear: nn.Linear, scaling: DelayedScaling, backend: str) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"FP8 backend must be one of {BACKENDS}, got {backend!r}")
        self.weight = linear.weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scaling = scaling.to(linear.weight.device)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_NK = pad_rows(x.reshape(-1, self.in_features))
        s = self.scaling
        q_NK = quantize_e4m3(x_NK, s.scale[FWD_INPUT])
        w_CK = quantize_e4m3(self.weight, s.scale[FWD_WEIGHT])
        y_NC = fp8_gemm(q_NK, w_CK, s.scale_inv[FWD_INPUT], s.scale_inv[FWD_WEIGHT], self.backend)
        # the scaling state outlives the call: keep it a normal tensor, usable in and out of inference_mode
        with torch.inference_mode(False), torch.no_grad():
            s.record(FWD_INPUT, x_NK.detach().abs().amax())
            s.record(FWD_WEIGHT, self.weight.detach().abs().amax())
            s.update()
        n = x.numel() // self.in_features
        return y_NC[:n].reshape(*x.shape[:-1], self.out_features).to(x.dtype)


# --- checkpoint state ------------------------------------------------------------------------------

def decode_extra_state(value, key: str) -> DelayedScaling | None:
    """A TE `_extra_state` (io.BytesIO in TE 1.x files, a uint8 tensor in later ones) -> its forward
    scaling state, read with torch.load(weights_only=True); None when it holds no FP8 state."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:
            return None
        data = value.detach().cpu().to(torch.uint8).numpy().tobytes()
    elif isinstance(value, io.BytesIO):
        data = value.getvalue()
    else:
        raise CheckpointError(f"{key}: unexpected FP8 state of type {type(value).__name__}")
    if not data:
        return None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe global (e.g. a TE recipe object) or corrupt bytes
        unsafe = _unsafe_globals(data)
        why = f"it pickles {', '.join(unsafe)}" if unsafe else str(exc).splitlines()[0]
        raise CheckpointError(f"{key}: cannot read the FP8 scaling state safely ({why}); evo2lite reads only "
                              "tensors and plain values (weights_only=True)") from None
    if state is None:
        return None
    try:
        scale = state["scale_fwd"].float().reshape(-1)
        history = state["amax_history_fwd"].float()
        scale_inv = state.get("scale_inv_fwd", 1.0 / scale).float().reshape(-1)
    except (KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{key}: FP8 state lacks scale_fwd / amax_history_fwd") from None
    if scale.numel() != 3 or history.dim() != 2 or history.shape[1] != 3:
        raise CheckpointError(f"{key}: FP8 state for one GEMM expected (3 scales, T x 3 history), found "
                              f"{tuple(scale.shape)} and {tuple(history.shape)}")
    return DelayedScaling(scale.clone(), scale_inv.clone(), history.clone())


def _unsafe_globals(data: bytes) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except Exception:
        return []


# --- where FP8 runs --------------------------------------------------------------------------------

def needs_fp8(config) -> bool:
    """The checkpoints that are only accurate with FP8 projections: 1B, 20B, 40B (evo2 runs its 7B models in
    bf16 when TE is absent; spec §2.10)."""
    return bool(config.fp8_input_projections) and "7b" not in config.name.lower()


def exact_backend(device: torch.device) -> str | None:
    """The backend that reproduces the official FP8 GEMMs on `device`, or None."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0):
        return "scaled_mm"
    if device.type == "cuda":
        try:
            import mmaemu  # noqa: F401
        except ImportError:
            return None
        return "mmaemu"
    return None


def choose_fp8(config, device: torch.device, fp8: str = "auto", allow_inexact: bool = False) -> str:
    """'off' or a backend for the Hyena input projections.

    fp8: "auto" (FP8 where the config asks for it and an exact backend exists; the 7B models fall back to
    bf16 as evo2 does; 1B/20B/40B refuse without one unless allow_inexact, then "emulate"), "off", or a
    backend name."""
    if fp8 not in ("auto", "off", *BACKENDS):
        raise Evo2LiteError(f"--fp8 must be auto, off, {', '.join(BACKENDS)}; got {fp8!r}")
    if fp8 == "mmaemu":
        try:
            import mmaemu  # noqa: F401
        except ImportError:
            raise Evo2LiteError('--fp8 mmaemu needs the mmaemu package: pip install "evo2lite[fp8]"') from None
    if fp8 == "scaled_mm" and exact_backend(device) != "scaled_mm":
        raise Evo2LiteError("--fp8 scaled_mm needs a Hopper GPU (sm_90): torch._scaled_mm elsewhere does not "
                            "accumulate as Hopper does")
    if fp8 != "auto":
        chosen = fp8
    elif not config.fp8_input_projections:
        return "off"
    else:
        chosen = exact_backend(device) or ("emulate" if needs_fp8(config) else "off")
    if needs_fp8(config) and chosen in ("emulate", "off") and not allow_inexact:
        raise Evo2LiteError(
            f"{config.name or 'this model'} is only accurate with FP8 input projections computed as on Hopper "
            f"(spec §2.10), which {device.type} cannot do exactly: run on an H100/H200, install mmaemu for another "
            "CUDA GPU, or pass --allow-inexact (EVO2LITE_ALLOW_INEXACT=1) to run the FP8 emulation anyway")
    return chosen


def enable_fp8(model, backend: str, states: dict[int, DelayedScaling] | None = None) -> None:
    """Replace every Hyena block's input projection with an Fp8Linear (scaling state from `states`, keyed
    by block index, else TE's fresh state)."""
    states = states or {}
    for i, block in enumerate(model.blocks):
        if block.kind == "A":
            continue
        scaling = states.get(i) or DelayedScaling.fresh()
        proj = block.mixer.in_proj
        if isinstance(proj, Fp8Linear):
            proj.scaling, proj.backend = scaling.to(proj.weight.device), backend
        else:
            block.mixer.in_proj = Fp8Linear(proj, scaling, backend)
