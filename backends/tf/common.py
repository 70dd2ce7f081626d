"""What every TensorFlow module here shares: TensorFlow itself (imported quietly, or None where
it is not installed), the layers, and ``Net``, the base of each architecture's model."""

from __future__ import annotations

import contextlib
import os

from ssmbench.weights import LM_HEAD

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

JIT = True  # XLA-compile every tf.function (recorded in the backend's versions())


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
except ImportError:  # the backend's availability() says so
    tf = None


def rmsnorm(x, w, eps=1e-5):
    x = tf.cast(x, tf.float32)
    return x * tf.math.rsqrt(tf.reduce_mean(x * x, -1, keepdims=True) + eps) * w


def layernorm(x, w, b, eps=1e-5):
    mu = tf.reduce_mean(x, -1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - mu), -1, keepdims=True)
    return (x - mu) * tf.math.rsqrt(var + eps) * w + b


def linear(x, w, dtype, b=None):
    """x (..., in) @ w.T in the compute dtype (w is (out, in) as in torch), as one 2-D matmul.
    Not tf.einsum("...i,oi->...o"): its gradient for w builds the whole (..., out, in) outer
    product before summing it (4.3 GB and 20 s a step at seed 000's width, batch 32 x 128)."""
    x = tf.cast(x, dtype)
    y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), tf.cast(w, dtype), transpose_b=True)
    y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [w.shape[0]]], 0))  # static shapes still inferred
    return y if b is None else y + tf.cast(b, dtype)


class Net:
    """An architecture's model over ``p`` (name -> tf.Variable, the shared names). Each
    architecture module's ``Model`` subclasses it and defines:

        logits(tokens)            the parallel path, (B, L) -> (B, L, V) fp32 (traced by the backend)
        init_state(batch, capacity), prefill(tokens, state) -> state,
        decode(token, state) -> (logits (B, V), state)

    and calls ``compiled(name)`` for its own ``_name`` methods as XLA-compiled tf.functions."""

    def __init__(self, p: dict, cfg, scan: str, dtype):
        self.p, self.cfg, self.scan, self.dtype = p, cfg, scan, dtype
        self.chunk = None  # the chunked scan's static chunk, chosen on the first call
        self._fns = {}

    def head(self, x):
        """The LM head: x (..., D) -> logits (..., V) fp32, by an untied head's weight or the
        embedding's."""
        w = self.p.get(LM_HEAD, self.p["backbone.embedding.weight"])
        return tf.cast(linear(x, w, self.dtype), tf.float32)

    def compiled(self, name: str):
        if name not in self._fns:
            self._fns[name] = tf.function(getattr(self, "_" + name), jit_compile=JIT)
        return self._fns[name]
