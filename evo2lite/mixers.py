"""The sequence mixers of StripedHyena 2 (spec §2.4-2.9): HyenaSE, HyenaMR, HyenaLR and Attention.

Legend: B batch, L chunk length, D d_model, C = 3D projection channels, G filter groups, K filter length,
S poles per channel, H heads, E head size, T cached + new key positions.

Every mixer takes an optional per-block `state` dict (see evo2lite/inference/state.py) and the absolute
position of the chunk's first token; with a state it continues a sequence exactly and updates the dict.
The sequence-mixing part of each mixer is a named submodule (`featurizer` and `filter` for Hyena, `core`
for attention): the seam that context parallelism wraps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from .config import ModelConfig
from .kernels.attention import apply_rotary_ref, attention, rotary_tables
from .kernels.fftconv import fftconv
from .kernels.fir import fir, fir_ref, next_tail
from .kernels.hyena import hyena_conv, triton_available
from .kernels.modal import (modal_conv, modal_filter_ref, modal_hyena, modal_state_output_ref,
                            modal_state_update_ref, resolve_backend as resolve_modal_backend)


BACKENDS = ("auto", "triton", "reference")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def set_backend(model: nn.Module, backend: str) -> None:
    """Set `backend` ("auto" | "triton" | "reference", see HyenaMixer) on every Hyena block in `model`."""
    _check_backend(backend)
    for module in model.modules():
        if isinstance(module, HyenaMixer):
            module.backend = backend


class ShortFilter(nn.Module):
    """A grouped causal FIR: the featurizer (K=3, one filter per channel) or Hyena-SE (K=7, grouped).
    Cross-correlation tap order: the last tap multiplies the current sample (spec §2.8)."""

    def __init__(self, channels: int, groups: int, filter_len: int, state_key: str) -> None:
        super().__init__()
        self.channels, self.state_key = channels, state_key
        self.h = nn.Parameter(torch.zeros(groups, filter_len))

    def forward(self, x_BLC: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        tail = state.get(self.state_key) if state is not None else None
        y_BLC = fir(x_BLC, self.h, tail_BKC=tail, current_tap="last")
        if state is not None:
            state[self.state_key] = next_tail(x_BLC, tail, self.h.shape[1])
        return y_BLC


class MediumFilter(nn.Module):
    """Hyena-MR's inner operator: s = h * u + D u, h grouped, K=128, convolution tap order (h[0] meets the
    current sample), computed by FFT in fp32 as vtx does (spec §2.6)."""

    def __init__(self, d_model: int, groups: int, filter_len: int) -> None:
        super().__init__()
        self.h = nn.Parameter(torch.zeros(groups, filter_len))
        self.D = nn.Parameter(torch.zeros(d_model))

    def filter_LD(self, d_model: int) -> torch.Tensor:
        return self.h.float().repeat_interleave(d_model // self.h.shape[0], dim=0).t()

    def forward(self, u_BLD: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        K = self.h.shape[1]
        h_LD = self.filter_LD(u_BLD.shape[-1])
        tail = state.get("filter_tail") if state is not None else None
        if tail is None:
            s_BLD = fftconv(u_BLD, h_LD)
        else:  # the carried K-1 inputs are the left context; their outputs were emitted before
            s_BLD = fftconv(torch.cat([tail.to(u_BLD.dtype), u_BLD], dim=1), h_LD)[:, K - 1:]
        if state is not None:
            state["filter_tail"] = next_tail(u_BLD, tail, K)
        return s_BLD + self.D.float() * u_BLD.float()


class ModalFilter(nn.Module):
    """Hyena-LR's inner operator: s = h * u + D u with the modal filter h[m] = sum_s R exp(lam m), one per
    channel, in fp32; the state sigma (B, D, S) carries it across chunks exactly (spec §2.7). `backend` is
    set by the HyenaLR mixer that holds it (see `HyenaMixer.backend`): "auto", the chunked Triton kernel on
    CUDA and the chunked PyTorch form on CPU; "triton"; or "reference", the FFT over the materialised filter
    as vtx computes it."""

    backend = "auto"

    # Inference rebuilds the same filter for every batch of equal length: keep the last one when it is
    # small (a few MB); long filters are rebuilt rather than held.
    CACHE_MAX_ELEMENTS = 1 << 22

    def __init__(self, d_model: int, state_size: int) -> None:
        super().__init__()
        self.log_poles = nn.Parameter(torch.zeros(d_model, state_size))
        self.residues = nn.Parameter(torch.zeros(d_model, state_size))
        self.D = nn.Parameter(torch.zeros(d_model))
        self._cached_filter: tuple[tuple, torch.Tensor] | None = None

    def filter_LD(self, L: int) -> torch.Tensor:
        if (torch.is_grad_enabled() or L * self.D.shape[0] > self.CACHE_MAX_ELEMENTS
                or self.log_poles.is_inference()):  # inference tensors keep no version counter
            return modal_filter_ref(self.log_poles, self.residues, L)
        # any change of the parameters (optimizer step, load, cast) changes a version or a pointer
        key = (L, self.log_poles.device, self.log_poles.data_ptr(), self.log_poles._version,
               self.residues.data_ptr(), self.residues._version)
        if self._cached_filter is None or self._cached_filter[0] != key:
            self._cached_filter = (key, modal_filter_ref(self.log_poles, self.residues, L))
        return self._cached_filter[1]

    def forward(self, u_BLD: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        if resolve_modal_backend(self.backend, u_BLD, self.log_poles.shape[1]) != "reference":
            sigma = state.get("sigma") if state is not None else None
            s_BLD, sigma = modal_conv(u_BLD, self.log_poles, self.residues, self.D, sigma,
                                      return_state=True, backend=self.backend)
            if state is not None:
                state["sigma"] = sigma
            return s_BLD
        L = u_BLD.shape[1]
        h_LD = self.filter_LD(L)
        s_BLD = fftconv(u_BLD, h_LD)
        if state is not None:
            sigma = state.get("sigma")
            if sigma is not None:
                s_BLD = s_BLD + modal_state_output_ref(sigma, self.log_poles, self.residues, L)
            state["sigma"] = modal_state_update_ref(sigma, u_BLD, self.log_poles)
        return s_BLD + self.D.float() * u_BLD.float()


class HyenaMixer(nn.Module):
    """y = q * (h * (k v) [+ D k v]) after a bias-free input projection and a length-3 featurizer on all 3D
    channels, with q/k/v interleaved per channel (spec §2.4). SE and MR run featurizer-to-gate as one fused
    Triton op on CUDA (kernels/hyena) unless `backend` is "reference"; LR likewise (kernels/modal's
    `modal_hyena`, which takes the carried featurizer tail and modal state, so any chunk runs fused). An SE/MR
    chunk that continues a sequence (carried FIR tails in `state`) runs fused too when it is longer than the
    filter's reach back (K + featurizer_len - 2 positions): only those first outputs see the carried tails,
    and they are recomputed by the reference ops from the tails; shorter chunks (decode steps) take the
    reference ops.

    `backend` is the one kernel switch of a Hyena block, set per module at call time (`set_backend` sets it on
    every block of a model): "auto" (Triton on CUDA: the fused SE/MR/LR ops; on CPU the reference ops and
    LR's chunked PyTorch form), "triton" (the kernels on any device: CPU only under
    TRITON_INTERPRET=1) or "reference" (the plain PyTorch ops of the spec, LR by the FFT as vtx does)."""

    _backend = "auto"

    def __init__(self, config: ModelConfig, inner: nn.Module) -> None:
        super().__init__()
        d = config.d_model
        self.in_proj = nn.Linear(d, 3 * d, bias=False)
        self.featurizer = ShortFilter(3 * d, 3 * d, config.featurizer_len, "featurizer_tail")
        self.filter = inner
        self.out_proj = nn.Linear(d, d, bias=True)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = _check_backend(value)
        if isinstance(self.filter, ModalFilter):  # LR's long convolution takes the same switch
            self.filter.backend = value

    def _fused(self, a_BLD: torch.Tensor, state: dict | None) -> bool:
        # exact types: a wrapped seam (context parallelism, which runs this op per zigzag chunk itself) keeps its
        # own path; a parametrised filter (training, train_params.make_trainable: h = h_hat * decay) is still its
        # class and runs fused
        return (type(self.featurizer) is ShortFilter
                and type_before_parametrizations(self.filter) in (ShortFilter, MediumFilter)
                and self._fusable(a_BLD, state))

    def _fusable(self, a_BLD: torch.Tensor, state: dict | None) -> bool:
        """Whether the fused SE/MR op serves this call (kind, backend, device, carried state), whatever wraps the
        seams (evo2lite/parallel/context.py asks it)."""
        if (self.backend == "reference" or not isinstance(self.filter, (ShortFilter, MediumFilter))
                or self.featurizer.h.shape[1] != 3):
            return False
        if state is not None and ("featurizer_tail" in state or "filter_tail" in state) \
                and a_BLD.shape[1] <= self._reach():
            return False
        if torch.compiler.is_compiling():  # torch.compile fuses the reference ops itself; no graph break
            return False
        return self.backend == "triton" or triton_available(a_BLD)

    def _fused_lr(self, a_BLD: torch.Tensor, state: dict | None) -> bool:
        # Hyena-LR: featurizer, gates and the modal convolution as one op (kernels/modal) on any chunk: the
        # carried featurizer tail and modal state go into the kernels. A state that carries a gradient (chunks
        # trained through the reference path) keeps the reference ops, which differentiate through it.
        if (self.backend == "reference" or type(self.featurizer) is not ShortFilter
                or type_before_parametrizations(self.filter) is not ModalFilter
                or self.featurizer.h.shape[1] != 3 or self.filter.log_poles.shape[1] != 16
                or torch.compiler.is_compiling()):
            return False
        if state is not None and torch.is_grad_enabled() and any(
                state.get(key) is not None and state[key].requires_grad for key in ("featurizer_tail", "sigma")):
            return False
        return self.backend == "triton" or triton_available(a_BLD)

    def _lr_core(self, z_BLC: torch.Tensor, state: dict | None) -> torch.Tensor:
        tail = state.get("featurizer_tail") if state is not None else None
        sigma = state.get("sigma") if state is not None else None
        out = modal_hyena(z_BLC, self.featurizer.h, self.filter.log_poles, self.filter.residues, self.filter.D,
                          sigma, tail, return_state=state is not None, backend="triton")
        if state is None:
            return out
        state["featurizer_tail"] = next_tail(z_BLC, tail, self.featurizer.h.shape[1])
        state["sigma"] = out[1]
        return out[0]

    def _fused_core(self, z_BLC: torch.Tensor) -> torch.Tensor:
        """The fused SE/MR op, featurizer to post-gate: (B, L, 3D) projections -> (B, L, D)."""
        mr = isinstance(self.filter, MediumFilter)
        return hyena_conv(z_BLC, self.featurizer.h, self.filter.h, self.filter.D if mr else None,
                          current_tap="first" if mr else "last", backend="triton")

    def _reach(self) -> int:
        """Outputs of a chunk that depend on inputs before it: the filter's K - 1 pre-gates back, each of which
        reads featurizer_len - 1 projections further back."""
        return self.filter.h.shape[1] + self.featurizer.h.shape[1] - 2

    def _reference_core(self, z_BLC: torch.Tensor, state: dict | None, dtype: torch.dtype) -> torch.Tensor:
        B, L, C = z_BLC.shape
        z_BLC = self.featurizer(z_BLC, state)
        q_BLD, k_BLD, v_BLD = z_BLC.view(B, L, C // 3, 3).unbind(-1)  # channel 3c -> q, 3c+1 -> k, 3c+2 -> v
        return q_BLD * self.filter(k_BLD * v_BLD, state).to(dtype)

    def _start_state(self, z_BLC: torch.Tensor, state: dict) -> None:
        """The tails the reference path would leave after a first chunk: the last 2 projections and the last
        K-1 pre-gates k v, recomputed on a window wide enough that its zero left padding is the sequence's."""
        K, L, D = self.filter.h.shape[1], z_BLC.shape[1], z_BLC.shape[2] // 3
        state["featurizer_tail"] = next_tail(z_BLC, None, self.featurizer.h.shape[1])
        start = max(0, L - (K - 1) - 2)
        zf_BWC = fir_ref(z_BLC[:, start:], self.featurizer.h, current_tap="last")[:, L - start - min(L, K - 1):]
        _, k_BWD, v_BWD = zf_BWC.view(*zf_BWC.shape[:2], D, 3).unbind(-1)
        state["filter_tail"] = next_tail(k_BWD * v_BWD, None, K)

    def forward(self, a_BLD: torch.Tensor, state: dict | None = None, position: int = 0) -> torch.Tensor:
        if self._fused_lr(a_BLD, state):
            return self.out_proj(self._lr_core(self.in_proj(a_BLD), state))
        if self._fused(a_BLD, state):
            z_BLC = self.in_proj(a_BLD)
            y_BLD = self._fused_core(z_BLC)
            if state is not None:
                if "featurizer_tail" in state:  # the head that reaches back into the carried tails
                    head = self._reach()
                    head_BHD = self._reference_core(z_BLC[:, :head], dict(state), a_BLD.dtype)
                    y_BLD = torch.cat([head_BHD.to(y_BLD.dtype), y_BLD[:, head:]], dim=1)
                self._start_state(z_BLC, state)
            return self.out_proj(y_BLD)
        return self.out_proj(self._reference_core(self.in_proj(a_BLD), state, a_BLD.dtype))


