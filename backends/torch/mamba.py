"""Mamba-1 in PyTorch (torch-cpu, torch-cuda, torch-mps): MambaLM, ssmbench.archs.mamba's math
written in torch ops.

Module names reproduce mamba-ssm's state dict, so ``load_state_dict`` takes a real checkpoint.
Mixed precision runs through autocast (bf16/fp16 matmuls, fp32 residual stream, norms and SSM
state). The scans (sequential, chunked, parallel, and triton on CUDA) live in scans.py and
triton/; decode always uses the recurrent step. The train step calls ``features`` and
``head_weight`` (head.py fuses the head with the loss); forward and decode return full logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmbench.archs.mamba import Config

from .graphs import StaticDecoder
from .scans import HOST_READS, add_norm, conv_silu, rmsnorm, selective_scan


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return rmsnorm(x, self.weight)


class MambaMixer(nn.Module):
    def __init__(self, c: Config, scan: str):
        super().__init__()
        D, E, N, K, R = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank
        self.E, self.N, self.R, self.K, self.scan = E, N, R, K, scan
        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.zeros(E, N))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, D, bias=False)

    def _ssm_inputs(self, x):
        """x (..., E) after conv+silu -> dt (..., E) before its bias and softplus, Bm, Cm (..., N)."""
        dt, Bm, Cm = self.x_proj(x).split([self.R, self.N, self.N], dim=-1)
        return F.linear(dt, self.dt_proj.weight), Bm, Cm

    def forward(self, h, return_state=False):
        """h (B, L, D) -> (B, L, D) [, (conv_state (B, E, K), ssm_state (B, E, N))]."""
        L = h.shape[1]
        x, z = self.in_proj(h).chunk(2, dim=-1)
        xc = conv_silu(self.scan, x, self.conv1d.weight, self.conv1d.bias)
        dt, Bm, Cm = self._ssm_inputs(xc)
        A = -torch.exp(self.A_log.float())
        y, h_last = selective_scan(self.scan, xc, dt, A, Bm, Cm, self.D.float(), z, self.dt_proj.bias.float())
        out = self.out_proj(y.to(x.dtype))
        if not return_state:
            return out
        conv_state = F.pad(x.transpose(1, 2), (max(0, self.K - L), 0))[..., -self.K :]
        return out, (conv_state, h_last)

    def init_state(self, batch, device):
        """(conv (B, E, K), ssm (B, E, N)), fp32 whatever the compute dtype."""
        return torch.zeros(batch, self.E, self.K, device=device), torch.zeros(batch, self.E, self.N, device=device)

    def step(self, h, state):
        """h (B, D), state (conv (B, E, K), ssm (B, E, N)) -> (B, D), new state."""
        conv, ssm = state
        x, z = self.in_proj(h).chunk(2, dim=-1)
        if self.scan == "triton":  # two fused kernels (triton/decode.py): decode is launch-bound
            from .triton.decode import conv_step, ssm_step

            conv, xc = conv_step(conv, x, self.conv1d.weight, self.conv1d.bias)
            dt, Bm, Cm = self._ssm_inputs(xc)
            y, ssm = ssm_step(xc, dt, z, Bm, Cm, self.A_log, self.D, self.dt_proj.bias, ssm)
            return self.out_proj(y), (conv, ssm)
        conv = torch.cat([conv[..., 1:], x[..., None].to(conv.dtype)], -1)
        xc = F.silu((conv * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias).to(x.dtype)
        dt, Bm, Cm = self._ssm_inputs(xc)
        dt = F.softplus(dt.float() + self.dt_proj.bias.float())
        A = -torch.exp(self.A_log.float())
        xf = xc.float()
        ssm = torch.exp(dt[..., None] * A) * ssm + (dt * xf)[..., None] * Bm.float()[:, None, :]
        y = torch.einsum("ben,bn->be", ssm, Cm.float()) + xf * self.D.float()
        return self.out_proj((y * F.silu(z.float())).to(x.dtype)), (conv, ssm)


class MambaBlock(nn.Module):
    def __init__(self, c, scan, mixer):
        super().__init__()
        self.norm = RMSNorm(c.d_model)
        self.mixer = mixer(c, scan)


class Backbone(nn.Module):
    def __init__(self, c, scan, mixer):
        super().__init__()
        self.embedding = nn.Embedding(c.vocab, c.d_model)
        self.layers = nn.ModuleList(MambaBlock(c, scan, mixer) for _ in range(c.n_layers))
        self.norm_f = RMSNorm(c.d_model)


class MambaLM(nn.Module):
    """mamba-ssm's MambaLMHeadModel around a mixer (MambaMixer here; mamba2.py's Mamba2Mixer):
    the residual stream is kept in fp32. A mixer defines forward(h, return_state), init_state
    (batch, device) and step(h, state)."""

    graph_decoder = StaticDecoder  # decode as one CUDA graph a token (graphs.py)

    def __init__(self, c, scan: str, mixer=MambaMixer):
        super().__init__()
        self.cfg = c
        self.backbone = Backbone(c, scan, mixer)
        self.lm_head = None  # an untied LM head (untie()); without one the head is the embedding

    def _final(self, hidden, residual, kind):
        """The last add + norm, in the blocks' output dtype: what the head multiplies."""
        return add_norm(kind, hidden, residual, self.backbone.norm_f.weight)[0].to(hidden.dtype)

    head_cast = None  # the head's weight already in the compute dtype, (D, V): a decoder's (graphs.py)

    def untie(self):
        """Give the model its own LM head (a checkpoint's ``lm_head.weight``), as mamba-ssm's
        tie_embeddings=False."""
        self.lm_head = nn.Linear(self.cfg.d_model, self.cfg.vocab, bias=False)

    def _head(self, x):
        return x @ (self.head_cast if self.head_cast is not None else self.head_weight().T.to(x.dtype))

    def features(self, tokens, return_state=False):
        """tokens (B, L) -> the final norm's output (B, L, D) [, each layer's last state]."""
        hidden, residual, states = self.backbone.embedding(tokens), None, []
        kind = self.backbone.layers[0].mixer.scan  # the triton kind fuses add + norm too
        for layer in self.backbone.layers:
            x, residual = add_norm(kind, hidden, residual, layer.norm.weight)
            out = layer.mixer(x, return_state=return_state)
            hidden = out[0] if return_state else out
            if return_state:
                states.append(out[1])
        x = self._final(hidden, residual, kind)
        return (x, states) if return_state else x

    def head_weight(self):
        return self.backbone.embedding.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, tokens, return_state=False):
        if return_state:
            x, states = self.features(tokens, return_state=True)
            return self._head(x), states
        return self._head(self.features(tokens))

    def init_state(self, batch, capacity, device, dtype):
        return [layer.mixer.init_state(batch, device) for layer in self.backbone.layers]

    def prefill(self, tokens, capacity, dtype):
        return self.forward(tokens, return_state=True)[1]

    def step(self, token, state):
        hidden, residual, new = self.backbone.embedding(token), None, []
        kind = self.backbone.layers[0].mixer.scan
        for layer, s in zip(self.backbone.layers, state):
            x, residual = add_norm(kind, hidden, residual, layer.norm.weight)
            hidden, s = layer.mixer.step(x, s)
            new.append(s)
        return self._head(self._final(hidden, residual, kind)), new

    def graph_refusal(self) -> str | None:
        """Why a step of this model cannot be one CUDA graph (every op must stay on the device), or None."""
        why = HOST_READS.get(self.backbone.layers[0].mixer.scan)
        return f"eager ({why})" if why else None


def build(cfg: Config, scan: str) -> MambaLM:
    return MambaLM(cfg, scan)


def op(scan: str, inputs: dict):
    """The selective scan alone (ssmbench.ops; mamba-ssm's selective_scan_fn semantics) with
    ``scan``: (a function of ssmbench.archs.mamba's op inputs, in OP_ARGS order, -> out; the inputs)."""
    return (lambda *args: selective_scan(scan, *args)[0]), inputs


def op_graph_refusal(scan: str) -> str | None:
    """Why the op alone with ``scan`` cannot be captured in a CUDA graph, or None."""
    return HOST_READS.get(scan)
