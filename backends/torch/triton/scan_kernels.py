"""The fused selective scan's Triton kernels (scan.py launches them), with its math.

Forward: one program owns BLOCK_E channels of one segment of one sequence, with all N states in
registers, and walks its segment step by step in chunks of T steps (a chunk's loads are issued
together, ahead of its arithmetic), so the (B, L, E, N) states never leave the chip; only x, dt,
z, B, C are read and out is written.

Segments: one program per (sequence, channel block) leaves most of a large GPU idle (384 one-warp
programs for 132 SMs at the issue's shape), so the sequence is split into S segments. The state
is linear in its start, so a segment's true start state follows from the segments before it:

    h_end(s) = P_s ⊙ h_end(s-1) + H_s,   P_s = exp(A Σ_{t∈s} Δ_t),   H_s its end state from h = 0

A first kernel computes every (H_s, Σ Δ) from x, dt and B alone (``state_carry_kernel``); each
program of the full forward then folds the carries of the segments before it into its start
state. The backward splits the same way: its adjoint runs backwards with the same decays, so

    G(s-1) = P_s ⊙ G(s) + a_{s0} g_{s0}(from G = 0)

where segment s covers steps s0..s1-1, g_t = dL/dh_t, a_t = exp(Δ_t A), and G(s) = a_{s1} g_{s1}
is what the segment after s hands back to s's last step (G(S-1) = 0); ``adjoint_carry_kernel``
computes each segment's share from dt, z, dout and C alone.

Backward recomputes instead of storing states. It first runs the forward again (the states only:
no out, and z and C unread), keeping the state at each chunk's end ((B, L/T, E, N) fp32, T times
smaller than the states; kept from the forward instead, they would live from a model's forward to
its backward, 9.7 GB of mamba-130m's 31 GB at batch 8 x 2048). The forward keeps only each
segment's start state ((B, S, NP, E) fp32, S <= 64), so the recompute needs no carry kernel
where those segments are whole chunks of the backward's tiling (the default tilings: 4-step
forward chunks, 2-step backward ones). Walking the chunks backwards,
each program recomputes the chunk's states from the one before it, then scans the adjoint
backwards, dL/dh_t = C_t dy_t + exp(Δ_{t+1} A) dL/dh_{t+1}, and forms every gradient from the two:

    dB_t = Σ_e dL/dh_t Δ_t x_t          dC_t = Σ_e dy_t h_t           (partial sums per channel block)
    dΔ_t = x_t (dL/dh_t · B_t) + Σ_n dL/dh_t (h_t - Δ_t x_t B_t) A    (a_t h_{t-1} = h_t - b_t: no division)
    dA   = Σ_t dL/dh_t (h_t - Δ_t x_t B_t) Δ_t                      (per sequence and segment)

and one last kernel (``reduce_kernel``) sums the partials into the gradients in their dtypes.

Launch chains (PDL, sm_90 on): each pass's kernels run in order, and each one after the first of
its pass is launched as a programmatic dependent of the one before (scan.py decides; the
constexpr ``PDL`` says the GPU can). Every kernel lets its dependent launch once all its programs
have started (``gdc_launch_dependents`` first thing), so the dependent's programs take the SMs its
last wave leaves idle, and no launch gap lies between them. A dependent runs only what needs
nothing of the kernel before it until ``gdc_wait`` (which returns when that kernel has finished and
its writes are visible):

- the forward's first segment folds no carries, so it runs whole beside the carry kernel; the
  other segments wait before folding theirs;
- the adjoint carry kernel reads nothing the recompute writes: it runs whole beside it and waits
  only at its end, so its completion implies the recompute's (a dependent's own wait makes the
  chain transitive: the backward kernel's wait then covers both);
- the backward and reduce kernels wait before their first read of what came before.

Before its wait a dependent writes only memory the kernel before it does not use, or the same
values to the same place (every program writes A's (NP, E) tile to the scratch the two share).

Tiles are (NP, BLOCK_E) (NP: N rounded up to a power of two). A launch at aligned shapes gives
them Triton's [1, 4] x [4, 8] layout: 4 channels x 4 states a thread, so a step's B and C are 4
values a lane and a chunk's loads all fit in registers (one channel a lane, with all N states,
was measured 1.4-1.9x slower: docs/backends.md). Arithmetic and the state are fp32 whatever the
inputs' dtype.
"""

