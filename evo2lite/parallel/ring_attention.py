"""Ring attention over zigzag shards: causal softmax attention of a sequence split across N ranks.

Every rank keeps its queries (chunks r and 2N-1-r) and passes its keys/values around the ring: at step s it
holds the K/V of rank src = r - s (mod N), attends to the chunks it may see, and merges the partial results
with their log-sum-exps (online softmax). The next K/V block is already in flight while a block computes.
Backward (explicit, as flash attention's): K/V travel the ring again with their gradient accumulators; each
block's gradients come from the final output and log-sum-exp, so no partial result is stored. Attention
memory per rank is O(L/N): no rank ever holds more than two K/V blocks or any L x L matrix.

Zigzag visibility of query chunk gq to key chunk gk: full if gk < gq, causal if equal, none if gk > gq:
  src == r : (qa, ka) causal, (qb, ka) full, (qb, kb) causal
  src <  r : (qa, ka) full,   (qb, ka) full
  src >  r : (qb, ka) full,   (qb, kb) full
so every rank does two full blocks' work at every step (load balance).

Legend: B batch, H heads, l local length 2c, c chunk length, E head size.
"""

from __future__ import annotations

import math

import torch

from .comm import CPGroup, ring_shift, wait


def _blocks(rank: int, src: int, c: int) -> list[tuple[slice, slice, bool]]:
    a, b = slice(0, c), slice(c, 2 * c)
    if src == rank:
        return [(a, a, True), (b, a, False), (b, b, True)]
    if src < rank:
        return [(a, a, False), (b, a, False)]
    return [(b, a, False), (b, b, False)]


# --- one block: reference (plain PyTorch, fp32) ---------------------------------------------------------

def _scores_ref(q, k, causal, scale):
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if causal:
        n = s.shape[-1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return s


def block_forward_ref(q, k, v, causal: bool, scale: float):
    """(o, lse) of softmax(q k^T scale) v over one block: o fp32 (B, H, c, E), lse fp32 (B, H, c)."""
    s = _scores_ref(q, k, causal, scale)
    lse = s.logsumexp(-1)
    return torch.matmul((s - lse.unsqueeze(-1)).exp(), v.float()), lse


def block_backward_ref(do, q, k, v, o, lse, causal: bool, scale: float):
    """(dq, dk, dv) of one block given the *final* output o and log-sum-exp lse of its query rows:
    p = exp(s - lse) is then this block's share of the global softmax, and
    ds = p * (dp - rowsum(do * o)) as in flash attention's backward. fp32."""
    p = (_scores_ref(q, k, causal, scale) - lse.unsqueeze(-1)).exp()
    do = do.float()
    dv = torch.matmul(p.transpose(-1, -2), do)
    dp = torch.matmul(do, v.float().transpose(-1, -2))
    ds = p * (dp - (do * o.float()).sum(-1, keepdim=True))
    return torch.matmul(ds, k.float()) * scale, torch.matmul(ds.transpose(-1, -2), q.float()) * scale, dv


# --- one block: fused kernels (torch's flash / memory-efficient attention, which return the LSE) --------

# The CUDA kernels' dropout RNG state, as their forward returns it, for their backward (unused: no dropout,
# but the backward's argument checks want tensors of the right kind).
_RNG_STATE: dict = {}


def block_forward_fused(q, k, v, causal: bool, scale: float):
    aten = torch.ops.aten
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if q.device.type == "cpu":
        o, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    elif q.dtype in (torch.float16, torch.bfloat16):
        out = aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
        o, lse = out[:2]
        _RNG_STATE["flash", q.device] = (out[6], out[7])
    else:
        o, lse, seed, offset = aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal,
                                                                            scale=scale)
        _RNG_STATE["efficient", q.device] = (seed, offset, lse.shape[-1] - q.shape[2])
        lse = lse[..., :q.shape[2]]  # the kernel may pad the query dim of its LSE
    return o.float(), lse.float()


def block_backward_fused(do, q, k, v, o, lse, causal: bool, scale: float):
    aten = torch.ops.aten
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    do, o = do.to(q.dtype).contiguous(), o.to(q.dtype).contiguous()
    if q.device.type == "cpu":
        dq, dk, dv = aten._scaled_dot_product_flash_attention_for_cpu_backward(
            do, q, k, v, o, lse.contiguous(), 0.0, causal, scale=scale)
    elif q.dtype in (torch.float16, torch.bfloat16):
        seed, offset = _RNG_STATE["flash", q.device]
        dq, dk, dv = aten._scaled_dot_product_flash_attention_backward(
            do, q, k, v, o, lse.contiguous(), None, None, q.shape[2], k.shape[2], 0.0, causal, seed, offset,
            scale=scale)
    else:
        seed, offset, pad = _RNG_STATE["efficient", q.device]  # pad: the LSE layout its forward returned
        lse_p = torch.nn.functional.pad(lse, (0, pad)).contiguous()
        dq, dk, dv, _ = aten._scaled_dot_product_efficient_attention_backward(
            do, q, k, v, None, o, lse_p, seed, offset, 0.0, [True, True, True, False], causal, scale=scale)
    return dq.float(), dk.float(), dv.float()


