"""TensorFlow backend: tf-cpu, tf-gpu.

The model is plain TensorFlow over one tf.Variable per weight, under each architecture's
state-dict names, assigned explicitly from the shared NumPy arrays: no Keras layer builds its own
weights, so none can be silently re-initialised (the dt bias is the classic casualty). Each
architecture is its own module here (mamba.py, transformer.py), built through the architecture
registry; the scans are in scans.py. Forward, train step (GradientTape + AdamW written out, with
the shared hyper-parameters) and decode step are tf.functions compiled with XLA
(jit_compile=True, recorded in each result). A host copy of the output is the synchronisation.
"""

from __future__ import annotations

import os
import time
from importlib import metadata

import numpy as np

from ssmbench import archs
from ssmbench.archs.mamba import chunk_length
from ssmbench.interface import ADAMW, Availability, Backend
from ssmbench.weights import drop_tied_head

from .common import JIT, tf

SCANS = {"mamba": ("sequential", "chunked"), "mamba2": ("ssd", "sequential")}


# ============================================================================ backend
class _Model:
    def __init__(self, arch, variables, cfg, scan, dtype, device):
        self.arch, self.cfg, self.vars, self.device = arch, cfg, variables, device
        self.dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}[dtype]
        self.net = archs.framework_module(arch, "tf").Model(variables, cfg, scan, self.dtype)
        self.names = sorted(variables)
        self.m = [tf.Variable(tf.zeros_like(variables[k])) for k in self.names]
        self.v = [tf.Variable(tf.zeros_like(variables[k])) for k in self.names]
        self.t = tf.Variable(0.0)
        self._fns = {}

    def ensure_chunk(self, tokens):
        net = self.net
        if net.scan == "chunked" and net.chunk is None and hasattr(net, "max_log_decay_step"):
            net.chunk = chunk_length(2.0 * net.max_log_decay_step(tokens), tokens.shape[1])

    def fn(self, name):
        if name not in self._fns:
            self._fns[name] = tf.function(getattr(self, "_" + name), jit_compile=JIT)
        return self._fns[name]

    def _forward(self, tokens):
        return self.net.logits(tokens)

    def _train(self, x, y):
        params = [self.vars[k] for k in self.names]
        with tf.GradientTape() as tape:
            logits = self.net.logits(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, params)
        self.t.assign_add(1.0)
        lr, b1, b2, eps, wd = ADAMW["lr"], ADAMW["b1"], ADAMW["b2"], ADAMW["eps"], ADAMW["weight_decay"]
        c1, c2 = 1.0 - tf.pow(b1, self.t), 1.0 - tf.pow(b2, self.t)
        for w, g, m, v in zip(params, grads, self.m, self.v):
            g = tf.convert_to_tensor(g)  # dense: an untied model's embedding gets a gather's sparse gradient
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * g * g)
            w.assign(w * (1 - lr * wd) - lr * (m / c1) / (tf.sqrt(v / c2) + eps))  # decoupled weight decay
        return loss


