"""Chunked forward with a state: the API that prefill, scoring and embedding of long sequences build on.

`forward_chunk(model, ids, state)` continues the sequence held by `state` by one chunk and updates the
state in place (spec §6.1): FIR tails and the modal state of every Hyena block come from the model's own
mixers (so a chunked pass equals one full pass); attention blocks write their rotated keys and values
into a preallocated KV buffer instead of re-concatenating the whole cache per chunk. `prefill` runs a
prompt through `forward_chunk` in chunks of `chunk_len`, so no more than chunk_len x D intermediates
exist at once, whatever the prompt length; the Hyena-LR state after the prompt is computed directly
(sigma = sum_t p^(L-1-t) u[t], no token-by-token recurrence).

Legend: B batch, L chunk length, D d_model, H heads, E head size, T cached + new positions, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .state import InferenceState

DEFAULT_CHUNK_LEN = 8192
KV_ALIGN = 64  # KV capacities are rounded up to this (alignment for the fused attention kernels)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def is_prefix_view(t: torch.Tensor, buffer: torch.Tensor) -> bool:
    """Whether t is buffer[:, :, :T] (checked by address and strides: views made under
    torch.inference_mode do not record their base)."""
    return (t.data_ptr() == buffer.data_ptr() and t.stride() == buffer.stride()
            and t.shape[:2] == buffer.shape[:2] and t.shape[3:] == buffer.shape[3:])


def kv_buffers(layer: dict, batch: int, heads: int, head_dim: int, needed: int, *, capacity: int | None,
               dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, H, capacity, E) key/value buffers of an attention block holding at least `needed`
    positions, with the layer's cached 'k'/'v' in front. Reuses the layer's buffers when 'k'/'v' are
    views of them and they are large enough; otherwise allocates (zero-filled: a decoder attends over
    masked slots, and 0 * NaN would poison it) and copies the cache in."""
    kc, vc = layer.get("k_cache"), layer.get("v_cache")
    k, v = layer.get("k"), layer.get("v")
    cached = 0 if k is None else k.shape[2]
    in_place = kc is not None and (k is None or (is_prefix_view(k, kc) and is_prefix_view(v, vc)))
    if in_place and kc.shape[2] >= needed and kc.dtype == dtype:
        return kc, vc
    grow = int(kc.shape[2] * 1.5) if in_place else 0  # amortised when fed token by token
    cap = _round_up(max(needed, capacity or 0, grow), KV_ALIGN)
    new_k = torch.zeros(batch, heads, cap, head_dim, dtype=dtype, device=device)
    new_v = torch.zeros_like(new_k)
    if cached:
        new_k[:, :, :cached] = k
        new_v[:, :, :cached] = v
    layer["k_cache"], layer["v_cache"] = new_k, new_v
    layer["k"], layer["v"] = new_k[:, :, :cached], new_v[:, :, :cached]
    return new_k, new_v


def attention_chunk(mixer, a_BLD: torch.Tensor, layer: dict, position: int,
                    capacity: int | None = None) -> torch.Tensor:
    """The Attention mixer's stateful step (`Attention.step`, the same path as its forward) with the
    rotated K/V written in place into the layer's preallocated buffer instead of concatenated."""
    B, L, _ = a_BLD.shape
    cached = layer["k"].shape[2] if "k" in layer else 0
    if cached != position:
        raise ValueError(f"attention cache holds {cached} positions but the state is at {position}")

    def attend(q_BHLE, k_BHLE, v_BHLE):
        kc, vc = kv_buffers(layer, B, mixer.num_heads, mixer.head_dim, position + L, capacity=capacity,
                            dtype=k_BHLE.dtype, device=a_BLD.device)
        kc[:, :, position:position + L] = k_BHLE
        vc[:, :, position:position + L] = v_BHLE
        layer["k"], layer["v"] = kc[:, :, :position + L], vc[:, :, :position + L]
        return mixer.core(q_BHLE, layer["k"], layer["v"])

    return mixer.step(a_BLD, mixer.core.positions(position, L, a_BLD.device), attend)


def compact_(layer: dict) -> None:
    """FIR tails come out as views of the chunk-sized concatenation they were cut from; copy them so
    the state does not keep whole chunks alive (and its nbytes is its real size)."""
    for name, t in layer.items():
        if name in ("featurizer_tail", "filter_tail", "sigma"):
            if t.untyped_storage().nbytes() > t.numel() * t.element_size():
                layer[name] = t.clone()


