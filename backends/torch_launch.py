"""Triton launches without Triton's per-call Python work, for kernels launched many times alike.

``kernel[grid](*args, **meta)`` binds and specializes every argument in Python on each call and
looks the compiled kernel up by a key built from all of them, before the launch itself: 18 µs of
host time with 5 arguments and 36 µs with 30 on the lent H100's host
(reports/benchmarks/h100-fused-loss/host-overhead.txt). The fused scan launches up to six kernels
of 20-35 arguments per forward and backward, and at L=512 the GPU runs each in less time than the
host takes to launch the next, so an eager call ran at the host's speed, not the GPU's.

``Launcher(kernel)[grid](*args, **meta)`` is the same launch. Per key:

1. the first launch goes through Triton, which compiles the kernel (or finds it in its caches);
2. the second goes through Triton too, watching what it hands the compiled kernel's launcher
   (the C function Triton calls last): if that is the grid, the stream, the kernel's handles and
   ``args`` followed by a fixed tail (the constexprs, in 3.6), the key is learnt;
3. later launches call that launcher directly, with the arguments exactly as Triton passed them.

A Triton whose launch looks otherwise keeps every launch of the key with Triton: nothing is
assumed about its calling convention.

Building the key is itself host time: a Python test per argument, 7 µs for the carry kernel's 18
arguments and 13 for the forward's 31 (reports/benchmarks/h100-host-path/launch-parts.txt). A
caller that launches a kernel the same way many times passes a ``sig``: a hashable that it
guarantees determines everything the key holds but the tensors' addresses (each tensor's dtype
and device, every other argument's value, the constexprs). Once a launch with that sig went
direct with every tensor 16-byte aligned, later launches with the sig whose tensors are all
aligned (one OR of their addresses) take the same direct launch without building the key, and
pass the tensors as the addresses the OR read: Triton's launcher then skips its check of each
tensor (a `cuPointerGetAttribute` a pointer, that the keyed launches of the sig made). Anything
else takes the keyed path. CHECK_SIGS (SSMBENCH_CHECK_SIGS=1; the GPU tests set it) builds the
key anyway and raises where a sig's launch would have keyed differently.

A sig's launches then skip Triton's C launcher as well (torch_driver): the sig fixes every
parameter but the tensors' addresses, so a ``DriverLaunch`` packs the launch configuration and
parameters once and each launch writes the addresses and calls ``cuLaunchKernelEx`` itself.
That took the scan forward's host time from 49 to 37 µs and the carry kernel's launch from 8.4
to 7.7 (reports/benchmarks/h100-driver/host-parts.txt). SSMBENCH_DRIVER_LAUNCH=0 keeps Triton's
launcher; a kernel needing what the packing does not cover (scratch, clusters, TMA descriptors)
keeps it too, and a thread with no current CUDA context takes it once (it makes one current).

The key holds everything Triton specializes a compiled kernel on: each tensor's dtype and whether
its address is 16-byte aligned, every other argument's value (for the scan: L, E, N, strides,
segment counts), the constexprs and options, and the current device. Under Triton's interpreter,
while a launch hook is set (profilers such as proton set one), or with SSMBENCH_DIRECT_LAUNCH=0,
every launch goes through Triton.
"""

from __future__ import annotations

import os
import threading

import torch

if not torch.cuda.is_available():  # run the kernels under Triton's interpreter on a CPU; this
    os.environ.setdefault("TRITON_INTERPRET", "1")  # works only before the first `import triton`

import triton  # noqa: E402
import triton.language as tl  # noqa: E402, F401  (torch_triton and torch_fused import both from here)
from triton.runtime.jit import JITFunction  # noqa: E402

from .torch_driver import CUDA_ERROR_INVALID_CONTEXT, DriverLaunch, describe  # noqa: E402

DIRECT = os.environ.get("SSMBENCH_DIRECT_LAUNCH", "1") != "0"  # 0: every launch through Triton
DRIVER = os.environ.get("SSMBENCH_DRIVER_LAUNCH", "1") != "0"  # 0: signed launches through Triton's launcher
CHECK_SIGS = os.environ.get("SSMBENCH_CHECK_SIGS", "0") == "1"  # 1: check each sig against the key it stands for
_NEW = object()  # a key not launched yet
DIRECT_KINDS = (JITFunction,)  # kernels that may launch directly: @triton.jit ones, as compiled