from . import tl, triton


# ---------------------------------------------------------------------------- device functions
@triton.jit
def softplus(v):
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|), with log1p(u) = 2 atanh(u / (2 + u)) as a
    series: accurate to fp32 rounding where log(1 + u) would lose u's low bits."""
    u = tl.exp(-tl.abs(v))
    s = u / (2.0 + u)  # in (0, 1/3]
    s2 = s * s
    p = 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    p = p * s2 + 1.0
    return tl.maximum(v, 0.0) + 2.0 * s * p


@triton.jit
def sigmoid(v):
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _load_step(ptr, t, stride_l, idx, mask, EVEN: tl.constexpr):
    """One step's vector ptr[t * stride_l + idx] in its own dtype (0 where masked; no mask when
    EVEN). Callers convert to fp32 where the value is used, after the chunk's loads are all
    issued: a conversion right after each load waits for that load before the next is issued
    (bf16 inputs ran 1.7x slower than fp32 that way)."""
    if EVEN:
        return tl.load(ptr + t * stride_l + idx)
    else:
        return tl.load(ptr + t * stride_l + idx, mask=mask, other=0.0)


@triton.jit
def _store_step(ptr, t, stride_l, idx, value, mask, EVEN: tl.constexpr):
    if EVEN:
        tl.store(ptr + t * stride_l + idx, value.to(ptr.dtype.element_ty))
    else:
        tl.store(ptr + t * stride_l + idx, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _past_end_zero(v, mask, EVEN: tl.constexpr):
    """v, or 0 where a step lies past the end (a zero step leaves the state as it is)."""
    if EVEN:
        return v
    else:
        return tl.where(mask, v, 0.0)


@triton.jit
def _let_dependents_launch(PDL: tl.constexpr):
    """Let the kernel launched after this one as its programmatic dependent start once every
    program of this one has (a no-op without PDL, or where the next launch is not dependent)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _wait_for_prior(PDL: tl.constexpr):
    """Wait until the kernel this one was launched as a dependent of has finished, its writes
    visible (returns at once where the launch was not dependent)."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def _channel_block(A_ptr, sA_e, sA_n, ws_ptr, bias_ptr, pe, E, N, BLOCK_E: tl.constexpr, NP: tl.constexpr):
    """Program pe's channels e and states n with their masks, A as an (NP, BLOCK_E) tile times
    log2(e) (for exp2), and dt_bias.

    A (E, N) is read at its strides and written to the scratch at ws_ptr as (NP, E), padded with
    zeros, then read back from there: that load is contiguous along E, so Triton gives the tile the
    states' layout. Read straight from A's (E, N) layout, the tile took another layout and the
    compiler converted a tile every step (measured 1.3-1.6x slower on the H100; docs/backends.md);
    transposed on the host, A cost a torch copy, 15 µs of host time a call. Every program of a
    channel block writes the same values, so the programs' writes need no order among them; the
    barrier makes this program's own writes visible to all of its threads."""
    e = pe * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, NP)
    me, mn = e < E, n < N
    a = tl.load(A_ptr + e[None, :] * sA_e + n[:, None] * sA_n, mask=mn[:, None] & me[None, :], other=0.0)
    tl.store(ws_ptr + n[:, None] * E + e[None, :], a.to(tl.float32), mask=me[None, :])
    tl.debug_barrier()
    A2 = tl.load(ws_ptr + n[:, None] * E + e[None, :], mask=me[None, :], other=0.0) * 1.4426950408889634  # log2(e)
    bias = tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)
    return e, n, me, mn, A2, bias


