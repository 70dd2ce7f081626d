"""A signed Triton launch made straight through the CUDA driver's ``cuLaunchKernelEx``, with its
configuration and parameters packed once per sig (torch_launch).

Triton's C launcher, called with the same arguments, parses all of them from Python on every
launch (30-40 for the scan's kernels), looks its scratch allocators up, and only then builds the
same ``CUlaunchConfig`` and parameter array. For a sig every argument but the tensors' addresses
is fixed, so ``DriverLaunch`` builds both once: a slot of 8 bytes per parameter, integers and
floats written in at build, and per launch it writes only the tensors' addresses, the grid and
the stream before one ctypes call. It copies what the launcher does (Triton 3.6's
``backends/nvidia/driver.py``): block ``32 * num_warps``, the compiled kernel's shared memory,
the programmatic-serialization attribute where the kernel launches as a dependent (PDL), the
two scratch pointers Triton appends to every kernel's parameters (null: kernels that need
scratch are not packed), and nothing launched for an empty grid.

Only what it can pack exactly is packed (``pack`` says None otherwise): pointers, integers and
floats, one CTA a program, no cooperative grid, no scratch. The rest keeps Triton's launcher.
"""

from __future__ import annotations

import ctypes
import struct
import threading

CUDA_ERROR_INVALID_CONTEXT = 201  # no current context on this thread: Triton's launcher makes one
_ATTR_PROGRAMMATIC_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
_MASK = (1 << 64) - 1

# floats as Triton's launcher stores them: the IEEE bits (bf16: fp32's upper half, truncated)
_FLOAT_BITS = {
    "fp16": lambda v: struct.unpack("<H", struct.pack("<e", v))[0],
    "bf16": lambda v: struct.unpack("<I", struct.pack("<f", v))[0] >> 16,
    "fp32": lambda v: struct.unpack("<I", struct.pack("<f", v))[0],
    "f32": lambda v: struct.unpack("<I", struct.pack("<f", v))[0],
    "fp64": lambda v: struct.unpack("<Q", struct.pack("<d", v))[0],
}
_INTS = {"i1", "i8", "i16", "i32", "i64", "u1", "u8", "u16", "u32", "u64"}


class LaunchAttribute(ctypes.Structure):
    """cuda.h's CUlaunchAttribute: an id, padding to 8 bytes, a 64-byte value union (72 bytes)."""

    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int), ("rest", ctypes.c_char * 60)]


class LaunchConfig(ctypes.Structure):
    """cuda.h's CUlaunchConfig (56 bytes)."""

    _fields_ = [
        ("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
        ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
        ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(LaunchAttribute)), ("numAttrs", ctypes.c_uint),
    ]  # fmt: skip


def pack(types, values, tensors) -> tuple[list[int], tuple[tuple[int, int], ...]] | None:
    """(each kernel parameter's 8-byte slot, Triton's two scratch pointers last; (argument
    position, slot) of each tensor, whose slot is written per launch) for a launch whose
    arguments, constexprs included, have the compiled kernel's signature ``types``; None where a
    type is not one this packs. ``tensors``: the positions of the tensor arguments."""
    if len(types) != len(values) or any(not isinstance(t, str) for t in types):
        return None
    slots, where = [], []
    for i, (ty, v) in enumerate(zip(types, values)):
        if ty == "constexpr":
            if i in tensors:
                return None
            continue
        if ty.startswith("*"):
            if i in tensors:
                where.append((i, len(slots)))
                slots.append(0)
            elif v is None or type(v) is int:
                slots.append(v or 0)
            else:
                return None
        elif ty in _INTS and type(v) in (int, bool):
            slots.append(int(v) & _MASK)
        elif ty in _FLOAT_BITS and type(v) in (int, float):
            try:
                slots.append(_FLOAT_BITS[ty](float(v)))
            except OverflowError:  # beyond the type's range: as Triton's launcher has it
                return None
        else:
            return None
    return [*slots, 0, 0], tuple(where)


_launch_ex = None  # libcuda's cuLaunchKernelEx, once loaded; False: cannot be


def _libcuda(symbol: str):
    """libcuda's function ``symbol``, or None (no driver library, or one without it)."""
    try:
        return getattr(ctypes.CDLL("libcuda.so.1"), symbol)  # loaded already by torch: no new dlopen
    except (OSError, AttributeError):
        return None


