"""Zigzag sequence sharding for context parallelism (spec §9.6).

A sequence of length L is cut into 2N chunks of c = L / 2N tokens; rank r of N holds chunks r and 2N-1-r,
concatenated ([chunk r | chunk 2N-1-r], local length 2c). Under causal attention every rank then does
the same work: an early chunk sees few keys, its late partner sees many.

Legend: B batch, L global length, c chunk length, N ranks of the context-parallel group.
"""

from __future__ import annotations

import torch

from ..errors import Evo2LiteError


class ContextParallelError(Evo2LiteError, ValueError):
    """A sequence length, model shape or launch that context parallelism cannot serve."""


def chunk_len(length: int, world: int, min_chunk: int = 1) -> int:
    """The zigzag chunk length c = L / 2N, with a one-line error when L does not split."""
    if length % (2 * world):
        raise ContextParallelError(f"sequence length {length} must be a multiple of 2 x context-parallel size "
                                   f"= {2 * world}: pad or trim it")
    c = length // (2 * world)
    if c < min_chunk:
        raise ContextParallelError(f"sequence length {length} on {world} ranks gives chunks of {c} tokens; the "
                                   f"longest filter needs chunks of at least {min_chunk} (length >= "
                                   f"{2 * world * min_chunk})")
    return c


def zigzag_positions(length: int, world: int, rank: int, device=None) -> torch.Tensor:
    """The global positions (2c,) that rank `rank` holds, in its local order."""
    c = length // (2 * world)
    a = torch.arange(rank * c, (rank + 1) * c, device=device)
    b = torch.arange((2 * world - 1 - rank) * c, (2 * world - rank) * c, device=device)
    return torch.cat([a, b])


def shard_sequence(x: torch.Tensor, world: int, rank: int, dim: int = 1, min_chunk: int = 1) -> torch.Tensor:
    """Rank `rank`'s zigzag shard of a full sequence (every rank holds the full tensor)."""
    c = chunk_len(x.shape[dim], world, min_chunk)
    a = x.narrow(dim, rank * c, c)
    b = x.narrow(dim, (2 * world - 1 - rank) * c, c)
    return torch.cat([a, b], dim=dim)


def unshard_sequence(shards: list[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """The full sequence from every rank's zigzag shard (shards[r] from rank r)."""
    world = len(shards)
    c = shards[0].shape[dim] // 2
    chunks = [shards[g].narrow(dim, 0, c) if g < world else shards[2 * world - 1 - g].narrow(dim, c, c)
              for g in range(2 * world)]
    return torch.cat(chunks, dim=dim)


def gather_sequence(x_local: torch.Tensor, group=None, dim: int = 1) -> torch.Tensor:
    """All-gather the zigzag shards of the group and return the full sequence on every rank (outputs:
    logits, embeddings). Not differentiable."""
    import torch.distributed as dist

    shards = [torch.empty_like(x_local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shards, x_local.contiguous(), group=group)
    return unshard_sequence(shards, dim)


def scatter_sequence(x_full: torch.Tensor | None, shape, dtype, group=None, src: int = 0, dim: int = 1,
                     device=None) -> torch.Tensor:
    """Rank `src` (a rank of `group`) holds the full sequence; every rank gets its zigzag shard. The other
    ranks pass x_full=None and the full `shape` and `dtype`."""
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    buf = x_full.contiguous() if rank == src else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buf, dist.get_global_rank(group, src) if group is not None else src, group=group)
    return shard_sequence(buf, world, rank, dim)
