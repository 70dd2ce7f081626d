"""The fused SSD's Triton kernels (ssd.py launches them), with their math.

Per sequence b, head h (reading group g = h // (H/G)) and chunk c of T steps, with steps t, s
counted from the chunk's start and S_c (P, N) the state entering chunk c (S_0 = the initial
state, or 0):

    Δ_t = softplus(dt_t + dt_bias)        a_t = A Σ_{r<=t} Δ_r   (the cumulative log-decay, <= 0)
    y_t = Σ_{s<=t} (C_t·B_s) e^(a_t - a_s) Δ_s x_s  +  e^(a_t) S_c C_t  +  D x_t
    S_{c+1} = e^(a_end) S_c + Σ_s e^(a_end - a_s) Δ_s x_s B_s^T       (a_end: a at the chunk's last step)

The first sum is SSD's masked T x T form, (L ∘ C B^T)(Δ x): a program owns BT steps t and walks
the steps s <= t in tiles of BK, with tl.dot for C B^T and for its product with x. Every
exponent is masked or bounded to <= 0 before exp (a never increases within a chunk: A < 0,
Δ > 0), so no exp overflows.

Forward, three kernels (grids in ssd.py):
    chunk_cumsum_kernel   Δ and a per chunk, (2, B, H, nc T) fp32, kept for the backward
    chunk_state_kernel    S_c for every chunk, in order: a program owns a (BP, BN) tile of one
                          (sequence, head)'s state in registers and walks the chunks, adding each
                          chunk's own end state (X^T diag(e^(a_end - a) Δ) B, a tl.dot per BK
                          steps) to the decayed carry; so the per-chunk states are written once,
                          (B, nc + 1, H, P, N) fp32 (the last entry the final state), with no
                          separate pass across chunks over HBM
    chunk_output_kernel   y for BT steps x BP channels of one chunk and head: e^(a_t) C S_c, the
                          intra-chunk tiles s <= t, D x

Backward. G_c = dL/dS_{c+1} (the state leaving chunk c) runs backwards as the state runs forwards,

    G_{nc-1} = dL/d(final state) (or 0),   G_{c-1} = e^(a_end) G_c + Σ_t e^(a_t) dy_t C_t^T

(G_{-1} is the initial state's gradient), and from G_c, the saved S_c and dy each chunk's
gradients are local:

    U_s   = Σ_{t>=s} (C_t·B_s) e^(a_t - a_s) dy_t + e^(a_end - a_s) G_c B_s        (P)
    dx_s  = Δ_s U_s + D dy_s
    dB_s  = Σ_{t>=s} e^(a_t - a_s) Δ_s (dy_t·x_s) C_t + e^(a_end - a_s) Δ_s G_c^T x_s
    dC_t  = Σ_{s<=t} e^(a_t - a_s) Δ_s (dy_t·x_s) B_s + e^(a_t) S_c^T dy_t
    dΔ_s (direct) = x_s·U_s = Σ_{t>=s} w_st (x_s·dy_t) + x_s·e^(a_end - a_s) G_c B_s,   w_st = (C_t·B_s) e^(a_t - a_s)

and through the decays, R_r = Σ_{t>=r} dL/da_t (a_t = A Σ_{r<=t} Δ_r: what dΔ_r and dA take):

    R_r = Σ_{t>=r} (ρ_t - κ_t) + e^(a_end) <G_c, S_c> + Σ_{s<r} Δ_s x_s·e^(a_end - a_s) G_c B_s
    ρ_t = Σ_{s<=t} Q_ts + dy_t·e^(a_t) S_c C_t     a_t ending decays (chunk_grad_c)
    κ_t = Σ_{t'>=t} Q_t't = Δ_t w·(x dy) share     a_t starting them (chunk_grad_x)

with Q_ts = w_st Δ_s (dy_t·x_s); then dΔ_r = dΔ_r (direct) + A R_r, dA = Σ Δ_r R_r, and
ddt = dΔ σ(dt + dt_bias). The end state's terms are <G_c, S_{c+1}> - Σ_{s>=r} Δ_s x_s·e^(a_end
- a_s) G_c B_s rewritten with S_{c+1}'s own formula: as written first, the two nearly cancel, and
at bf16 their roundings left dA and ddt_bias 1e-1 off (1e-3 this way). Likewise dΔ (direct)'s
share from the steps is summed from fp32 products of the inputs (w_st, x_s·dy_t), not taken
from U_s, whose dot rounds w to bf16. Five kernels:
    state_grad_kernel     chunk_state_kernel's mirror: G_c for every chunk, backwards,
                          (B, nc, H, P, N) fp32; each tile's share of e^(a_end) <G_c, S_c>; G_{-1}
    chunk_grad_c_kernel   BT steps t of a chunk, a run of heads: dC_t, and each head's ρ_t
    chunk_grad_b_kernel   BT steps s of a chunk, a run of heads: dB_s
    chunk_grad_x_kernel   BT steps s of a chunk and head: U_s, dx_s, dΔ_s (direct) in its two
                          parts, dy_s·x_s
    dt_grad_kernel        a chunk: R, ddt, and the chunk's partial sums of dA, ddt_bias, dD
and one that finishes: grad_sums_kernel sums the chunks' partials of dA, ddt_bias and dD, and the
head runs' partials of dB and dC where there are several (torch's sums and casts of them, 5
reductions and 2 conversions, took 0.056 ms of the backward at (8, 2048, 24 x 64, N 128)).

Heads of a group share B and C, so dB and dC sum over them: a chunk_grad_c/b program takes a run
of HS heads of one group and sums over them in registers, writing one partial per run (ssd.py
sums the H/G/HS runs where there is more than one). U_s and dB_s walk the same tiles but are
separate kernels: together their accumulators and tiles spilled registers on sm_90.

Dots take x's dtype (bf16/fp16 operands, fp32 accumulation; fp32 inputs dot in IEEE fp32, not
TF32); everything else is fp32. INTERPRET (Triton's interpreter: the tests on a CPU) changes how
the arithmetic is run, not what it computes (``_mma``, ``_bound``).
"""