IMPLS = {"reference": (block_forward_ref, block_backward_ref), "fused": (block_forward_fused, block_backward_fused)}


def _merge(o_acc, lse_acc, o_blk, lse_blk):
    """Online softmax: combine two partial attentions by their log-sum-exps (in place on the accumulators)."""
    lse_new = torch.logaddexp(lse_acc, lse_blk)
    o_acc.mul_((lse_acc - lse_new).exp().unsqueeze(-1)).add_(o_blk * (lse_blk - lse_new).exp().unsqueeze(-1))
    lse_acc.copy_(lse_new)


class RingAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_BHlE, k_BHlE, v_BHlE, cp: CPGroup, impl: str):
        fwd = IMPLS[impl][0]
        r, n = cp.rank, cp.size
        B, H, l, E = q_BHlE.shape
        c, scale = l // 2, 1.0 / math.sqrt(E)
        q = q_BHlE.contiguous()
        o = q.new_zeros(B, H, l, E, dtype=torch.float32)
        lse = q.new_full((B, H, l), float("-inf"), dtype=torch.float32)
        kv = torch.stack([k_BHlE, v_BHlE])
        for s in range(n):
            src = (r - s) % n
            nxt, reqs = ring_shift(kv, cp) if s < n - 1 else (None, [])
            for qs, ks, causal in _blocks(r, src, c):
                o_b, lse_b = fwd(q[:, :, qs], kv[0][:, :, ks].contiguous(), kv[1][:, :, ks].contiguous(), causal, scale)
                o_v, lse_v = o[:, :, qs], lse[:, :, qs]
                _merge(o_v, lse_v, o_b, lse_b)
            wait(reqs)
            kv = nxt
        out = o.to(q.dtype)
        ctx.save_for_backward(q, k_BHlE, v_BHlE, out, lse)
        ctx.cp, ctx.impl = cp, impl
        return out

    @staticmethod
    def backward(ctx, do_BHlE):
        q, k, v, out, lse = ctx.saved_tensors
        cp, bwd = ctx.cp, IMPLS[ctx.impl][1]
        r, n = cp.rank, cp.size
        l, E = q.shape[2], q.shape[3]
        c, scale = l // 2, 1.0 / math.sqrt(E)
        do = do_BHlE.contiguous()
        dq = torch.zeros_like(q, dtype=torch.float32)
        kv = torch.stack([k, v])
        dkv = torch.zeros_like(kv, dtype=torch.float32)
        for s in range(n):
            src = (r - s) % n
            nxt, reqs = ring_shift(kv, cp) if s < n - 1 else (None, [])
            for qs, ks, causal in _blocks(r, src, c):
                dq_b, dk_b, dv_b = bwd(do[:, :, qs], q[:, :, qs], kv[0][:, :, ks].contiguous(),
                                       kv[1][:, :, ks].contiguous(), out[:, :, qs], lse[:, :, qs], causal, scale)
                dq[:, :, qs] += dq_b
                dkv[0][:, :, ks] += dk_b
                dkv[1][:, :, ks] += dv_b
            # the gradient accumulator follows its K/V block; after the last step it belongs to rank+1
            dkv, dreqs = ring_shift(dkv, cp)
            wait(reqs + dreqs)
            kv = nxt
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None


def ring_attention(q_BHlE, k_BHlE, v_BHlE, cp: CPGroup, impl: str = "auto"):
    """Causal attention of the zigzag-sharded sequence (queries, keys and values of this rank's two chunks,
    rotary already applied at the global positions). impl: "reference" (plain PyTorch per block, fp32),
    "fused" (torch's flash / memory-efficient kernels) or "auto" (fused)."""
    if impl == "auto":
        impl = "fused"
    if impl not in IMPLS:
        raise ValueError(f"unknown ring attention impl {impl!r}; use auto, fused or reference")
    return RingAttentionFn.apply(q_BHlE, k_BHlE, v_BHlE, cp, impl)


__all__ = ["ring_attention", "block_forward_ref", "block_backward_ref"]
