"""Mamba-1 in JAX: pure functions of a dict of arrays named as mamba-ssm's state dict, so the
model is ssmbench.archs.mamba's function line for line. backend.py jits them; the scans are in
scans.py.

What backend.py calls (every JAX architecture module has these):

    hidden(p, tokens, *, cfg, dtype, scan, chunk)         the final norm's output (B, L, D) fp32
    forward(p, tokens, *, cfg, dtype, scan, chunk)        logits (B, L, V) fp32 (the tied head of
                                                          ``hidden``), the parallel path
    init_state(cfg, batch, capacity, dtype, device)       the empty decode state
    prefill(p, tokens, state, *, cfg, dtype, scan, chunk) the decode state after ``tokens``
    step(p, token, state, *, cfg, dtype)                  (logits (B, V), the next state)
    op(scan, inputs)                                      the scan alone (ssmbench.ops), and its
                                                          inputs in the layout it takes

EMBEDDING, the embedding's key (the tied head's weight); LINEAR, the weights used only through
linear() (a decode copy holds them in the compute dtype: layers.decode_weights; a step with
``fused`` reads, fused, a stacked copy); and, for the chunked scan's static chunk,
``max_log_decay_step`` (the bound it is chosen from).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ssmbench.archs import mamba as arch

from .layers import STACKED, causal_conv, head, head_weight, layer_weight, linear, rmsnorm, split, stack_layers
from .scans import SCAN_FNS, scan_sequential

EMBEDDING = "backbone.embedding.weight"
LINEAR = ("in_proj.weight", "x_proj.weight", "dt_proj.weight", "out_proj.weight")  # used only through linear()


def _mixer_inputs(p, i, h, dtype):
    """h (B, L, D) -> x after conv + silu (B, L, E) fp32, z (B, L, E), conv input (B, L, E)."""
    pre = f"backbone.layers.{i}.mixer."
    E = p[pre + "D"].shape[0]
    x, z = split(linear(h, p[pre + "in_proj.weight"], dtype), (E, E))
    return jax.nn.silu(causal_conv(x, p[pre + "conv1d.weight"], p[pre + "conv1d.bias"])), z, x.astype(jnp.float32)


def _ssm_params(p, i, xc, dtype):
    pre = f"backbone.layers.{i}.mixer."
    R = p[pre + "dt_proj.weight"].shape[1]
    N = p[pre + "A_log"].shape[1]
    dt, Bm, Cm = split(linear(xc, p[pre + "x_proj.weight"], dtype), (R, N, N))
    dt = jax.nn.softplus(linear(dt, p[pre + "dt_proj.weight"], dtype, p[pre + "dt_proj.bias"]).astype(jnp.float32))
    return dt, Bm.astype(jnp.float32), Cm.astype(jnp.float32), -jnp.exp(p[pre + "A_log"])


def _layers(p, tokens, *, cfg, dtype, scan, chunk, return_state):
    """-> (the final norm's output (B, L, D) fp32, [(conv, ssm)] per layer if return_state)."""
    hidden, residual, states = p[EMBEDDING][tokens], None, []
    for i in range(cfg.n_layers):
        pre = f"backbone.layers.{i}."
        residual = hidden.astype(jnp.float32) if residual is None else hidden.astype(jnp.float32) + residual
        xc, z, x_in = _mixer_inputs(p, i, rmsnorm(residual, p[pre + "norm.weight"]), dtype)
        dt, Bm, Cm, A = _ssm_params(p, i, xc, dtype)
        y, h_last = SCAN_FNS[scan](xc, dt, A, Bm, Cm, chunk)
        y = (y + xc * p[pre + "mixer.D"]) * jax.nn.silu(z.astype(jnp.float32))
        hidden = linear(y, p[pre + "mixer.out_proj.weight"], dtype)
        if return_state:
            K = p[pre + "mixer.conv1d.weight"].shape[-1]
            L = x_in.shape[1]
            pad = jnp.zeros((x_in.shape[0], max(0, K - L), x_in.shape[2]), jnp.float32)
            conv_state = jnp.swapaxes(jnp.concatenate([pad, x_in], axis=1)[:, -K:], 1, 2)  # (B, E, K)
            states.append((conv_state, h_last))
    return rmsnorm(hidden.astype(jnp.float32) + residual, p["backbone.norm_f.weight"]), states


def hidden(p, tokens, *, cfg, dtype, scan, chunk):
    """tokens (B, L) -> the final norm's output (B, L, D) fp32, the LM head's input."""
    return _layers(p, tokens, cfg=cfg, dtype=dtype, scan=scan, chunk=chunk, return_state=False)[0]


def forward(p, tokens, *, cfg, dtype, scan, chunk):
    return head(hidden(p, tokens, cfg=cfg, dtype=dtype, scan=scan, chunk=chunk), head_weight(p, EMBEDDING), dtype)


def init_state(cfg, batch, capacity, dtype, device):
    """(conv (n_layers, B, E, K), ssm (n_layers, B, E, N)), fp32 whatever the compute dtype: every
    layer's state in two arrays, so a decode step takes and returns two buffers, not two a layer
    (each donated buffer costs the host a few µs a call: 48 of them at 130M were most of what a
    call cost on the CPU, 0.30 against 0.17 ms, before any kernel ran)."""
    z = partial(jnp.zeros, dtype=jnp.float32, device=device)
    return z((cfg.n_layers, batch, cfg.d_inner, cfg.d_conv)), z((cfg.n_layers, batch, cfg.d_inner, cfg.d_state))


def prefill(p, tokens, state, *, cfg, dtype, scan, chunk):
    """Every layer's conv and SSM state after ``tokens``, from the parallel path (``state``, the
    empty one, is not read: Mamba's state is computed, not filled in)."""
    return stack_layers(_layers(p, tokens, cfg=cfg, dtype=dtype, scan=scan, chunk=chunk, return_state=True)[1])


def _mixer_step(p, i, xz, conv, ssm, dtype):
    """One token through layer i's mixer after in_proj: xz (B, 2E), every layer's (conv, ssm) ->
    out_proj's output, layer i's new (conv (B, E, K), ssm (B, E, N))."""
    mix = f"backbone.layers.{i}.mixer."
    E = p[mix + "D"].shape[0]
    x, z = xz[:, :E], xz[:, E:]
    ci = jnp.concatenate([conv[i, ..., 1:], x[..., None].astype(jnp.float32)], axis=-1)
    xc = jax.nn.silu(jnp.einsum("bek,ek->be", ci, p[mix + "conv1d.weight"][:, 0]) + p[mix + "conv1d.bias"])
    dt, Bm, Cm, A = _ssm_params(p, i, xc, dtype)
    h = jnp.exp(dt[..., None] * A) * ssm[i] + (dt * xc)[..., None] * Bm[:, None, :]
    y = jnp.einsum("ben,bn->be", h, Cm) + xc * p[mix + "D"]
    return linear(y * jax.nn.silu(z.astype(jnp.float32)), p[mix + "out_proj.weight"], dtype), ci, h


def _mixer_step_fused(p, i, xz, conv, ssm, dtype):
    """_mixer_step with the work between the matmuls as pallas_decode's two kernels, which read
    every layer's weights (p a stacked decode copy: layers.decode_weights) and update layer i's
    states in place: -> out_proj's output, every layer's (conv, ssm)."""
    from . import pallas_decode

    w = {name: p[STACKED + "mixer." + name] for name in ("conv1d.weight", "conv1d.bias", "dt_proj.weight", "dt_proj.bias", "A_log", "D")}
    conv, xc = pallas_decode.conv_step(conv, i, xz, w["conv1d.weight"], w["conv1d.bias"])
    xdbl = linear(xc, layer_weight(p, i, "mixer.x_proj.weight"), dtype)
    ssm, g = pallas_decode.ssm_step(ssm, i, xc, xdbl, w["dt_proj.weight"], w["dt_proj.bias"], w["A_log"], w["D"], xz, dtype)
    return linear(g, layer_weight(p, i, "mixer.out_proj.weight"), dtype), conv, ssm


def step(p, token, state, *, cfg, dtype, fused=False):
    """token (B,), state (conv (n_layers, B, E, K), ssm (n_layers, B, E, N)) -> logits (B, V), the
    next state. fused: the mixer's work between its matmuls as two Pallas kernels a layer
    (pallas_decode.py; jax-cuda) on a stacked decode copy (layers.decode_weights), updating the states
    in place; XLA's step stacks the new states once at the end (layers.stack_layers)."""
    conv, ssm = state
    hidden, residual, new = p[EMBEDDING][token], None, []
    for i in range(cfg.n_layers):
        residual = hidden.astype(jnp.float32) if residual is None else hidden.astype(jnp.float32) + residual
        xz = linear(rmsnorm(residual, layer_weight(p, i, "norm.weight")), layer_weight(p, i, "mixer.in_proj.weight"), dtype)
        if fused:
            hidden, conv, ssm = _mixer_step_fused(p, i, xz, conv, ssm, dtype)
        else:
            hidden, *layer_state = _mixer_step(p, i, xz, conv, ssm, dtype)
            new.append(layer_state)
    x = rmsnorm(hidden.astype(jnp.float32) + residual, p["backbone.norm_f.weight"])
    state = (conv, ssm) if fused else stack_layers(new)
    return head(x, head_weight(p, EMBEDDING), dtype), state


def max_log_decay_step(p, tokens, *, cfg, dtype) -> float:
    """max over layers of max(Δ) * max|A|: the bound the chunked scan's chunk is chosen from."""
    hidden, residual, worst = p[EMBEDDING][tokens], None, 0.0
    for i in range(cfg.n_layers):
        pre = f"backbone.layers.{i}."
        residual = hidden.astype(jnp.float32) if residual is None else hidden.astype(jnp.float32) + residual
        xc, z, _ = _mixer_inputs(p, i, rmsnorm(residual, p[pre + "norm.weight"]), dtype)
        dt, Bm, Cm, A = _ssm_params(p, i, xc, dtype)
        worst = max(worst, float(jnp.max(dt)) * float(jnp.max(-A)))
        y, _ = scan_sequential(xc, dt, A, Bm, Cm)
        y = (y + xc * p[pre + "mixer.D"]) * jax.nn.silu(z.astype(jnp.float32))
        hidden = linear(y, p[pre + "mixer.out_proj.weight"], dtype)
    return worst


def op(scan: str, inputs: dict):
    """The selective scan alone with ``scan`` (mamba-ssm's selective_scan_fn semantics): (a
    function of arch.OP_ARGS -> out (fp32), the inputs). The chunked scan's chunk comes from them."""
    f32, chunk = jnp.float32, arch.op_chunk(inputs)

    def fn(x, dt, A, Bm, Cm, D, z, dt_bias):
        delta = jax.nn.softplus(dt.astype(f32) + dt_bias)
        y, _ = SCAN_FNS[scan](x.astype(f32), delta, A, Bm.astype(f32), Cm.astype(f32), chunk)
        return (y + x.astype(f32) * D) * jax.nn.silu(z.astype(f32))

    return fn, inputs