from . import tl, triton
from .scan_kernels import sigmoid, softplus


# ---------------------------------------------------------------------------- device functions
@triton.jit
def _split(i, n):
    """(i % n, i // n): a flat program id's fastest index and the rest."""
    return i % n, i // n


@triton.jit
def _rounded(v, DT: tl.constexpr):
    """v in DT, as fp32, rounded to nearest even: what the GPU's conversion gives (the
    interpreter's own conversion to bf16 truncates, which biases every sum it feeds)."""
    v = v.to(tl.float32)
    if DT == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    else:
        return v.to(DT).to(tl.float32)


@triton.jit
def _mma(a, b, acc, DT: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr):
    """acc + a @ b, a and b rounded to DT, accumulated in fp32. The interpreter multiplies in fp32
    (exact on DT's values: its own dot multiplies bf16 bit patterns as integers)."""
    if INTERPRET:
        return tl.dot(_rounded(a, DT), _rounded(b, DT), acc, input_precision="ieee")
    else:
        return tl.dot(a.to(DT), b.to(DT), acc, input_precision=PREC)


@triton.jit
def _bound(n, INTERPRET: tl.constexpr):
    """A runtime loop bound for range(): as it is, compiled; under the interpreter a Python int
    (its scalars are 1-element arrays, which numpy 2 will not convert with int())."""
    if INTERPRET:
        return n.handle.data.item()
    else:
        return n


@triton.jit
def _load_pn(ptr, p, n, P, N):
    """A (p, n) tile of the (P, N) fp32 state at ptr, 0 outside it."""
    return tl.load(ptr + p[:, None] * N + n[None, :], mask=(p < P)[:, None] & (n < N)[None, :], other=0.0)


@triton.jit
def _decay(a_t, a_s, t, s, T_ROWS: tl.constexpr):
    """e^(a_t - a_s) where t >= s, else 0, as a (t, s) tile (T_ROWS) or an (s, t) one: masked
    before exp, so only exponents <= 0."""
    if T_ROWS:
        return tl.exp(tl.where(t[:, None] >= s[None, :], a_t[:, None] - a_s[None, :], float("-inf")))
    else:
        return tl.exp(tl.where(t[None, :] >= s[:, None], a_t[None, :] - a_s[:, None], float("-inf")))