def _driver():
    global _launch_ex
    if _launch_ex is None:
        _launch_ex = _libcuda("cuLaunchKernelEx") or False  # before CUDA 11.8: none
    return _launch_ex


def describe(status: int) -> str:
    """A CUresult as the driver names it, e.g. 'CUDA_ERROR_ILLEGAL_ADDRESS (700)'."""
    name, get_name = ctypes.c_char_p(), _libcuda("cuGetErrorName")
    if get_name is not None and get_name(status, ctypes.byref(name)) == 0 and name.value:
        return f"{name.value.decode()} ({status})"
    return f"CUDA error {status}"


class DriverLaunch:
    """One sig's launch: ``load(args)`` then ``launch(grid, stream)``, under ``lock`` (the slots
    are shared by every launch of the sig)."""

    __slots__ = ("lock", "_slots", "_params", "_where", "_config", "_config_ref", "_attr", "_function", "_grid", "_call")

    def __init__(self, function: int, packed: tuple[list[int], tuple], num_warps: int, shared: int, pdl: bool, call):
        slots, self._where = packed
        self.lock = threading.Lock()
        self._slots = (ctypes.c_uint64 * len(slots))(*slots)
        base = ctypes.addressof(self._slots)
        self._params = (ctypes.c_void_p * len(slots))(*(base + 8 * k for k in range(len(slots))))
        self._attr = LaunchAttribute(id=_ATTR_PROGRAMMATIC_SERIALIZATION, value=1)
        self._config = LaunchConfig(blockDimX=32 * num_warps, blockDimY=1, blockDimZ=1, sharedMemBytes=shared)
        if pdl:
            self._config.attrs, self._config.numAttrs = ctypes.pointer(self._attr), 1
        self._config_ref = ctypes.byref(self._config)
        self._function = ctypes.c_void_p(function)
        self._grid = None
        self._call = call

    @classmethod
    def build(cls, run, function, metadata, types, values, tensors):
        """The DriverLaunch for a launch that Triton's launcher ``run`` (a CudaLauncher) made with
        ``values`` (the arguments then the constexprs), or None where it cannot be one."""
        call = _driver() if types is not None and type(function) is int else None
        if not call or not (isinstance(metadata, tuple) and len(metadata) == 3):
            return None
        num_warps, num_ctas, shared = metadata
        plain = num_ctas == 1 and not getattr(run, "launch_cooperative_grid", True)
        no_scratch = not getattr(run, "global_scratch_size", 1) and not getattr(run, "profile_scratch_size", 1)
        packed = pack(types, values, tensors) if plain and no_scratch else None
        if packed is None:
            return None
        return cls(function, packed, num_warps, shared, bool(getattr(run, "launch_pdl", False)), call)

    def spec(self) -> tuple[int, int, int, bool, list[int], tuple[tuple[int, int], ...]]:
        """(the kernel's CUfunction, threads a block, shared memory bytes, whether it launches as
        a programmatic dependent, the parameter slots with every tensor's slot 0, (argument
        position, slot) of each tensor): what a launch made from C++ needs (torch_host)."""
        c, tensors = self._config, {k for _, k in self._where}
        slots = [0 if k in tensors else v for k, v in enumerate(self._slots)]
        return self._function.value, c.blockDimX, c.sharedMemBytes, bool(c.numAttrs), slots, self._where

    def load(self, args) -> bool:
        """Write the tensors' addresses; False if one is not 16-byte aligned (another key)."""
        slots, addresses = self._slots, 0
        for i, k in self._where:
            address = slots[k] = args[i].data_ptr()
            addresses |= address
        return not addresses & 15

    def launch(self, grid: tuple[int, int, int], stream: int) -> int:
        """Launch on ``stream`` with the loaded addresses: the driver's CUresult (0: launched)."""
        if grid != self._grid:
            if not grid[0] * grid[1] * grid[2]:
                return 0
            c = self._config
            c.gridDimX, c.gridDimY, c.gridDimZ = self._grid = grid
        self._config.hStream = stream
        return self._call(self._config_ref, self._function, self._params, None)
