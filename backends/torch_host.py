"""The fused scan's host path compiled: its planned passes run from C++ (torch_host.cpp).

At short L the scan's eager time is its host's time. Through autograd at L=512 bf16 the Python
path took 695 µs of host a call against about 540 µs of GPU work (reports/benchmarks/h100-driver/
scan-host.txt): 305 µs of our own Python (18 ``torch.empty`` at 7 µs, six launches, the plans'
lookups), 210 µs of autograd's engine for a Python Function, and some 190 µs more for running
that Function's backward on autograd's device thread, which must take the GIL and run Python on a
cold core. mamba-ssm pays the engine's costs, not ours; trimming the Python cannot close that
(a floor with every check removed was still 5 µs behind its C++ call on the forward alone).

So a pass that torch_triton planned (buffers, launches, outputs) and whose launches torch_launch
has learnt as driver launches (torch_driver: a CUfunction and parameter slots a sig) is handed to
a small C++ library, which runs it as ``_run`` does: ``at::empty`` per buffer, the tensors'
addresses written into a copy of the slots, ``cuLaunchKernelEx``. ``selective_scan`` becomes one
op, ``torch.ops.ssmbench_host.scan``, whose backward is a C++ autograd node: no Python, no GIL.

The library is compiled on first use with torch's C++ extension builder (ninja and a C++17
compiler; about 20 s, then cached under torch's extensions directory). Where it cannot be built,
the scan stays on the Python path, with one warning; SSMBENCH_HOST_PATH=0 keeps it there too.
"""

from __future__ import annotations

import ctypes
import os
import threading
import warnings

import torch

from .torch_driver import _libcuda

ENABLED = os.environ.get("SSMBENCH_HOST_PATH", "1") != "0"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_host.cpp")
_state = {"loaded": None}  # None: not tried; True; False: could not be built or loaded
_lock = threading.Lock()
_MASK = (1 << 64) - 1


def available() -> bool:
    """Whether the library is loaded, building and loading it on the first call."""
    if _state["loaded"] is None:
        with _lock:
            if _state["loaded"] is None:
                _state["loaded"] = ENABLED and _load()
    return _state["loaded"]


def _load() -> bool:
    try:
        from torch.utils.cpp_extension import load

        load(name="ssmbench_host", sources=[SOURCE], is_python_module=False, extra_cflags=["-O2", "-std=c++17"], verbose=False)
        torch.ops.ssmbench_host.scan.default  # noqa: B018  (registered: raises if not)
        return True
    except Exception as e:  # no compiler, no ninja, headers missing: the Python path serves
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(f"ssmbench: the scan's compiled host path is off ({first}); the Python path runs it", stacklevel=3)
        return False


def _signed(v: int) -> int:
    """A 64-bit slot as the int64 a schema's int[] carries."""
    v &= _MASK
    return v - (1 << 64) if v >> 63 else v


def encode(p, drivers, inputs: int, launch_fn: int, error_name_fn: int) -> list[int]:
    """torch_host.cpp's description of a pass ``p`` (torch_triton's _Pass) whose launches take
    ``drivers`` (one torch_driver.DriverLaunch each), on a table of ``inputs`` places."""
    blob = [launch_fn, error_name_fn, inputs, len(p.buffers)]
    for shape, _, like in p.buffers:
        blob += [len(shape), *shape, like]
    blob.append(len(p.launches))
    for launch, driver in zip(p.launches, drivers, strict=True):
        function, block, shared, pdl, slots, where = driver.spec()
        place = dict(launch.refs)  # argument position -> table place
        grid = (*launch.grid, 1, 1)[:3]
        blob += [function, *grid, block, shared, int(pdl), launch.allocs, len(slots), *map(_signed, slots), len(where)]
        for position, slot in where:
            blob += [slot, place[position]]
    blob += [len(p.outputs), *p.outputs]
    return blob


def register(p, drivers, inputs: int, launch_fn: int | None = None) -> int:
    """Hand the pass to the library (``available()`` first): its id. ``launch_fn``: the address of
    the function launches call (None: the driver's cuLaunchKernelEx; the tests give a fake)."""
    if launch_fn is None:
        launch_fn = ctypes.cast(_libcuda("cuLaunchKernelEx"), ctypes.c_void_p).value
    error_name = _libcuda("cuGetErrorName")
    error_name_fn = ctypes.cast(error_name, ctypes.c_void_p).value if error_name is not None else 0
    return torch.ops.ssmbench_host.add_pass(encode(p, drivers, inputs, launch_fn, error_name_fn))