@triton.jit
def _fold_carries(carry_ptr, A2, pb, j, j_end, step, S, E, n, e, me, NP: tl.constexpr, BLOCK_E: tl.constexpr):
    """v = P_j ⊙ v + H_j for segments j, j + step, ... before j_end, from v = 0: the state
    (forward) or adjoint carry (backward) a segment starts from. carry_ptr: (B, S, NP + 1, E),
    each segment's H_j (NP rows), then its Σ Δ (a row)."""
    v = tl.zeros((NP, BLOCK_E), dtype=tl.float32)
    j += pb * 0  # a tensor from the start: a literal j would change type inside the loop
    while j != j_end:
        seg = carry_ptr + (pb * S + j) * (NP + 1) * E
        ds = tl.load(seg + NP * E + e, mask=me, other=0.0)
        Hj = tl.load(seg + n[:, None] * E + e[None, :], mask=me[None, :], other=0.0)
        v = tl.exp2(ds[None, :] * A2) * v + Hj
        j += step
    return v


@triton.jit
def _store_carry(carry_ptr, H, dsum, pb, ps, S, E, n, e, me, NP: tl.constexpr):
    """Segment ps's H (NP, BLOCK_E) and Σ Δ (BLOCK_E,) as _fold_carries reads them."""
    seg = carry_ptr + (pb * S + ps) * (NP + 1) * E
    tl.store(seg + n[:, None] * E + e[None, :], H, mask=me[None, :])
    tl.store(seg + NP * E + e, dsum, mask=me)


