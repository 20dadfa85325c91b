"""Launch-parameter sweep of the Hyena-SE kernel (kernels/hyena/se_triton.py) on a GPU: channels per program,
warps, positions per program; forward and backward ms at 8 x 8,192 tokens, D 4096, bf16, plus registers and spills.

  python3 benchmarks/se_sweep.py"""
import sys

import torch

sys.path.insert(0, ".")
from evo2lite.kernels.hyena import se_triton as S

def bench(f, reps=5):
    f(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(reps): f()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / reps

B, L, D, G = 8, 8192, 4096, 256
z = torch.randn(B, L, 3 * D, device="cuda", dtype=torch.bfloat16)
w = torch.randn(3 * D, 3, device="cuda")
dy = torch.randn(B, L, D, device="cuda", dtype=torch.bfloat16)
h = torch.randn(G, 7, device="cuda") / 7
print("copy z[..., :D] (read 3D, write D):", f"{bench(lambda: z[..., :D].contiguous()):.3f} ms", flush=True)
for BD, nw in ((128, 4), (64, 2), (256, 8), (256, 4), (128, 2), (512, 8)):
    for seg in (128, 256, 512, 1024):
        try:
            tf = bench(lambda: S.se_conv_fwd(z, w, h, BD=BD, num_warps=nw, seg=seg))
            tb = bench(lambda: S.se_conv_bwd(dy, z, w, h, BD=BD, num_warps=nw, seg=seg))
            print(f"SE BD {BD} warps {nw} seg {seg}: fwd {tf:.3f} ms bwd {tb:.3f} ms", flush=True)
        except Exception as ex:
            print(f"SE BD {BD} warps {nw} seg {seg}: {type(ex).__name__} {ex}"[:300], flush=True)
for fn in (S._se_fwd_kernel, S._se_bwd_kernel):
    for dev, cache in fn.device_caches.items():
        for key, k in cache[0].items():
            print(f"   {fn.fn.__name__}: regs {k.n_regs} spills {k.n_spills} warps {k.metadata.num_warps}", flush=True)
