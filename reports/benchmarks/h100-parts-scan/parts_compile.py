"""Compile the parts kernel (applied from one of this folder's diffs) for sm_90 on a machine
without a GPU, as a launch at mamba-130m's shapes specialises it; print its registers and spills
and how many layout conversions its TTGIR has outside and inside loops.

    python reports/benchmarks/h100-parts-scan/parts_compile.py BLOCK_E,P,Q,WARPS ...
"""

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # compile, do not interpret (before triton is imported)
sys.path.insert(0, "benchmarks")
import compile_triton as ct  # noqa: E402
from ssmbench.backends import torch_scan_kernels as sk  # noqa: E402

for arg in sys.argv[1:] or ["8,8,8,1"]:
    be, P, Q, w = map(int, arg.split(","))
    for dtype in ("fp32", "bf16"):
        cx = {"BLOCK_E": be, "NP": 16, "P": P, "Q": Q, "EVEN": True, "sA_n": 1}
        if "NP" not in sk._forward_parts_kernel.arg_names:  # the dynamic-states kernel takes no NP
            del cx["NP"]
        k = ct.compile_one(sk._forward_parts_kernel, cx, w, dtype, 90)
        out, inside = ct.layout_converts(k.asm["ttgir"], tiles_only=False)
        print(f"{arg} {dtype}: {ct.ptxas_report(k.asm['ptx'], 90)} | converts outside loops {out}, inside {inside}", flush=True)
