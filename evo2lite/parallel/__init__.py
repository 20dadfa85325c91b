"""Everything that touches torch.distributed: process-group set-up with timeouts, DDP, and context
parallelism (zigzag shards, p2p halos, all-to-all, modal state passing, ring attention). The model code
never imports this package; see docs/context-parallel.md."""

from .context import ContextParallel, apply_context_parallel, context_parallel_disabled, validate
from .dist import Dist, PeerFailure, init_distributed, wrap_ddp
from .inference import context_parallel_model
from .zigzag import (ContextParallelError, chunk_len, gather_sequence, scatter_sequence, shard_sequence,
                     unshard_sequence, zigzag_positions)

__all__ = ["ContextParallel", "ContextParallelError", "Dist", "PeerFailure", "apply_context_parallel",
           "chunk_len", "context_parallel_disabled", "context_parallel_model", "gather_sequence",
           "init_distributed", "scatter_sequence", "shard_sequence", "unshard_sequence", "validate",
           "wrap_ddp", "zigzag_positions"]
