"""The LM head and the cross-entropy loss as one op, a chunk of tokens at a time (the train step).

    logits = x Wᵀ                       x (T, D) the final norm's output, W (V, D) the tied embedding
    loss   = mean_t [ lse(logits_t) - logits_t[y_t] ],   lse(l) = log Σ_v exp(l_v)

Why fused. Unfused, the loss holds (T, V) tensors: autocast's bf16 logits, their fp32 copy,
log_softmax's fp32 output (kept for the backward), then fp32 and bf16 gradients. At mamba-130m's
batch 8 x 2048 with V = 50280 that is 824M elements a tensor, some 10 GB when the loss is
computed, which is also when the activations of every layer are alive: about half the train
step's peak memory, and ~35 GB of memory traffic.

How. The loss is a scalar, so its gradient is known in the forward: for each chunk of tokens,

    l   = x_c Wᵀ                        (c, V) in the compute dtype, the only (·, V) buffer
    g   = (softmax(l) - onehot(y_c)) / T   written over l (fp32 arithmetic; two sweeps of V)
    dx_c = g W,   dW += g x_cᵀ

and the backward only scales dx and dW by the incoming gradient. The numbers are autocast's:
logits rounded to the compute dtype, softmax in fp32, the gradient rounded to the compute dtype
before its matmuls. On CUDA the per-row pass is one Triton kernel (triton/fused.py's cross_entropy_);
elsewhere it is a few torch ops.
"""

from __future__ import annotations

import functools
import math

import torch

CHUNK_ELEMENTS = 1 << 28  # logits per chunk: 512 MB in bf16 (dW takes one accumulate per chunk)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def _cross_entropy_torch(logits, targets, scale: float):
    """cross_entropy_'s contract with torch ops: row losses (R,) fp32, logits <- their gradient."""
    lf = logits.float()
    lse = torch.logsumexp(lf, -1)
    loss = lse - lf.gather(1, targets[:, None])[:, 0]
    g = torch.exp(lf - lse[:, None]).mul_(scale)
    g[torch.arange(len(targets), device=g.device), targets] -= scale
    logits.copy_(g)
    return loss


def cross_entropy_rows(logits, targets, scale: float):
    """logits (R, V) -> row losses (R,) fp32; logits become scale * (softmax - onehot(targets))."""
    if logits.is_cuda and _triton_rows() is not None:
        return _triton_rows()(logits, targets, scale)
    return _cross_entropy_torch(logits, targets, scale)


@functools.cache
def _triton_rows():
    """triton.fused.cross_entropy_, or None where Triton is missing (a CUDA torch without it)."""
    try:
        from .triton.fused import cross_entropy_
    except ImportError:
        return None
    return cross_entropy_


class HeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, rows: int):
        T = x.shape[0]
        want_x, want_w = ctx.needs_input_grad[:2]  # a frozen head (or input) skips its matmul
        w = weight.to(x.dtype)
        dx = torch.empty_like(x) if want_x else None
        dw = torch.zeros(weight.shape, device=x.device, dtype=torch.float32) if want_w else None
        total = torch.zeros((), device=x.device, dtype=torch.float32)
        with torch.autocast(x.device.type, enabled=False):  # x, w already in the compute dtype
            for s in range(0, T, rows):
                xc = x[s : s + rows]
                g = xc @ w.T
                total += cross_entropy_rows(g, targets[s : s + rows], 1.0 / T).sum()
                if want_x:
                    torch.mm(g, w, out=dx[s : s + rows])
                if want_w:
                    dw += (g.T @ xc).float()
        ctx.save_for_backward(dx, dw)
        ctx.weight_dtype = weight.dtype
        return total / T

    @staticmethod
    def backward(ctx, grad):
        dx, dw = ctx.saved_tensors
        gx = None if dx is None else dx * grad.to(dx.dtype)
        return gx, None if dw is None else (dw * grad).to(ctx.weight_dtype), None, None


def head_loss(x, weight, targets, rows: int | None = None):
    """Mean cross-entropy of the logits x Wᵀ against targets, without keeping the logits.

    x (..., D) the final norm's output (any dtype; the matmuls run in autocast's dtype where
    autocast is on, else x's), weight (V, D) the head, targets (...) int in [0, V) (unchecked;
    no ignore_index) -> scalar fp32. ``rows`` tokens a chunk (default: equal chunks of about
    CHUNK_ELEMENTS logits). Differentiable in x and weight; the incoming gradient scales dx and
    dW after they are formed (in the compute dtype for dx)."""
    V, D = weight.shape
    x = x.reshape(-1, D).to(_compute_dtype(x)).contiguous()
    if rows is None:  # equal chunks of about CHUNK_ELEMENTS logits, rows a multiple of 128
        T = x.shape[0]
        chunks = math.ceil(T * V / CHUNK_ELEMENTS)
        rows = max(1, min(T, 128 * math.ceil(T / chunks / 128)))
    return HeadLoss.apply(x, weight, targets.reshape(-1), rows)
