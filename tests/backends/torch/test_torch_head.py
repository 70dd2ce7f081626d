"""The fused, chunked head + cross-entropy of the torch train step (backends/torch/head.py) against float64
and against the unfused autocast computation it replaces; its Triton row kernel under Triton's
interpreter (on CPU) or on the GPU."""

import numpy as np
import pytest

from ssmbench import archs

torch = pytest.importorskip("torch")
th = pytest.importorskip("ssmbench.backends.torch.head")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def problem(T, D, V, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g, dtype=torch.float64)
    w = torch.randn(V, D, generator=g, dtype=torch.float64) / D**0.5 * 3  # logits of a few units
    y = torch.randint(0, V, (T,), generator=g)
    y[0], y[-1] = 0, V - 1  # the first and the last class
    return x.to(DEVICE, dtype), w.to(DEVICE, dtype), y.to(DEVICE)


def grads(loss_fn, x, w, y):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = loss_fn(x, w, y)
    loss.backward()
    return loss.detach(), x.grad, w.grad


def unfused(x, w, y):
    return torch.nn.functional.cross_entropy((x @ w.T).double(), y)


@pytest.mark.parametrize("rows", [None, 1, 7])
def test_exact_in_fp32(rows):
    """Loss, dx and dW against float64 at odd shapes: one chunk, one row a chunk, a ragged last one."""
    x, w, y = problem(37, 19, 101)
    want = grads(unfused, x, w, y)
    got = grads(lambda x, w, y: th.head_loss(x, w, y, rows=rows), x.float(), w.float(), y)
    for name, a, b in zip(("loss", "dx", "dW"), got, want):
        assert a.dtype == torch.float32
        assert rel(a, b) < 2e-6, name
    loss64 = archs.common.cross_entropy((x @ w.T).cpu().numpy()[None], y.cpu().numpy()[None])
    assert abs(float(got[0]) - loss64) < 1e-5 * abs(loss64)


def test_grad_is_scaled_by_the_upstream_gradient():
    """The backward multiplies the gradients formed in the forward by dL/dloss."""
    x, w, y = problem(9, 8, 33, dtype=torch.float32)
    x.requires_grad_(True)
    w.requires_grad_(True)
    (3.0 * th.head_loss(x, w, y, rows=4)).backward()
    x2, w2 = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    (3.0 * unfused(x2, w2, y)).backward()
    assert rel(x.grad, x2.grad) < 2e-6 and rel(w.grad, w2.grad) < 2e-6


@pytest.mark.parametrize("frozen", ["head", "input"])
def test_a_frozen_side_gets_no_gradient_and_the_other_the_same(frozen):
    x, w, y = problem(11, 8, 33, dtype=torch.float32)
    want = grads(unfused, x, w, y)
    x, w = x.clone().requires_grad_(frozen != "input"), w.clone().requires_grad_(frozen != "head")
    loss = th.head_loss(x, w, y, rows=4)
    loss.backward()
    assert rel(loss, want[0]) < 2e-6
    assert (x.grad is None) == (frozen == "input") and (w.grad is None) == (frozen == "head")
    got, ref_grad = (w.grad, want[2]) if frozen == "input" else (x.grad, want[1])
    assert rel(got, ref_grad) < 2e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_matches_unfused_autocast(dtype):
    """Under autocast: the same numbers as logits in the compute dtype -> fp32 cross-entropy,
    to the compute dtype's precision; gradients come out in the inputs' dtypes."""
    if DEVICE == "cpu" and dtype is torch.float16:
        pytest.skip("fp16 autocast is a GPU dtype")
    x, w, y = problem(45, 24, 77, dtype=torch.float32)
    with torch.autocast(DEVICE, dtype=dtype):
        want = grads(lambda x, w, y: torch.nn.functional.cross_entropy((x @ w.T).float(), y), x, w, y)
        got = grads(lambda x, w, y: th.head_loss(x, w, y, rows=16), x, w, y)
    assert got[1].dtype == got[2].dtype == torch.float32
    for name, a, b, tol in zip(("loss", "dx", "dW"), got, want, (1e-5, 5e-3, 5e-3)):
        assert rel(a, b) < tol, name  # the same roundings: only the matmuls' summation order differs
    exact = grads(unfused, x.double(), w.double(), y)
    assert rel(got[0], exact[0]) < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V, block", [(5, 256), (1000, 256), (50280, None)])
def test_triton_rows_match_torch_rows(dtype, V, block):
    """The CUDA row kernel (a single short block; several with a ragged last one; mamba-130m's
    vocabulary at the default block and 8 warps) against the torch ops that run elsewhere."""
    pytest.importorskip("triton")
    tf_ = pytest.importorskip("ssmbench.backends.torch.triton.fused")
    monkey = tf_.CE_BLOCK_V
    tf_.CE_BLOCK_V = block or monkey
    try:
        g = torch.Generator().manual_seed(1)
        logits = (torch.randn(6, V, generator=g) * 4).to(DEVICE, dtype)
        y = torch.tensor([0, V - 1, 2 % V, 3 % V, V // 2, 1], device=DEVICE)
        a, b = logits.clone(), logits.clone()
        loss_k = tf_.cross_entropy_(a, y, 0.25)
        loss_t = th._cross_entropy_torch(b, y, 0.25)
    finally:
        tf_.CE_BLOCK_V = monkey
    tol = 1e-6 if dtype is torch.float32 else 1e-2
    assert rel(loss_k, loss_t) < tol
    assert rel(a, b) < tol
    lf = logits.double().cpu()
    want = torch.logsumexp(lf, -1) - lf.gather(1, y.cpu()[:, None])[:, 0]
    assert np.allclose(loss_k.cpu().numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["mamba", "transformer"])
def test_train_step_gradients_match_the_unfused_loss(arch):
    """Every parameter's gradient through features() + head_loss equals the one through the
    full logits and F.cross_entropy, the tied embedding included (it gets gradient from both
    the embedding lookup and the head)."""
    from ssmbench import archs
    from ssmbench.archs.mamba import Config as MambaConfig

    cfg = MambaConfig(vocab=37, d_model=16, n_layers=2, d_state=4)
    torch.manual_seed(0)
    model = archs.framework_module(arch, "torch").build(archs.get(arch).config_for(cfg), "sequential")
    tokens = torch.randint(0, cfg.vocab, (2, 13))
    targets = torch.randint(0, cfg.vocab, (2, 13))
    th.head_loss(model.features(tokens), model.head_weight(), targets, rows=5).backward()
    fused = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(tokens).reshape(-1, cfg.vocab), targets.reshape(-1)).backward()
    for k, p in model.named_parameters():
        assert rel(fused[k], p.grad) < 1e-5, k
