"""Compile every Triton kernel of the torch-cuda backend for a CUDA GPU on a machine without
one, and print each kernel's registers and spills (the bundled ptxas -v) and how many layout
conversions of 2D tiles its TTGIR has inside loops. The tests run the kernels under Triton's
interpreter, which checks their arithmetic but not that they compile for a GPU; run this
before spending device time.

    python tools/compile_triton.py [--capability 90] [--generic]

Kernels compile as a launch at mamba-130m's shapes specialises them: Triton marks each pointer
argument 16-byte aligned and each integer that is a multiple of 16 (``SHAPE``), and the compiler
picks wider loads and other register layouts from that. ``--generic`` compiles without those
marks, which is what a launch on unaligned views or odd sizes gets; the two can differ a lot
(docs/backends.md: the scan's layout under the real launch).

Exits 1 if a kernel does not compile, spills registers, or converts a 2D tile's layout inside a
loop (each conversion goes through shared memory every step: reading A straight from its (E, N)
layout put 1-5 in each scan kernel's loops and cost 1.3-1.6x on the H100). A compiler upgrade can
change these counts, so this is a tool a maintainer reruns after a kernel edit or an upgrade,
not a unit test.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

os.environ["TRITON_INTERPRET"] = "0"  # compile, do not interpret (before triton is imported)

import triton  # noqa: E402
from ssmbench.backends.torch.triton import decode  # noqa: E402
from ssmbench.backends.torch.triton import fused as tf  # noqa: E402
from ssmbench.backends.torch.triton import scan as tt  # noqa: E402
from ssmbench.backends.torch.triton import scan_kernels as sk  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# pointers holding activations take the run's dtype; the rest (A, D, biases, states) are fp32
ACTIVATIONS = {"x_ptr", "dt_ptr", "z_ptr", "B_ptr", "C_ptr", "out_ptr", "dout_ptr", "dx_ptr", "ddt_ptr", "dz_ptr",
               "dy_ptr", "dh_ptr", "xc_ptr", "y_ptr", "logits_ptr"}  # fmt: skip
FIXED = {"targets_ptr": "*i64", "eps": "fp32", "scale": "fp32"}  # any other scalar is an i32
# A (E, N) contiguous: its stride along N is 1, which a launch specialises as a constant
SCAN = {"BLOCK_E": tt.FORWARD.block_e, "NP": 16, "EVEN": True, "sA_n": 1, "PDL": True}  # sm_90: launch chains on
ONE_SEGMENT = {"S": 1, "SC": 1}  # Triton specialises integer arguments equal to 1 as constants
# integer arguments at mamba-130m's shapes (B 8, L 2048, E 1536, N 16, D 768; the forward's 11
# segments of 47 4-step chunks on 132 SMs); strides (names s*_*) are products of these, all
# multiples of 16
SHAPE = {"L": 2048, "E": 1536, "N": 16, "D": 768, "M": 16384, "Bt": 8, "n_eblocks": 48, "SC": 47, "S": 11, "R": 88,
         "n_ltiles": 32, "V": 50280, "stride": 50280}  # fmt: skip


def kernels():
    """(name, kernel, constexprs, num_warps, other pointers in the run's dtype) at the shapes the
    model uses, ragged tiles and a single segment included."""
    f, b = tt.FORWARD, tt.BACKWARD
    fwd, bwd = {**SCAN, "T": f.chunk}, {**SCAN, "BLOCK_E": b.block_e, "T": b.chunk}
    for tag, extra in (("", {}), (", ragged tiles", {"EVEN": False}), (", one segment", ONE_SEGMENT)):
        keep, recompute = {"STATES_ONLY": False, "KEEP_STARTS": True, "FROM_STARTS": False}, {"STATES_ONLY": True, "KEEP_STARTS": False}
        yield "scan forward" + tag, sk.forward_kernel, {**fwd, **keep, **extra}, f.warps, ()
        yield "scan forward, inference" + tag, sk.forward_kernel, {**fwd, **keep, "KEEP_STARTS": False, **extra}, f.warps, ()
        yield "scan recompute" + tag, sk.forward_kernel, {**bwd, **recompute, "FROM_STARTS": True, **extra}, b.warps, ()
        yield "scan recompute, carries" + tag, sk.forward_kernel, {**bwd, **recompute, "FROM_STARTS": False, **extra}, b.warps, ()
        yield "state carry" + tag, sk.state_carry_kernel, {**fwd, **extra}, f.warps, ()
        yield "adjoint carry" + tag, sk.adjoint_carry_kernel, {**bwd, **extra}, b.warps, ()
        yield "scan backward" + tag, sk.backward_kernel, {**bwd, **extra}, b.warps, ()
    reduce = {k: v for k, v in tt.REDUCE.items() if k != "num_warps"}
    yield "scan partial sums", sk.reduce_kernel, {**reduce, "NP": 16, "PDL": True}, tt.REDUCE["num_warps"], ("dB_ptr", "dC_ptr")
    conv = {"K": 4, "BL": tf.CONV_BLOCK_L, "BE": tf.CONV_BLOCK_E}
    yield "conv forward", tf.conv_forward_kernel, conv, 4, ()
    yield "conv grad pre", tf.conv_grad_pre_kernel, conv, 4, ()
    yield "conv grad x", tf.conv_grad_x_kernel, conv, 4, ()
    norm = tf.norm_meta(768)
    warps = norm.pop("num_warps")
    yield "add + norm forward", tf.add_norm_forward_kernel, {**norm, "HAS_RES": True}, warps, ("h_ptr",)
    yield (
        "add + norm backward",
        tf.add_norm_backward_kernel,
        {**norm, "ROWS": tf.NORM_ROWS, "HAS_DR_NEXT": True, "HAS_RES": True},
        warps,
        (),
    )
    yield "decode conv step", decode.conv_step_kernel, {"K": 4, "KP": 4, "BE": decode.STEP_BLOCK_E}, 4, ()
    yield "decode ssm step", decode.ssm_step_kernel, {"NP": 16, "BE": decode.STEP_BLOCK_E}, 4, ()  # h_ptr: the fp32 state
    yield "cross-entropy rows", tf.cross_entropy_kernel, {"BV": tf.CE_BLOCK_V}, 8, ()


def _divisible(name: str) -> bool:
    """Whether a launch at SHAPE marks this argument divisible by 16 (pointers: 16-byte aligned)."""
    if name.endswith("_ptr"):
        return True
    if name in SHAPE:
        return SHAPE[name] % 16 == 0
    if name.startswith("s") and "_" in name:  # a stride
        return True
    raise KeyError(f"compile_triton.SHAPE has no value for the integer argument {name!r}")


def compile_one(kernel, constexprs, warps, dtype, capability, activations=(), generic=False):
    sig, cx, attrs = {}, {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            sig[name], cx[(i,)] = "constexpr", constexprs[name]
            continue
        if name in FIXED:
            sig[name] = FIXED[name]
        elif name.endswith("_ptr"):
            sig[name] = "*" + (dtype if name in ACTIVATIONS or name in activations else "fp32")
        else:
            sig[name] = "i32"
        if not generic and sig[name] != "fp32" and _divisible(name):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kernel, signature=sig, constexprs=cx, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps})


def layout_converts(ttgir: str, tiles_only: bool = True) -> tuple[int, int]:
    """(outside loops, inside loops): how many layout conversions (``ttg.convert_layout``) the
    TTGIR has outside and inside loop bodies (``scf.for`` / ``scf.while``), of 2D tiles
    (tensor<MxNx...>) only unless ``tiles_only`` is False. A tile's conversion in a scan's step
    loop cost 1.3-1.6x on the H100 (docs/backends.md)."""
    depth = outside = inside = 0
    for ln in ttgir.splitlines():
        if "convert_layout" in ln and (not tiles_only or re.search(r"tensor<\d+x\d+x", ln)):
            inside, outside = (inside + 1, outside) if depth else (inside, outside + 1)
        if "scf." in ln or depth:
            depth += ln.count("{") - ln.count("}")
    return outside, inside


def ptxas_report(ptx: str, capability: int) -> str:
    from triton.backends.nvidia import compiler as nvc

    exe = pathlib.Path(nvc.__file__).parent / "bin" / "ptxas"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
        fh.write(ptx)
    arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
    out = subprocess.run([str(exe), "-v", "--gpu-name", arch, fh.name, "-o", os.devnull], capture_output=True, text=True)
    os.unlink(fh.name)
    lines = [ln.split("info    : ")[-1] for ln in out.stderr.splitlines() if "registers" in ln or "spill" in ln]
    return " | ".join(lines) or out.stderr.strip()[-200:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--capability", type=int, default=90, help="compute capability x 10 (90: H100)")
    ap.add_argument("--generic", action="store_true", help="no alignment or divisibility marks (see above)")
    args = ap.parse_args()
    failed, flagged = 0, []
    for name, kernel, constexprs, warps, activations in kernels():
        for dtype in ("fp32", "bf16"):
            try:
                k = compile_one(kernel, constexprs, warps, dtype, args.capability, activations, args.generic)
                report = ptxas_report(k.asm["ptx"], args.capability)
                converts = layout_converts(k.asm["ttgir"])[1]
                print(f"{name:38s} {dtype}  {report} | tile converts in loops {converts}", flush=True)
                if " 0 bytes spill stores" not in report or (converts and not args.generic):
                    flagged.append(f"{name} {dtype}")
            except Exception as exc:  # noqa: BLE001 - report every kernel, then fail
                failed += 1
                print(f"{name:38s} {dtype}  FAILED: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
    if flagged:
        print(f"spills or tile layout conversions in loops: {', '.join(flagged)}")
    return 1 if failed or flagged else 0


if __name__ == "__main__":
    sys.exit(main())
