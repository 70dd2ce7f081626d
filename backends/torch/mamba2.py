"""Mamba-2 in PyTorch (torch-cpu, torch-cuda, torch-mps): ssmbench.archs.mamba2's math in torch
ops, inside mamba.py's language model (the same blocks, residual stream, head and decode graphs).

Module names reproduce mamba-ssm's Mamba2 state dict, so ``load_state_dict`` takes a real
checkpoint. The SSD scans (ssd, sequential, and triton on CUDA) are in ssd.py and triton/ssd.py;
the triton kind also runs the causal conv + silu and the residual add + RMSNorm as fused kernels
(triton/fused.py), as Mamba-1's does. Decode is the recurrent step with an O(1) state:
conv (B, E + 2GN, K) over x, B and C, and the SSM state (B, H, P, N), both fp32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmbench.archs.mamba2 import Config

from .mamba import MambaLM
from .scans import conv_silu
from .ssd import gated_rmsnorm, ssd


class GatedRMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class Mamba2Mixer(nn.Module):
    def __init__(self, c: Config, scan: str):
        super().__init__()
        D, E, H, G, N, K = c.d_model, c.d_inner, c.nheads, c.ngroups, c.d_state, c.d_conv
        self.E, self.H, self.P, self.G, self.N, self.K, self.C = E, H, c.headdim, G, N, K, c.conv_dim
        self.scan, self.chunk_size = scan, c.chunk_size
        self.in_proj = nn.Linear(D, 2 * E + 2 * G * N + H, bias=False)  # z, xBC, dt
        self.conv1d = nn.Conv1d(self.C, self.C, K, groups=self.C, padding=K - 1, bias=True)
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.A_log = nn.Parameter(torch.zeros(H))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(E)
        self.out_proj = nn.Linear(E, D, bias=False)

    def _heads(self, xBC):
        """xBC (..., E + 2GN) -> x (..., H, P), Bm, Cm (..., G, N)."""
        x, Bm, Cm = xBC.split([self.E, self.G * self.N, self.G * self.N], dim=-1)
        lead = xBC.shape[:-1]
        return x.reshape(*lead, self.H, self.P), Bm.reshape(*lead, self.G, self.N), Cm.reshape(*lead, self.G, self.N)

    def forward(self, h, return_state=False):
        """h (B, L, D) -> (B, L, D) [, (conv_state (B, E + 2GN, K), ssm_state (B, H, P, N))]."""
        Bt, L, _ = h.shape
        z, xBC_in, dt = self.in_proj(h).split([self.E, self.C, self.H], dim=-1)
        xBC = conv_silu(self.scan, xBC_in, self.conv1d.weight, self.conv1d.bias)  # fused where the scan is triton
        x, Bm, Cm = self._heads(xBC)
        A = -torch.exp(self.A_log.float())
        y, S = ssd(self.scan, x, dt, A, Bm, Cm, self.D.float(), self.dt_bias.float(), self.chunk_size)
        y = gated_rmsnorm(self.scan, y.reshape(Bt, L, self.E), z, self.norm.weight, self.G)
        out = self.out_proj(y)
        if not return_state:
            return out
        conv_state = F.pad(xBC_in.transpose(1, 2).float(), (max(0, self.K - L), 0))[..., -self.K :]
        return out, (conv_state, S)

    def init_state(self, batch, device):
        """(conv (B, E + 2GN, K), ssm (B, H, P, N)), fp32 whatever the compute dtype."""
        return torch.zeros(batch, self.C, self.K, device=device), torch.zeros(batch, self.H, self.P, self.N, device=device)

    def step(self, h, state):
        """h (B, D), state (conv (B, E + 2GN, K), ssm (B, H, P, N)) -> (B, D), new state."""
        conv, S = state
        z, xBC, dt = self.in_proj(h).split([self.E, self.C, self.H], dim=-1)
        if self.scan == "triton":  # three fused kernels (triton/decode.py, fused.py): decode is launch-bound
            from .triton.decode import conv_step, ssd_step

            conv, xBC = conv_step(conv, xBC, self.conv1d.weight, self.conv1d.bias)
            y, S = ssd_step(xBC, dt, self.A_log, self.D, self.dt_bias, S, self.G)
            return self.out_proj(gated_rmsnorm(self.scan, y, z, self.norm.weight, self.G)), (conv, S)
        conv = torch.cat([conv[..., 1:], xBC[..., None].to(conv.dtype)], -1)
        xBC = F.silu((conv * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        x, Bm, Cm = self._heads(xBC)  # (B, H, P), (B, G, N) x 2, fp32
        Bh, Ch = (t.repeat_interleave(self.H // self.G, dim=1) for t in (Bm, Cm))  # head h reads group h // (H / G)
        delta = F.softplus(dt.float() + self.dt_bias.float())  # (B, H)
        decay = torch.exp(delta * -torch.exp(self.A_log.float()))
        S = decay[..., None, None] * S + (delta[..., None] * x)[..., None] * Bh[:, :, None, :]
        y = torch.einsum("bhpn,bhn->bhp", S, Ch) + self.D.float()[:, None] * x
        y = gated_rmsnorm(self.scan, y.reshape(-1, self.E), z, self.norm.weight, self.G)
        return self.out_proj(y), (conv, S)


def build(cfg: Config, scan: str) -> MambaLM:
    return MambaLM(cfg, scan, Mamba2Mixer)


def op(scan: str, inputs: dict):
    """SSD alone (ssmbench.ops; mamba-ssm's mamba_chunk_scan_combined semantics, dt_softplus, D per
    head, no z) with ``scan``: (a function of ssmbench.archs.mamba2's OP_ARGS -> y, the inputs
    without the chunk size, which the function keeps)."""
    inputs = dict(inputs)
    T = int(inputs.pop("chunk_size"))
    return (lambda x, dt, A, Bm, Cm, D, dt_bias: ssd(scan, x, dt, A, Bm, Cm, D, dt_bias, T)[0]), inputs


def op_graph_refusal(scan: str) -> str | None:
    """Why the op alone with ``scan`` cannot be captured in a CUDA graph: every SSD scan can."""
    return None
