"""Differentiable communication for context parallelism: the halo exchange of the finite filters, the
sequence <-> channel all-to-all of the long filters, an all-gather of small states, and the ring shift.

Each is a torch.autograd.Function whose backward is the adjoint communication (halo gradients go back to
the rank that sent the halo; an all-to-all is undone by the opposite all-to-all; an all-gather's adjoint
sums the gradients and keeps one's own slice). Peers are named by their rank inside the group and mapped
to global ranks for torch.distributed.

Legend: B batch, c chunk length, K filter length, C channels, N ranks, D channels (d = D / N per rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class CPGroup:
    """The context-parallel process group and this process's place in it."""

    group: object = None  # a ProcessGroup (None: the default group)
    rank: int = 0
    size: int = 1
    global_ranks: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, group=None) -> "CPGroup":
        size = dist.get_world_size(group)
        ranks = [dist.get_global_rank(group, i) if group is not None else i for i in range(size)]
        return cls(group=group, rank=dist.get_rank(group), size=size, global_ranks=ranks)

    def peer(self, group_rank: int) -> int:
        return self.global_ranks[group_rank % self.size]


def p2p(cp: CPGroup, sends: list[tuple[torch.Tensor, int]], recvs: list[tuple[torch.Tensor, int]]) -> list:
    """Post sends and receives (peers as group ranks) together, so no pairing order can deadlock; returns
    the requests to wait on."""
    ops = [dist.P2POp(dist.isend, t, cp.peer(p), cp.group) for t, p in sends]
    ops += [dist.P2POp(dist.irecv, t, cp.peer(p), cp.group) for t, p in recvs]
    return dist.batch_isend_irecv(ops) if ops else []


def wait(requests: list) -> None:
    for req in requests:
        req.wait()


# --- halo exchange (featurizer, Hyena-SE, Hyena-MR p2p) ---------------------------------------------------

def _halo_exchange(cp: CPGroup, first_a: torch.Tensor, first_b: torch.Tensor, forward: bool):
    """forward: send the tail of chunk a to rank+1 and of chunk b to rank-1; receive chunk a's halo from
    rank-1 and chunk b's from rank+1 (zeros where there is no such rank). backward: the same pattern
    reversed (step -1), carrying halo gradients back to their senders: first_a/first_b are then the
    gradients of the received halos a/b."""
    r, n, step = cp.rank, cp.size, 1 if forward else -1
    out_a, out_b = torch.zeros_like(first_a), torch.zeros_like(first_b)
    sends, recvs = [], []
    for send, recv, peer in ((first_a, out_b, r + step), (first_b, out_a, r - step)):
        if 0 <= peer < n:
            sends.append((send, peer))
            recvs.append((recv, peer))
    wait(p2p(cp, sends, recvs))
    return out_a, out_b


class HaloExchangeFn(torch.autograd.Function):
    """(tail of chunk a, tail of chunk b) -> (halo of chunk a, halo of chunk b). The halo of chunk a is the
    tail of the previous rank's chunk a (zeros on rank 0); the halo of chunk b is the tail of the next
    rank's chunk b (zeros on the last rank, whose chunk b follows its own chunk a: the caller uses that)."""

    @staticmethod
    def forward(ctx, tail_a_BKC, tail_b_BKC, cp):
        ctx.cp = cp
        return _halo_exchange(cp, tail_a_BKC.contiguous(), tail_b_BKC.contiguous(), forward=True)

    @staticmethod
    def backward(ctx, grad_halo_a, grad_halo_b):
        grad_a, grad_b = _halo_exchange(ctx.cp, grad_halo_a.contiguous(), grad_halo_b.contiguous(),
                                        forward=False)
        return grad_a, grad_b, None