# ---------------------------------------------------------------------------- forward
@triton.jit
def chunk_cumsum_kernel(
    dt_ptr, A_ptr, bias_ptr, da_ptr,
    L, H, nc, plane, sdt_b, sdt_l, sdt_h,
    T: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    """One chunk of one sequence, BH heads -> da (2, B, H, nc T): [0] Δ, [1] a (``plane`` floats
    apart). Steps past L get Δ = 0, so a keeps its last value there."""
    hb, bc = _split(tl.program_id(0), tl.cdiv(H, BH))
    c, b = _split(bc, nc)
    t = tl.arange(0, T)
    h = hb * BH + tl.arange(0, BH)
    pos = c.to(tl.int64) * T + t
    mh = h < H
    m = (pos < L)[:, None] & mh[None, :]
    v = tl.load(dt_ptr + b.to(tl.int64) * sdt_b + pos[:, None] * sdt_l + h[None, :] * sdt_h, mask=m, other=0.0).to(tl.float32)
    v += tl.load(bias_ptr + h, mask=mh, other=0.0).to(tl.float32)[None, :]
    delta = tl.where(m, softplus(v), 0.0)
    a = tl.cumsum(delta * tl.load(A_ptr + h, mask=mh, other=0.0).to(tl.float32)[None, :], axis=0)
    off = (b * H + h[None, :]).to(tl.int64) * (nc * T) + pos[:, None]
    tl.store(da_ptr + off, delta, mask=mh[None, :])
    tl.store(da_ptr + plane + off, a, mask=mh[None, :])


@triton.jit
def chunk_state_kernel(
    x_ptr, B_ptr, da_ptr, init_ptr, states_ptr, final_ptr,
    L, H, P, N, nc, HG, plane,
    sx_b, sx_l, sx_h, sB_b, sB_l, sB_g,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    HAS_INIT: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """A (BP, BN) tile of one (sequence, head)'s state through every chunk: states[b, c, h] = S_c
    for c = 0..nc, (B, nc + 1, H, P, N), and the final state again in final (B, H, P, N)."""
    n_nt = tl.cdiv(N, BN)
    tile, bh = _split(tl.program_id(0), tl.cdiv(P, BP) * n_nt)
    nt, pt = _split(tile, n_nt)
    h, b = _split(bh, H)
    b = b.to(tl.int64)
    DT = x_ptr.dtype.element_ty
    p = pt * BP + tl.arange(0, BP)
    n = nt * BN + tl.arange(0, BN)
    k = tl.arange(0, BK)
    mp, mn = p < P, n < N
    mpn = mp[:, None] & mn[None, :]
    pn = p[:, None] * N + n[None, :]
    x_ptr += b * sx_b + h * sx_h
    B_ptr += b * sB_b + (h // HG) * sB_g
    delta_ptr = da_ptr + (b * H + h) * (nc * T)
    a_ptr = delta_ptr + plane
    state_ptr = states_ptr + (b * (nc + 1) * H + h) * P * N
    if HAS_INIT:
        S = tl.load(init_ptr + (b * H + h) * P * N + pn, mask=mpn, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BP, BN), dtype=tl.float32)
    for c in range(_bound(nc, INTERPRET)):  # the pointers step a chunk at a time (64-bit: no overflow at long L)
        tl.store(state_ptr + pn, S, mask=mpn)
        a_end = tl.load(a_ptr + T - 1)
        S = S * tl.exp(a_end)
        chunk_len = tl.minimum(T, L - c * T)
        for k0 in range(0, _bound(chunk_len, INTERPRET), BK):
            s = k0 + k
            ms = s < chunk_len
            xk = tl.load(x_ptr + s[:, None] * sx_l + p[None, :], mask=ms[:, None] & mp[None, :], other=0.0)
            bk = tl.load(B_ptr + s[:, None] * sB_l + n[None, :], mask=ms[:, None] & mn[None, :], other=0.0)
            w = tl.exp(a_end - tl.load(a_ptr + s)) * tl.load(delta_ptr + s)  # e^(a_end - a_s) Δ_s
            S = _mma(tl.trans(xk), bk.to(tl.float32) * w[:, None], S, DT, PREC, INTERPRET)
        x_ptr += T * sx_l
        B_ptr += T * sB_l
        delta_ptr += T
        a_ptr += T
        state_ptr += H * P * N
    tl.store(state_ptr + pn, S, mask=mpn)
    tl.store(final_ptr + (b * H + h) * P * N + pn, S, mask=mpn)


@triton.jit
def chunk_output_kernel(
    x_ptr, B_ptr, C_ptr, da_ptr, D_ptr, states_ptr, y_ptr,
    L, H, P, N, nc, HG, plane,
    sx_b, sx_l, sx_h, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sy_b, sy_l, sy_h,
    T: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, NP: tl.constexpr,
    PREC: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """y for BT steps x BP channels of one chunk and head. A chunk's heads run next to each other
    (sharing B and C in L2), the last step tiles (the longest rows) first."""
    NT: tl.constexpr = T // BT
    n_pt = tl.cdiv(P, BP)
    tp, rest = _split(tl.program_id(0), NT * n_pt)
    h, bc = _split(rest, H)
    c, b = _split(bc, nc)
    pt, tq = _split(tp, n_pt)
    t0 = (NT - 1 - tq) * BT
    chunk_len = tl.minimum(T, L - c * T)
    if t0 >= chunk_len:
        return
    b = b.to(tl.int64)
    l0 = c.to(tl.int64) * T
    DT = x_ptr.dtype.element_ty
    g = h // HG
    t = t0 + tl.arange(0, BT)
    p = pt * BP + tl.arange(0, BP)
    n = tl.arange(0, NP)
    mt, mp, mn = t < chunk_len, p < P, n < N
    x_ptr += b * sx_b + l0 * sx_l + h * sx_h
    B_ptr += b * sB_b + l0 * sB_l + g * sB_g
    C_ptr += b * sC_b + l0 * sC_l + g * sC_g
    delta_ptr = da_ptr + (b * H + h) * (nc * T) + l0
    a_ptr = delta_ptr + plane

    a_t = tl.load(a_ptr + t)
    ct = tl.load(C_ptr + t[:, None] * sC_l + n[None, :], mask=mt[:, None] & mn[None, :], other=0.0).to(DT)
    s_in = _load_pn(states_ptr + ((b * (nc + 1) + c) * H + h) * P * N, p, n, P, N)
    acc = _mma(ct, tl.trans(s_in), tl.zeros((BT, BP), dtype=tl.float32), DT, PREC, INTERPRET) * tl.exp(a_t)[:, None]
    for s0 in range(0, _bound(tl.minimum(t0 + BT, chunk_len), INTERPRET), BK):
        s = s0 + tl.arange(0, BK)
        ms = s < chunk_len
        bs = tl.load(B_ptr + s[:, None] * sB_l + n[None, :], mask=ms[:, None] & mn[None, :], other=0.0).to(DT)
        xs = tl.load(x_ptr + s[:, None] * sx_l + p[None, :], mask=ms[:, None] & mp[None, :], other=0.0)
        cb = _mma(ct, tl.trans(bs), tl.zeros((BT, BK), dtype=tl.float32), DT, PREC, INTERPRET)
        w = cb * _decay(a_t, tl.load(a_ptr + s), t, s, True) * tl.load(delta_ptr + s)[None, :]
        acc = _mma(w, xs, acc, DT, PREC, INTERPRET)
    m = mt[:, None] & mp[None, :]
    acc += tl.load(D_ptr + h).to(tl.float32) * tl.load(x_ptr + t[:, None] * sx_l + p[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + b * sy_b + (l0 + t[:, None]) * sy_l + h * sy_h + p[None, :], acc.to(y_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------------------- backward
@triton.jit
def state_grad_kernel(
    dy_ptr, C_ptr, da_ptr, states_ptr, dfinal_ptr, dstates_ptr, dinit_ptr, gs_ptr,
    L, H, P, N, nc, HG, plane,
    sdy_b, sdy_l, sdy_h, sC_b, sC_l, sC_g,
    T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    HAS_DFINAL: tl.constexpr, HAS_INIT: tl.constexpr, PREC: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """chunk_state_kernel backwards, for a (BP, BN) tile of one (sequence, head): dstates[b, c, h]
    = G_c (B, nc, H, P, N), gs[b, h, c, tile] = the tile's share of e^(a_end) <G_c, S_c> (B, H,
    nc, tiles), and (HAS_INIT) G_{-1} into dinit (B, H, P, N)."""
    n_nt = tl.cdiv(N, BN)
    n_tiles = tl.cdiv(P, BP) * n_nt
    tile, bh = _split(tl.program_id(0), n_tiles)
    nt, pt = _split(tile, n_nt)
    h, b = _split(bh, H)
    b = b.to(tl.int64)
    DT = dy_ptr.dtype.element_ty
    p = pt * BP + tl.arange(0, BP)
    n = nt * BN + tl.arange(0, BN)
    k = tl.arange(0, BK)
    mp, mn = p < P, n < N
    mpn = mp[:, None] & mn[None, :]
    pn = p[:, None] * N + n[None, :]
    dy_ptr += b * sdy_b + h * sdy_h
    C_ptr += b * sC_b + (h // HG) * sC_g
    a_ptr = da_ptr + plane + (b * H + h) * (nc * T)
    if HAS_DFINAL:
        G = tl.load(dfinal_ptr + (b * H + h) * P * N + pn, mask=mpn, other=0.0).to(tl.float32)
    else:
        G = tl.zeros((BP, BN), dtype=tl.float32)
    last = tl.cast(nc - 1, tl.int64)  # the pointers start at the last chunk and step back a chunk at a time
    dy_ptr += last * T * sdy_l
    C_ptr += last * T * sC_l
    a_ptr += last * T
    for i in range(_bound(nc, INTERPRET)):
        c = nc - 1 - i
        tl.store(dstates_ptr + ((b * nc + c) * H + h) * P * N + pn, G, mask=mpn)
        G = G * tl.exp(tl.load(a_ptr + T - 1))
        s_in = tl.load(states_ptr + ((b * (nc + 1) + c) * H + h) * P * N + pn, mask=mpn, other=0.0)
        tl.store(gs_ptr + ((b * H + h) * nc + c) * n_tiles + tile, tl.sum(G * s_in))  # e^(a_end) <G_c, S_c>
        chunk_len = tl.minimum(T, L - c * T)
        for k0 in range(0, _bound(chunk_len, INTERPRET), BK):
            t = k0 + k
            mt = t < chunk_len
            dyk = tl.load(dy_ptr + t[:, None] * sdy_l + p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
            ck = tl.load(C_ptr + t[:, None] * sC_l + n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
            G = _mma(tl.trans(dyk), ck.to(tl.float32) * tl.exp(tl.load(a_ptr + t))[:, None], G, DT, PREC, INTERPRET)
        dy_ptr -= T * sdy_l
        C_ptr -= T * sC_l
        a_ptr -= T
    if HAS_INIT:
        tl.store(dinit_ptr + (b * H + h) * P * N + pn, G, mask=mpn)


@triton.jit
def chunk_grad_c_kernel(
    x_ptr, B_ptr, C_ptr, dy_ptr, da_ptr, states_ptr, dC_ptr, dat_ptr,
    L, H, P, N, nc, G, HG, HS, plane,
    sx_b, sx_l, sx_h, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sdy_b, sdy_l, sdy_h, sdC_k, sdC_b, sdC_l, sdC_g,
    T: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, PP: tl.constexpr, NP: tl.constexpr, HSP: tl.constexpr,
    PREC: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """BT steps t of one chunk, HS heads of one group: dC_t summed over those heads, into run k's
    partial dC[k] (runs, B, L, G, N), and each head's ρ_t into dat (B, H, nc T). The loop over
    the steps s is the outer one: each (BT, BK) tile of C_t·B_s, which no head changes, is
    computed once for the run's heads (once a head cost 4-10% more at 2048-8192 steps on an H100,
    docs/results.md); the heads' ρ_t are the rows of an (HSP, BT) tile (HSP: HS rounded up to a
    power of two)."""
    NT: tl.constexpr = T // BT
    runs = HG // HS
    tq, rest = _split(tl.program_id(0), NT)
    gk, bc = _split(rest, G * runs)
    c, b = _split(bc, nc)
    k, g = _split(gk, runs)
    t0 = (NT - 1 - tq) * BT  # the longest rows first
    chunk_len = tl.minimum(T, L - c * T)
    if t0 >= chunk_len:
        return
    b = b.to(tl.int64)
    l0 = c.to(tl.int64) * T
    DT = x_ptr.dtype.element_ty
    t = t0 + tl.arange(0, BT)
    p = tl.arange(0, PP)
    n = tl.arange(0, NP)
    j = tl.arange(0, HSP)
    mt, mp, mn = t < chunk_len, p < P, n < N
    h0 = g * HG + k * HS
    x_ptr += b * sx_b + l0 * sx_l
    dy_ptr += b * sdy_b + l0 * sdy_l
    B_ptr += b * sB_b + l0 * sB_l + g * sB_g
    C_ptr += b * sC_b + l0 * sC_l + g * sC_g
    da_ptr += (b * H + h0) * (nc * T) + l0  # the run's first head; a head is nc T further

    ct = tl.load(C_ptr + t[:, None] * sC_l + n[None, :], mask=mt[:, None] & mn[None, :], other=0.0).to(DT)
    dC = tl.zeros((BT, NP), dtype=tl.float32)
    rho = tl.zeros((HSP, BT), dtype=tl.float32)
    for s0 in range(0, _bound(tl.minimum(t0 + BT, chunk_len), INTERPRET), BK):
        s = s0 + tl.arange(0, BK)
        ms = s < chunk_len
        bs = tl.load(B_ptr + s[:, None] * sB_l + n[None, :], mask=ms[:, None] & mn[None, :], other=0.0).to(DT)
        cb = _mma(ct, tl.trans(bs), tl.zeros((BT, BK), dtype=tl.float32), DT, PREC, INTERPRET)
        for i in range(_bound(HS, INTERPRET)):
            delta_ptr = da_ptr + i * (nc * T)
            a_ptr = delta_ptr + plane
            dyt = tl.load(dy_ptr + (h0 + i) * sdy_h + t[:, None] * sdy_l + p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
            xs = tl.load(x_ptr + (h0 + i) * sx_h + s[:, None] * sx_l + p[None, :], mask=ms[:, None] & mp[None, :], other=0.0)
            dyx = _mma(dyt, tl.trans(xs), tl.zeros((BT, BK), dtype=tl.float32), DT, PREC, INTERPRET)  # dy_t·x_s
            w = dyx * _decay(tl.load(a_ptr + t), tl.load(a_ptr + s), t, s, True) * tl.load(delta_ptr + s)[None, :]
            rho += tl.where(j[:, None] == i, tl.sum(w * cb, axis=1)[None, :], 0.0)  # Σ_s Q_ts, head i's row
            dC = _mma(w, bs, dC, DT, PREC, INTERPRET)
    for i in range(_bound(HS, INTERPRET)):  # the entering state's parts: e^(a_t) S_c^T dy_t into dC_t, dy_t·e^(a_t) S_c C_t into ρ_t
        a_t = tl.load(da_ptr + i * (nc * T) + plane + t)
        dyt = tl.load(dy_ptr + (h0 + i) * sdy_h + t[:, None] * sdy_l + p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
        s_in = _load_pn(states_ptr + ((b * (nc + 1) + c) * H + h0 + i) * P * N, p, n, P, N)
        from_state = _mma(dyt, s_in, tl.zeros((BT, NP), dtype=tl.float32), DT, PREC, INTERPRET) * tl.exp(a_t)[:, None]
        rho += tl.where(j[:, None] == i, tl.sum(from_state * ct.to(tl.float32), axis=1)[None, :], 0.0)
        dC += from_state
    tl.store(dat_ptr + (b * H + h0 + j)[:, None] * (nc * T) + l0 + t[None, :], rho, mask=(j < HS)[:, None] & mt[None, :])
    dC_ptr += k * sdC_k + b * sdC_b + l0 * sdC_l + g * sdC_g
    tl.store(dC_ptr + t[:, None] * sdC_l + n[None, :], dC.to(dC_ptr.dtype.element_ty), mask=mt[:, None] & mn[None, :])


@triton.jit
def chunk_grad_b_kernel(
    x_ptr, C_ptr, dy_ptr, da_ptr, dstates_ptr, dB_ptr,
    L, H, P, N, nc, G, HG, HS, plane,
    sx_b, sx_l, sx_h, sC_b, sC_l, sC_g, sdy_b, sdy_l, sdy_h, sdB_k, sdB_b, sdB_l, sdB_g,
    T: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, PP: tl.constexpr, NP: tl.constexpr,
    PREC: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """BT steps s of one chunk, HS heads of one group: dB_s summed over those heads, into run k's
    partial dB[k] (runs, B, L, G, N)."""
    NT: tl.constexpr = T // BT
    runs = HG // HS
    sq, rest = _split(tl.program_id(0), NT)
    gk, bc = _split(rest, G * runs)
    c, b = _split(bc, nc)
    k, g = _split(gk, runs)
    s0 = sq * BT  # the first step tiles, the longest (they meet every later one), first
    chunk_len = tl.minimum(T, L - c * T)
    if s0 >= chunk_len:
        return
    b = b.to(tl.int64)
    l0 = c.to(tl.int64) * T
    DT = x_ptr.dtype.element_ty
    s = s0 + tl.arange(0, BT)
    p = tl.arange(0, PP)
    n = tl.arange(0, NP)
    ms, mp, mn = s < chunk_len, p < P, n < N
    x_ptr += b * sx_b + l0 * sx_l
    dy_ptr += b * sdy_b + l0 * sdy_l
    C_ptr += b * sC_b + l0 * sC_l + g * sC_g

    dB = tl.zeros((BT, NP), dtype=tl.float32)
    for h in range(_bound(g * HG + k * HS, INTERPRET), _bound(g * HG + (k + 1) * HS, INTERPRET)):
        delta_ptr = da_ptr + (b * H + h) * (nc * T) + l0
        a_ptr = delta_ptr + plane
        a_s = tl.load(a_ptr + s)
        d_s = tl.load(delta_ptr + s)
        xs = tl.load(x_ptr + h * sx_h + s[:, None] * sx_l + p[None, :], mask=ms[:, None] & mp[None, :], other=0.0)
        G_c = _load_pn(dstates_ptr + ((b * nc + c) * H + h) * P * N, p, n, P, N)
        to_end = tl.exp(tl.load(a_ptr + T - 1) - a_s) * d_s  # e^(a_end - a_s) Δ_s
        dB = _mma(xs.to(tl.float32) * to_end[:, None], G_c, dB, DT, PREC, INTERPRET)
        for t0 in range(_bound(s0, INTERPRET), _bound(chunk_len, INTERPRET), BK):
            t = t0 + tl.arange(0, BK)
            mt = t < chunk_len
            ct = tl.load(C_ptr + t[:, None] * sC_l + n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
            dyt = tl.load(dy_ptr + h * sdy_h + t[:, None] * sdy_l + p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
            xdy = _mma(xs, tl.trans(dyt), tl.zeros((BT, BK), dtype=tl.float32), DT, PREC, INTERPRET)  # x_s·dy_t
            dB = _mma(xdy * _decay(tl.load(a_ptr + t), a_s, t, s, False) * d_s[:, None], ct, dB, DT, PREC, INTERPRET)
    dB_ptr += k * sdB_k + b * sdB_b + l0 * sdB_l + g * sdB_g
    tl.store(dB_ptr + s[:, None] * sdB_l + n[None, :], dB.to(dB_ptr.dtype.element_ty), mask=ms[:, None] & mn[None, :])


@triton.jit
def chunk_grad_x_kernel(
    x_ptr, B_ptr, C_ptr, dy_ptr, da_ptr, D_ptr, dstates_ptr, dx_ptr, dd_ptr,
    L, H, P, N, nc, HG, plane,
    sx_b, sx_l, sx_h, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, sdy_b, sdy_l, sdy_h, sdx_b, sdx_l, sdx_h,
    T: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, PP: tl.constexpr, NP: tl.constexpr,
    PREC: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """BT steps s of one chunk and head: U_s, then dx_s, and into dd (3, B, H, nc T) dΔ_s (direct)
    in two parts, from the chunk's steps and from its end state, and dy_s·x_s. A chunk's heads
    run next to each other, the first step tiles first."""
    NT: tl.constexpr = T // BT
    sq, rest = _split(tl.program_id(0), NT)
    h, bc = _split(rest, H)
    c, b = _split(bc, nc)
    s0 = sq * BT
    chunk_len = tl.minimum(T, L - c * T)
    if s0 >= chunk_len:
        return
    b = b.to(tl.int64)
    l0 = c.to(tl.int64) * T
    DT = x_ptr.dtype.element_ty
    g = h // HG
    s = s0 + tl.arange(0, BT)
    p = tl.arange(0, PP)
    n = tl.arange(0, NP)
    ms, mp, mn = s < chunk_len, p < P, n < N
    dy_ptr += b * sdy_b + l0 * sdy_l + h * sdy_h
    B_ptr += b * sB_b + l0 * sB_l + g * sB_g
    C_ptr += b * sC_b + l0 * sC_l + g * sC_g
    delta_ptr = da_ptr + (b * H + h) * (nc * T) + l0
    a_ptr = delta_ptr + plane

    a_s = tl.load(a_ptr + s)
    m = ms[:, None] & mp[None, :]
    bs = tl.load(B_ptr + s[:, None] * sB_l + n[None, :], mask=ms[:, None] & mn[None, :], other=0.0).to(DT)
    xs = tl.load(x_ptr + b * sx_b + (l0 + s[:, None]) * sx_l + h * sx_h + p[None, :], mask=m, other=0.0).to(DT)
    G_c = _load_pn(dstates_ptr + ((b * nc + c) * H + h) * P * N, p, n, P, N)
    u = _mma(bs, tl.trans(G_c), tl.zeros((BT, PP), dtype=tl.float32), DT, PREC, INTERPRET) * tl.exp(tl.load(a_ptr + T - 1) - a_s)[:, None]
    by_state = tl.sum(xs.to(tl.float32) * u, axis=1)  # dΔ_s (direct)'s share from the end state
    by_steps = tl.zeros((BT,), dtype=tl.float32)  # and from the chunk's steps, Σ_t w_st (x_s·dy_t)
    for t0 in range(_bound(s0, INTERPRET), _bound(chunk_len, INTERPRET), BK):
        t = t0 + tl.arange(0, BK)
        mt = t < chunk_len
        ct = tl.load(C_ptr + t[:, None] * sC_l + n[None, :], mask=mt[:, None] & mn[None, :], other=0.0)
        dyt = tl.load(dy_ptr + t[:, None] * sdy_l + p[None, :], mask=mt[:, None] & mp[None, :], other=0.0)
        w = _mma(bs, tl.trans(ct), tl.zeros((BT, BK), dtype=tl.float32), DT, PREC, INTERPRET)  # B_s·C_t
        w *= _decay(tl.load(a_ptr + t), a_s, t, s, False)
        u = _mma(w, dyt, u, DT, PREC, INTERPRET)
        xdy = _mma(xs, tl.trans(dyt), tl.zeros((BT, BK), dtype=tl.float32), DT, PREC, INTERPRET)  # x_s·dy_t
        by_steps += tl.sum(w * xdy, axis=1)  # fp32 w, not x_s·U_s's rounded one (module docstring)
    dys = tl.load(dy_ptr + s[:, None] * sdy_l + p[None, :], mask=m, other=0.0).to(tl.float32)
    dx = tl.load(delta_ptr + s)[:, None] * u + tl.load(D_ptr + h).to(tl.float32) * dys
    tl.store(dx_ptr + b * sdx_b + (l0 + s[:, None]) * sdx_l + h * sdx_h + p[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)
    row = dd_ptr + (b * H + h) * (nc * T) + l0 + s
    tl.store(row, by_steps, mask=ms)
    tl.store(row + plane, by_state, mask=ms)
    tl.store(row + 2 * plane, tl.sum(dys * xs.to(tl.float32), axis=1), mask=ms)  # dy_s·x_s, dD's share


@triton.jit
def dt_grad_kernel(
    dt_ptr, A_ptr, bias_ptr, da_ptr, dat_ptr, dd_ptr, gs_ptr, ddt_ptr, parts_ptr,
    L, H, nc, plane, n_tiles, parts_plane,
    sdt_b, sdt_l, sdt_h, sddt_b, sddt_l, sddt_h,
    T: tl.constexpr, BH: tl.constexpr, TILES: tl.constexpr,
):  # fmt: skip
    """One chunk of one sequence, BH heads: R from its parts (module docstring), ddt = (dΔ
    (direct) + A R) σ(dt + dt_bias) in dt's layout and dtype, and the chunk's partial sums of dA
    (Σ Δ R), ddt_bias (Σ ddt) and dD (Σ dy·x) into parts (3, B nc, H)."""
    hb, bc = _split(tl.program_id(0), tl.cdiv(H, BH))
    c, b = _split(bc, nc)
    t = tl.arange(0, T)
    h = hb * BH + tl.arange(0, BH)
    pos = c.to(tl.int64) * T + t
    mh = h < H
    m = (pos < L)[:, None] & mh[None, :]
    off = (b * H + h[None, :]).to(tl.int64) * (nc * T) + pos[:, None]
    delta = tl.load(da_ptr + off, mask=m, other=0.0)
    by_steps = tl.load(dd_ptr + off, mask=m, other=0.0)  # dΔ (direct)'s shares
    by_state = tl.load(dd_ptr + plane + off, mask=m, other=0.0)
    j = tl.arange(0, TILES)
    gs = tl.load(gs_ptr + ((b * H + h[:, None]) * nc + c) * n_tiles + j[None, :], mask=mh[:, None] & (j < n_tiles)[None, :], other=0.0)
    R = tl.cumsum(tl.load(dat_ptr + off, mask=m, other=0.0) - delta * by_steps, axis=0, reverse=True)  # Σ_{t>=r} (ρ_t - κ_t)
    R += tl.sum(gs, axis=1)[None, :] + tl.cumsum(delta * by_state, axis=0) - delta * by_state  # the end state's terms
    v = tl.load(dt_ptr + b.to(tl.int64) * sdt_b + pos[:, None] * sdt_l + h[None, :] * sdt_h, mask=m, other=0.0).to(tl.float32)
    v += tl.load(bias_ptr + h, mask=mh, other=0.0).to(tl.float32)[None, :]
    A = tl.load(A_ptr + h, mask=mh, other=0.0).to(tl.float32)
    ddt = tl.where(m, (by_steps + by_state + A[None, :] * R) * sigmoid(v), 0.0)
    tl.store(ddt_ptr + b.to(tl.int64) * sddt_b + pos[:, None] * sddt_l + h[None, :] * sddt_h, ddt.to(ddt_ptr.dtype.element_ty), mask=m)
    part = parts_ptr + bc * H + h
    tl.store(part, tl.sum(delta * R, axis=0), mask=mh)
    tl.store(part + parts_plane, tl.sum(ddt, axis=0), mask=mh)
    tl.store(part + 2 * parts_plane, tl.sum(tl.load(dd_ptr + 2 * plane + off, mask=m, other=0.0), axis=0), mask=mh)


@triton.jit
def _sum_rows(src_ptr, dst_ptr, rows, H, BR: tl.constexpr, BH: tl.constexpr, INTERPRET: tl.constexpr):
    """dst (H,) = the sum of src's (rows, H) fp32 rows, in dst's dtype."""
    h = tl.arange(0, BH)
    r = tl.arange(0, BR)
    acc = tl.zeros((BH,), dtype=tl.float32)
    for r0 in range(0, _bound(rows, INTERPRET), BR):
        m = (r0 + r < rows)[:, None] & (h < H)[None, :]
        acc += tl.sum(tl.load(src_ptr + (r0 + r)[:, None] * H + h[None, :], mask=m, other=0.0), axis=0)
    tl.store(dst_ptr + h, acc.to(dst_ptr.dtype.element_ty), mask=h < H)


@triton.jit
def grad_sums_kernel(
    runs_ptr, dB_ptr, dC_ptr, parts_ptr, dA_ptr, dbias_ptr, dD_ptr,
    n, runs, rows, H,
    BLOCK: tl.constexpr, BR: tl.constexpr, BH: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    """The backward's last sums. The last program: parts (3, rows, H), the chunks' partials from
    dt_grad_kernel, summed into dA, ddt_bias and dD. The others (launched where a group's heads
    are split into runs): BLOCK elements of the runs' partial dB and dC, (2, runs, n) fp32,
    summed into dB and dC (n elements each), each in its own dtype."""
    pid = tl.program_id(0)
    if pid == tl.num_programs(0) - 1:
        plane = rows * H
        _sum_rows(parts_ptr, dA_ptr, rows, H, BR, BH, INTERPRET)
        _sum_rows(parts_ptr + plane, dbias_ptr, rows, H, BR, BH, INTERPRET)
        _sum_rows(parts_ptr + 2 * plane, dD_ptr, rows, H, BR, BH, INTERPRET)
    else:
        which, blk = _split(pid, 2)
        i = blk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        src = runs_ptr + which.to(tl.int64) * runs * n + i
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for r in range(_bound(runs, INTERPRET)):
            acc += tl.load(src + r * n, mask=m, other=0.0)
        if which == 0:
            tl.store(dB_ptr + i, acc.to(dB_ptr.dtype.element_ty), mask=m)
        else:
            tl.store(dC_ptr + i, acc.to(dC_ptr.dtype.element_ty), mask=m)
