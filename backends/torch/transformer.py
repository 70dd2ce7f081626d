"""The Transformer baseline in PyTorch: GPT, ssmbench.archs.transformer's math in torch ops
(module names as GPT-2's, under ``transformer.``). Attention is ``scaled_dot_product_attention``
(flash or memory-efficient kernels where the device has them); decode keeps a KV cache.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmbench.archs.transformer import Config

from .graphs import KVCacheDecoder


def sinusoidal(L, D, offset, device):
    """(L, D) encodings of positions offset.., offset an int or a (1,) device tensor (a graph's)."""
    half = D // 2
    freqs = 10000.0 ** (-torch.arange(half, device=device, dtype=torch.float64) / max(half, 1))
    ang = (torch.arange(L, device=device, dtype=torch.float64) + offset)[:, None] * freqs
    pe = torch.cat([torch.sin(ang), torch.cos(ang)], 1)
    return F.pad(pe, (0, D - 2 * half)).float()


class Attention(nn.Module):
    def __init__(self, t: Config):
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
    graph_decoder = KVCacheDecoder  # decode as one CUDA graph a token over the KV cache (graphs.py)

    def __init__(self, t: Config):
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

    def graph_refusal(self) -> str | None:
        return None  # every op stays on the device


def build(cfg: Config, scan: str | None = None) -> GPT:
    return GPT(cfg)


def op(scan: str, inputs: dict):
    """Causal attention alone (ssmbench.ops): ((q, k, v) (B, H, L, hd) -> o; the inputs)."""
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), inputs


def op_graph_refusal(scan: str) -> str | None:
    return None
