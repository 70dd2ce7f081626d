"""torch-cuda's Triton kernels: the fused selective scan (``scan``: its host side and autograd;
``scan_kernels``: the kernels and their math) and the fused kernels around it (``fused``: causal
conv + silu, residual add + RMSNorm, the decode step, cross-entropy rows).

Without CUDA the kernels run under Triton's interpreter (this module sets it up, before the first
``import triton``), which is how the tests check their arithmetic on a CPU.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # run the kernels under Triton's interpreter on a CPU; this
    os.environ.setdefault("TRITON_INTERPRET", "1")  # works only before the first `import triton`

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

__all__ = ["triton", "tl", "cdiv", "next_power_of_2"]


# grid and tile arithmetic on the host: triton.cdiv and triton.next_power_of_2 are constexpr
# functions, a few µs a call in Python
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


def padded_states(N: int) -> int:
    """NP: d_state rounded up to a power of two (at least 2), the kernels' state tile."""
    return max(2, next_power_of_2(N))


def bl_strides(t: torch.Tensor) -> tuple[int, int]:
    """A (B, L, ...) tensor's batch and length strides, as the kernels take them."""
    return t.stride(0), t.stride(1)


def lastdim_contiguous(*ts: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor with unit stride along its last dim (copied only where it has not)."""
    return [t if t.stride(-1) == 1 else t.contiguous() for t in ts]