class HyenaSE(HyenaMixer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, ShortFilter(config.d_model, config.num_se_groups, config.se_filter_len,
                                             "filter_tail"))


class HyenaMR(HyenaMixer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, MediumFilter(config.d_model, config.num_mr_groups, config.mr_filter_len))


class HyenaLR(HyenaMixer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, ModalFilter(config.d_model, config.state_size))


class AttentionCore(nn.Module):
    """Causal softmax attention over the cached and new keys (the seam that context parallelism wraps)."""

    def forward(self, q_BHLE, k_BHTE, v_BHTE):
        return attention(q_BHLE, k_BHTE, v_BHTE)

    def positions(self, start: int, length: int, device) -> torch.Tensor:
        """The global positions of the L query tokens (rotary); context parallelism overrides it."""
        return torch.arange(start, start + length, device=device)


class Attention(nn.Module):
    """Multi-head causal self-attention with rotary embeddings over the whole head (GPT-NeoX rotate-half),
    positions divided by the interpolation factor, no GQA, no qkv bias, out-projection with bias."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, self.num_heads, self.head_dim = config.d_model, config.num_heads, config.head_dim
        self.rotary_scale = config.rotary_scale
        self.qkv_proj = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=True)
        self.core = AttentionCore()
        inv_freq = 1.0 / config.rotary_base ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32)
                                                / self.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=True)

    def forward(self, a_BLD: torch.Tensor, state: dict | None = None, position: int = 0) -> torch.Tensor:
        positions_L = self.core.positions(position, a_BLD.shape[1], a_BLD.device)
        return self.step(a_BLD, positions_L, lambda q, k, v: self._concat_cache(state, q, k, v))

    def step(self, a_BLD: torch.Tensor, positions: torch.Tensor, attend) -> torch.Tensor:
        """The one attention path (the full forward, the inference engine's chunks and the decoder's
        tokens all run it): qkv projection, rotary at `positions` ((L,) shared by the rows, or (B, L) one
        position per row and token), then `attend(q_BHLE, k_BHLE, v_BHLE)` stores the new rotated keys and
        values in its cache and returns the attention output (B, H, L, E), then the out-projection.
        Only the cache differs between the paths: `_concat_cache` here (autograd-safe), a preallocated
        buffer in the engine, a static masked buffer in the decoder."""
        B, L, D = a_BLD.shape
        qkv = self.qkv_proj(a_BLD).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLE, k_BHLE, v_BHLE = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # rows are [Q; K; V] (spec §4.3)
        cos, sin = rotary_tables(positions.reshape(-1), self.inv_freq, self.rotary_scale, a_BLD.dtype)
        cos, sin = cos.view(*positions.shape, -1), sin.view(*positions.shape, -1)
        if positions.dim() == 2:  # (B, L, E/2) -> (B, 1, L, E/2): broadcast over the heads
            cos, sin = cos[:, None], sin[:, None]
        q_BHLE, k_BHLE = apply_rotary_ref(q_BHLE, cos, sin), apply_rotary_ref(k_BHLE, cos, sin)
        o_BHLE = attend(q_BHLE, k_BHLE, v_BHLE)
        return self.out_proj(o_BHLE.transpose(1, 2).reshape(B, L, D))

    def _concat_cache(self, state: dict | None, q_BHLE, k_BHLE, v_BHLE) -> torch.Tensor:
        if state is not None:
            if "k" in state:
                k_BHLE = torch.cat([state["k"], k_BHLE], dim=2)
                v_BHLE = torch.cat([state["v"], v_BHLE], dim=2)
            state["k"], state["v"] = k_BHLE, v_BHLE
        return self.core(q_BHLE, k_BHLE, v_BHLE)


MIXERS = {"S": HyenaSE, "M": HyenaMR, "L": HyenaLR, "A": Attention}