# grid and tile arithmetic on the host: triton.cdiv and triton.next_power_of_2 are constexpr
# functions, a few µs a call in Python, and the host's time is the eager time at short lengths
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


def launch(kernel, grid: tuple[int, ...], sig=None):
    """``kernel[grid]``, through the kernel's Launcher: ``launch(kernel, grid)(*args, **meta)``;
    ``sig`` as the module says (None: none)."""
    return lambda *args, **meta: launch_now(kernel, grid, args, meta, sig)


def launch_now(kernel, grid: tuple[int, ...], args: tuple, meta: dict, sig=None) -> None:
    """``launch(kernel, grid, sig)(*args, **meta)`` without building a call for it (1.5 µs of
    host time a launch, where the scan launches six)."""
    launcher = _launchers.get(kernel)
    if launcher is None:
        launcher = _launchers[kernel] = Launcher(kernel)
    launcher.launch((*grid, 1, 1)[:3], args, meta, sig)


class Launcher:
    """A Triton kernel launched as ``Launcher(kernel)[grid](*args, **meta)``, the same call as
    ``kernel[grid](*args, **meta)``."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.direct = isinstance(kernel, DIRECT_KINDS)  # not autotuned (its hooks), not interpreted
        # key -> the compiled kernel (launched once), a direct launch (launcher, function,
        # metadata, tail, signature types), or None (stays with Triton)
        self._keys: dict[tuple, object] = {}
        # (sig, device, knobs) -> (the direct launch's run, function, metadata, tail, the positions
        # of the tensors among the arguments, the key the sig stands for, its DriverLaunch or None)
        self._sigs: dict[tuple, tuple] = {}
        self._watching = threading.RLock()  # one watched launch at a time: it swaps the launcher

    def __getitem__(self, grid: tuple[int, ...]):
        grid = (*grid, 1, 1)[:3]
        return lambda *args, **meta: self.launch(grid, args, meta)

    def launch(self, grid: tuple[int, int, int], args: tuple, meta: dict, sig=None) -> None:
        rt = triton.knobs.runtime
        hooked = _hooked(rt.launch_enter_hook) or _hooked(rt.launch_exit_hook)
        if not (DIRECT and self.direct) or rt.interpret or hooked or self.kernel.pre_run_hooks:
            self.kernel[grid](*args, **meta)
            return
        device = torch.cuda.current_device()
        if sig is not None:
            sig = (sig, device, rt.debug, triton.knobs.compilation.instrumentation_mode)
            signed = self._sigs.get(sig)
            if signed is not None:
                run, function, metadata, tail, tensors, key, driver = signed
                if driver is not None and self._drive(driver, grid, args, meta, device, sig, key):
                    return
                bare, addresses = list(args), 0
                for i in tensors:
                    address = bare[i] = args[i].data_ptr()
                    addresses |= address
                if not addresses & 15:
                    if CHECK_SIGS:
                        self._check(device, args, meta, sig, key)
                    run(*grid, torch._C._cuda_getCurrentRawStream(device), function, metadata, None, None, None, *bare, *tail)
                    return
        key = self._key(device, args, meta)
        known = self._keys.get(key, _NEW)
        if type(known) is tuple:
            run, function, metadata, tail, types = known
            run(*grid, torch._C._cuda_getCurrentRawStream(device), function, metadata, None, None, None, *args, *tail)
            if sig is not None:
                tensors = tuple(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
                if all(not args[i].data_ptr() & 15 for i in tensors):
                    driver = DriverLaunch.build(run, function, metadata, types, (*args, *tail), tensors) if DRIVER else None
                    self._sigs[sig] = (run, function, metadata, tail, tensors, key, driver)
        elif known is _NEW:
            compiled = self.kernel[grid](*args, **meta)
            if not any(isinstance(v, torch.Tensor) for v in meta.values()):  # a tensor by name would key by identity
                self._keys[key] = compiled
        elif known is None:
            self.kernel[grid](*args, **meta)
        else:
            self._keys[key] = self._watched(known, grid, args, meta)

    def _drive(self, driver: DriverLaunch, grid, args, meta, device, sig, key) -> bool:
        """The sig's launch through the driver; False where it did not launch: a tensor not
        16-byte aligned (another key), or no current CUDA context on this thread (Triton's
        launcher, which the caller then takes, makes the device's current)."""
        with driver.lock:
            if not driver.load(args):
                return False
            if CHECK_SIGS:
                self._check(device, args, meta, sig, key)
            status = driver.launch(grid, torch._C._cuda_getCurrentRawStream(device))
        if status == CUDA_ERROR_INVALID_CONTEXT:
            return False
        if status:
            raise RuntimeError(f"{self.kernel}: cuLaunchKernelEx failed: {describe(status)}")
        return True

    def _check(self, device, args, meta, sig, key) -> None:
        """Raise if the sig's launch would have keyed otherwise (CHECK_SIGS)."""
        if self._key(device, args, meta) != key:
            raise RuntimeError(f"{self.kernel}: sig {sig[0]!r} stands for another launch than these arguments")

    @staticmethod
    def _key(device: int, args: tuple, meta: dict) -> tuple:
        """Everything Triton specializes a launch's compiled kernel on. Every float value runs one
        compiled kernel, so floats are keyed by type; True and 1 are equal keys but not the same
        kernel, so other non-integers are keyed with their type. Integers are tested first and
        alignment as a bit test: this runs for every argument of every keyed launch (7-13 µs a
        scan launch on the H100's host written the other way round)."""
        spec = [
            a if type(a) is int
            else (a.dtype, not a.data_ptr() & 15) if isinstance(a, torch.Tensor)
            else float if type(a) is float
            else (type(a), a)
            for a in args
        ]  # fmt: skip
        knobs = triton.knobs
        return (device, knobs.runtime.debug, knobs.compilation.instrumentation_mode, *meta.items(), *spec)

    def _watched(self, compiled, grid, args, meta) -> tuple | None:
        """Launch through Triton with the compiled kernel's launcher watched: (launcher, function,
        metadata, tail, the compiled kernel's signature types or None) if Triton passed it the
        grid, the stream, the kernel's function and metadata, launch metadata and hooks, then
        ``args`` and the tail; else None."""
        if not hasattr(compiled, "_run"):  # not a Triton 3.x CompiledKernel
            self.kernel[grid](*args, **meta)
            return None
        with self._watching:
            real, seen = compiled.run, []
            if getattr(real, "watching", False):  # another launch of this kernel is being watched
                self.kernel[grid](*args, **meta)
                return None

            def watch(*a):
                seen.append(a)
                return real(*a)

            watch.watching = True
            compiled._run = watch  # what its `run` property returns
            try:
                self.kernel[grid](*args, **meta)
            finally:
                compiled._run = real
        if len(seen) != 1 or len(seen[0]) < 9 + len(args):
            return None
        head, passed = seen[0][:9], seen[0][9:]
        if tuple(head[:3]) != tuple(grid) or head[4] is not compiled.function or head[5] is not compiled.packed_metadata:
            return None
        if not all(p is a for p, a in zip(passed, args)):  # the very objects: Triton converted none
            return None
        signature = getattr(getattr(compiled, "src", None), "signature", None)  # for DriverLaunch
        types = tuple(signature.values()) if isinstance(signature, dict) else None
        return real, compiled.function, compiled.packed_metadata, passed[len(args) :], types


def direct_state() -> tuple | None:
    """The knobs that signed launches are learnt under now, (debug, instrumentation mode), or None
    where launches go through Triton now (interpreter, a launch hook set, or direct or driver
    launches turned off): whether a launch learnt earlier may be made as learnt (torch_host)."""
    rt = triton.knobs.runtime
    if not (DIRECT and DRIVER) or rt.interpret or _hooked(rt.launch_enter_hook) or _hooked(rt.launch_exit_hook):
        return None
    return rt.debug, triton.knobs.compilation.instrumentation_mode


def signed_driver(kernel, sig, device: int, state: tuple) -> DriverLaunch | None:
    """The DriverLaunch that ``kernel``'s launches with ``sig`` on ``device`` take under
    ``direct_state()``'s ``state``; None where there is none yet (or the launch cannot be one)."""
    launcher = _launchers.get(kernel)
    signed = None if launcher is None else launcher._sigs.get((sig, device, *state))
    return None if signed is None else signed[6]


def _hooked(hook) -> bool:
    """Whether a launch hook is set: a non-empty HookChain (Triton 3.5 on), or not None before."""
    return hook is not None and bool(getattr(hook, "calls", True))


_launchers: dict = {}  # kernel -> its Launcher
