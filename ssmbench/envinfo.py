"""The environment fingerprint stored with every result, so results from any machine can be
compared and merged: host, OS, Python, CPU, RAM, accelerators (NVML), library versions,
ssmbench's version and git commit, and the environment variables that change performance.

Nothing here imports a framework: the backends add their own runtime details (threads, CUDA).
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import psutil

LIBRARIES = ("numpy", "torch", "triton", "jax", "jaxlib", "jax-metal", "tensorflow", "tensorflow-cpu", "mlx", "safetensors")
LIBRARIES += ("transformers", "mamba-ssm", "causal-conv1d")  # --impl: whose code, and the kernels it picks up

ENV_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "ENABLE_PJRT_COMPATIBILITY",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ENABLE_MPS_FALLBACK",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_XLA_FLAGS",
    "TF_GPU_ALLOCATOR",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def total_ram() -> int:
    return int(psutil.virtual_memory().total)


def _versions() -> dict:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


@cache
def git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if r.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def accelerators() -> dict:
    """NVIDIA GPUs through NVML; an empty list (with the reason) where there is none."""
    try:
        import pynvml
    except ImportError:
        return {"count": 0, "devices": [], "note": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # no driver: NVMLError_LibraryNotFound and friends
        return {"count": 0, "devices": [], "note": f"NVML unavailable: {type(e).__name__}"}
    try:
        devs = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            devs.append(
                {"name": name.decode() if isinstance(name, bytes) else name, "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total)}
            )
        drv = pynvml.nvmlSystemGetDriverVersion()
        return {"count": len(devs), "devices": devs, "driver": drv.decode() if isinstance(drv, bytes) else drv}
    finally:
        pynvml.nvmlShutdown()


@cache
def nvml_energy(uuid: str | None = None):
    """A reader of a GPU's cumulative energy in joules (NVML's total-energy counter, mJ since the
    driver loaded): the GPU with ``uuid``, else the first. None without NVML (nvidia-ml-py) or
    where the GPU has no such counter."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)  # raises where there is no counter
    except Exception:  # noqa: BLE001 - no NVML or no counter: no energy figures
        return None
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3


def matmul_rate(matmul, sync, reps: int = 5) -> float:
    """Seconds per call of ``matmul()`` (already warm): the best of 3 rounds of ``reps``."""
    import time

    best = float("inf")
    for _ in range(3):
        sync(None)
        t0 = time.perf_counter()
        for _ in range(reps):
            out = matmul()
        sync(out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def fingerprint() -> dict:
    from . import __version__

    vm = psutil.virtual_memory()
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": {
            "model": cpu_model(),
            "logical": psutil.cpu_count(logical=True),
            "physical": psutil.cpu_count(logical=False),
            "arch": platform.machine(),
        },
        "ram_bytes": int(vm.total),
        "accelerators": accelerators(),
        "versions": _versions(),
        "ssmbench": {"version": __version__, "git": git_commit()},
        "env_vars": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
