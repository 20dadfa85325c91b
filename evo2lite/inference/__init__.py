"""Inference engine: chunked prefill with state, constant-memory decoding, sampling.

- `forward_chunk(model, ids, state)`: continue a sequence by one chunk (scoring / embedding of long inputs).
- `prefill(model, ids, chunk_len=..., capacity=...)`: the state after a prompt, in chunks.
- `Decoder(model, state, capacity=...)`: static-buffer one-token steps (CUDA-graph capturable).
- `SamplingParams`, `sample_next`: temperature / top-k / top-p / A-C-G-T-only sampling with per-row seeds.
"""

from .decode import Decoder
from .engine import DEFAULT_CHUNK_LEN, forward_chunk, prefill, state_nbytes
from .sampling import GenerationError, SamplingParams, draw_uniforms, make_generators, row_seed, sample_next
from .state import InferenceState

__all__ = ["DEFAULT_CHUNK_LEN", "Decoder", "InferenceState", "GenerationError", "SamplingParams", "draw_uniforms",
           "forward_chunk", "make_generators", "prefill", "row_seed", "sample_next", "state_nbytes"]
