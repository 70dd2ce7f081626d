"""Fake backends for runner tests, loaded through SSMBENCH_PLUGINS=fake_backend.

fake-ok returns finite numbers; fake-oom raises MemoryError; fake-crash dies with SIGSEGV;
fake-hang never returns; fake-nan returns NaN; fake-error raises ValueError. All fail (or not)
on the first measured step, after the model was built, as a real backend would.

fake-gpu has measured ceilings and an energy counter of exactly 50 W (MFU, joules per token).

fake-mem is a device of FAKE_CAPACITY bytes (or --memory-limit, enforced "natively") whose step
needs MEM_PER_TOKEN_LAYER * batch * seq_len * n_layers bytes: its OOM boundary is known exactly.
"""

import os
import signal
import time

import numpy as np

from ssmbench.interface import Availability, Backend


class _Fake(Backend):
    framework = "fake"
    scans = {"mamba": ("chunked",), "mamba2": ("ssd",)}
    default_scan = {"mamba": "chunked", "mamba2": "ssd"}
    dtypes = ("float32",)
    install_hint = "nothing to install"
    parity_checked = False  # computes no model

    @classmethod
    def availability(cls):
        return Availability(True, "fake", cls.install_hint)

    def device_info(self):
        return {"device": "Fake Device 9000", "memory_bytes": 1}

    def versions(self):
        return {"fake": "1.0"}

    def build(self, arch, weights, cfg, *, scan=None, dtype="float32"):
        return {"vocab": cfg.vocab}

    def weights(self, model):
        return {}

    def tokens(self, array):
        return np.asarray(array)

    def _step(self):
        behaviour = self.name.split("-", 1)[1]
        if behaviour == "oom":
            raise MemoryError("fake allocation of 1 PiB failed")
        if behaviour == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if behaviour == "hang":
            time.sleep(3600)
        if behaviour == "error":
            raise ValueError("fake failure")
        if behaviour == "nan":
            return np.array([np.nan])
        return np.array([1.0])

    def forward(self, model, tokens):
        return self._step()

    def train_step(self, model, tokens, targets):
        return self._step()

    def init_state(self, model, batch, capacity):
        return None

    def prefill(self, model, tokens, capacity):
        return None

    def decode_step(self, model, token, state):
        return self._step(), state

    def synchronize(self, out=None):
        pass

    def to_numpy(self, x):
        return np.asarray(x)

    def peak_memory(self):
        return 1234, "fake"

    def is_oom(self, exc):
        return isinstance(exc, MemoryError)


FAKE_CAPACITY = 10**9
MEM_PER_TOKEN_LAYER = 1000


class FakeMem(_Fake):
    name = "fake-mem"
    limit = FAKE_CAPACITY

    @classmethod
    def configure_process(cls, memory_limit):
        cls.limit = memory_limit or FAKE_CAPACITY
        return True

    def build(self, arch, weights, cfg, *, scan=None, dtype="float32"):
        return {"vocab": cfg.vocab, "layers": cfg.n_layers}

    def _need(self, model, tokens):
        return MEM_PER_TOKEN_LAYER * int(np.asarray(tokens).size) * model["layers"]

    def _use(self, need):
        if need > self.limit:
            raise MemoryError(f"fake device: {need} B needed, {self.limit} B available")
        self.peak = need
        return np.array([1.0])

    def forward(self, model, tokens):
        return self._use(self._need(model, tokens))

    def train_step(self, model, tokens, targets):
        return self._use(2 * self._need(model, tokens))

    def decode_step(self, model, token, state):
        return self._use(self._need(model, token)), state

    def peak_memory(self):
        return getattr(self, "peak", 0), "fake device"


BEHAVIOURS = ("ok", "oom", "crash", "hang", "nan", "error")


class FakeGpu(_Fake):
    """A device with known ceilings and a 50 W energy counter; each step takes about 2 ms."""

    name = "fake-gpu"
    CEILINGS = {"copy_bytes_per_s": 1e11, "matmul_flops": {"float32": 1e12, "bfloat16": 4e12}}
    WATTS = 50.0

    def device_ceilings(self):
        return self.CEILINGS

    def energy_joules(self):
        return self.WATTS * time.perf_counter()

    def execution(self, model):
        return {"train_step": "fake graph"}  # how the steps ran: into the record's env_backend

    def _step(self):
        time.sleep(0.002)
        return np.array([1.0])


BACKENDS = (FakeMem, FakeGpu) + tuple(type(f"Fake{b.title()}", (_Fake,), {"name": f"fake-{b}"}) for b in BEHAVIOURS)
