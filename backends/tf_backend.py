"""TensorFlow backend: tf-cpu, tf-gpu.

The model is plain TensorFlow over one tf.Variable per weight, named as mamba-ssm's state dict
(the baseline as ssmbench's GPT names) and assigned explicitly from the shared NumPy arrays:
no Keras layer builds its own weights, so none can be silently re-initialised (the dt bias is
the classic casualty). Forward, train step (GradientTape + AdamW written out, with the shared
hyper-parameters) and decode step are tf.functions compiled with XLA (jit_compile=True,
recorded in each result). A host copy of the output is the synchronisation.

Scans: ``sequential`` (tf.scan) and ``chunked`` (the log-space chunked scan; its static chunk
length is chosen on the first call from the data, as in the JAX backend).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from importlib import metadata

import numpy as np

from ssmbench.interface import ADAMW, Availability, Backend

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported


@contextlib.contextmanager
def _quiet_native_stderr():
    """TensorFlow's C++ start-up lines (absl, oneDNN, CPU features) ignore TF_CPP_MIN_LOG_LEVEL
    in 2.21: silence file descriptor 2 while it imports. Errors still arrive as exceptions."""
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


try:
    with _quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery logs too
except ImportError:  # availability() says so
    tf = None

CHUNK_LOG_BUDGET = 40.0
SCANS = ("sequential", "chunked")
JIT = True  # XLA-compile every tf.function (recorded in versions())


# ============================================================================ pieces
def _rmsnorm(x, w, eps=1e-5):
    x = tf.cast(x, tf.float32)
    return x * tf.math.rsqrt(tf.reduce_mean(x * x, -1, keepdims=True) + eps) * w


def _layernorm(x, w, b, eps=1e-5):
    mu = tf.reduce_mean(x, -1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - mu), -1, keepdims=True)
    return (x - mu) * tf.math.rsqrt(var + eps) * w + b


def _linear(x, w, dtype, b=None):
    y = tf.einsum("...i,oi->...o", tf.cast(x, dtype), tf.cast(w, dtype))
    return y if b is None else y + tf.cast(b, dtype)


# ============================================================================ scans
def scan_sequential(x, dt, A, Bm, Cm, chunk=None):
    """x, dt (B, L, E); A (E, N); Bm, Cm (B, L, N) -> y (B, L, E), h (B, E, N)."""

    def step(h, inp):
        x_t, dt_t, B_t = inp
        return tf.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]

    h0 = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(x)[2], tf.shape(A)[1]]), tf.float32)
    hs = tf.scan(step, tuple(tf.transpose(t, [1, 0, 2]) for t in (x, dt, Bm)), initializer=h0)  # (L, B, E, N)
    y = tf.einsum("lben,lbn->ble", hs, tf.transpose(Cm, [1, 0, 2]))
    return y, hs[-1]


def scan_chunked(x, dt, A, Bm, Cm, chunk):
    L = x.shape[1]
    h = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(x)[2], tf.shape(A)[1]]), tf.float32)
    ys = []
    for s in range(0, L, chunk):
        T = min(chunk, L - s)
        dts = dt[:, s : s + T]
        c = tf.cumsum(tf.maximum(dts[..., None] * A, -CHUNK_LOG_BUDGET), axis=1)  # (B, T, E, N)
        u = (dts * x[:, s : s + T])[..., None] * Bm[:, s : s + T, None, :]
        hs = tf.exp(c) * (tf.cumsum(u * tf.exp(-c), axis=1) + h[:, None])
        ys.append(tf.einsum("bten,btn->bte", hs, Cm[:, s : s + T]))
        h = hs[:, -1]
    return tf.concat(ys, axis=1), h


SCAN_FNS = {"sequential": scan_sequential, "chunked": scan_chunked}


def _attention(q, k, v, mask):
    """softmax(q k^T / sqrt(hd), masked) v with q, k, v (B, H, L, hd); scores in fp32."""
    s = tf.cast(tf.einsum("bhqd,bhkd->bhqk", q, k), tf.float32) / math.sqrt(q.shape[-1])
    s = tf.where(mask, s, -1e30)
    return tf.einsum("bhqk,bhkd->bhqd", tf.cast(tf.nn.softmax(s, -1), v.dtype), v)


def chunk_length(max_step: float, L: int) -> int:
    if not math.isfinite(max_step):
        raise FloatingPointError("non-finite dt: cannot choose a chunk length")
    max_step = min(max_step, CHUNK_LOG_BUDGET)
    return max(1, min(L, int(CHUNK_LOG_BUDGET / max_step) if max_step > 0 else L))


# ============================================================================ models
class _Mamba:
    def __init__(self, p, cfg, scan, dtype):
        self.p, self.cfg, self.scan, self.dtype, self.chunk = p, cfg, scan, dtype, None

    def _mixer_in(self, i, h):
        p, E, K = self.p, self.cfg.d_inner, self.cfg.d_conv
        pre = f"backbone.layers.{i}.mixer."
        xz = _linear(h, p[pre + "in_proj.weight"], self.dtype)
        x, z = xz[..., :E], xz[..., E:]
        xf = tf.cast(x, tf.float32)
        w = tf.reshape(p[pre + "conv1d.weight"], [E, K])
        xp = tf.concat([tf.zeros_like(xf[:, :1])] * (K - 1) + [xf], axis=1) if K > 1 else xf
        L = x.shape[1]
        conv = p[pre + "conv1d.bias"] + tf.add_n([w[:, k] * xp[:, k : k + L] for k in range(K)])
        return tf.nn.silu(conv), z, xf

    def _ssm(self, i, xc):
        p, R, N = self.p, self.cfg.dt_rank, self.cfg.d_state
        pre = f"backbone.layers.{i}.mixer."
        dbc = _linear(xc, p[pre + "x_proj.weight"], self.dtype)
        dt = tf.nn.softplus(tf.cast(_linear(dbc[..., :R], p[pre + "dt_proj.weight"], self.dtype, p[pre + "dt_proj.bias"]), tf.float32))
        return dt, tf.cast(dbc[..., R : R + N], tf.float32), tf.cast(dbc[..., R + N :], tf.float32), -tf.exp(p[pre + "A_log"])

    def forward(self, tokens, return_state=False, probe=False):
        p = self.p
        hidden, residual, states, worst = tf.gather(p["backbone.embedding.weight"], tokens), None, [], 0.0
        for i in range(self.cfg.n_layers):
            pre = f"backbone.layers.{i}."
            residual = tf.cast(hidden, tf.float32) if residual is None else tf.cast(hidden, tf.float32) + residual
            xc, z, x_in = self._mixer_in(i, _rmsnorm(residual, p[pre + "norm.weight"]))
            dt, Bm, Cm, A = self._ssm(i, xc)
            if probe:
                worst = max(worst, float(tf.reduce_max(dt)) * float(tf.reduce_max(-A)))
            y, h_last = SCAN_FNS["sequential" if probe else self.scan](xc, dt, A, Bm, Cm, self.chunk)
            y = (y + xc * p[pre + "mixer.D"]) * tf.nn.silu(tf.cast(z, tf.float32))
            hidden = _linear(y, p[pre + "mixer.out_proj.weight"], self.dtype)
            if return_state:
                K = self.cfg.d_conv
                padded = tf.concat([tf.zeros_like(x_in[:, :1])] * max(0, K - x_in.shape[1]) + [x_in], axis=1)
                states.append((tf.transpose(padded[:, -K:], [0, 2, 1]), h_last))
        if probe:
            return worst
        x = _rmsnorm(tf.cast(hidden, tf.float32) + residual, p["backbone.norm_f.weight"])
        logits = tf.cast(_linear(x, p["backbone.embedding.weight"], self.dtype), tf.float32)
        return (logits, states) if return_state else logits

    def step(self, token, state):
        p, E = self.p, self.cfg.d_inner
        hidden, residual, new = tf.gather(p["backbone.embedding.weight"], token), None, []
        for i in range(self.cfg.n_layers):
            pre, mix = f"backbone.layers.{i}.", f"backbone.layers.{i}.mixer."
            conv, ssm = state[i]
            residual = tf.cast(hidden, tf.float32) if residual is None else tf.cast(hidden, tf.float32) + residual
            xz = _linear(_rmsnorm(residual, p[pre + "norm.weight"]), p[mix + "in_proj.weight"], self.dtype)
            x, z = xz[:, :E], xz[:, E:]
            conv = tf.concat([conv[..., 1:], tf.cast(x, tf.float32)[..., None]], axis=-1)
            xc = tf.nn.silu(tf.einsum("bek,ek->be", conv, tf.reshape(p[mix + "conv1d.weight"], [E, -1])) + p[mix + "conv1d.bias"])
            dt, Bm, Cm, A = self._ssm(i, xc)
            ssm = tf.exp(dt[..., None] * A) * ssm + (dt * xc)[..., None] * Bm[:, None, :]
            y = tf.einsum("ben,bn->be", ssm, Cm) + xc * p[mix + "D"]
            hidden = _linear(y * tf.nn.silu(tf.cast(z, tf.float32)), p[mix + "out_proj.weight"], self.dtype)
            new.append((conv, ssm))
        x = _rmsnorm(tf.cast(hidden, tf.float32) + residual, p["backbone.norm_f.weight"])
        return tf.cast(_linear(x, p["backbone.embedding.weight"], self.dtype), tf.float32), new


def _sinusoidal(L, D, offset):
    half = D // 2
    freqs = tf.constant(10000.0 ** (-np.arange(half) / max(half, 1)), tf.float32)
    pos = tf.cast(offset, tf.float32) + tf.range(L, dtype=tf.float32)
    ang = pos[:, None] * freqs[None]
    pe = tf.concat([tf.sin(ang), tf.cos(ang)], axis=1)
    return tf.concat([pe, tf.zeros([L, D - 2 * half])], axis=1) if D > 2 * half else pe


class _GPT:
    def __init__(self, p, cfg, dtype):
        self.p, self.cfg, self.dtype, self.chunk = p, cfg, dtype, None

    def forward(self, tokens, caches=None, pos=0):
        p, c = self.p, self.cfg
        H, D = c.n_head, c.d_model
        Bt, L = tf.shape(tokens)[0], tokens.shape[1]
        x = tf.gather(p["transformer.wte.weight"], tokens) + _sinusoidal(L, D, pos)
        for i in range(c.n_layers):
            pre = f"transformer.h.{i}."
            a = _layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
            qkv = _linear(a, p[pre + "attn.c_attn.weight"], self.dtype, p[pre + "attn.c_attn.bias"])
            q, k, v = (tf.transpose(tf.reshape(t, [Bt, L, H, D // H]), [0, 2, 1, 3]) for t in tf.split(qkv, 3, axis=-1))
            if caches is None:
                mask = tf.linalg.band_part(tf.ones([L, L], tf.bool), -1, 0)
            else:
                kc, vc = caches[i]  # tf.Variables (B, H, cap, hd)
                kc[:, :, pos : pos + L].assign(tf.cast(k, kc.dtype))
                vc[:, :, pos : pos + L].assign(tf.cast(v, vc.dtype))
                k, v = tf.cast(kc, self.dtype), tf.cast(vc, self.dtype)
                cap = kc.shape[2]
                mask = tf.range(cap)[None, :] <= (pos + tf.range(L))[:, None]
            o = _attention(q, k, v, mask)
            o = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [Bt, L, D])
            x = x + tf.cast(_linear(o, p[pre + "attn.c_proj.weight"], self.dtype, p[pre + "attn.c_proj.bias"]), tf.float32)
            m = _layernorm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
            m = tf.nn.gelu(_linear(m, p[pre + "mlp.c_fc.weight"], self.dtype, p[pre + "mlp.c_fc.bias"]), approximate=True)
            x = x + tf.cast(_linear(m, p[pre + "mlp.c_proj.weight"], self.dtype, p[pre + "mlp.c_proj.bias"]), tf.float32)
        x = _layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
        return tf.cast(_linear(x, p["transformer.wte.weight"], self.dtype), tf.float32)


# ============================================================================ backend
class _Model:
    def __init__(self, arch, variables, cfg, scan, dtype, device):
        self.arch, self.cfg, self.vars, self.device = arch, cfg, variables, device
        self.dtype = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}[dtype]
        self.net = _Mamba(variables, cfg, scan, self.dtype) if arch == "mamba" else _GPT(variables, cfg, self.dtype)
        self.names = sorted(variables)
        self.m = [tf.Variable(tf.zeros_like(variables[k])) for k in self.names]
        self.v = [tf.Variable(tf.zeros_like(variables[k])) for k in self.names]
        self.t = tf.Variable(0.0)
        self._fns = {}

    def ensure_chunk(self, tokens):
        if self.arch == "mamba" and self.net.scan == "chunked" and self.net.chunk is None:
            self.net.chunk = chunk_length(2.0 * self.net.forward(tokens, probe=True), tokens.shape[1])

    def fn(self, name):
        if name not in self._fns:
            self._fns[name] = tf.function(getattr(self, "_" + name), jit_compile=JIT)
        return self._fns[name]

    def _forward(self, tokens):
        return self.net.forward(tokens)

    def _train(self, x, y):
        params = [self.vars[k] for k in self.names]
        with tf.GradientTape() as tape:
            logits = self.net.forward(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, params)
        self.t.assign_add(1.0)
        lr, b1, b2, eps, wd = ADAMW["lr"], ADAMW["b1"], ADAMW["b2"], ADAMW["eps"], ADAMW["weight_decay"]
        c1, c2 = 1.0 - tf.pow(b1, self.t), 1.0 - tf.pow(b2, self.t)
        for w, g, m, v in zip(params, grads, self.m, self.v):
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * g * g)
            w.assign(w * (1 - lr * wd) - lr * (m / c1) / (tf.sqrt(v / c2) + eps))  # decoupled weight decay
        return loss

    def _prefill(self, tokens):
        return self.net.forward(tokens, return_state=True)[1]

    def _step(self, token, state):
        return self.net.step(token, state)

    def _gpt_prefill(self, tokens, caches):
        return self.net.forward(tokens, caches=caches, pos=0)

    def _gpt_step(self, token, caches, pos):
        return self.net.forward(token[:, None], caches=caches, pos=pos)[:, 0]


class TFBackend(Backend):
    framework = "tf"
    scans = SCANS
    default_scan = "sequential"
    dtypes = ("float32", "bfloat16", "float16")
    install_hint = "pip install tensorflow-cpu"
    kind = "CPU"

    def __init__(self):
        super().__init__()
        self.device = f"/{self.kind}:0"

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
        v = {"tensorflow": tf.__version__, "tf_jit_compile": JIT}
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
                k: tf.Variable(np.asarray(v, np.float32), name=k.replace(".", "_")) for k, v in weights.items() if k != "lm_head.weight"
            }
            return _Model(arch, variables, cfg, scan or self.default_scan, dtype, self.device)

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
        c = model.cfg
        with tf.device(self.device):
            if model.arch == "mamba":
                return [(tf.zeros([batch, c.d_inner, c.d_conv]), tf.zeros([batch, c.d_inner, c.d_state])) for _ in range(c.n_layers)]
            shape = [batch, c.n_head, capacity, c.d_model // c.n_head]
            return ([(tf.Variable(tf.zeros(shape, model.dtype)), tf.Variable(tf.zeros(shape, model.dtype))) for _ in range(c.n_layers)], 0)

    def prefill(self, model, tokens, capacity):
        model.ensure_chunk(tokens)
        with tf.device(self.device):
            if model.arch == "mamba":
                return model.fn("prefill")(tokens)
            caches, _ = self.init_state(model, tokens.shape[0], capacity)
            model.fn("gpt_prefill")(tokens, caches)
            return (caches, tokens.shape[1])

    def decode_step(self, model, token, state):
        with tf.device(self.device):
            if model.arch == "mamba":
                return model.fn("step")(token, state)
            caches, pos = state
            return model.fn("gpt_step")(token, caches, tf.constant(pos, tf.int32)), (caches, pos + 1)

    # ---------------------------------------------------------------- ops alone
    ops_supported = True
    ACTIVATIONS = ("x", "dt", "z", "Bm", "Cm", "q", "k", "v", "dout")  # in the run's dtype; A, D, dt_bias fp32

    def op_step(self, arch, scan, inputs, dtype, mode):
        with tf.device(self.device):
            a = {k: tf.constant(v, dtype=tf.as_dtype(dtype) if k in self.ACTIVATIONS else tf.float32) for k, v in inputs.items()}
        dout, f32 = a.pop("dout"), tf.float32
        if arch == "mamba":
            names = ("x", "dt", "A", "Bm", "Cm", "D", "z", "dt_bias")
            delta_max = float(np.max(np.logaddexp(0.0, inputs["dt"] + inputs["dt_bias"])))
            chunk = chunk_length(delta_max * float(np.max(-inputs["A"])), inputs["x"].shape[1])

            def fn(x, dt, A, Bm, Cm, D, z, dt_bias):
                delta = tf.nn.softplus(tf.cast(dt, f32) + dt_bias)
                y, _ = SCAN_FNS[scan](tf.cast(x, f32), delta, A, tf.cast(Bm, f32), tf.cast(Cm, f32), chunk)
                return (y + tf.cast(x, f32) * D) * tf.nn.silu(tf.cast(z, f32))
        else:
            names = ("q", "k", "v")
            L = inputs["q"].shape[2]

            def fn(q, k, v):
                return _attention(q, k, v, tf.linalg.band_part(tf.ones([L, L], tf.bool), -1, 0))

        args = [a[n] for n in names]
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