# ---------------------------------------------------------------------------- kernels
# Tiles are (NP, BLOCK_E), E fastest, so loads of x, dt, z and of the tiles are coalesced along E;
# the layout Triton gives them is in the module docstring.
@triton.jit
def forward_kernel(
    x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr,  # inputs (pointers at batch 0)
    out_ptr, last_ptr, states_ptr,  # outputs: out (B, L, E), last state (B, E, N), chunk states
    ws_ptr,  # scratch (fp32): A as (NP, E), then the segments' carries from state_carry_kernel
    starts_ptr,  # each segment's start state (B, S, NP, E): written (KEEP_STARTS) or read (FROM_STARTS)
    L, E, N, SC, S,  # SC chunks per segment, S segments
    sA_e, sA_n,
    sx_b, sx_l, sdt_b, sdt_l, sz_b, sz_l, sB_b, sB_l, sC_b, sC_l, so_b, so_l,
    BLOCK_E: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, STATES_ONLY: tl.constexpr, EVEN: tl.constexpr,
    KEEP_STARTS: tl.constexpr, FROM_STARTS: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """STATES_ONLY (the backward's recompute): store each chunk's end state instead of out, and
    read neither z nor C. KEEP_STARTS: also store the start state each program folded;
    FROM_STARTS: read it instead of folding the carries (the recompute, from its forward's)."""
    pe, pb, ps = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    _let_dependents_launch(PDL)
    e, n, me, mn, A2, bias = _channel_block(A_ptr, sA_e, sA_n, ws_ptr, bias_ptr, pe, E, N, BLOCK_E, NP)
    Dv = tl.load(D_ptr + e, mask=me, other=0.0).to(tl.float32)
    x_ptr += pb * sx_b
    dt_ptr += pb * sdt_b
    z_ptr += pb * sz_b
    B_ptr += pb * sB_b
    C_ptr += pb * sC_b
    out_ptr += pb * so_b
    if FROM_STARTS:
        h = tl.load(starts_ptr + ((pb * S + ps) * NP + n[:, None]) * E + e[None, :], mask=me[None, :], other=0.0)
    else:
        if ps > 0:  # the first segment starts from 0, so it runs beside the carry kernel
            _wait_for_prior(PDL)
        h = _fold_carries(ws_ptr + NP * E, A2, pb, 0, ps, 1, S, E, n, e, me, NP, BLOCK_E)
    if KEEP_STARTS:
        tl.store(starts_ptr + ((pb * S + ps) * NP + n[:, None]) * E + e[None, :], h, mask=me[None, :])
    n_chunks = (L + T - 1) // T
    c = ps * SC
    c_end = tl.minimum(c + SC, n_chunks)
    while c < c_end:  # not range(): Triton's interpreter cannot index with a scalar under NumPy >= 2.4
        # the chunk's loads first: a store between them would stop the compiler issuing them early
        xs, zs, dts, Bs, Cs = (), (), (), (), ()
        for i in tl.static_range(T):
            t = c * T + i
            m = me & (t < L)
            xs += (_load_step(x_ptr, t, sx_l, e, m, EVEN),)
            dts += (_load_step(dt_ptr, t, sdt_l, e, m, EVEN),)
            Bs += (_load_step(B_ptr, t, sB_l, n, mn & (t < L), EVEN),)
            if not STATES_ONLY:
                zs += (_load_step(z_ptr, t, sz_l, e, m, EVEN),)
                Cs += (_load_step(C_ptr, t, sC_l, n, mn & (t < L), EVEN),)
        outs = ()
        for i in tl.static_range(T):
            x = xs[i].to(tl.float32)
            delta = _past_end_zero(softplus(dts[i].to(tl.float32) + bias), me & (c * T + i < L), EVEN)
            h = tl.exp2(delta[None, :] * A2) * h + (delta * x)[None, :] * Bs[i].to(tl.float32)[:, None]
            if not STATES_ONLY:
                z = zs[i].to(tl.float32)
                y = tl.sum(h * Cs[i].to(tl.float32)[:, None], axis=0) + Dv * x
                outs += (y * z * sigmoid(z),)
        if STATES_ONLY:
            tl.store(states_ptr + ((pb * n_chunks + c) * NP + n[:, None]) * E + e[None, :], h, mask=me[None, :])
        else:
            for i in tl.static_range(T):
                t = c * T + i
                _store_step(out_ptr, t, so_l, e, outs[i], me & (t < L), EVEN)
        c += 1
    if ps == S - 1:
        tl.store(last_ptr + (pb * N + n[:, None]) * E + e[None, :], h, mask=mn[:, None] & me[None, :])


@triton.jit
def state_carry_kernel(
    x_ptr, dt_ptr, B_ptr, A_ptr, bias_ptr, ws_ptr, L, E, N, SC, S, sA_e, sA_n,
    sx_b, sx_l, sdt_b, sdt_l, sB_b, sB_l,
    BLOCK_E: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, EVEN: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Segment s < S-1's end state from h = 0, H_s, and its Σ Δ, into the scratch after A: (B, S,
    NP + 1, E). These segments end before the last chunk, so no step lies past L."""
    pe, pb, ps = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    _let_dependents_launch(PDL)
    e, n, me, mn, A2, bias = _channel_block(A_ptr, sA_e, sA_n, ws_ptr, bias_ptr, pe, E, N, BLOCK_E, NP)
    x_ptr += pb * sx_b
    dt_ptr += pb * sdt_b
    B_ptr += pb * sB_b
    h = tl.zeros((NP, BLOCK_E), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_E,), dtype=tl.float32)
    c = ps * SC
    while c < (ps + 1) * SC:
        xs, dts, Bs = (), (), ()
        for i in tl.static_range(T):
            t = c * T + i
            xs += (_load_step(x_ptr, t, sx_l, e, me, EVEN),)
            dts += (_load_step(dt_ptr, t, sdt_l, e, me, EVEN),)
            Bs += (_load_step(B_ptr, t, sB_l, n, mn, EVEN),)
        for i in tl.static_range(T):
            delta = softplus(dts[i].to(tl.float32) + bias)
            dsum += delta
            h = tl.exp2(delta[None, :] * A2) * h + (delta * xs[i].to(tl.float32))[None, :] * Bs[i].to(tl.float32)[:, None]
        c += 1
    _store_carry(ws_ptr + NP * E, h, dsum, pb, ps, S, E, n, e, me, NP)


@triton.jit
def adjoint_carry_kernel(
    dt_ptr, z_ptr, C_ptr, A_ptr, bias_ptr, dout_ptr, ws_ptr, L, E, N, SC, S, sA_e, sA_n,
    sdt_b, sdt_l, sz_b, sz_l, sC_b, sC_l, sdo_b, sdo_l,
    BLOCK_E: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, EVEN: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Segment s > 0's adjoint carry from G(s) = 0, a_{s0} g_{s0}, and its Σ Δ (into the scratch
    after A, as state_carry_kernel's): the adjoint
    g_t = C_t dy_t + a_{t+1} g_{t+1} backwards through the segment, dy_t = dout_t silu(z_t)."""
    pe, pb = tl.program_id(0), tl.program_id(1)
    ps = tl.program_id(2) + 1
    _let_dependents_launch(PDL)
    e, n, me, mn, A2, bias = _channel_block(A_ptr, sA_e, sA_n, ws_ptr, bias_ptr, pe, E, N, BLOCK_E, NP)
    dt_ptr += pb * sdt_b
    z_ptr += pb * sz_b
    C_ptr += pb * sC_b
    dout_ptr += pb * sdo_b
    g = tl.zeros((NP, BLOCK_E), dtype=tl.float32)
    a = tl.zeros((NP, BLOCK_E), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_E,), dtype=tl.float32)
    n_chunks = (L + T - 1) // T
    c = tl.minimum((ps + 1) * SC, n_chunks) - 1
    while c >= ps * SC:
        zs, dts, dos, Cs = (), (), (), ()
        for i in tl.static_range(T):
            t = c * T + i
            m = me & (t < L)
            zs += (_load_step(z_ptr, t, sz_l, e, m, EVEN),)
            dts += (_load_step(dt_ptr, t, sdt_l, e, m, EVEN),)
            dos += (_load_step(dout_ptr, t, sdo_l, e, m, EVEN),)
            Cs += (_load_step(C_ptr, t, sC_l, n, mn & (t < L), EVEN),)
        for i in tl.static_range(T - 1, -1, -1):
            delta = _past_end_zero(softplus(dts[i].to(tl.float32) + bias), me & (c * T + i < L), EVEN)
            dsum += delta
            z = zs[i].to(tl.float32)
            g = a * g + Cs[i].to(tl.float32)[:, None] * (dos[i].to(tl.float32) * z * sigmoid(z))[None, :]
            a = tl.exp2(delta[None, :] * A2)
        c -= 1
    _store_carry(ws_ptr + NP * E, a * g, dsum, pb, ps, S, E, n, e, me, NP)
    _wait_for_prior(PDL)  # it read nothing of the recompute's: this only orders their completions


