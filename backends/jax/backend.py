"""JAX backend: jax-cpu, jax-cuda, jax-metal.

Plain JAX over a dict of arrays under each architecture's state-dict names; each architecture is
its own module here (mamba.py, transformer.py: pure functions, ssmbench.archs' math line for
line), built through the architecture registry; the scans are in scans.py. The train step (optax
AdamW), the forward pass, prefill and the decode step are jitted; the first call (trace + XLA
compile) is what the harness times as compile_s. Where ``fused_loss`` is set (jax-cuda) the train
step's LM head and cross-entropy are one op (layers.head_loss), as torch's.
"""

from __future__ import annotations

import inspect
import os
import platform
import sys
import time
from functools import partial
from importlib import metadata

import numpy as np

from ssmbench import archs
from ssmbench.archs.mamba import chunk_length
from ssmbench.interface import ADAMW, Availability, Backend
from ssmbench.weights import drop_tied_head

try:
    import jax
    import jax.numpy as jnp

    from .layers import cross_entropy, decode_weights, head_loss, head_weight

    # _Model.step's copy of its logits: a buffer made (one jitted fill; eager zeros_like is several
    # Python-dispatched ops), then src copied into it, donated, so that the copy allocates nothing
    _blank = jax.jit(jnp.zeros_like)
    _copy_into = jax.jit(lambda dst, src: jnp.copy(src), donate_argnums=0, keep_unused=True)
except ImportError:  # availability() says so; nothing below runs without jax
    jax = None

SCANS = {"mamba": ("sequential", "associative", "chunked"), "mamba2": ("ssd", "sequential")}
METAL_EXTRA = "pip install 'ssmbench[jax-metal]'  (macOS on Apple silicon: jax==0.5.0, jaxlib==0.5.0, jax-metal==0.1.1)"


