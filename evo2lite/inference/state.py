"""Inference state: what a model must remember to continue a sequence exactly.

Per block (spec §6.1): the featurizer FIR tail (last K-1 projection samples), the Hyena-SE/MR FIR tail
(last K-1 samples of u = k*v), the Hyena-LR modal state sigma (B, D, S) in fp32, and the attention KV cache
(keys already rotated). Every tensor has the batch on dim 0, so selecting batch rows is one index_select.

Keys of a block's dict: 'featurizer_tail' (B, K-1, 3D), 'filter_tail' (B, K-1, D) (SE, MR), 'sigma'
(B, D, S) fp32 (LR), 'k'/'v' (B, H, T, E) (attention). The inference engine (evo2lite/inference/engine.py)
may add 'k_cache'/'v_cache' (B, H, capacity, E): preallocated buffers of which 'k'/'v' are the first T
positions (views), so a chunk or a decoded token is written in place instead of re-concatenating the
whole cache. A state whose 'k'/'v' are plain tensors (e.g. after `model(ids, state)`) stays valid: the
engine copies them into a buffer the next time it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KV_BUFFERS = ("k_cache", "v_cache")


@dataclass
class InferenceState:
    layers: list[dict[str, torch.Tensor]]
    batch_size: int
    position: int = 0  # tokens consumed so far: the rotary offset of the next chunk
    extra: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, num_blocks: int, batch_size: int) -> "InferenceState":
        return cls(layers=[{} for _ in range(num_blocks)], batch_size=batch_size)

    def select(self, index: torch.Tensor) -> "InferenceState":
        """A new state holding the given batch rows (copies), e.g. one prefix repeated for n suffixes.
        A preallocated KV buffer is copied only up to the cached length (its capacity is not kept)."""
        index = torch.as_tensor(index, dtype=torch.long)
        layers = []
        for layer in self.layers:
            picked = {}
            for name, t in layer.items():
                if name in KV_BUFFERS:
                    continue
                picked[name] = t.index_select(0, index.to(t.device))
            layers.append(picked)
        return InferenceState(layers=layers, batch_size=int(index.numel()), position=self.position,
                              extra=dict(self.extra))

    def clone(self) -> "InferenceState":
        return self.select(torch.arange(self.batch_size))

    def nbytes(self) -> int:
        """Bytes held by the state's tensors; a view into a preallocated buffer counts as the buffer
        (its whole capacity), once."""
        seen: dict[tuple, int] = {}
        for layer in self.layers:
            for t in layer.values():
                storage = t.untyped_storage()
                seen[(t.device.type, t.device.index, storage.data_ptr())] = storage.nbytes()
        return sum(seen.values())

    def nbytes_by_kind(self) -> dict[str, int]:
        """nbytes split into the constant-size recurrent part ('hyena': FIR tails and modal states) and
        the part that grows with the context ('kv': attention caches, whole capacity)."""
        kv = InferenceState([{k: v for k, v in layer.items() if k in ("k", "v") + KV_BUFFERS}
                             for layer in self.layers], self.batch_size)
        hyena = InferenceState([{k: v for k, v in layer.items() if k not in ("k", "v") + KV_BUFFERS}
                                for layer in self.layers], self.batch_size)
        return {"hyena": hyena.nbytes(), "kv": kv.nbytes()}
