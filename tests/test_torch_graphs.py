"""The CUDA-graph train step (torch_graphs.StaticTrainer) is the eager step, replayed: same
loss from the model as built, same weights after several updates. The graph runs on CUDA only;
on a CPU the choice of when to graph is what is tested."""

import numpy as np
import pytest

from ssmbench.config import ModelConfig, matched_transformer
from ssmbench.weights import init_weights

torch = pytest.importorskip("torch")
tb = pytest.importorskip("ssmbench.backends.torch_backend")

ODD = ModelConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def test_the_chunked_scan_is_never_graphed_and_the_others_are():
    for scan in ("chunked", "parallel", "sequential"):
        refusal = tb.TorchBackend._graph_refusal(tb.MambaLM(ODD, scan))
        assert (refusal is not None) == (scan == "chunked"), scan
    assert "host" in tb.TorchBackend._graph_refusal(tb.MambaLM(ODD, "chunked"))
    assert tb.TorchBackend._graph_refusal(tb.GPT(matched_transformer(ODD))) is None


def test_cpu_train_steps_are_eager_and_say_nothing():
    b = tb.TorchCPU()
    model = b.build("mamba", init_weights("mamba", ODD, seed=1), ODD, scan="parallel")
    toks = b.tokens(np.random.default_rng(0).integers(0, ODD.vocab, (2, 9)))
    b.train_step(model, toks[:, :-1], toks[:, 1:])
    assert b.execution(model) == {} and model.trainers == {}


@cuda
@pytest.mark.parametrize("arch,scan", [("mamba", "triton"), ("mamba", "parallel"), ("transformer", None)])
def test_graphed_steps_match_eager_steps(arch, scan):
    cfg = ODD if arch == "mamba" else matched_transformer(ODD)
    w = init_weights(arch, cfg, seed=9, jitter=True)
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, cfg.vocab, (3, 31)) for _ in range(4)]
    b = tb.TorchCUDA()
    runs = {}
    for graph in (False, True):
        b.graph_train = graph
        model = b.build(arch, w, cfg, scan=scan)
        losses = [float(b.train_step(model, b.tokens(t[:, :-1]), b.tokens(t[:, 1:]))) for t in batches]
        runs[graph] = (losses, b.weights(model), b.execution(model))
    (eager, w_eager, _), (graphed, w_graph, how) = runs[False], runs[True]
    assert how == {"train_step": "CUDA graph"}
    assert abs(graphed[0] - eager[0]) / eager[0] < 1e-6  # the warm-up steps were undone
    assert np.allclose(graphed, eager, rtol=1e-5)  # new tokens reach the graph each step
    for k in w:
        assert np.abs(w_graph[k] - w[k]).max() > 0, k
        assert np.linalg.norm(w_graph[k] - w_eager[k]) <= 1e-5 * np.linalg.norm(w_eager[k] - w[k]) + 1e-7, k
