"""apply_context_parallel: run one sequence split across the ranks of a process group (spec §9.6).

The model code stays single-device. Every mixer's sequence part (the seam in evo2lite/mixers.py) is switched,
in place, to a context-parallel subclass of its own class (the way torch's fully_shard does it), so parameter
names, the state dict, parametrizations and the optimizer see the same module. The model then takes each
rank's zigzag shard (evo2lite.parallel.zigzag) and returns that shard's outputs; everything outside the
sequence parts (embedding, norms, projections, gates, MLPs, loss) is per token and needs nothing.

Schemes, per sequence part:
  featurizer (K=3), Hyena-SE (K=7)   "p2p":   halo of the K-1 inputs before each chunk (comm.halo_exchange)
  Hyena-MR (K=128)                   "p2p" (default) or "a2a"
  Hyena-SE, Hyena-MR "p2p", where the fused op (kernels/hyena) would serve one device: the whole mixer core
                                     (featurizer to post-gate) as one hyena_conv per chunk, on the chunk's
                                     projections with the R = (F-1) + (K-1) before it as halo (_CPHyenaMixer)
  Hyena-LR (modal, per channel)      "a2a" (default): all-to-all to channel shards, local FFT conv over the
                                     whole length, all-to-all back; or "p2p": each chunk convolved locally
                                     plus the modal state of all earlier chunks (exact for a sum of
                                     exponentials), the (B, D, S) states all-gathered
  attention                          ring attention (ring_attention.py), rotary at the global positions
Only the gated input u = k * v crosses ranks in the all-to-all (the q gate is applied after it returns, on
the sequence shard), so a channel's q/k/v triple is never split and filter groups are split only at group
boundaries (the size must divide the MR groups for MR a2a, and d_model for LR a2a).

Legend: B batch, l local length 2c, c chunk length, L global length, D d_model, d = D / N, C channels,
K filter length, G filter groups, S poles per channel, F featurizer length, R = (F-1) + (K-1) the fused
op's halo, T = R + c a chunk with its halo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..kernels.fftconv import fftconv
from ..kernels.fir import fir
from ..kernels.modal import modal_conv, modal_state_output_ref, modal_state_update_ref
from ..mixers import AttentionCore, HyenaMixer, MediumFilter, ModalFilter, ShortFilter
from .comm import CPGroup, all_gather, channel_to_seq, halo_exchange, seq_to_channel
from .ring_attention import ring_attention
from .zigzag import ContextParallelError, zigzag_positions

SCHEMES = {"mr": ("p2p", "a2a"), "lr": ("a2a", "p2p")}
# kernels/hyena indexes one sequence with int32 offsets and hands longer inputs to the reference ops
KERNEL_MAX_ELEMENTS = 2 ** 31 - 1


@dataclass
class ContextParallel:
    """What every wrapped module of one model shares: the group, the schemes, an on/off switch."""

    cp: CPGroup
    mr_scheme: str = "p2p"
    lr_scheme: str = "a2a"
    attention_impl: str = "auto"
    enabled: bool = True
    fused_hyena: bool = True  # False: SE/MR always run the wrapped seams (the benchmark's comparison)
    wrapped: list = field(default_factory=list)

    def check_local(self, length: int, min_chunk: int = 1) -> int:
        if length % 2:
            raise ContextParallelError(f"a context-parallel shard must hold two equal zigzag chunks; got a local "
                                       f"length of {length} (shard the sequence with shard_sequence)")
        c = length // 2
        if c < min_chunk:
            raise ContextParallelError(f"zigzag chunks of {c} tokens are shorter than the filter's halo "
                                       f"{min_chunk}; use sequences of at least {2 * self.cp.size * min_chunk} "
                                       f"tokens on {self.cp.size} ranks")
        return c


def _no_state(state) -> None:
    if state is not None:
        raise ContextParallelError("context parallelism runs whole sequences; streaming/decoding with an "
                                   "inference state is single-device (disable it with context_parallel_disabled)")


class _CPShortFilter:
    def forward(self, x_BlC: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        ctx = self._cp
        if not ctx.enabled:
            return self._cp_base.forward(self, x_BlC, state)
        _no_state(state)
        K = self.h.shape[1]
        c = ctx.check_local(x_BlC.shape[1], K - 1)
        if K == 1:
            return fir(x_BlC, self.h, current_tap="last")
        halo_a, halo_b = halo_exchange(x_BlC, K, ctx.cp)
        y_a = fir(x_BlC[:, :c], self.h, tail_BKC=halo_a, current_tap="last")
        y_b = fir(x_BlC[:, c:], self.h, tail_BKC=halo_b, current_tap="last")
        return torch.cat([y_a, y_b], dim=1)


class _CPMediumFilter:
    def forward(self, u_BlD: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        ctx = self._cp
        if not ctx.enabled:
            return self._cp_base.forward(self, u_BlD, state)
        _no_state(state)
        G, K = self.h.shape
        D = u_BlD.shape[-1]
        if ctx.mr_scheme == "a2a":
            ctx.check_local(u_BlD.shape[1])
            n, r = ctx.cp.size, ctx.cp.rank
            u_BLd = seq_to_channel(u_BlD, ctx.cp)
            g, d = G // n, D // n
            h_Ld = self.h[r * g:(r + 1) * g].float().repeat_interleave(d // g, dim=0).t()
            s_BLd = fftconv(u_BLd, h_Ld) + self.D[r * d:(r + 1) * d].float() * u_BLd.float()
            return channel_to_seq(s_BLd, ctx.cp)
        c = ctx.check_local(u_BlD.shape[1], K - 1)
        h_LD = self.filter_LD(D)
        halo_a, halo_b = halo_exchange(u_BlD, K, ctx.cp)
        # each chunk with its halo as left context; the halo's own outputs belong to the previous chunk
        s_a = fftconv(torch.cat([halo_a, u_BlD[:, :c]], dim=1), h_LD)[:, K - 1:]
        s_b = fftconv(torch.cat([halo_b, u_BlD[:, c:]], dim=1), h_LD)[:, K - 1:]
        return torch.cat([s_a, s_b], dim=1) + self.D.float() * u_BlD.float()


class _CPModalFilter:
    def forward(self, u_BlD: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        ctx = self._cp
        if not ctx.enabled:
            return self._cp_base.forward(self, u_BlD, state)
        _no_state(state)
        c = ctx.check_local(u_BlD.shape[1])
        n, r = ctx.cp.size, ctx.cp.rank
        D = u_BlD.shape[-1]
        if ctx.lr_scheme == "a2a":
            d = D // n
            u_BLd = seq_to_channel(u_BlD, ctx.cp)
            sl = slice(r * d, (r + 1) * d)
            s_BLd = modal_conv(u_BLd, self.log_poles[sl], self.residues[sl], self.D[sl], backend=self.backend)
            return channel_to_seq(s_BLd, ctx.cp)
        # p2p (modal state passing): y[chunk g] = h * u[chunk g] + D u + what the state after chunks 0..g-1
        # adds (the state's part in reference ops, so its gradient reaches the earlier chunks' ranks)
        log_poles, residues = self.log_poles, self.residues
        u_a, u_b = u_BlD[:, :c], u_BlD[:, c:]
        s_a = modal_conv(u_a, log_poles, residues, self.D, backend=self.backend)
        s_b = modal_conv(u_b, log_poles, residues, self.D, backend=self.backend)
        own_2BDS = torch.stack([modal_state_update_ref(None, u_a, log_poles),
                                modal_state_update_ref(None, u_b, log_poles)])
        states = all_gather(own_2BDS, ctx.cp)  # (N, 2, B, D, S): chunk g is states[g, 0] or [2N-1-g, 1]
        decay_DS = torch.exp(c * log_poles.float())

        def before(g: int) -> torch.Tensor | None:  # the state after chunks 0..g-1, from zero
            sigma = None
            for j in range(g):
                chunk = states[j, 0] if j < n else states[2 * n - 1 - j, 1]
                sigma = chunk if sigma is None else decay_DS * sigma + chunk
            return sigma

        sigma_a, sigma_b = before(r), before(2 * n - 1 - r)
        if sigma_a is not None:
            s_a = s_a + modal_state_output_ref(sigma_a, log_poles, residues, c)
        s_b = s_b + modal_state_output_ref(sigma_b, log_poles, residues, c)
        return torch.cat([s_a, s_b], dim=1)


class _CPHyenaMixer:
    """Hyena-SE, and Hyena-MR under the p2p scheme, on the fused op when it would serve one device (backend
    "triton", or "auto" on CUDA): every output of a chunk reads only the R = (F-1) + (K-1) projections z before
    it (HyenaMixer._reach), so each chunk runs hyena_conv on [R halo rows, chunk] and drops the halo's outputs.
    One exchange of R rows of z (B, R, 3D) per chunk replaces the featurizer's and the filter's halos, and the
    fp32 temporaries of the reference ops go. Everything else (LR, MR a2a, the reference backend, CPU without
    "triton", chunks shorter than R) runs the wrapped seams."""

    def _fused(self, a_BLD: torch.Tensor, state: dict | None) -> bool:
        # CP switched off (one rank evaluating, streaming): the seams run single-device, so the fused op serves
        # exactly as without CP
        return not self._cp.enabled and self._fusable(a_BLD, state)

    def forward(self, a_BLD: torch.Tensor, state: dict | None = None, position: int = 0) -> torch.Tensor:
        ctx = self._cp
        if (not ctx.enabled or not ctx.fused_hyena or not self._fusable(a_BLD, state)  # LR: not fusable
                or (isinstance(self.filter, MediumFilter) and ctx.mr_scheme != "p2p")
                or a_BLD.shape[1] < 2 * self._reach()):
            return self._cp_base.forward(self, a_BLD, state, position)
        R = self._reach()
        _no_state(state)
        c = ctx.check_local(a_BLD.shape[1], R)
        z_BlC = self.in_proj(a_BLD)
        halo_a, halo_b = halo_exchange(z_BlC, R + 1, ctx.cp)  # zeros before the sequence's first chunk
        y_a = _fused_after(self, torch.cat([halo_a, z_BlC[:, :c]], dim=1), R)
        y_b = _fused_after(self, torch.cat([halo_b, z_BlC[:, c:]], dim=1), R)
        return self.out_proj(torch.cat([y_a, y_b], dim=1))


def _fused_after(mixer, z_BTC: torch.Tensor, R: int) -> torch.Tensor:
    """The fused op's outputs at positions R.. of z (its first R rows are context only), in pieces short enough
    for the kernels (at 1M tokens on 2 ranks a chunk of the 7B shape is not), each with its own R rows before."""
    T = z_BTC.shape[1]
    step = max(1, KERNEL_MAX_ELEMENTS // z_BTC.shape[2] - R)
    pieces = [mixer._fused_core(z_BTC[:, s:s + R + step])[:, R:] for s in range(0, T - R, step)]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


class _CPAttentionCore:
    def forward(self, q_BHlE, k_BHTE, v_BHTE):
        ctx = self._cp
        if not ctx.enabled:
            return self._cp_base.forward(self, q_BHlE, k_BHTE, v_BHTE)
        if k_BHTE.shape[2] != q_BHlE.shape[2]:
            _no_state({})
        ctx.check_local(q_BHlE.shape[2])
        return ring_attention(q_BHlE, k_BHTE, v_BHTE, ctx.cp, ctx.attention_impl)

    def positions(self, start: int, length: int, device) -> torch.Tensor:
        ctx = self._cp
        if not ctx.enabled:
            return self._cp_base.positions(self, start, length, device)
        ctx.check_local(length)
        return start + zigzag_positions(length * ctx.cp.size, ctx.cp.size, ctx.cp.rank, device)


_MIXINS = ((ShortFilter, _CPShortFilter), (MediumFilter, _CPMediumFilter), (ModalFilter, _CPModalFilter),
           (AttentionCore, _CPAttentionCore), (HyenaMixer, _CPHyenaMixer))
_CLASSES: dict[type, type] = {}


def _cp_class(cls: type, mixin: type) -> type:
    # the original class stays the first base (what torch's parametrize expects when it unwraps)
    if cls not in _CLASSES:
        body = {k: v for k, v in vars(mixin).items() if callable(v)}
        _CLASSES[cls] = type(f"ContextParallel{cls.__name__}", (cls,), {**body, "_cp_base": cls})
    return _CLASSES[cls]


def _resolve_group(mesh_or_group, dim: str):
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(mesh_or_group, DeviceMesh):
        if mesh_or_group.ndim == 1:
            return mesh_or_group.get_group()
        if dim not in (mesh_or_group.mesh_dim_names or ()):
            raise ContextParallelError(f"the device mesh has no {dim!r} dimension: {mesh_or_group.mesh_dim_names}")
        return mesh_or_group.get_group(dim)
    return mesh_or_group


def validate(config, size: int, mr_scheme: str, lr_scheme: str) -> None:
    """One-line errors for shapes a context-parallel size cannot split."""
    if mr_scheme not in SCHEMES["mr"] or lr_scheme not in SCHEMES["lr"]:
        raise ContextParallelError(f"schemes: MR is one of {SCHEMES['mr']}, LR one of {SCHEMES['lr']}; got "
                                   f"{mr_scheme!r}, {lr_scheme!r}")
    if lr_scheme == "a2a" and "L" in config.layout and config.d_model % size:
        raise ContextParallelError(f"context-parallel size {size} must divide d_model {config.d_model} for the "
                                   "Hyena-LR all-to-all (or use the p2p scheme)")
    if mr_scheme == "a2a" and "M" in config.layout and config.num_mr_groups % size:
        raise ContextParallelError(f"context-parallel size {size} must divide the {config.num_mr_groups} Hyena-MR "
                                   "filter groups for the MR all-to-all (or use the p2p scheme)")


def apply_context_parallel(model, mesh_or_group=None, *, mr_scheme: str = "p2p", lr_scheme: str = "a2a",
                           attention_impl: str = "auto", dim: str = "cp") -> ContextParallel:
    """Make `model` (a StripedHyena2) run on zigzag shards across `mesh_or_group`: a ProcessGroup, a 1-D
    DeviceMesh, a DeviceMesh with a `dim` dimension, or None (the default group). In place; returns the
    shared ContextParallel handle (`.enabled` switches it off, see `context_parallel_disabled`).

    After it, call the model on `shard_sequence(ids, size, rank)` on every rank of the group (the same
    sequence everywhere) and gather outputs with `gather_sequence`; inference states are not supported.
    Sequences must be multiples of 2 x size long, with chunks no shorter than the longest FIR halo."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ContextParallelError("context parallelism needs torch.distributed: launch with torchrun "
                                   "(init_distributed) first")
    cp = CPGroup.of(_resolve_group(mesh_or_group, dim))
    validate(model.config, cp.size, mr_scheme, lr_scheme)
    if getattr(model, "_context_parallel", None) is not None:
        raise ContextParallelError("apply_context_parallel was already applied to this model")
    ctx = ContextParallel(cp=cp, mr_scheme=mr_scheme, lr_scheme=lr_scheme, attention_impl=attention_impl)
    model._context_parallel = ctx
    if cp.size == 1:
        return ctx
    for module in model.modules():
        for base, mixin in _MIXINS:
            if isinstance(module, base):
                module.__class__ = _cp_class(type(module), mixin)
                module._cp = ctx
                ctx.wrapped.append(module)
                break
    return ctx


class context_parallel_disabled:
    """`with context_parallel_disabled(model):` runs the wrapped model on one device (e.g. evaluation on
    rank 0 only, or a stateful stream)."""

    def __init__(self, model) -> None:
        self.ctx = getattr(model, "_context_parallel", None)

    def __enter__(self):
        self.prev = self.ctx.enabled if self.ctx is not None else None
        if self.ctx is not None:
            self.ctx.enabled = False
        return self

    def __exit__(self, *exc) -> None:
        if self.ctx is not None:
            self.ctx.enabled = self.prev
