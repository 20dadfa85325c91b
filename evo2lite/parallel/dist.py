"""Process groups for torchrun launches: init with a timeout, the 2-D (data x context) layout, DDP, and
one-line errors when a peer dies.

Ranks are laid out as a (dp, cp) grid: global rank = dp_rank * cp + cp_rank, so the ranks that share one
sequence are consecutive (on one host when cp <= GPUs per host). DDP all-reduces gradients over *every*
rank: under context parallelism each rank's gradient is its own tokens' share of the loss, and the shares
of all ranks, data- and context-parallel alike, sum to the global gradient.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from dataclasses import dataclass

import torch

from ..errors import Evo2LiteError
from .zigzag import ContextParallelError

DEFAULT_TIMEOUT_S = 1800.0  # a hung collective fails the job after this long (a long rank-0 eval or save must fit)


class PeerFailure(Evo2LiteError):
    """A rank of the job died, hung or could not be reached."""


@dataclass
class Dist:
    """This process's place in the job. world = dp * cp."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    cp: int = 1
    cp_group: object = None  # the ProcessGroup of the ranks sharing this rank's sequences
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def dp(self) -> int:
        return self.world // self.cp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.cp

    @property
    def cp_rank(self) -> int:
        return self.rank % self.cp

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            with peer_failure_guard(self.timeout_s):
                dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            with peer_failure_guard(self.timeout_s):
                if dist.get_backend() == "gloo":  # names the ranks that did not arrive
                    dist.monitored_barrier(timeout=datetime.timedelta(seconds=self.timeout_s))
                else:
                    dist.barrier()

    def broadcast_int(self, value: int, device: torch.device) -> int:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.long, device=device)
        with peer_failure_guard(self.timeout_s):
            dist.broadcast(t, 0)
        return int(t.item())


@contextlib.contextmanager
def peer_failure_guard(timeout_s: float = DEFAULT_TIMEOUT_S):
    """Turn torch.distributed's failures (a peer closed its connection, a collective timed out) into one
    PeerFailure line; EVO2LITE_DEBUG=1 keeps the original traceback."""
    import torch.distributed as dist

    try:
        yield
    except (dist.DistError, RuntimeError) as exc:
        if os.environ.get("EVO2LITE_DEBUG") == "1" or not _is_comm_failure(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PeerFailure(f"rank {os.environ.get('RANK', '?')}: a peer rank died or did not answer within "
                          f"{timeout_s:g} s ({first[:200]})") from None


def _is_comm_failure(exc: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return any(k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


def init_distributed(device: str | None = None, *, context_parallel: int = 1, timeout_s: float | None = None,
                     whole_job: bool = False) -> tuple[Dist, torch.device]:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK, pick this rank's device, start the process group
    (NCCL on CUDA, gloo on CPU) with a timeout, and make the context-parallel groups. A single process
    (no torchrun) gets Dist() and no process group. whole_job: every process shares one sequence (the
    inference apps: no data-parallel axis). The timeout: EVO2LITE_DIST_TIMEOUT seconds if set."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    timeout_s = float(os.environ.get("EVO2LITE_DIST_TIMEOUT", timeout_s or DEFAULT_TIMEOUT_S))
    d = Dist(rank=int(os.environ.get("RANK", "0")), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
             cp=context_parallel, timeout_s=timeout_s)
    if context_parallel < 1 or world % context_parallel or (whole_job and world != context_parallel):
        need = "equal" if whole_job else "divide"
        raise ContextParallelError(f"--context-parallel {context_parallel} must {need} the number of processes "
                                   f"({world}): launch with torchrun --nproc-per-node {context_parallel}")
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Evo2LiteError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
        dev = torch.device("cuda", d.local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            with peer_failure_guard(timeout_s):
                dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                        timeout=datetime.timedelta(seconds=timeout_s))
            # a rank that exits with its group alive can abort in gloo's threads ("terminate called
            # without an active exception") while a peer is still writing the output
            atexit.register(_destroy_process_group)
        if context_parallel > 1:
            # every rank creates every group, in the same order (torch.distributed requires it)
            for dp_rank in range(world // context_parallel):
                ranks = list(range(dp_rank * context_parallel, (dp_rank + 1) * context_parallel))
                group = dist.new_group(ranks, timeout=datetime.timedelta(seconds=timeout_s))
                if d.rank in ranks:
                    d.cp_group = group
    return d, dev


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def device_mesh(d: Dist, device: torch.device):
    """The same layout as a DeviceMesh with dims ("dp", "cp") (for FSDP2 / DTensor users)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (d.dp, d.cp), mesh_dim_names=("dp", "cp"))


def wrap_ddp(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """DDP over every rank when there are several (see the module docstring); the model itself otherwise."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
