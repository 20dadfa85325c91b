"""The context-parallel checks one gloo rank runs (spawned by test_context_parallel.py): every block kind
and a whole tiny model under every scheme, against the single-process result computed on the same rank.
Rank 0 writes {check name: [max |cp - ref|, max |ref|]} as JSON."""

from __future__ import annotations

import copy
import json
import os

import torch
import torch.nn.functional as F

from evo2lite.config import ModelConfig
from evo2lite.model import StripedHyena2, init_weights_

TINY = dict(d_model=32, num_heads=2, d_mlp=48, num_se_groups=4, num_mr_groups=4, mr_filter_len=16,
            rotary_scale=4.0, context_len=256)
FUSED = {**TINY, "d_model": 16, "num_se_groups": 2, "num_mr_groups": 2}  # Triton's interpreter is slow


def _randomise(model: StripedHyena2, seed: int) -> StripedHyena2:
    """init_weights_ and then non-trivial values where it leaves zeros or ones (biases, norms, D)."""
    init_weights_(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "scale", ".D")):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def _record(out: dict, name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    out[name] = [float((got.detach() - want.detach()).abs().max()), float(want.detach().abs().max())]


def _grads(model, group) -> dict[str, torch.Tensor]:
    """Parameter gradients summed over the context-parallel ranks (what DDP's all-reduce does)."""
    import torch.distributed as dist

    grads = {}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        g = g.clone()
        dist.all_reduce(g, group=group)
        grads[name] = g
    return grads


def _block_input(B: int, L: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of one block and the output gradient that weights it, seeded by the length."""
    gen = torch.Generator().manual_seed(L)
    return torch.randn(B, L, d, generator=gen), torch.randn(B, L, d, generator=gen)


def _block_pass(model, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of the model's first block on (a shard of) x, weighted by g, from zeroed
    gradients: (x with its gradient, the block's output)."""
    model.zero_grad()
    x = x.clone().requires_grad_()
    y = model.blocks[0](x)[0]
    (y * g).sum().backward()
    return x, y


def _record_block(out: dict, tag: str, ref, model, x_ref, y_ref, x_cp, y_cp, world: int, rank: int) -> None:
    """The context-parallel block pass against one device's: this rank's shard of the output and of the input
    gradient, and every block parameter's gradient summed over the ranks."""
    from evo2lite.parallel import shard_sequence

    _record(out, f"{tag} out", y_cp, shard_sequence(y_ref, world, rank))
    _record(out, f"{tag} dx", x_cp.grad, shard_sequence(x_ref.grad, world, rank))
    grads = _grads(model, None)
    for name, p in ref.named_parameters():
        if name.startswith("blocks."):
            _record(out, f"{tag} d{name}", grads[name], p.grad)


def check_blocks(out: dict, world: int, rank: int, lengths: list[int]) -> None:
    from evo2lite.parallel import apply_context_parallel, shard_sequence

    schemes = {"S": [("p2p", "a2a")], "M": [("p2p", "a2a"), ("a2a", "a2a")], "L": [("p2p", "a2a"), ("p2p", "p2p")],
               "A": [("p2p", "a2a")]}
    for kind, combos in schemes.items():
        ref = _randomise(StripedHyena2(ModelConfig(layout=kind, **TINY)), seed=3)
        for mr, lr in combos:
            for impl in (("reference", "fused") if kind == "A" else ("auto",)):
                model = copy.deepcopy(ref)
                apply_context_parallel(model, None, mr_scheme=mr, lr_scheme=lr, attention_impl=impl)
                for L in lengths:
                    x, g = _block_input(2, L, TINY["d_model"])
                    x_ref, y_ref = _block_pass(ref, x, g)
                    x_cp, y_cp = _block_pass(model, shard_sequence(x, world, rank), shard_sequence(g, world, rank))
                    _record_block(out, f"block {kind} mr={mr} lr={lr} attn={impl} L={L}", ref, model,
                                  x_ref, y_ref, x_cp, y_cp, world, rank)


def check_model(out: dict, world: int, rank: int, layout: str, L: int) -> None:
    """A training step's loss and gradients: weighted next-token cross entropy normalised by the global
    weight, as evo2lite.apps.train does."""
    from evo2lite.parallel import apply_context_parallel, shard_sequence
    from evo2lite.train_params import make_trainable

    ref = _randomise(StripedHyena2(ModelConfig(layout=layout, **TINY)), seed=5)
    make_trainable(ref)  # the trainer's parametrizations (MR decay, LR p/gamma)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 256, (2, L + 1), generator=gen)
    w = torch.rand(2, L, generator=gen)
    nll = F.cross_entropy(ref(ids[:, :-1]).reshape(-1, 512), ids[:, 1:].reshape(-1), reduction="none")
    loss_ref = (nll * w.reshape(-1)).sum() / w.sum()
    loss_ref.backward()
    for mr, lr in (("p2p", "a2a"), ("a2a", "p2p")):
        import torch.distributed as dist

        model = copy.deepcopy(ref)
        model.zero_grad()
        apply_context_parallel(model, None, mr_scheme=mr, lr_scheme=lr)
        inp, tgt = shard_sequence(ids[:, :-1], world, rank), shard_sequence(ids[:, 1:], world, rank)
        w_local = shard_sequence(w, world, rank)
        weight = w_local.sum()
        dist.all_reduce(weight)
        nll = F.cross_entropy(model(inp).reshape(-1, 512), tgt.reshape(-1), reduction="none")
        loss_local = (nll * w_local.reshape(-1)).sum() / weight
        loss_local.backward()
        loss = loss_local.detach().clone()
        dist.all_reduce(loss)
        tag = f"model {layout} mr={mr} lr={lr} L={L}"
        _record(out, f"{tag} loss", loss, loss_ref)
        grads = _grads(model, None)
        for name, p in ref.named_parameters():
            _record(out, f"{tag} d{name}", grads[name], p.grad)


def check_mesh(out: dict, world: int, rank: int, L: int) -> None:
    """apply_context_parallel on the "cp" dimension of a 2-D (dp, cp) DeviceMesh."""
    from torch.distributed.device_mesh import init_device_mesh

    from evo2lite.parallel import apply_context_parallel, gather_sequence, shard_sequence

    model = _randomise(StripedHyena2(ModelConfig(layout="SMLA", **TINY)), seed=9)
    ids = torch.randint(0, 256, (1, L), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(ids)
        mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("dp", "cp"))
        ctx = apply_context_parallel(model, mesh)
        got = gather_sequence(model(shard_sequence(ids, world, rank)), ctx.cp.group)
    _record(out, f"mesh SMLA L={L} out", got, ref)
    from evo2lite.parallel import scatter_sequence

    scattered = scatter_sequence(ids if rank == 0 else None, ids.shape, ids.dtype, ctx.cp.group)
    _record(out, "mesh scatter_sequence out", scattered.float(), shard_sequence(ids, world, rank).float())


def check_bf16_attention(out: dict, world: int, rank: int, L: int) -> None:
    """bf16 ring attention (fused kernels): its error against fp32 within 2x + floor of the error one device
    makes in bf16 (DESIGN.md's rule). Records [ring error, one-device error, output scale]."""
    from evo2lite.parallel import apply_context_parallel, gather_sequence, shard_sequence

    model = _randomise(StripedHyena2(ModelConfig(layout="A", **{**TINY, "d_model": 64, "num_heads": 2})), seed=4)
    x = torch.randn(1, L, 64, generator=torch.Generator().manual_seed(5))
    mixer = model.blocks[0].mixer
    with torch.no_grad():
        ref = mixer(x)
        one = mixer.to(torch.bfloat16)(x.bfloat16()).float()
        ctx = apply_context_parallel(model, None)
        ring = gather_sequence(mixer(shard_sequence(x, world, rank).bfloat16()), ctx.cp.group).float()
    out[f"bf16 attention L={L}"] = [float((ring - ref).abs().max()), float((one - ref).abs().max()),
                                    float(ref.abs().max())]


class _FusedCalls:
    """Counts, on every rank, the fused op's calls (evo2lite.mixers.hyena_conv) and the calls of the Hyena
    mixers' wrapped seams (featurizer, filter): the fused CP path calls the op once per chunk (or piece) and
    no seam."""

    def __init__(self, model) -> None:
        import evo2lite.mixers as mixers

        self.conv = self.seams = 0
        real = mixers.hyena_conv

        def counting(*args, **kwargs):
            self.conv += 1
            return real(*args, **kwargs)

        mixers.hyena_conv, self._restore = counting, (mixers, real)
        self._hooks = [seam.register_forward_pre_hook(self._seam) for m in model.modules()
                       if isinstance(m, mixers.HyenaMixer) for seam in (m.featurizer, m.filter)]

    def _seam(self, *_) -> None:
        self.seams += 1

    def close(self, group=None) -> list[int]:
        import torch.distributed as dist

        setattr(self._restore[0], "hyena_conv", self._restore[1])
        for h in self._hooks:
            h.remove()
        counts = torch.tensor([self.seams, self.conv])
        dist.all_reduce(counts, group=group)
        return counts.tolist()


def check_fused(out: dict, world: int, rank: int) -> None:
    """SE and MR blocks, and a trainable S/M model, on the fused op (backend "triton"; Triton's interpreter
    on the CPU) under CP against one process on the same op: outputs, input and every parameter gradient, at
    zigzag chunks exactly the halo R = (F-1) + (K-1) long and longer, and (MR) shorter than R but not than
    K-1 (the wrapped seams then); at c = R + 6 the op's input limit is lowered so that each chunk runs as two
    pieces of <= 12 outputs (as 1M-token chunks of the 7B shape do). Records "<tag> calls": [seam calls,
    fused-op calls] summed over the ranks."""
    from evo2lite.kernels.hyena import triton as hyena_triton
    from evo2lite.mixers import set_backend
    from evo2lite.parallel import apply_context_parallel, context, shard_sequence
    from evo2lite.train_params import make_trainable

    hyena_triton.POISON = True  # the kernels' outputs start as NaN: an unwritten element shows

    reach = {"S": 2 + 6, "M": 2 + FUSED["mr_filter_len"] - 1}
    # SE at c > R is the model's (c = 20) below: each interpreted op costs seconds
    for kind, chunks in (("S", (reach["S"],)), ("M", (reach["M"], reach["M"] + 6, FUSED["mr_filter_len"] - 1))):
        ref = _randomise(StripedHyena2(ModelConfig(layout=kind, **FUSED)), seed=11)
        set_backend(ref, "triton")
        model = copy.deepcopy(ref)
        apply_context_parallel(model, None)
        for c in chunks:
            L = 2 * world * c
            x, g = _block_input(1, L, FUSED["d_model"])
            x_ref, y_ref = _block_pass(ref, x, g)
            counter = _FusedCalls(model)
            limit = context.KERNEL_MAX_ELEMENTS
            if c == reach["M"] + 6:
                context.KERNEL_MAX_ELEMENTS = (reach["M"] + 12) * 3 * FUSED["d_model"]
            x_cp, y_cp = _block_pass(model, shard_sequence(x, world, rank), shard_sequence(g, world, rank))
            context.KERNEL_MAX_ELEMENTS = limit
            tag = f"fused block {kind} c={c}{' (< R)' if c < reach[kind] else ''}"
            out[f"{tag} calls"] = counter.close()
            _record_block(out, tag, ref, model, x_ref, y_ref, x_cp, y_cp, world, rank)
    # a trainable model (MR filter parametrised, as the trainer runs it): logits' loss and every gradient
    ref = make_trainable(_randomise(StripedHyena2(ModelConfig(layout="SM", **FUSED)), seed=12))
    set_backend(ref, "triton")
    model = copy.deepcopy(ref)
    apply_context_parallel(model, None)
    L = 2 * world * (reach["M"] + 3)
    gen = torch.Generator().manual_seed(13)
    ids = torch.randint(0, 256, (1, L + 1), generator=gen)
    logits_ref = ref(ids[:, :-1])
    F.cross_entropy(logits_ref[0], ids[0, 1:], reduction="sum").backward()
    counter = _FusedCalls(model)
    logits = model(shard_sequence(ids[:, :-1], world, rank))
    F.cross_entropy(logits[0], shard_sequence(ids[:, 1:], world, rank)[0], reduction="sum").backward()
    tag = f"fused model SM L={L}"
    out[f"{tag} calls"] = counter.close()
    _record(out, f"{tag} out", logits, shard_sequence(logits_ref, world, rank))
    grads = _grads(model, None)
    for name, p in ref.named_parameters():
        _record(out, f"{tag} d{name}", grads[name], p.grad)


def worker(rank: int, world: int, port: int, path: str, which: str) -> None:
    import torch.distributed as dist

    from evo2lite.parallel.dist import init_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if which == "fused":  # before any Triton kernel module is imported in this (spawned) process
        os.environ["TRITON_INTERPRET"] = "1"
    init_distributed("cpu", timeout_s=60)
    out: dict = {}
    try:
        c_edge = TINY["mr_filter_len"] - 1  # chunks exactly as long as the MR halo
        if which in ("blocks", "all"):
            check_blocks(out, world, rank, [2 * world * c_edge, 2 * world * (c_edge + 9)])
        if which in ("model", "all"):
            check_model(out, world, rank, "SMLA", 2 * world * 20)
            check_mesh(out, world, rank, 2 * world * 16)
            check_bf16_attention(out, world, rank, 2 * world * 32)
        if which == "fused":
            check_fused(out, world, rank)
        if rank == 0:
            with open(path, "w") as fh:
                json.dump(out, fh)
    finally:
        dist.destroy_process_group()
