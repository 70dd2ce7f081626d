"""The PyTorch models behind torch-cpu, torch-cuda and torch-mps: Mamba (MambaLM) and the
Transformer baseline (GPT), with ssmbench.reference's math written in torch ops.

Module names reproduce mamba-ssm's state dict (and GPT-2's for the baseline), so
``load_state_dict`` takes a real checkpoint. Mixed precision runs through autocast (bf16/fp16
matmuls, fp32 residual stream, norms and SSM state). The scans (sequential, chunked, parallel,
and triton on CUDA) live in torch_scans.py and torch_triton.py; decode always uses the
recurrent step. The train step calls ``features`` and ``head_weight`` (torch_head.py fuses the
head with the loss); forward and decode return full logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmbench.config import ModelConfig, TransformerConfig

from .torch_scans import add_norm, conv_silu, rmsnorm, selective_scan


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return rmsnorm(x, self.weight)


class MambaMixer(nn.Module):
    def __init__(self, c: ModelConfig, scan: str):
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

    def step(self, h, state):
        """h (B, D), state (conv (B, E, K), ssm (B, E, N)) -> (B, D), new state."""
        conv, ssm = state
        x, z = self.in_proj(h).chunk(2, dim=-1)
        if self.scan == "triton":  # two fused kernels (torch_fused.py): decode is launch-bound
            from .torch_fused import conv_step, ssm_step

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
    def __init__(self, c, scan):
        super().__init__()
        self.norm = RMSNorm(c.d_model)
        self.mixer = MambaMixer(c, scan)


class Backbone(nn.Module):
    def __init__(self, c, scan):
        super().__init__()
        self.embedding = nn.Embedding(c.vocab, c.d_model)
        self.layers = nn.ModuleList(MambaBlock(c, scan) for _ in range(c.n_layers))
        self.norm_f = RMSNorm(c.d_model)


class MambaLM(nn.Module):
    """mamba-ssm's MambaLMHeadModel: the residual stream is kept in fp32."""

    def __init__(self, c: ModelConfig, scan: str):
        super().__init__()
        self.cfg = c
        self.backbone = Backbone(c, scan)

    def _final(self, hidden, residual, kind):
        """The last add + norm, in the blocks' output dtype: what the head multiplies."""
        return add_norm(kind, hidden, residual, self.backbone.norm_f.weight)[0].to(hidden.dtype)

    head_cast = None  # the tied head weight already in the compute dtype, (D, V): a decoder's (torch_graphs)

    def _head(self, x):
        return x @ (self.head_cast if self.head_cast is not None else self.backbone.embedding.weight.T.to(x.dtype))

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
        return self.backbone.embedding.weight  # tied

    def forward(self, tokens, return_state=False):
        if return_state:
            x, states = self.features(tokens, return_state=True)
            return self._head(x), states
        return self._head(self.features(tokens))

    def init_state(self, batch, capacity, device, dtype):
        c = self.cfg  # the SSM state stays fp32 whatever the compute dtype
        return [
            (torch.zeros(batch, c.d_inner, c.d_conv, device=device), torch.zeros(batch, c.d_inner, c.d_state, device=device))
            for _ in range(c.n_layers)
        ]

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


def sinusoidal(L, D, offset, device):
    """(L, D) encodings of positions offset.., offset an int or a (1,) device tensor (a graph's)."""
    half = D // 2
    freqs = 10000.0 ** (-torch.arange(half, device=device, dtype=torch.float64) / max(half, 1))
    ang = (torch.arange(L, device=device, dtype=torch.float64) + offset)[:, None] * freqs
    pe = torch.cat([torch.sin(ang), torch.cos(ang)], 1)
    return F.pad(pe, (0, D - 2 * half)).float()