@triton.jit
def backward_kernel(
    x_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, dout_ptr, states_ptr,  # inputs
    ws_ptr,  # scratch (fp32): A as (NP, E), then the segments' adjoint carries from adjoint_carry_kernel
    dx_ptr, ddt_ptr, dz_ptr, dBCp_ptr, dparts_ptr,  # gradients (dBCp: dB, dC shares; dparts: dA, dD, dbias)
    L, E, N, n_eblocks, SC, S, sA_e, sA_n,
    sx_b, sx_l, sdt_b, sdt_l, sz_b, sz_l, sB_b, sB_l, sC_b, sC_l, sdo_b, sdo_l, sg_b, sg_l,
    BLOCK_E: tl.constexpr, NP: tl.constexpr, T: tl.constexpr, EVEN: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    pe, pb, ps = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    _let_dependents_launch(PDL)
    e, n, me, mn, A2, bias = _channel_block(A_ptr, sA_e, sA_n, ws_ptr, bias_ptr, pe, E, N, BLOCK_E, NP)
    Dv = tl.load(D_ptr + e, mask=me, other=0.0).to(tl.float32)
    x_ptr += pb * sx_b
    dt_ptr += pb * sdt_b
    z_ptr += pb * sz_b
    B_ptr += pb * sB_b
    C_ptr += pb * sC_b
    dout_ptr += pb * sdo_b
    dx_ptr += pb * sg_b  # dx, ddt, dz are new (B, L, E) tensors: one set of strides
    ddt_ptr += pb * sg_b
    dz_ptr += pb * sg_b
    dBp_ptr = dBCp_ptr + (pb * n_eblocks + pe) * L * NP  # this program's (L, NP) share of dB, and of dC
    dCp_ptr = dBp_ptr + tl.num_programs(1) * n_eblocks * L * NP
    _wait_for_prior(PDL)  # the carries, and the recompute's states
    g = _fold_carries(ws_ptr + NP * E, A2, pb, S - 1, ps, -1, S, E, n, e, me, NP, BLOCK_E)  # G(ps)
    a_next = tl.full((NP, BLOCK_E), 1.0, dtype=tl.float32)  # G(ps) = a_{s1} g_{s1} has its decay already
    dA = tl.zeros((NP, BLOCK_E), dtype=tl.float32)
    dD = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_E,), dtype=tl.float32)
    n_chunks = (L + T - 1) // T
    c = tl.minimum((ps + 1) * SC, n_chunks) - 1
    while c >= ps * SC:  # the segment's chunks backwards
        # the chunk's states again, from the state the forward kept at the previous chunk's end
        h0 = tl.load(states_ptr + ((pb * n_chunks + c - 1) * NP + n[:, None]) * E + e[None, :], mask=me[None, :] & (c > 0), other=0.0)
        xs, zs, dts, dos, Bs, Cs = (), (), (), (), (), ()
        for i in tl.static_range(T):  # the chunk's loads first (as in the forward)
            t = c * T + i
            m = me & (t < L)
            xs += (_load_step(x_ptr, t, sx_l, e, m, EVEN),)
            zs += (_load_step(z_ptr, t, sz_l, e, m, EVEN),)
            dts += (_load_step(dt_ptr, t, sdt_l, e, m, EVEN),)
            dos += (_load_step(dout_ptr, t, sdo_l, e, m, EVEN),)
            Bs += (_load_step(B_ptr, t, sB_l, n, mn & (t < L), EVEN),)
            Cs += (_load_step(C_ptr, t, sC_l, n, mn & (t < L), EVEN),)
        h = h0
        hs, deltas, dtbs = (), (), ()
        for i in tl.static_range(T):
            dtb = dts[i].to(tl.float32) + bias
            delta = _past_end_zero(softplus(dtb), me & (c * T + i < L), EVEN)
            h = tl.exp2(delta[None, :] * A2) * h + (delta * xs[i].to(tl.float32))[None, :] * Bs[i].to(tl.float32)[:, None]
            hs += (h,)
            deltas += (delta,)
            dtbs += (dtb,)
        # then backwards through it: g_t = C_t dy_t + a_{t+1} g_{t+1}
        dxs, ddts, dzs, dBs, dCs = (), (), (), (), ()
        for i in tl.static_range(T - 1, -1, -1):
            x, z, do, delta = xs[i].to(tl.float32), zs[i].to(tl.float32), dos[i].to(tl.float32), deltas[i]
            Bv, Cv = Bs[i].to(tl.float32), Cs[i].to(tl.float32)
            sz = sigmoid(z)
            y = tl.sum(hs[i] * Cv[:, None], axis=0) + Dv * x
            dy = do * z * sz
            dzs += (do * y * sz * (1.0 + z * (1.0 - sz)),)
            dD += dy * x
            g = a_next * g + Cv[:, None] * dy[None, :]
            a = tl.exp2(delta[None, :] * A2)
            if i > 0:
                ah = a * hs[i - 1]  # a_t h_{t-1}
            else:
                ah = a * h0
            gah = g * ah
            dA += gah * delta[None, :]
            gB = tl.sum(g * Bv[:, None], axis=0)
            ddelta = x * gB + tl.sum(gah * A2, axis=0) * 0.6931471805599453  # A = A2 ln 2
            draw = _past_end_zero(ddelta * sigmoid(dtbs[i]), me & (c * T + i < L), EVEN)
            dbias += draw
            ddts += (draw,)
            dxs += (Dv * dy + gB * delta,)
            dBs += (tl.sum(g * (delta * x)[None, :], axis=1),)
            dCs += (tl.sum(hs[i] * dy[None, :], axis=1),)
            a_next = a
        for j in tl.static_range(T):  # the tuples above run backwards in time
            t = c * T + T - 1 - j
            m = me & (t < L)
            _store_step(dx_ptr, t, sg_l, e, dxs[j], m, EVEN)
            _store_step(ddt_ptr, t, sg_l, e, ddts[j], m, EVEN)
            _store_step(dz_ptr, t, sg_l, e, dzs[j], m, EVEN)
            _store_step(dBp_ptr, t, NP, n, dBs[j], t < L, EVEN)
            _store_step(dCp_ptr, t, NP, n, dCs[j], t < L, EVEN)
        c -= 1
    part = (pb * S + ps) * (NP + 2)  # this program's share: NP rows of dA, then dD, dbias
    tl.store(dparts_ptr + (part + n[:, None]) * E + e[None, :], dA, mask=me[None, :])
    tl.store(dparts_ptr + (part + NP) * E + e, dD, mask=me)
    tl.store(dparts_ptr + (part + NP + 1) * E + e, dbias, mask=me)