@torch.inference_mode()
def forward_chunk(model, ids_BL: torch.Tensor, state: InferenceState, *, logits: str = "all",
                  capture: dict[str, torch.Tensor] | None = None, num_blocks: int | None = None
                  ) -> torch.Tensor | None:
    """Continue the sequence in `state` by `ids_BL` (B, L); updates `state` in place (position += L).

    logits: "all" (B, L, V), "last" (B, V) for the chunk's last position, or "none" (returns None and
    skips the unembedding). Logits are in the model dtype. `capture` and `num_blocks` are those of
    `StripedHyena2.hidden_states` (layer activations; run only the first blocks, which needs
    logits="none"). The KV capacity to reserve can be set beforehand in state.extra["kv_capacity"]
    (positions); otherwise buffers grow by 1.5x."""
    if logits not in ("all", "last", "none"):
        raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
    if num_blocks is not None and num_blocks < model.config.num_blocks and logits != "none":
        raise ValueError("a truncated forward (num_blocks) has no logits: pass logits='none'")
    if ids_BL.dim() != 2 or ids_BL.shape[0] != state.batch_size:
        raise ValueError(f"ids must be (B={state.batch_size}, L), got {tuple(ids_BL.shape)}")
    if ids_BL.shape[1] == 0:
        raise ValueError("cannot forward an empty chunk")
    capacity = state.extra.get("kv_capacity")

    def attention_step(mixer, a_BLD, layer, position):
        return attention_chunk(mixer, a_BLD, layer, position, capacity)

    x_BLD = model.hidden_states(ids_BL, state, capture=capture, num_blocks=num_blocks,
                                attention_step=attention_step)
    for layer in state.layers:
        compact_(layer)
    if logits == "none":
        return None
    if logits == "last":
        x_BLD = x_BLD[:, -1:]
    out = F.linear(x_BLD, model.embedding.weight)
    return out[:, 0] if logits == "last" else out


@torch.inference_mode()
def prefill(model, ids: torch.Tensor, state: InferenceState | None = None, *,
            chunk_len: int = DEFAULT_CHUNK_LEN, capacity: int | None = None
            ) -> tuple[torch.Tensor, InferenceState]:
    """Run a prompt (L,) or (B, L) through the model in chunks; returns (logits of the last position
    (B, V), the state after the prompt). `state` continues an earlier one; `capacity` reserves KV room
    for that many total positions (prompt + tokens to decode) so later steps never reallocate."""
    ids_BL = ids[None] if ids.dim() == 1 else ids
    if ids_BL.dim() != 2 or ids_BL.shape[1] == 0:
        raise ValueError(f"prefill needs a non-empty (L,) or (B, L) prompt, got shape {tuple(ids.shape)}")
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be positive, got {chunk_len}")
    if state is None:
        state = InferenceState.empty(model.config.num_blocks, ids_BL.shape[0])
    if capacity is not None:
        state.extra["kv_capacity"] = int(capacity)
    L = ids_BL.shape[1]
    last = None
    for a in range(0, L, chunk_len):
        b = min(L, a + chunk_len)
        last = forward_chunk(model, ids_BL[:, a:b], state, logits="last" if b == L else "none")
    return last, state


def state_nbytes(config, batch_size: int, context: int, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Analytic size of the inference state after `context` tokens (what `InferenceState.nbytes_by_kind`
    measures without spare KV capacity): 'hyena' is constant in the context, 'kv' linear."""
    item = torch.empty((), dtype=dtype).element_size()
    d = config.d_model
    hyena = kv = 0
    for kind in config.layout:
        if kind == "A":
            kv += 2 * batch_size * context * d * item
            continue
        hyena += batch_size * (config.featurizer_len - 1) * 3 * d * item
        if kind == "S":
            hyena += batch_size * (config.se_filter_len - 1) * d * item
        elif kind == "M":
            hyena += batch_size * (config.mr_filter_len - 1) * d * item
        else:
            hyena += batch_size * d * config.state_size * 4  # sigma is fp32
    return {"hyena": hyena, "kv": kv, "total": hyena + kv}
