# ruff: noqa: E402, E501, E702  (a record, kept as it ran on the device)
"""Capture selective_scan + autograd.grad in a CUDA graph: host path or Python path, warm-ups on
the default stream or only on a side stream (as torch_graphs._record)."""

import sys

import torch

sys.path.insert(0, sys.argv[1])
from ssmbench.backends import torch_host
from ssmbench.backends import torch_triton as tt
from test_triton_scan import inputs

path, warm = sys.argv[2], sys.argv[3]
torch_host.ENABLED = path == "host"
ins = [t.to("cuda", torch.float32).requires_grad_() for t in inputs(3, 37, 70, 5, seed=2)]
dout = torch.randn(3, 37, 70, device="cuda")
calls = {"n": 0}
real = tt._host_scan
tt._host_scan = lambda *a: calls.__setitem__("n", calls["n"] + 1) or real(*a)


def step():
    out, last = tt.selective_scan(*ins)
    return out, last, *torch.autograd.grad(out, ins, dout)


if warm == "default":
    for _ in range(5):
        want = step()
side = torch.cuda.Stream()
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side):
    for _ in range(5 if warm == "side" else 1):
        want = step()
torch.cuda.current_stream().wait_stream(side)
before = calls["n"]
try:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for c in captured:
        c.zero_()
    graph.replay()
    torch.cuda.synchronize()
    ok = all(torch.equal(w, c) for w, c in zip(want, captured))
    print(f"{path} warm={warm}: captured (host calls in capture: {calls['n'] - before}), replay equal: {ok}", flush=True)
except Exception as e:
    print(f"{path} warm={warm}: {type(e).__name__}: {str(e).splitlines()[0]}", flush=True)