@triton.jit
def _column_sums(src_ptr, rows, cols, i, mi, BLOCK: tl.constexpr, KB: tl.constexpr):
    """Σ_r src[r, i] over the rows of a (rows, cols) fp32 matrix, for a block of BLOCK columns i
    (mask mi), KB rows a load so that many loads are in flight (a row a load waits on each)."""
    rk = tl.arange(0, KB)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    r = tl.program_id(0) * 0  # a tensor from the start: a literal would change type in the loop
    while r < rows:
        m = ((r + rk) < rows)[:, None] & mi[None, :]
        acc += tl.sum(tl.load(src_ptr + (r + rk)[:, None] * cols + i[None, :], mask=m, other=0.0), axis=0)
        r += KB
    return acc


@triton.jit
def reduce_kernel(
    dBCp_ptr, parts_ptr,  # the backward kernel's partials: (2, B, n_eblocks, L, NP), (B S, NP + 2, E) fp32
    dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,  # gradients: (B, L, N) twice, (E, N), (E,), (E,)
    Bt, L, E, N, n_eblocks, R,  # R = B S rows of parts
    NP: tl.constexpr, BLOCK: tl.constexpr, KB: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """The backward's partial sums into its gradients, each in its own dtype, in one launch (each
    torch op it replaces costs host time, which at short L is the eager time). Programs below
    2 B cdiv(L NP, BLOCK) sum a block of (t, n) of one sequence's dB or dC over the channel
    blocks; the rest sum a block of the (NP + 2, E) rows of dA, dD, dbias over sequences and
    segments, and write dA as (E, N)."""
    _wait_for_prior(PDL)
    p = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    per_seq = tl.cdiv(L * NP, BLOCK)
    n_bc = 2 * Bt * per_seq
    if p < n_bc:
        w = p // per_seq  # dB of sequence w, or dC of sequence w - B
        i += (p % per_seq) * BLOCK
        mi = i < L * NP
        acc = _column_sums(dBCp_ptr + w * n_eblocks * L * NP, n_eblocks, L * NP, i, mi, BLOCK, KB)
        t, n = i // NP, i % NP
        m = mi & (n < N)
        if w < Bt:
            tl.store(dB_ptr + (w * L + t) * N + n, acc.to(dB_ptr.dtype.element_ty), mask=m)
        else:
            tl.store(dC_ptr + ((w - Bt) * L + t) * N + n, acc.to(dC_ptr.dtype.element_ty), mask=m)
    else:
        i += (p - n_bc) * BLOCK
        mi = i < (NP + 2) * E
        acc = _column_sums(parts_ptr, R, (NP + 2) * E, i, mi, BLOCK, KB)
        q, e = i // E, i % E  # row q of (NP + 2, E): dA's state q, then dD, then dbias
        tl.store(dA_ptr + e * N + q, acc.to(dA_ptr.dtype.element_ty), mask=mi & (q < N))
        tl.store(dD_ptr + e, acc.to(dD_ptr.dtype.element_ty), mask=mi & (q == NP))
        tl.store(dbias_ptr + e, acc.to(dbias_ptr.dtype.element_ty), mask=mi & (q == NP + 1))
