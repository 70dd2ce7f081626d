"""TensorFlow-specific checks: weights are assigned exactly (a Keras build() can silently
re-initialise some, the dt bias above all), OOM classification, availability, and the
sequential scan's written-out backward."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ssmbench import backends as registry  # noqa: E402
from ssmbench.archs.mamba import Config as MambaConfig  # noqa: E402
from ssmbench.archs.transformer import matched as matched_transformer  # noqa: E402
from ssmbench.weights import init_weights  # noqa: E402

ODD = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)


@pytest.mark.parametrize("arch", ["mamba", "transformer"])
def test_every_weight_is_assigned_exactly(arch):
    cfg = ODD if arch == "mamba" else matched_transformer(ODD)
    w = init_weights(arch, cfg, seed=3, jitter=True)
    b = registry.get("tf-cpu")
    got = b.weights(b.build(arch, w, cfg))
    assert set(got) == set(w)
    for k in w:
        np.testing.assert_array_equal(got[k], w[k], err_msg=k)
    if arch == "mamba":  # the dt bias is not a default init: softplus(bias) lies in [1e-3, 0.1]
        bias = got["backbone.layers.0.mixer.dt_proj.bias"]
        assert np.all(np.log1p(np.exp(bias)) <= 0.1 + 1e-6) and not np.allclose(bias, 0)


def test_resource_exhausted_is_oom():
    b = registry.get("tf-cpu")
    assert b.is_oom(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"))
    assert not b.is_oom(tf.errors.InvalidArgumentError(None, None, "bad shape"))


def test_tf_gpu_unavailable_without_gpu_says_why():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    a = registry.availability("tf-gpu")
    assert not a.available and "no GPU device" in a.reason and "tensorflow" in a.install


def test_sequential_scan_backward_matches_autodiff_in_float64():
    """The sequential scan's written-out backward (a reverse loop) against TensorFlow's own gradient
    of the recurrence unrolled in float64, through y and the final state, at odd shapes."""
    from ssmbench.backends.tf.scans import scan_sequential

    rng = np.random.default_rng(4)
    Bt, L, E, N = 2, 7, 5, 3
    x, Bm, Cm = rng.standard_normal((Bt, L, E)), rng.standard_normal((Bt, L, N)), rng.standard_normal((Bt, L, N))
    dt, A = rng.uniform(0.05, 0.5, (Bt, L, E)), -rng.uniform(0.5, 2.0, (E, N))
    wy, wh = rng.standard_normal((Bt, L, E)), rng.standard_normal((Bt, E, N))

    def grads(scan, dtype):
        args = [tf.constant(a, dtype) for a in (x, dt, A, Bm, Cm)]
        with tf.GradientTape() as tape:
            tape.watch(args)
            y, h = scan(*args)
            loss = tf.reduce_sum(y * tf.constant(wy, dtype)) + tf.reduce_sum(h * tf.constant(wh, dtype))
        return [g.numpy() for g in tape.gradient(loss, args)]

    def unrolled(x, dt, A, Bm, Cm):
        h, ys = tf.zeros([Bt, E, N], x.dtype), []
        for t in range(L):
            h = tf.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * Bm[:, t, None, :]
            ys.append(tf.einsum("ben,bn->be", h, Cm[:, t]))
        return tf.stack(ys, 1), h

    for name, got, want in zip(("x", "dt", "A", "B", "C"), grads(scan_sequential, tf.float32), grads(unrolled, tf.float64)):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, name
