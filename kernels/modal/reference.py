"""The Hyena-LR modal (pole-residue) filter and its recurrent state (spec §2.7). fp32.

Legend: B batch, L length, D channels, S poles per channel.
  h[m, d]  = sum_s R[d, s] * exp(lam[d, s] * m)                          (1) the filter, m = 0..L-1
  sigma[t] = p * sigma[t-1] + u[t],  p = exp(lam)                         (2) the state per pole
  y[t]     = sum_s R * sigma[t]  ==  sum_{m<=t} h[m] u[t-m]               (3) the same output
"""

from __future__ import annotations

import torch


MAX_DECAY_ELEMENTS = 1 << 24


def modal_filter_ref(log_poles_DS: torch.Tensor, residues_DS: torch.Tensor, L: int) -> torch.Tensor:
    """Equation (1): the (L, D) filter, built in fp32."""
    m = torch.arange(L, device=log_poles_DS.device, dtype=torch.float32)
    powers_LDS = torch.exp(log_poles_DS.float().unsqueeze(0) * m[:, None, None])
    return (powers_LDS * residues_DS.float().unsqueeze(0)).sum(-1)


def modal_state_output_ref(sigma_BDS: torch.Tensor, log_poles_DS: torch.Tensor,
                           residues_DS: torch.Tensor, L: int) -> torch.Tensor:
    """What the state after the previous tokens adds to the next L outputs:
    y[t] += sum_s R[s] * p[s]^(t+1) * sigma[s]  (unroll (2) with zero input). Returns (B, L, D) fp32."""
    t1 = torch.arange(1, L + 1, device=sigma_BDS.device, dtype=torch.float32)
    y_BLD = sigma_BDS.new_zeros(sigma_BDS.shape[0], L, sigma_BDS.shape[1], dtype=torch.float32)
    for s in range(log_poles_DS.shape[1]):  # one pole at a time keeps memory at L x D
        decay_LD = torch.exp(t1[:, None] * log_poles_DS[:, s].float())
        y_BLD += decay_LD.unsqueeze(0) * (residues_DS[:, s].float() * sigma_BDS[:, :, s].float())[:, None, :]
    return y_BLD


def modal_state_update_ref(sigma_BDS: torch.Tensor | None, u_BLD: torch.Tensor,
                           log_poles_DS: torch.Tensor) -> torch.Tensor:
    """The state after consuming u: sigma' = p^L * sigma + sum_t p^(L-1-t) u[t]  (unroll (2)). fp32."""
    B, L, D = u_BLD.shape
    S = log_poles_DS.shape[1]
    lags = torch.arange(L - 1, -1, -1, device=u_BLD.device, dtype=torch.float32)
    u_DBL = u_BLD.float().permute(2, 0, 1)
    new_BDS = u_BLD.new_empty(B, D, S, dtype=torch.float32)
    step = max(1, MAX_DECAY_ELEMENTS // (L * S))  # channels per block: bounds the (d, L, S) decay table
    for a in range(0, D, step):
        b = min(D, a + step)
        decay_dLS = torch.exp(lags[None, :, None] * log_poles_DS[a:b].float()[:, None, :])
        # a batched matmul over channels: (d, B, L) @ (d, L, S) -> (d, B, S)
        new_BDS[:, a:b] = torch.bmm(u_DBL[a:b], decay_dLS).permute(1, 0, 2)
    if sigma_BDS is not None:
        new_BDS += torch.exp(L * log_poles_DS.float()).unsqueeze(0) * sigma_BDS.float()
    return new_BDS


def modal_recurrence_ref(u_BLD: torch.Tensor, log_poles_DS: torch.Tensor,
                         residues_DS: torch.Tensor) -> torch.Tensor:
    """Equations (2)-(3) token by token: the slow, obvious form, for tests."""
    B, L, D = u_BLD.shape
    p_DS = torch.exp(log_poles_DS.float())
    sigma_BDS = u_BLD.new_zeros(B, D, p_DS.shape[1], dtype=torch.float32)
    ys = []
    for t in range(L):
        sigma_BDS = p_DS * sigma_BDS + u_BLD[:, t, :, None].float()
        ys.append((sigma_BDS * residues_DS.float()).sum(-1))
    return torch.stack(ys, dim=1)


def modal_conv_ref(u_BLD: torch.Tensor, log_poles_DS: torch.Tensor, residues_DS: torch.Tensor,
                   D_D: torch.Tensor | None = None, sigma_BDS: torch.Tensor | None = None,
                   h_LD: torch.Tensor | None = None, with_state: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The spec's form (§2.7, as vtx computes it): y = h * u + D u by a 2L fp32 FFT over the materialised
    (L, D) filter (1), plus what the state sigma (B, D, S) left (zero if None); and the state after u.
    h_LD: the filter (1) when the caller already has it. Returns (y (B, L, D) fp32, sigma' (B, D, S) fp32, or
    None without with_state)."""
    from ..fftconv.reference import fftconv_ref

    L = u_BLD.shape[1]
    h_LD = modal_filter_ref(log_poles_DS, residues_DS, L) if h_LD is None else h_LD
    y_BLD = fftconv_ref(u_BLD, h_LD)
    if sigma_BDS is not None:
        y_BLD = y_BLD + modal_state_output_ref(sigma_BDS, log_poles_DS, residues_DS, L)
    if D_D is not None:
        y_BLD = y_BLD + D_D.float() * u_BLD.float()
    if not with_state:
        return y_BLD, None
    with torch.no_grad():  # the state is for inference: no gradient through it
        sigma_out = modal_state_update_ref(sigma_BDS, u_BLD.detach(), log_poles_DS.detach())
    return y_BLD, sigma_out


def modal_hyena_ref(z_BLC: torch.Tensor, featurizer_CF: torch.Tensor, log_poles_DS: torch.Tensor,
                    residues_DS: torch.Tensor, D_D: torch.Tensor, sigma_BDS: torch.Tensor | None = None,
                    z_tail_B2C: torch.Tensor | None = None, *, conv=None, with_state: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Hyena-LR core from the projected features z (B, L, 3D), as the model's reference path composes it
    (spec §2.4 steps 3-5, §2.7): z^ = featurizer(z) continuing from the 2 rows z_tail before z (zeros if None),
    channel 3c -> q, 3c+1 -> k, 3c+2 -> v, u = k v, s = h * u + D u continuing from sigma, y = q s.
    conv: the modal convolution (default `modal_conv_ref`, the FFT). Returns (y (B, L, D) in z's dtype,
    the state after z (B, D, S) fp32, or None without with_state)."""
    from ..fir.reference import fir_ref

    B, L, C = z_BLC.shape
    zf_BLC = fir_ref(z_BLC, featurizer_CF, tail_BKC=z_tail_B2C, current_tap="last")  # (1) featurizer
    q_BLD, k_BLD, v_BLD = zf_BLC.view(B, L, C // 3, 3).unbind(-1)                    # (2) interleaved split
    s_BLD, sigma_out = (conv or modal_conv_ref)(k_BLD * v_BLD, log_poles_DS, residues_DS, D_D, sigma_BDS,
                                                with_state=with_state)                # (3) pre-gate, (4) conv
    return q_BLD * s_BLD.to(z_BLC.dtype), sigma_out                                    # (5) post-gate
