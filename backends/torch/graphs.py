"""CUDA graphs for torch-cuda: decode (one graph per token: Mamba's state preallocated, the
Transformer's KV cache attended through a mask), the whole train step (forward, loss,
backward and the AdamW update as one graph), the forward, and an op alone (``replay``, the scan
suite's graph-replayed time).

Decode.
Eager decode launches some 25 kernels per layer for one token (600 at mamba-130m's 24 layers),
and the GPU waits on the host between them: 13-28 ms a token on the H100, launch-bound. Here
the host copies the token into a static buffer and replays a graph of the whole step; the conv
and SSM states live in preallocated buffers that the graph reads and updates in place, so the
time per token is the same at any context length.

The Transformer's decode (KVCacheDecoder) is graphed too, as mamba-ssm's GPT figures are: its
KV caches are the caller's, the position a device scalar set before each replay, and attention
runs over the caches' whole capacity through a mask up to the position, so no shape depends on
it and one graph serves every position. Eager, the same step took 5-12 ms a token at 130M.

Mixed precision: a decoder keeps its own copy of the model with the Linear weights already in
the compute dtype (what autocast would cast them to on every call, so the numbers are the same)
instead of recasting 130M weights inside every replay. It is built for decode only and does not
follow later weight updates.

Training. A small model's step is a few hundred short kernels, and the host cannot launch them
as fast as the GPU runs them (seed 000's config: ~12 ms a step eager). StaticTrainer records the
step once, on static token buffers, and replays it. Capture needs every op on the device: fused
AdamW with ``capturable=True`` (its step count a device tensor) and no host reads, so the
chunked scan, which reads its chunk length back, stays eager. Warm-up steps run before the
capture (kernels compile, workspaces are allocated); the weights and optimiser state are then
put back, so the first replay is the first step from the model as built.

Forward. The same holds for a no-grad forward: eager, seed 000's model took 3.6 ms at 8 x 256
tokens and 2.5 ms at 8 x 2048 on the H100 (the host's time, not the GPU's: faster at the
longer length), against 1.4 ms for the Transformer (docs/results.md). JAX's
forward is one compiled XLA program; StaticForward records torch's once per token shape and
replays it. It returns the graph's own logits, which the next call overwrites (as torch.compile's
CUDA-graph mode returns its outputs): a copy would add a pass over (B, L, V) that the eager
forward does not make (1.6 GB at mamba-130m's batch), so callers that keep logits copy them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn


def _flat(state) -> list:
    return [t for layer in state for t in layer]


class StaticDecoder:
    """``decoder(token (B,), state) -> (logits (B, V), state)`` like MambaLM.step, where the state
    returned is the decoder's own buffers, updated in place (pass it back for the next token;
    any other state is copied in first) and the logits are a fresh tensor. ``graph=False`` runs
    the same in-place step eagerly (CPU, tests)."""

    def __init__(self, module, batch: int, device, amp_dtype, graph: bool):
        self.module, self.amp = _decode_copy(module, device, amp_dtype)
        self.use_graph = graph
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.state = self.module.init_state(batch, 0, device, None)
        self.graph, self.logits = None, None

    def _step(self):
        with torch.no_grad(), self.amp():
            logits, new = self.module.step(self.token, self.state)
            torch._foreach_copy_(_flat(self.state), _flat(new))
        return logits

    def _capture(self):
        """Record one step, then put the state back as it was before the warm-up."""
        saved = [t.clone() for t in _flat(self.state)]
        self.graph, self.logits = _record(self._step)
        torch._foreach_copy_(_flat(self.state), saved)

    def __call__(self, token, state):
        if state is not self.state:
            torch._foreach_copy_(_flat(self.state), _flat(state))
        self.token.copy_(token)
        if not self.use_graph:
            return self._step(), self.state
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits.clone(), self.state  # the graph's own logits change at the next replay


class KVCacheDecoder:
    """``decoder(token (B,), (caches, pos)) -> (logits (B, V), (caches, pos + 1))`` like GPT.step,
    as one CUDA graph per token (``graph=False``: the same step eagerly, for tests). The caches
    are the caller's, written in place as GPT.step writes them; a graph is recorded per set of
    caches (their addresses and shape), the latest only kept."""

    def __init__(self, module, batch: int, device, amp_dtype, graph: bool):
        self.module, self.amp = _decode_copy(module, device, amp_dtype)
        self.use_graph = graph
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.recorded = None  # (the caches' key, graph, its logits)

    def _step(self, caches):
        with torch.no_grad(), self.amp():
            return self.module.step_at(self.token, caches, self.pos)

    def __call__(self, token, state):
        caches, pos = state
        if pos >= caches[0][0].shape[2]:  # checked here: the graph cannot
            raise ValueError(f"KV cache full at position {pos}")
        self.token.copy_(token)
        self.pos.fill_(pos)
        if not self.use_graph:
            return self._step(caches), (caches, pos + 1)
        key = (caches[0][0].shape, caches[0][0].dtype, *[t.data_ptr() for kv in caches for t in kv])
        if self.recorded is None or self.recorded[0] != key:
            self.recorded = None  # its memory pool goes before the next is recorded
            self.recorded = (key, *_record(lambda: self._step(caches)))  # the warm-up writes pos's keys as the step does
        _, graph, logits = self.recorded
        graph.replay()
        return logits.clone(), (caches, pos + 1)


def _decode_copy(module, device, amp_dtype):
    """(a copy of module with its Linear weights and its tied head in amp_dtype, a function giving
    the autocast context of the step): autocast would cast them to that dtype on every call (the
    head's V x D weight alone is some 0.2 GB of traffic a token at 130M)."""
    module = copy.deepcopy(module)
    if amp_dtype is not None:
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.weight.data = m.weight.data.to(amp_dtype)
        module.head_cast = module.head_weight().detach().to(amp_dtype).T  # the embedding stays fp32
    kind = torch.device(device).type
    return module, lambda: torch.autocast(kind, dtype=amp_dtype, enabled=amp_dtype is not None, cache_enabled=False)


WARMUP = 2  # calls before a capture: kernels compile, workspaces are allocated


def _record(step: Callable, before_capture: Callable = lambda: None):
    """(a CUDA graph of ``step()``, its output): WARMUP calls on a side stream, then
    ``before_capture()``, then the capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            step()
    torch.cuda.current_stream().wait_stream(side)
    before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out


def replay(step: Callable) -> Callable:
    """``step()`` as a zero-argument callable that replays a CUDA graph of it and returns the
    graph's own output. The graph is recorded on the first call (WARMUP calls on a side stream,
    then the capture), which then replays it too; the scan suite times these replays beside the
    eager calls: the GPU's time without the host's launch costs."""
    recorded = []

    def run():
        if not recorded:
            recorded.extend(_record(step))
        graph, out = recorded
        graph.replay()
        return out

    return run


class StaticTrainer:
    """``trainer(tokens, targets) -> loss``: ``step(tokens, targets)`` (forward, loss, backward,
    optimiser update; it leaves the gradients for the next backward to overwrite) recorded once
    as a CUDA graph over static copies of the inputs, then replayed."""

    def __init__(self, step: Callable, opt, tokens, targets):
        self.step, self.opt = step, opt
        self.tokens, self.targets = tokens.clone(), targets.clone()
        params = [p for g in opt.param_groups for p in g["params"]]
        # kept on the host: a device copy would add the parameters to the run's peak memory
        saved = [p.detach().to("cpu", copy=True) for p in params]
        saved_state = {p: {k: v.to("cpu", copy=True) for k, v in opt.state[p].items()} for p in params if p in opt.state}
        self.graph, self.loss = _record(
            lambda: step(self.tokens, self.targets),
            before_capture=lambda: opt.zero_grad(set_to_none=True),  # the captured backward assigns the gradients afresh
        )
        with torch.no_grad():  # undo the warm-up: the model and optimiser as they were built
            torch._foreach_copy_(params, saved)
            for p in params:
                for k, v in opt.state[p].items():
                    v.copy_(saved_state[p][k]) if p in saved_state else v.zero_()

    def __call__(self, tokens, targets):
        self.tokens.copy_(tokens)
        self.targets.copy_(targets)
        self.graph.replay()
        return self.loss.clone()  # the graph's own loss changes at the next replay


class StaticForward:
    """``forward(tokens) -> logits``: ``step(tokens)`` (a no-grad forward) recorded once as a CUDA
    graph over a static copy of the tokens, then replayed; the logits returned are the graph's,
    valid until the next call."""

    def __init__(self, step: Callable, tokens):
        self.tokens = tokens.clone()
        self.graph, self.logits = _record(lambda: step(self.tokens))

    def __call__(self, tokens):
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits  # valid until the next call: see the module docstring