class TFBackend(Backend):
    framework = "tf"
    scans = SCANS
    default_scan = {"mamba": "sequential", "mamba2": "ssd"}
    dtypes = ("float32", "bfloat16", "float16")
    install_hint = "pip install tensorflow-cpu"
    kind = "CPU"

    def __init__(self):
        super().__init__()
        self.device = f"/{self.kind}:0"
        # float32 means IEEE fp32: on Ampere and later GPUs TensorFlow would run fp32 matmuls in TF32
        tf.config.experimental.enable_tensor_float_32_execution(False)

    @classmethod
    def configure_process(cls, memory_limit):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if memory_limit and cls.kind == "GPU" and tf is not None:
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                tf.config.set_logical_device_configuration(
                    gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit // 2**20)]
                )
                return True
        return False

    @classmethod
    def availability(cls):
        if tf is None:
            return Availability(False, "tensorflow is not installed", cls.install_hint)
        devs = tf.config.list_physical_devices(cls.kind)
        if not devs:
            return Availability(False, f"tensorflow {tf.__version__} sees no {cls.kind} device", cls.install_hint)
        return Availability(True, f"tensorflow {tf.__version__}, {len(devs)} x {cls.kind}", cls.install_hint)

    def versions(self):
        v = {"tensorflow": tf.__version__, "tf_jit_compile": JIT, "tf32": tf.config.experimental.tensor_float_32_execution_enabled()}
        build = tf.sysconfig.get_build_info()
        for k in ("cuda_version", "cudnn_version"):
            if build.get(k):
                v[k] = build[k]
        try:
            v["keras"] = metadata.version("keras")
        except metadata.PackageNotFoundError:
            pass
        return v

    def device_info(self):
        from ssmbench.envinfo import cpu_model, total_ram

        if self.kind == "GPU":
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
            return {"device": details.get("device_name", "GPU"), "memory_bytes": None}
        return {"device": cpu_model(), "memory_bytes": total_ram()}

    # ---------------------------------------------------------------- model
    def build(self, arch, weights, cfg, *, scan=None, dtype="float32"):
        with tf.device(self.device):
            variables = {
                k: tf.Variable(np.asarray(v, np.float32), name=k.replace(".", "_")) for k, v in drop_tied_head(dict(weights)).items()
            }
            return _Model(arch, variables, cfg, scan or self.default_scan.get(arch), dtype, self.device)

    def weights(self, model) -> dict:
        return {k: v.numpy() for k, v in model.vars.items()}

    def tokens(self, array):
        with tf.device(self.device):
            return tf.constant(np.asarray(array, np.int32))

    def forward(self, model, tokens):
        model.ensure_chunk(tokens)
        with tf.device(self.device):
            return model.fn("forward")(tokens)

    def train_step(self, model, tokens, targets):
        model.ensure_chunk(tokens)
        with tf.device(self.device):
            return model.fn("train")(tokens, targets)

    def init_state(self, model, batch, capacity):
        with tf.device(self.device):
            return model.net.init_state(batch, capacity)

    def prefill(self, model, tokens, capacity):
        model.ensure_chunk(tokens)
        with tf.device(self.device):
            return model.net.prefill(tokens, model.net.init_state(tokens.shape[0], capacity))

    def decode_step(self, model, token, state):
        with tf.device(self.device):
            return model.net.decode(token, state)

    # ---------------------------------------------------------------- ops alone
    ops_supported = True

    def op_step(self, arch, scan, inputs, dtype, mode):
        spec = archs.get(arch)
        fn, inputs = archs.framework_module(arch, "tf").op(scan, inputs)
        with tf.device(self.device):
            a = {k: tf.constant(v, dtype=tf.float32 if k in spec.OP_FP32 else tf.as_dtype(dtype)) for k, v in inputs.items()}
        dout, f32 = a.pop("dout"), tf.float32
        args = [a[n] for n in spec.OP_ARGS]
        if mode == "train":
            op = fn

            def fn(*xs):
                with tf.GradientTape() as tape:
                    tape.watch(xs)
                    loss = tf.reduce_sum(tf.cast(op(*xs), f32) * tf.cast(dout, f32))
                return tape.gradient(loss, xs)[0]

        compiled = tf.function(fn, jit_compile=JIT)

        def step():
            with tf.device(self.device):
                return compiled(*args)

        return step

    def copy_bandwidth(self):
        n = (64 << 20) if self.kind == "GPU" else (16 << 20)  # fp32 elements: 256 / 64 MiB
        with tf.device(self.device):
            src = tf.ones([n], tf.float32)
        touch = tf.function(lambda v: v + 1.0, jit_compile=JIT)  # reads and writes every element once
        self.synchronize(touch(src))
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            with tf.device(self.device):
                outs = [touch(src) for _ in range(4)]
            self.synchronize(outs[-1])
            best = min(best, (time.perf_counter() - t0) / 4)
        return 2 * n * 4 / best

    # ---------------------------------------------------------------- measurement
    def synchronize(self, out=None):
        if out is not None:
            np.asarray(tf.nest.flatten(out)[0])  # a host copy waits for the device

    def to_numpy(self, x):
        return np.asarray(x, dtype=np.float32)

    def all_finite(self, x):
        return bool(tf.reduce_all(tf.math.is_finite(x)))

    def reset_peak_memory(self):
        if self.kind == "GPU":
            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_memory(self):
        if self.kind == "GPU":
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"]), "tf.config.experimental.get_memory_info peak"
        return None, "no allocator statistics on CPU"

    def is_oom(self, exc):
        return isinstance(exc, MemoryError) or (tf is not None and isinstance(exc, tf.errors.ResourceExhaustedError))


class TFCPU(TFBackend):
    name = "tf-cpu"
    kind = "CPU"
    host_memory = True
    priority = 8


class TFGPU(TFBackend):
    name = "tf-gpu"
    kind = "GPU"
    priority = 80
    install_hint = "pip install 'tensorflow[and-cuda]'  (on a machine with an NVIDIA GPU)"


BACKENDS = (TFCPU, TFGPU)