class Attention(nn.Module):
    def __init__(self, t: TransformerConfig):
        super().__init__()
        self.H = t.n_head
        self.c_attn = nn.Linear(t.d_model, 3 * t.d_model)
        self.c_proj = nn.Linear(t.d_model, t.d_model)

    def forward(self, x, cache=None, pos=0):
        """x (B, L, D). With a cache (k, v each (B, H, cap, hd)) the L new keys go to
        positions pos..pos+L-1 and the queries attend to everything up to them. A tensor pos
        ((1,), on the device: a CUDA graph's step) attends over the whole capacity through a
        mask instead, so that no shape depends on it."""
        Bt, L, D = x.shape
        q, k, v = (t.view(Bt, L, self.H, D // self.H).transpose(1, 2) for t in self.c_attn(x).split(D, -1))
        if cache is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif torch.is_tensor(pos):
            kc, vc = cache
            at = pos + torch.arange(L, device=x.device)  # (L,) the new tokens' positions
            kc.index_copy_(2, at, k.to(kc.dtype))
            vc.index_copy_(2, at, v.to(vc.dtype))
            seen = torch.arange(kc.shape[2], device=x.device) <= at[:, None]  # (L, cap); the rest must be finite (zeros)
            o = F.scaled_dot_product_attention(q, kc.to(q.dtype), vc.to(q.dtype), attn_mask=seen)
        else:
            kc, vc = cache
            kc[:, :, pos : pos + L] = k.to(kc.dtype)
            vc[:, :, pos : pos + L] = v.to(vc.dtype)
            k, v = kc[:, :, : pos + L].to(q.dtype), vc[:, :, : pos + L].to(q.dtype)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=L > 1)
        return self.c_proj(o.transpose(1, 2).reshape(Bt, L, D))


class MLP(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.c_fc = nn.Linear(t.d_model, t.d_mlp)
        self.c_proj = nn.Linear(t.d_mlp, t.d_model)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPTBlock(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.ln_1 = nn.LayerNorm(t.d_model, eps=1e-5)
        self.attn = Attention(t)
        self.ln_2 = nn.LayerNorm(t.d_model, eps=1e-5)
        self.mlp = MLP(t)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPTBody(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.wte = nn.Embedding(t.vocab, t.d_model)
        self.h = nn.ModuleList(GPTBlock(t) for _ in range(t.n_layers))
        self.ln_f = nn.LayerNorm(t.d_model, eps=1e-5)


class GPT(nn.Module):
    def __init__(self, t: TransformerConfig):
        super().__init__()
        self.cfg = t
        self.transformer = GPTBody(t)

    def features(self, tokens, caches=None, pos=0):
        """tokens (B, L) at positions pos.. -> the final LayerNorm's output (B, L, D)."""
        tr = self.transformer
        x = tr.wte(tokens) + sinusoidal(tokens.shape[1], self.cfg.d_model, pos, tokens.device)
        for i, block in enumerate(tr.h):
            x = block(x, None if caches is None else caches[i], pos)
        return tr.ln_f(x)

    def head_weight(self):
        return self.transformer.wte.weight  # tied

    head_cast = None  # as MambaLM's

    def _run(self, tokens, caches=None, pos=0):
        x = self.features(tokens, caches, pos)
        return x @ (self.head_cast if self.head_cast is not None else self.transformer.wte.weight.T.to(x.dtype))

    def forward(self, tokens):
        return self._run(tokens)

    def init_state(self, batch, capacity, device, dtype):
        t = self.cfg  # the KV cache is kept in the compute dtype
        shape = (batch, t.n_head, capacity, t.d_model // t.n_head)
        caches = [
            (torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)) for _ in range(t.n_layers)
        ]
        return (caches, 0)

    def prefill(self, tokens, capacity, dtype):
        caches, _ = self.init_state(tokens.shape[0], capacity, tokens.device, dtype)
        self._run(tokens, caches, 0)
        return (caches, tokens.shape[1])

    def step(self, token, state):
        caches, pos = state
        if pos >= caches[0][0].shape[2]:
            raise ValueError(f"KV cache full at position {pos}")
        return self._run(token[:, None], caches, pos)[:, 0], (caches, pos + 1)

    def step_at(self, token, caches, pos):
        """``step`` with the position a (1,) device tensor, for a CUDA graph: token (B,) ->
        logits (B, V); the caches are written at pos (the caller keeps pos within capacity)."""
        return self._run(token[:, None], caches, pos)[:, 0]