def halo_exchange(x_BLC: torch.Tensor, K: int, cp: CPGroup) -> tuple[torch.Tensor, torch.Tensor]:
    """The K-1 inputs before each of the two local zigzag chunks of x (B, 2c, C)."""
    c = x_BLC.shape[1] // 2
    tail_a, tail_b = x_BLC[:, c - (K - 1):c], x_BLC[:, 2 * c - (K - 1):]
    halo_a, halo_b = HaloExchangeFn.apply(tail_a, tail_b, cp)
    if cp.rank == cp.size - 1:  # chunk N follows chunk N-1, both held here
        halo_b = tail_a
    return halo_a, halo_b


# --- all-to-all: sequence-sharded (B, 2c, D) <-> channel-sharded (B, L, D/N) -------------------------------

def _seq_to_channel(cp: CPGroup, x_BlD: torch.Tensor) -> torch.Tensor:
    n = cp.size
    B, l, D = x_BlD.shape
    c = l // 2
    send = x_BlD.reshape(B, l, n, D // n).permute(2, 0, 1, 3).contiguous()  # (N, B, 2c, d): slice j to rank j
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=cp.group)  # recv[i]: rank i's two chunks of my channels
    chunks = [recv[g, :, :c] if g < n else recv[2 * n - 1 - g, :, c:] for g in range(2 * n)]
    return torch.cat(chunks, dim=1)


def _channel_to_seq(cp: CPGroup, x_BLd: torch.Tensor) -> torch.Tensor:
    n = cp.size
    B, L, d = x_BLd.shape
    c = L // (2 * n)
    send = torch.stack([torch.cat([x_BLd[:, i * c:(i + 1) * c], x_BLd[:, (2 * n - 1 - i) * c:(2 * n - i) * c]], 1)
                        for i in range(n)])  # (N, B, 2c, d): rank i's two chunks
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=cp.group)  # recv[j]: channel slice j of my chunks
    return recv.permute(1, 2, 0, 3).reshape(B, 2 * c, n * d)


class AllToAllFn(torch.autograd.Function):
    """Sequence -> channel sharding (to_channel) or back; the backward is the opposite all-to-all."""

    @staticmethod
    def forward(ctx, x, cp, to_channel: bool):
        ctx.cp, ctx.to_channel = cp, to_channel
        return (_seq_to_channel if to_channel else _channel_to_seq)(cp, x)

    @staticmethod
    def backward(ctx, grad):
        return (_channel_to_seq if ctx.to_channel else _seq_to_channel)(ctx.cp, grad.contiguous()), None, None


def seq_to_channel(x_BlD: torch.Tensor, cp: CPGroup) -> torch.Tensor:
    """(B, 2c, D) zigzag shard -> (B, L, D/N): the whole sequence, in global order, of this rank's
    contiguous channel slice [rank D/N, (rank+1) D/N)."""
    return AllToAllFn.apply(x_BlD, cp, True)


def channel_to_seq(x_BLd: torch.Tensor, cp: CPGroup) -> torch.Tensor:
    """The inverse of seq_to_channel."""
    return AllToAllFn.apply(x_BLd, cp, False)


# --- all-gather of small tensors (modal states) ------------------------------------------------------------

class AllGatherFn(torch.autograd.Function):
    """x -> (N, *x.shape), every rank's x. Backward: the gradients summed over ranks, own slice kept."""

    @staticmethod
    def forward(ctx, x, cp):
        ctx.cp = cp
        parts = [torch.empty_like(x) for _ in range(cp.size)]
        dist.all_gather(parts, x.contiguous(), group=cp.group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad_N):
        grad_N = grad_N.contiguous()
        dist.all_reduce(grad_N, group=ctx.cp.group)
        return grad_N[ctx.cp.rank], None


def all_gather(x: torch.Tensor, cp: CPGroup) -> torch.Tensor:
    return AllGatherFn.apply(x, cp)


def ring_shift(x: torch.Tensor, cp: CPGroup) -> tuple[torch.Tensor, list]:
    """Start sending x to rank+1 and receiving rank-1's into a new buffer; returns (buffer, requests)."""
    buf = torch.empty_like(x)
    return buf, p2p(cp, [(x, cp.rank + 1)], [(buf, cp.rank - 1)])