# ============================================================================ backend
class _Model:
    """Parameters, optimiser state and the jitted functions of one built model. ``fused_loss``,
    ``fused_decode`` and ``logits_buffer`` (the backend's, settable here) pick the train step's loss,
    the decode step's kernels and where it writes its logits."""

    def __init__(self, backend, arch, params, cfg, scan, dtype):
        import optax

        self.arch, self.cfg, self.scan, self.device = arch, cfg, scan, backend.device
        self.net = archs.framework_module(arch, "jax")  # the architecture's functions
        self.params, self.fused_loss, self.fused_decode = params, backend.fused_loss, backend.fused_decode
        self.logits_buffer, self._logits = backend.logits_buffer, {}  # batch -> the buffer the step writes its logits to
        self.dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[dtype]
        self.opt = optax.adamw(ADAMW["lr"], b1=ADAMW["b1"], b2=ADAMW["b2"], eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
        self.opt_state = self.opt.init(params)
        self.chunk = None  # chosen on the first parallel-path call (chunked scan only)
        self._jit = {}
        self._decode = (None, 0, None)  # (the params it was cast from, its stacked layers, the decode copy)

    def ensure_chunk(self, tokens):
        if self.scan == "chunked" and self.chunk is None and hasattr(self.net, "max_log_decay_step"):
            step = self.net.max_log_decay_step(self.params, tokens, cfg=self.cfg, dtype=self.dtype)
            self.chunk = chunk_length(2.0 * step, tokens.shape[1])  # 2x margin for drift while training

    def _fused_step(self) -> bool:
        """Whether the decode step runs the architecture's fused kernels (``step``'s ``fused``)."""
        return self.fused_decode and "fused" in inspect.signature(self.net.step).parameters

    def decode_params(self):
        """The weights the decode step reads (layers.decode_weights), cast once from these params;
        stacked, one array a weight for all layers, for the fused step."""
        stack = self.cfg.n_layers if self._fused_step() else 0
        if self._decode[0] is not self.params or self._decode[1] != stack:
            self._decode = (self.params, stack, decode_weights(self.params, self.net.LINEAR, self.net.EMBEDDING, self.dtype, stack))
        return self._decode[2]

    def _parallel(self, fn):
        """An architecture function of the parallel path, its static arguments bound."""
        return partial(fn, cfg=self.cfg, dtype=self.dtype, scan=self.scan, chunk=self.chunk)

    def jitted(self, name):
        key = {"train": (name, self.fused_loss), "step": (name, self.fused_decode, self.logits_buffer)}.get(name, name)
        if key not in self._jit:
            self._jit[key] = self._build(name)
        return self._jit[key]

    def _build(self, name):
        if name == "forward":
            return jax.jit(self._parallel(self.net.forward))
        if name == "train":
            opt, dtype, emb, fused = self.opt, self.dtype, self.net.EMBEDDING, self.fused_loss
            hidden, fwd = self._parallel(self.net.hidden), self._parallel(self.net.forward)

            def loss_fn(p, x, y):
                return head_loss(hidden(p, x), head_weight(p, emb), y, dtype) if fused else cross_entropy(fwd(p, x), y)

            def train(params, opt_state, x, y):
                loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
                updates, opt_state = opt.update(grads, opt_state, params)
                return jax.tree_util.tree_map(lambda a, u: a + u, params, updates), opt_state, loss

            return jax.jit(train, donate_argnums=(0, 1))
        if name == "prefill":
            return jax.jit(self._parallel(self.net.prefill))
        if name == "step":  # an O(1) state is donated: XLA updates it in place, as torch-cuda's graph does
            donate = () if archs.get(self.arch).STATE_GROWS else (2,)  # a KV cache is reused by every timed step
            step = partial(self.net.step, cfg=self.cfg, dtype=self.dtype, **({"fused": True} if self._fused_step() else {}))
            if not self.logits_buffer:
                return jax.jit(step, donate_argnums=donate)
            # a 4th argument, donated and kept though unused, for XLA to write the logits into
            return jax.jit(lambda p, token, state, _logits: step(p, token, state), donate_argnums=(*donate, 3), keep_unused=True)
        raise KeyError(name)

    def step(self, token, state):
        """One decode step: (logits, state). With ``logits_buffer`` the step writes its logits into
        the buffer it wrote them to last time, and the caller gets a copy (as torch-cuda's decoder
        clones its CUDA graph's). XLA replays the step as a CUDA graph holding the address of every
        buffer it touches; a new output buffer each call made it update all of the graph's nodes
        first, some 0.4 ms a token at 130M on an H100 (docs/results.md).

        The copy's buffer is made before the step runs, not by the copy after it: the caller still
        holds the last step's logits then, and a copy allocated just after the step's temporaries
        were freed took their place, so that the next step's temporaries moved and XLA updated the
        graph for them instead."""
        p, step = self.decode_params(), self.jitted("step")
        if not self.logits_buffer:
            return step(p, token, state)
        out = self._logits.pop(token.shape[0], None)
        if out is None:
            like = jax.eval_shape(step, p, token, state, 0)[0]
            out = jnp.zeros(like.shape, like.dtype, device=self.device)
        mine = _blank(out)
        logits, state = step(p, token, state, out)
        self._logits[token.shape[0]] = logits
        return _copy_into(mine, logits), state


class JaxBackend(Backend):
    framework = "jax"
    scans = SCANS
    default_scan = {"mamba": "associative", "mamba2": "ssd"}
    dtypes = ("float32", "bfloat16", "float16")
    install_hint = "pip install 'jax[cpu]' optax"
    platform = "cpu"
    fused_loss = False  # the train step's head + loss as one op (layers.head_loss): jax-cuda only, 17-25% slower than XLA's own on CPU
    fused_decode = False  # the decode step's fused Pallas kernels, where the architecture has them (``step``'s ``fused``): jax-cuda only
    logits_buffer = False  # the decode step writes its logits into one buffer of its own (_Model.step): jax-cuda only, for its CUDA graphs

    def __init__(self):
        super().__init__()
        self.device = jax.devices(self.platform)[0]
        # float32 means IEEE fp32: on GPUs XLA would otherwise run f32 matmuls in TF32 (parity on
        # an H100 measured 5.9e-4 relative error that way, against 2e-7 here)
        jax.config.update("jax_default_matmul_precision", "highest")

    @classmethod
    def _jax_devices(cls, platform_name):
        if jax is None:
            return None, Availability(False, "jax is not installed", cls.install_hint)
        try:
            import optax  # noqa: F401
        except ImportError:
            return None, Availability(False, "optax is not installed", cls.install_hint)
        try:
            return jax.devices(platform_name), None
        except RuntimeError as e:
            return None, Availability(
                False, f"no {platform_name} device for jax {jax.__version__}: {str(e).splitlines()[0][:160]}", cls.install_hint
            )

    @classmethod
    def availability(cls):
        devs, bad = cls._jax_devices(cls.platform)
        if bad:
            return bad
        return Availability(True, f"jax {jax.__version__}, {len(devs)} x {devs[0].device_kind}", cls.install_hint)

    def versions(self):
        v = {"jax": jax.__version__, "jax_platform": self.platform, "matmul_precision": jax.config.jax_default_matmul_precision}
        for lib in ("jaxlib", "optax", "jax-metal"):
            try:
                v[lib] = metadata.version(lib)
            except metadata.PackageNotFoundError:
                pass
        return v

    def device_info(self):
        from ssmbench.envinfo import cpu_model, total_ram

        stats = self._memory_stats()
        name = self.device.device_kind if self.platform != "cpu" else cpu_model()
        return {"device": name, "memory_bytes": (stats or {}).get("bytes_limit") or total_ram()}

    # ---------------------------------------------------------------- model
    def build(self, arch, weights, cfg, *, scan=None, dtype="float32"):
        params = {k: jax.device_put(np.asarray(v, np.float32), self.device) for k, v in drop_tied_head(dict(weights)).items()}
        return _Model(self, arch, params, cfg, scan or self.default_scan.get(arch), dtype)

    def weights(self, model):
        return {k: np.asarray(v) for k, v in model.params.items()}

    def tokens(self, array):
        return jax.device_put(np.asarray(array, np.int32), self.device)

    def forward(self, model, tokens):
        model.ensure_chunk(tokens)
        return model.jitted("forward")(model.params, tokens)

    def train_step(self, model, tokens, targets):
        model.ensure_chunk(tokens)
        model.params, model.opt_state, loss = model.jitted("train")(model.params, model.opt_state, tokens, targets)
        return loss

    def init_state(self, model, batch, capacity):
        return model.net.init_state(model.cfg, batch, capacity, model.dtype, self.device)

    def prefill(self, model, tokens, capacity):
        model.ensure_chunk(tokens)
        return model.jitted("prefill")(model.params, tokens, self.init_state(model, tokens.shape[0], capacity))

    def decode_step(self, model, token, state):
        return model.step(token, state)

    # ---------------------------------------------------------------- ops alone
    ops_supported = True

    def op_step(self, arch, scan, inputs, dtype, mode):
        spec = archs.get(arch)
        fn, inputs = archs.framework_module(arch, "jax").op(scan, inputs)
        a = {
            k: jax.device_put(jnp.asarray(v, jnp.float32 if k in spec.OP_FP32 else jnp.dtype(dtype)), self.device)
            for k, v in inputs.items()
        }
        dout = a.pop("dout")
        args = [a[n] for n in spec.OP_ARGS]
        if mode != "train":
            fwd = jax.jit(fn)
            return lambda: fwd(*args)
        grads = jax.jit(
            jax.grad(lambda *xs: jnp.sum(fn(*xs).astype(jnp.float32) * dout.astype(jnp.float32)), argnums=tuple(range(len(args))))
        )
        return lambda: grads(*args)[0]

    def copy_bandwidth(self):
        n = (64 << 20) if self.platform != "cpu" else (16 << 20)  # fp32 elements: 256 / 64 MiB
        src = jax.device_put(jnp.ones(n, jnp.float32), self.device)
        touch = jax.jit(lambda v: v + 1.0)  # reads and writes every element once
        jax.block_until_ready(touch(src))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(4):
                out = touch(src)
            jax.block_until_ready(out)
            best = min(best, (time.perf_counter() - t0) / 4)
        return 2 * n * 4 / best

    def device_ceilings(self):
        if self.platform == "cpu":
            return None
        from ssmbench.envinfo import matmul_rate

        rates, mm = {}, jax.jit(lambda a, b: a @ b)
        for dtype, n in (("bfloat16", 8192), ("float32", 4096)):  # fp32 at "highest" precision, as the models
            key = jax.random.PRNGKey(0)
            a = jax.device_put(jax.random.normal(key, (n, n), jnp.dtype(dtype)), self.device)
            jax.block_until_ready(mm(a, a))
            rates[dtype] = 2 * n**3 / matmul_rate(lambda a=a: mm(a, a), self.synchronize)
            del a
        return {"copy_bytes_per_s": self.copy_bandwidth(), "matmul_flops": rates}

    def energy_joules(self):
        if self.platform == "cpu":
            return None
        if not hasattr(self, "_energy"):
            from ssmbench.envinfo import nvml_energy

            self._energy = nvml_energy()  # the first GPU: JAX's device 0
        return self._energy() if self._energy else None

    # ---------------------------------------------------------------- measurement
    def synchronize(self, out=None):
        if out is not None:
            jax.block_until_ready(out)

    def to_numpy(self, x):
        return np.asarray(jax.device_get(x), dtype=np.float32)

    def all_finite(self, x):
        return bool(jnp.all(jnp.isfinite(x)))

    def _memory_stats(self):
        try:
            return self.device.memory_stats()
        except Exception:  # not every platform implements it (CPU, Metal)
            return None

    def peak_memory(self):
        stats = self._memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"]), "jax device.memory_stats() peak_bytes_in_use"
        return None, "device.memory_stats() unavailable"

    @classmethod
    def configure_process(cls, memory_limit):
        """Before JAX starts: no preallocation (so memory figures mean something) and, on a GPU,
        the XLA memory fraction for --memory-limit."""
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if memory_limit and cls.platform == "gpu":
            total = _nvml_total_memory()
            if total:
                os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(1.0, memory_limit / total):.4f}"
                return True
        return False

    def is_oom(self, exc):
        msg = str(exc)
        return isinstance(exc, MemoryError) or any(
            s in msg for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "kIOGPUCommandBufferCallbackError")
        )


