"""The Backend interface every framework implements the same way.

A backend is one framework on one device (``torch-cpu``, ``jax-cuda``, ...). It builds a model
from shared NumPy weights and exposes the three paths ssmbench measures:

    forward(model, tokens)             parallel (prefill) logits      tokens (B, L) -> (B, L, V)
    train_step(model, tokens, targets) forward + cross-entropy + backward + AdamW update -> loss
    decode_step(model, token, state)   one token through the recurrent path (Mamba: O(1) conv
                                       and SSM state; Transformer: KV cache) -> (logits (B, V), state)

Handles (model, tensors, state) are opaque to the rest of ssmbench: it only passes them back,
synchronises on them, and converts outputs with ``to_numpy``. Dependencies point one way:
suites -> runner -> backends; a backend never imports the runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

DTYPES = ("float32", "bfloat16", "float16")
# The one optimiser every train step uses (torch.optim.AdamW's defaults, lr 1e-3)
ADAMW = {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
MODES = ("train", "forward", "decode")
IMPLS = ("ssmbench", "hf", "mamba-ssm", "mlx-lm")  # --impl: ssmbench's own model, or the one a library ships (Backend.impls)


class BackendUnavailable(RuntimeError):
    """Raised when a backend cannot run on this machine (the message says why)."""


@dataclass
class Availability:
    available: bool
    reason: str  # why not, or what was found ("CUDA 13.0, 1 x NVIDIA H100")
    install: str  # the command that would make it available


class Backend(ABC):
    name: str = ""  # FRAMEWORK-DEVICE, e.g. "torch-cpu"
    framework: str = ""  # "torch", "jax", "tf"
    scans: dict = {}  # arch -> the parallel-path scans this backend offers it (archs with FIXED_SCAN need none)
    default_scan: dict = {}  # arch -> the scan it runs unless --scan says otherwise
    dtypes: tuple = ("float32",)
    host_memory: bool = False  # the model lives in this process's memory (CPU): its peak is sampled RSS
    install_hint: str = ""
    priority: int = 0  # higher runs first for --backend auto (GPUs above CPUs)
    parity_checked: bool = True  # timing suites check the model against the reference first
    impls: tuple = ("ssmbench",)  # --impl: whose implementation of the model it can run (ssmbench's own, hf, mamba-ssm)

    def __init__(self):
        """Refuses to construct where the backend cannot run (BackendUnavailable says why)."""
        ok = self.availability()
        if not ok.available:
            raise BackendUnavailable(ok.reason)

    # ------------------------------------------------------------------ availability, device
    @classmethod
    @abstractmethod
    def availability(cls) -> Availability: ...

    @abstractmethod
    def device_info(self) -> dict:
        """{"device": name as the framework reports it, "memory_bytes": int | None, ...}."""

    @abstractmethod
    def versions(self) -> dict:
        """Framework and library versions for the environment fingerprint."""

    # ------------------------------------------------------------------ model
    @abstractmethod
    def build(self, arch: str, weights: dict, cfg, *, scan: str | None, dtype: str) -> Any:
        """A model handle from NumPy weights (mamba-ssm names for Mamba). A backend offering other
        implementations (``impls``) takes ``impl=`` too, raising BackendUnavailable where that
        implementation cannot run here."""

    @abstractmethod
    def weights(self, model) -> dict:
        """The model's current parameters as NumPy arrays under the shared names."""

    @abstractmethod
    def tokens(self, array: np.ndarray) -> Any:
        """An int token array on this backend's device."""

    @abstractmethod
    def forward(self, model, tokens) -> Any: ...

    @abstractmethod
    def train_step(self, model, tokens, targets) -> Any: ...

    @abstractmethod
    def init_state(self, model, batch: int, capacity: int) -> Any:
        """Empty decode state for ``batch`` streams of up to ``capacity`` tokens."""

    @abstractmethod
    def prefill(self, model, tokens, capacity: int) -> Any:
        """Decode state after consuming ``tokens`` (B, L) through the parallel path."""

    @abstractmethod
    def decode_step(self, model, token, state) -> tuple[Any, Any]: ...

    # ------------------------------------------------------------------ ops alone (the scan suite)
    ops_supported: bool = False  # whether op_step is implemented

    def op_step(self, arch: str, scan: str, inputs: dict, dtype: str, mode: str):
        """A zero-argument callable running one op alone (ssmbench.ops): the selective scan
        ``scan`` (arch "mamba") or causal attention (arch "transformer"), forward or, for
        mode "train", forward + backward for every input. ``inputs`` are ssmbench.ops' NumPy
        arrays; activations run in ``dtype``, A, D and dt_bias in float32. The callable returns
        out (forward) or dL/dx, dL/dq (train), in the framework's layout (JAX's attention works in
        (B, L, H, hd)); its inputs are converted before, not inside, the timed call."""
        raise NotImplementedError(f"{self.name} does not run ops alone")

    def graph_replay(self, step) -> tuple:
        """(a zero-argument callable replaying ``step``, captured once as a device graph, None)
        where the backend can capture it: its time is the device's alone, without the host's
        launch costs; or (None, why not). The scan suite times both beside each other."""
        return None, f"{self.name} does not capture device graphs"

    def copy_bandwidth(self) -> float | None:
        """Bytes/s of a large on-device copy, reads and writes counted (the memory floor's
        denominator), or None where it is not measured."""
        return None

    def device_ceilings(self) -> dict | None:
        """What the device can do, measured here: {"copy_bytes_per_s", "matmul_flops":
        {dtype: FLOP/s}}; MFU and memory floors are stated against it. None where not measured
        (CPU backends)."""
        return None

    def energy_joules(self) -> float | None:
        """The device's cumulative energy counter in joules (NVML's total energy), or None where
        there is none. Read around the timed steps for joules per token."""
        return None

    def execution(self, model) -> dict:
        """How this model's steps ran, where a backend chooses per model (after timing; into
        the record's env_backend), e.g. {"train_step": "CUDA graph"}."""
        return {}

    # ------------------------------------------------------------------ measurement support
    @abstractmethod
    def synchronize(self, out=None) -> None:
        """Block until all work producing ``out`` (and everything queued before) is done."""

    @abstractmethod
    def to_numpy(self, x) -> np.ndarray: ...

    def all_finite(self, x) -> bool:
        """Whether an output (logits or loss) holds no NaN or inf."""
        return bool(np.isfinite(self.to_numpy(x)).all())

    @classmethod
    def configure_process(cls, memory_limit: int | None) -> bool:
        """Called once in a fresh worker before the framework starts (environment variables,
        allocator settings). Returns True where ``memory_limit`` (bytes) is enforced natively;
        False lets the worker's resident-memory watchdog enforce it (CPU backends)."""
        return False

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window (no-op where the source cannot be reset)."""

    @abstractmethod
    def peak_memory(self) -> tuple[int | None, str]:
        """(peak bytes, where the figure came from) from the device allocator; (None, why not)
        where there is none (CPU): the worker then reports the process's resident memory."""

    @abstractmethod
    def is_oom(self, exc: BaseException) -> bool: ...
