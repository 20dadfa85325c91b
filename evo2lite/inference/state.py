"""Inference state: what a model must remember to continue a sequence exactly.

Per block (spec §6.1): the featurizer FIR tail (last K-1 projection samples), the Hyena-SE/MR FIR tail
(last K-1 samples of u = k*v), the Hyena-LR modal state sigma (B, D, S) in fp32, and the attention KV cache
(keys already rotated). Every tensor has the batch on dim 0, so selecting batch rows is one index_select.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
        """A new state holding the given batch rows (copies), e.g. one prefix repeated for n suffixes."""
        index = torch.as_tensor(index, dtype=torch.long)
        layers = [{name: t.index_select(0, index.to(t.device)) for name, t in layer.items()}
                  for layer in self.layers]
        return InferenceState(layers=layers, batch_size=int(index.numel()), position=self.position)

    def clone(self) -> "InferenceState":
        return self.select(torch.arange(self.batch_size))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values())
