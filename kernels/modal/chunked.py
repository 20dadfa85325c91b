"""The Hyena-LR long convolution in chunked form, plain PyTorch (spec §2.7): the same maths as the Triton
kernel in triton.py, and the CPU path (faster than the 2L FFT over a materialised filter; see README.md).

Legend: B batch, L length, D channels, S poles per channel, N chunks, C chunk length, K = C + 1 powers.
With p = exp(lam) (D, S), h[m] = sum_s R_s p_s^m, and chunks of C tokens:
  y[nC+i]     = sum_{j<=i} h[i-j] u[nC+j]                    (1) intra-chunk: a C x C Toeplitz per channel
              + sum_s R_s p_s^(i+1) sigma_in[n, s]            (2) what the earlier chunks left in the state
              + D u[nC+i]                                     (3) the skip term
  s[n]        = sum_j p^(C-1-j) u[nC+j]                       (4) a chunk's own end state (zero start)
  sigma_in[n+1] = p^C sigma_in[n] + s[n],  sigma_in[0] = sigma0   (5) the 16-state carry between chunks
No (L, D, S) or (D, S, L) tensor: the largest is the (C, C, D) Toeplitz.
"""

from __future__ import annotations

import torch

from .reference import modal_state_update_ref


def modal_conv_chunked_ref(u_BLD: torch.Tensor, log_poles_DS: torch.Tensor, residues_DS: torch.Tensor,
                           D_D: torch.Tensor | None = None, sigma_BDS: torch.Tensor | None = None,
                           chunk_len: int = 64, with_state: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = h * u + D u continuing from the state sigma (B, D, S) (zero if None), and the state after u.
    Differentiable by autograd; the returned state carries no gradient. Returns (y (B, L, D) fp32, sigma' (B, D, S) fp32,
    or None without with_state)."""
    B, L, D = u_BLD.shape
    C = max(1, min(chunk_len, L))
    N = -(-L // C)
    lam_DS, R_DS = log_poles_DS.float(), residues_DS.float()
    u_BNCD = torch.nn.functional.pad(u_BLD.float(), (0, 0, 0, N * C - L)).view(B, N, C, D)
    k = torch.arange(C + 1, device=u_BLD.device, dtype=torch.float32)
    pk_KDS = torch.exp(k[:, None, None] * lam_DS)  # p^k, k = 0..C
    h_CD = (pk_KDS[:C] * R_DS).sum(-1)
    i = torch.arange(C, device=u_BLD.device)
    lag_CC = i[:, None] - i[None, :]
    toep_CCD = h_CD[lag_CC.clamp_min(0)] * (lag_CC >= 0)[:, :, None]
    y_BNCD = torch.einsum("ijd,bnjd->bnid", toep_CCD, u_BNCD)  # (1)
    s_BNDS = torch.einsum("bnjd,jds->bnds", u_BNCD, pk_KDS[:C].flip(0))  # (4)
    sig_BDS = (sigma_BDS.float() if sigma_BDS is not None
               else u_BLD.new_zeros(B, D, lam_DS.shape[1], dtype=torch.float32))
    sig_in = [sig_BDS]
    for n in range(N - 1):  # (5); the last chunk's own state is taken exactly below (it may be partial)
        sig_in.append(pk_KDS[C] * sig_in[-1] + s_BNDS[:, n])
    sig_in_BNDS = torch.stack(sig_in, dim=1)
    y_BNCD = y_BNCD + torch.einsum("bnds,ids->bnid", sig_in_BNDS, pk_KDS[1:] * R_DS)  # (2)
    y_BLD = y_BNCD.reshape(B, N * C, D)[:, :L]
    if D_D is not None:
        y_BLD = y_BLD + D_D.float() * u_BLD.float()  # (3)
    if not with_state:
        return y_BLD, None
    with torch.no_grad():  # the state is for inference: exact for a partial last chunk, no gradient
        sigma_out = modal_state_update_ref(sig_in_BNDS[:, -1].detach(), u_BLD[:, (N - 1) * C:].detach(),
                                           log_poles_DS.detach())
    return y_BLD, sigma_out
