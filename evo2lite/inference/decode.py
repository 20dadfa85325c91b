"""Constant-memory one-token decoding with static buffers (spec §6.2), optionally as one CUDA graph.

A `Decoder` takes the state after a prefill and advances a batch by one token per `step(tokens)`:

  featurizer  z^[t] = sum_k w[k] z[t-(K-1)+k]            window = [tail | z_t], tail <- window[1:]
  Hyena-SE    s = sum_k h[k] u[t-6+k]                     same, cross-correlation tap order (spec §2.8)
  Hyena-MR    s = sum_m h[m] u[t-m] + D u[t]              window reversed against h (h[0] meets u_t)
  Hyena-LR    sigma <- p * sigma + u[t];  s = R.sigma + D u[t]   in place, fp32 (spec §2.7)
  attention   k, v rotated at each row's own position and written into a preallocated cache;
              softmax over all `capacity` slots with the slots past the position masked out

so every tensor has a fixed shape and address: the whole step (embedding to logits) can be captured
once as a CUDA graph and replayed per token. Rows may sit at different positions (prompts of unequal
length decode together); the Hyena blocks do not depend on the position at all, so their cost per token
is flat in the context, and only attention reads a cache that grows with it. The maths follows the
model's own mixers operation by operation (same dtypes and casts), so decoding equals `model.forward`.
A Hyena block's core between its projections is one `hyena_step` (kernels/hyena/step.py): on CUDA a
single fused Triton kernel per block and token.

Legend: B batch, D d_model, C = 3D projection channels, K filter length, S poles, H heads, E head size,
T = capacity (KV slots), V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..kernels.hyena.step import hyena_step
from .engine import KV_ALIGN, _round_up, is_prefix_view
from .state import InferenceState

_HYENA_KEYS = ("featurizer_tail", "filter_tail", "sigma")


def _taps_KC(h_GK: torch.Tensor, channels: int) -> torch.Tensor:
    """(K, C) fp32 taps, filter group g(c) = floor(c / (C / G)) expanded per channel (spec §2.4)."""
    return h_GK.detach().float().repeat_interleave(channels // h_GK.shape[0], dim=0).t().contiguous()


class Decoder:
    """Static-shape batched decoding from prefilled states.

    parts: an InferenceState (all its rows), or a list of (state, rows) pairs: the decoder's batch is
    the concatenation of those rows (a row may repeat: one prompt, several samples). Each row keeps its
    state's position. capacity: KV slots per row, at least max(position) + the steps to decode.
    cuda_graph: "auto" (on CUDA), True or False. compile: run the step through torch.compile first
    (fuses the small element-wise operations; the result is captured in the CUDA graph as well).
    attention: "sdpa" (fused masked attention over the capacity) or "split" (the keys split into
    blocks that run in parallel: flash-decoding in plain ops, for long contexts). step_backend: the
    Hyena blocks' core between the projections, `hyena_step`'s backend: "auto" is the fused Triton kernel
    on CUDA (one launch per block instead of ~15), except under compile, which fuses the plain ops itself, and
    for a mixer switched to "reference" (evo2lite.mixers.set_backend).

    The decoder copies the small recurrent states; it adopts a single state's KV buffer instead of
    copying it when it can (one state, all rows in order, enough capacity; a larger buffer raises the
    decoder's capacity to its size): then continue from `to_state()`, not from the original state.
    """

    def __init__(self, model, parts: InferenceState | Sequence[tuple[InferenceState, Sequence[int]]], *,
                 capacity: int, cuda_graph: bool | str = "auto", compile: bool = False,
                 attention: str = "sdpa", step_backend: str = "auto") -> None:
        if attention not in ("sdpa", "split"):
            raise ValueError(f"attention must be 'sdpa' or 'split', got {attention!r}")
        if step_backend not in ("auto", "triton", "reference"):
            raise ValueError(f"step_backend must be 'auto', 'triton' or 'reference', got {step_backend!r}")
        self.attention = attention
        self.step_backend = "reference" if compile and step_backend == "auto" else step_backend
        if isinstance(parts, InferenceState):
            parts = [(parts, list(range(parts.batch_size)))]
        parts = [(state, [int(r) for r in rows]) for state, rows in parts]
        if not parts or not any(rows for _, rows in parts):
            raise ValueError("a Decoder needs at least one row")
        self.model = model
        self.config = cfg = model.config
        self.device, self.dtype = model.device, model.dtype
        self.batch_size = B = sum(len(rows) for _, rows in parts)
        start = [state.position for state, rows in parts for _ in rows]
        if min(start) < 1:
            raise ValueError("decode after a prefill of at least one token")
        needed = _round_up(max(int(capacity), max(start) + 1), KV_ALIGN)
        adopted = self._adoptable(parts, needed)
        # an adopted buffer may be larger than asked (an explicit prefill capacity, or 1.5x growth): the
        # masks and the split blocks must span all of it, so it sets the capacity
        self.capacity = adopted or needed
        self._last_position = max(start)  # host-side copy of positions.max(): no device sync per step
        self.split_block = math.gcd(self.capacity, 4096)
        with torch.inference_mode():
            self._build(parts, start, adopt=bool(adopted))
        self.cuda_graph = (self.device.type == "cuda") if cuda_graph == "auto" else bool(cuda_graph)
        if self.cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs the model on a CUDA device")
        self._fn = self._step_impl
        if compile:
            self._fn = torch.compile(self._step_impl, fullgraph=True, dynamic=False)
        self._graph = None
        self._graph_out = None

    # --- construction -------------------------------------------------------------------------------
    def _adoptable(self, parts, needed: int) -> int:
        """The common size of a single state's KV buffers when the decoder can adopt them (one state, all
        rows in order, the model dtype, every attention block's buffer of one size >= needed); else 0."""
        state, rows = parts[0]
        if len(parts) != 1 or rows != list(range(state.batch_size)):
            return 0
        sizes = set()
        for block, layer in zip(self.model.blocks, state.layers):
            if block.kind != "A":
                continue
            kc, vc = layer.get("k_cache"), layer.get("v_cache")
            if (kc is None or vc is None or kc.dtype != self.dtype or kc.shape != vc.shape
                    or not is_prefix_view(layer["k"], kc) or not is_prefix_view(layer["v"], vc)):
                return 0
            sizes.add(kc.shape[2])
        if len(sizes) != 1:
            return 0
        size = sizes.pop()
        return size if size >= needed and size % KV_ALIGN == 0 else 0

    def _build(self, parts, start: list[int], adopt: bool) -> None:
        cfg, dev, dt, B = self.config, self.device, self.dtype, self.batch_size
        D, T = cfg.d_model, self.capacity
        self.positions = torch.tensor(start, dtype=torch.long, device=dev)
        self.tokens = torch.zeros(B, dtype=torch.long, device=dev)
        self.batch_index = torch.arange(B, device=dev)
        self.key_index = torch.arange(T, device=dev)
        self.params: list[dict[str, torch.Tensor]] = []
        self.buffers: list[dict[str, torch.Tensor]] = []
        for i, block in enumerate(self.model.blocks):
            mixer, prm, buf = block.mixer, {}, {}
            if block.kind == "A":
                H, E = cfg.num_heads, cfg.head_dim
                layer = parts[0][0].layers[i]
                if adopt:  # _adoptable checked: buffers of exactly T slots
                    buf["k_cache"], buf["v_cache"] = layer["k_cache"], layer["v_cache"]
                else:
                    buf["k_cache"] = torch.zeros(B, H, T, E, dtype=dt, device=dev)
                    buf["v_cache"] = torch.zeros_like(buf["k_cache"])
                    row = 0
                    for state, rows in parts:
                        n, p = len(rows), state.position
                        idx = torch.tensor(rows, dtype=torch.long, device=dev)
                        for name, key in (("k_cache", "k"), ("v_cache", "v")):
                            buf[name][row:row + n, :, :p] = state.layers[i][key].index_select(0, idx)
                        row += n
            else:
                Kf = cfg.featurizer_len
                prm["featurizer_KC"] = _taps_KC(mixer.featurizer.h, 3 * D)
                shapes = {"featurizer_tail": ((Kf - 1, 3 * D), dt)}
                inner = mixer.filter
                if block.kind == "S":
                    prm["filter_KD"] = _taps_KC(inner.h, D)
                    shapes["filter_tail"] = ((cfg.se_filter_len - 1, D), dt)
                elif block.kind == "M":
                    # the window's last row is the current sample and must meet h[0]
                    prm["filter_KD"] = _taps_KC(inner.h, D).flip(0).contiguous()
                    prm["skip_D"] = inner.D.detach().float()
                    shapes["filter_tail"] = ((cfg.mr_filter_len - 1, D), dt)
                else:
                    prm["poles_DS"] = torch.exp(inner.log_poles.detach().float())
                    prm["residues_DS"] = inner.residues.detach().float()
                    prm["skip_D"] = inner.D.detach().float()
                    shapes["sigma"] = ((D, cfg.state_size), torch.float32)
                for name, (shape, dtype) in shapes.items():
                    pieces = []
                    for state, rows in parts:
                        t = state.layers[i].get(name)
                        idx = torch.tensor(rows, dtype=torch.long, device=dev)
                        pieces.append(torch.zeros(len(rows), *shape, dtype=dtype, device=dev) if t is None
                                      else t.index_select(0, idx).to(dtype))
                    buf[name] = torch.cat(pieces).contiguous()
                    if buf[name].shape[1:] != shape:
                        raise ValueError(f"block {i}: state {name} has shape {tuple(buf[name].shape)}, "
                                         f"expected (B, {', '.join(map(str, shape))})")
            self.params.append(prm)
            self.buffers.append(buf)

    # --- the step ----------------------------------------------------------------------------------
    def _hyena(self, i: int, block, a_B1D: torch.Tensor) -> torch.Tensor:
        mixer, prm, buf = block.mixer, self.params[i], self.buffers[i]
        z_BC = mixer.in_proj(a_B1D)[:, 0]
        # set_backend(model, "reference") forces the plain-PyTorch path here too, unless step_backend says otherwise
        backend = "reference" if self.step_backend == "auto" and mixer.backend == "reference" else self.step_backend
        # featurizer, gates and filter (or modal state) of one token; the tails and sigma advance in place
        y_BD = hyena_step(z_BC, buf["featurizer_tail"], prm["featurizer_KC"], kind=block.kind,
                          filter_tail_BKD=buf.get("filter_tail"), filter_KD=prm.get("filter_KD"),
                          sigma_BDS=buf.get("sigma"), poles_DS=prm.get("poles_DS"),
                          residues_DS=prm.get("residues_DS"), skip_D=prm.get("skip_D"), backend=backend)
        return mixer.out_proj(y_BD[:, None])

    def _attention(self, i: int, block, a_B1D: torch.Tensor) -> torch.Tensor:
        buf, pos_B = self.buffers[i], self.positions

        def attend(q_BH1E, k_BH1E, v_BH1E):  # each row writes at its own position; later slots masked
            buf["k_cache"][self.batch_index, :, pos_B] = k_BH1E[:, :, 0]
            buf["v_cache"][self.batch_index, :, pos_B] = v_BH1E[:, :, 0]
            visible_B11T = (self.key_index[None, :] <= pos_B[:, None])[:, None, None, :]
            if self.attention == "sdpa":
                return F.scaled_dot_product_attention(q_BH1E, buf["k_cache"], buf["v_cache"],
                                                      attn_mask=visible_B11T)
            return self._split_kv(q_BH1E, buf["k_cache"], buf["v_cache"], visible_B11T)

        # the mixer's own path (`Attention.step`), rotary at each row's own position
        return block.mixer.step(a_B1D, pos_B[:, None], attend)

    def _split_kv(self, q_BH1E, k_BHTE, v_BHTE, visible_B11T):
        """Single-query attention parallel over the keys (flash-decoding's split, in plain ops): scores
        by one batched GEMV, masked softmax in fp32, then P.V as per-block partial sums. The scores come
        out of the GEMV in the model dtype (bf16 rounding of q.k, like vtx's non-flash path)."""
        B, H, T, E = k_BHTE.shape
        scores_BH1T = torch.matmul(q_BH1E, k_BHTE.transpose(-1, -2)).float() * E ** -0.5
        scores_BH1T = scores_BH1T.masked_fill(~visible_B11T, float("-inf"))
        p_BH1T = torch.softmax(scores_BH1T, dim=-1).to(v_BHTE.dtype)
        n = T // self.split_block
        partial = torch.matmul(p_BH1T.view(B, H, n, 1, self.split_block),
                               v_BHTE.view(B, H, n, self.split_block, E))  # (B, H, n, 1, E)
        return partial.float().sum(2).to(v_BHTE.dtype)

    def _step_impl(self) -> torch.Tensor:
        model = self.model
        x_B1D = model.embedding(self.tokens)[:, None]
        for i, block in enumerate(model.blocks):
            a_B1D = block.pre_norm(x_B1D)
            mix = self._attention if block.kind == "A" else self._hyena
            x_B1D = x_B1D + mix(i, block, a_B1D)
            x_B1D = x_B1D + block.mlp(block.post_norm(x_B1D))
        logits_BV = F.linear(model.norm(x_B1D)[:, 0], model.embedding.weight)
        self.positions.add_(1)
        return logits_BV

    def _mutable_small(self) -> list[torch.Tensor]:
        return [self.positions] + [t for buf in self.buffers for k, t in buf.items() if k in _HYENA_KEYS]

    def _capture(self) -> None:
        # Warm-up runs execute the step (needed before capture, e.g. for cuBLAS workspaces and
        # torch.compile): save and restore the recurrent state around them. The K/V they write sit at
        # slots the mask hides until the real steps overwrite them.
        saved = [t.clone() for t in self._mutable_small()]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for t, s in zip(self._mutable_small(), saved):
            t.copy_(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_out = self._fn()
        self._graph = graph

    @torch.inference_mode()
    def step(self, tokens_B: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,); returns the logits (B, V) that predict the next token, in the
        model dtype. With a CUDA graph the returned tensor is a static buffer overwritten by the next
        step: consume (or clone) it first."""
        if self._last_position >= self.capacity:
            raise RuntimeError(f"decoder capacity {self.capacity} exhausted: build it with more")
        self._last_position += 1
        self.tokens.copy_(tokens_B.reshape(-1), non_blocking=True)
        if not self.cuda_graph:
            return self._fn()
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._graph_out

    # --- state out ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def to_state(self) -> InferenceState:
        """The current state as an InferenceState (all rows must be at the same position). Recurrent
        tensors are copied; the KV cache is shared with the decoder (views of its buffers)."""
        positions = self.positions.tolist()
        if len(set(positions)) != 1:
            raise ValueError("rows are at different positions; an InferenceState holds one position")
        T = positions[0]
        layers = []
        for block, buf in zip(self.model.blocks, self.buffers):
            if block.kind == "A":
                kc, vc = buf["k_cache"], buf["v_cache"]
                layers.append({"k_cache": kc, "v_cache": vc, "k": kc[:, :, :T], "v": vc[:, :, :T]})
            else:
                layers.append({k: t.clone() for k, t in buf.items()})
        return InferenceState(layers=layers, batch_size=self.batch_size, position=T,
                              extra={"kv_capacity": self.capacity})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for buf in self.buffers for t in buf.values())