def _nvml_total_memory() -> int | None:
    from ssmbench.envinfo import accelerators

    devs = accelerators().get("devices") or []
    return devs[0]["memory_bytes"] if devs else None


class JaxCPU(JaxBackend):
    name = "jax-cpu"
    platform = "cpu"
    host_memory = True
    priority = 9
    default_scan = {"mamba": "sequential", "mamba2": "ssd"}  # Mamba-1: fastest measured on CPU (docs/results.md), as for torch-cpu


class JaxCUDA(JaxBackend):
    name = "jax-cuda"
    platform = "gpu"
    priority = 90
    install_hint = "pip install 'jax[cuda13]' optax  (on a machine with an NVIDIA GPU)"
    scans = {**SCANS, "mamba": (*SCANS["mamba"], "pallas")}  # the fused Pallas scan compiles for GPUs only
    default_scan = {"mamba": "pallas", "mamba2": "ssd"}  # mamba-130m trains in 171 ms (associative: out of memory), docs/results.md
    fused_loss = True  # no (tokens, V) logits kept for the backward (issue 24: memory)
    fused_decode = True  # Mamba-1's decode step with pallas_decode's two kernels a layer, as torch-cuda's Triton decode.py
    logits_buffer = True  # so that XLA does not update its CUDA graph of the step for a new output every token (docs/results.md)


class JaxMetal(JaxBackend):
    name = "jax-metal"
    platform = "METAL"
    priority = 40
    default_scan = {"mamba": "chunked", "mamba2": "ssd"}  # the scans built only from ops the Metal plugin lowers
    dtypes = ("float32", "float16")
    install_hint = METAL_EXTRA

    @classmethod
    def configure_process(cls, memory_limit):
        os.environ["ENABLE_PJRT_COMPATIBILITY"] = "1"  # jax-metal 0.1.1 needs it with jax 0.5
        return super().configure_process(memory_limit)

    @classmethod
    def availability(cls):
        if sys.platform != "darwin" or platform.machine() != "arm64":
            return Availability(
                False, f"jax-metal needs macOS on Apple silicon (this is {sys.platform}/{platform.machine()})", cls.install_hint
            )
        try:
            metadata.version("jax-metal")
        except metadata.PackageNotFoundError:
            return Availability(False, "jax-metal is not installed", cls.install_hint)
        return super().availability()


BACKENDS = (JaxCPU, JaxCUDA, JaxMetal)
