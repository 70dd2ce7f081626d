"""Other people's implementations on the torch backends (``--impl``), built from the same weights
as ssmbench's model and driven by the same timing loop, so a table can say how fast the code
people deploy is next to ssmbench's own:

    hf         transformers' MambaForCausalLM / Mamba2ForCausalLM, on every torch device; it runs
               its CUDA/Triton kernels where the packages it looks for (mamba_ssm, causal_conv1d)
               import and support the device, else its torch fallback (the per-step loop)
    mamba-ssm  mamba_ssm's MambaLMHeadModel (torch-cuda): its fused kernels, and for decode its
               own generation path, the weights cast to the dtype and each token one CUDA graph
               (what ``generate(cg=True)`` does)

Each handle offers what the backend's paths need: forward (parallel logits), train_step (logits,
then the mean next-token cross-entropy, backward and the backend's AdamW, as a user of the
implementation would write it), prefill / init_state / step with the implementation's own cache,
and ``execution()``: its version and which of its code paths ran (into the record).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re

import numpy as np
import torch
import torch.nn.functional as F

from ssmbench.interface import ADAMW, BackendUnavailable
from ssmbench.weights import LM_HEAD

ARCHS = ("mamba", "mamba2")  # what the implementations build (ssmbench's Transformer baseline is its own)
HF_NAMES = {"backbone.embedding.weight": "backbone.embeddings.weight"}  # ours -> transformers'


class _Warnings(logging.Handler):
    """transformers' warnings of this process: each fallback it takes says so once (warning_once),
    so a model's code path is read from everything said since the process started (a worker
    builds one model; the parity worker's later models share the first one's warnings)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_SEEN = None


def _warnings() -> _Warnings:
    global _SEEN
    if _SEEN is None:
        _SEEN = _Warnings()
        logging.getLogger("transformers").addHandler(_SEEN)
    return _SEEN


def _adamw(params, device_type: str):
    cuda = {"fused": True, "capturable": True} if device_type == "cuda" else {"foreach": True}  # as the backend's own
    betas = (ADAMW["b1"], ADAMW["b2"])
    return torch.optim.AdamW(params, lr=ADAMW["lr"], betas=betas, eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"], **cuda)


def _load(module, sd: dict) -> None:
    """Our float32 weights into ``module``; without an untied head (LM_HEAD) the head is the
    embedding's (the module was built tied)."""
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != LM_HEAD or LM_HEAD in sd]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the implementation: missing {missing[:3]}, unexpected {unexpected[:3]}")
    module.tie_weights()


class External:
    """A model run by someone else's code; the torch backend hands its paths to it."""

    impl = ""

    def __init__(self, module, device: torch.device, amp_dtype):
        self.module, self.device, self.amp_dtype = module, device, amp_dtype
        self.opt = _adamw(module.parameters(), device.type)
        self.training = None

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _mode(self, training: bool) -> None:
        if self.training is not training:
            self.module.train(training)
            self.training = training

    def logits(self, tokens):
        return self.module(tokens).logits

    def forward(self, tokens):
        self._mode(False)
        with torch.no_grad(), self.autocast():
            return self.logits(tokens)

    def train_step(self, tokens, targets):
        self._mode(True)
        with self.autocast():
            logits = self.logits(tokens)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def _mamba_ssm_scan_unbuilt() -> bool:
    """mamba_ssm imports but its Mamba-1 scan's CUDA extension (selective_scan_cuda) is not built
    (an install for Mamba-2 alone, whose kernels are Triton)."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return False
    try:
        from mamba_ssm.ops import selective_scan_interface as ssi
    except ImportError:
        return False
    return getattr(ssi, "selective_scan_cuda", None) is None


# ---------------------------------------------------------------------------- transformers
def _hf_module(arch: str, cfg, tied: bool):
    try:
        import transformers
    except ImportError:
        raise BackendUnavailable("transformers is not installed; install: pip install 'ssmbench[torch]'") from None
    common = dict(
        vocab_size=cfg.vocab, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, state_size=cfg.d_state,
        conv_kernel=cfg.d_conv, expand=cfg.expand, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5,
        residual_in_fp32=True, tie_word_embeddings=tied,
    )  # fmt: skip
    if arch == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(**common, time_step_rank=cfg.dt_rank))
    heads = cfg.expand * cfg.d_model // cfg.headdim
    c = transformers.Mamba2Config(
        **common, num_heads=heads, head_dim=cfg.headdim, n_groups=cfg.ngroups, chunk_size=cfg.chunk_size,
        norm_before_gate=False, rms_norm=True, time_step_limit=(0.0, float("inf")),
    )  # fmt: skip
    return transformers.Mamba2ForCausalLM(c)


class HF(External):
    """transformers' model; decode through its cache (``cache`` in transformers 5, ``cache_params``
    and ``cache_position`` in 4), eagerly, as its generate() runs it."""

    impl = "hf"

    def __init__(self, arch, weights, cfg, device, amp_dtype):
        if arch == "mamba" and device.type == "cuda" and _mamba_ssm_scan_unbuilt():  # transformers 5.17 raised in its forward
            raise BackendUnavailable(
                "transformers' Mamba calls mamba_ssm's selective scan wherever mamba_ssm imports, and mamba_ssm's CUDA "
                "extension (selective_scan_cuda) is not built here; install: pip install mamba-ssm --no-build-isolation "
                "(or uninstall mamba-ssm to time transformers' torch path)"
            )
        _warnings()  # listening before transformers is imported: some versions warn as they build a model
        module = _hf_module(arch, cfg, tied=LM_HEAD not in weights)
        _load(module, {HF_NAMES.get(k, k): torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in weights.items()})
        super().__init__(module.to(device), device, amp_dtype)
        params = inspect.signature(module.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "cache_params"
        self.positions = "cache_position" in params

    def _run(self, tokens, cache, start: int):
        kw = {"use_cache": True, self.cache_kw: cache}
        if self.positions:
            kw["cache_position"] = torch.arange(start, start + tokens.shape[1], device=self.device)
        out = self.module(tokens, **kw)
        return out.logits[:, -1], getattr(out, "cache", None) or getattr(out, "cache_params", None)

    def init_state(self, batch, capacity):
        return (None, 0)  # the first step makes the cache

    def prefill(self, tokens, capacity):
        self._mode(False)
        with torch.no_grad(), self.autocast():
            _, cache = self._run(tokens, None, 0)
        return (cache, tokens.shape[1])

    def step(self, token, state):
        self._mode(False)
        cache, pos = state
        with torch.no_grad(), self.autocast():
            logits, cache = self._run(token[:, None], cache, pos)
        return logits, (cache, pos + 1)

    def execution(self) -> dict:
        import transformers

        said = _warnings().messages  # the process's: transformers says each fallback once a process
        fell = sorted({n for m in said for n in re.findall(r"`(\w+)` is falling back", m)})  # transformers 5
        if any("fast path is not available" in m for m in said):  # transformers 4: all of the mixer or none
            fell.append("the fast path (a kernel package missing)")
        found = [p for p in ("mamba_ssm", "causal_conv1d") if importlib.util.find_spec(p)]
        if fell:
            path = f"torch fallback for {', '.join(fell)}"
        else:
            path = "its kernels" if self.device.type == "cuda" else "torch"
        mambapy = bool(getattr(self.module.config, "use_mambapy", False))
        found_s = ", ".join(found) or "neither mamba_ssm nor causal_conv1d"
        return {"impl_version": transformers.__version__, "impl_path": f"{path}; importable: {found_s}; use_mambapy {mambapy}"}


# ---------------------------------------------------------------------------- mamba-ssm
def _mamba_ssm_module(arch: str, cfg, device, tied: bool):
    if device.type != "cuda":
        raise BackendUnavailable(f"mamba-ssm runs on CUDA only, not {device.type}")
    try:
        from mamba_ssm.models.config_mamba import MambaConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError as e:
        raise BackendUnavailable(f"mamba_ssm does not import ({e}); install: pip install mamba-ssm --no-build-isolation") from None
    ssm = {"d_state": cfg.d_state, "d_conv": cfg.d_conv, "expand": cfg.expand}
    if arch == "mamba":
        if _mamba_ssm_scan_unbuilt():
            raise BackendUnavailable(
                "mamba_ssm's Mamba-1 needs its CUDA extension (selective_scan_cuda), not built here; "
                "install: pip install mamba-ssm --no-build-isolation"
            )
        ssm |= {"layer": "Mamba1", "dt_rank": cfg.dt_rank}
    else:
        fused = importlib.util.find_spec("causal_conv1d") is not None  # its fused path calls causal-conv1d's CUDA extension
        ssm |= {"layer": "Mamba2", "headdim": cfg.headdim, "ngroups": cfg.ngroups, "chunk_size": cfg.chunk_size, "use_mem_eff_path": fused}
    c = MambaConfig(
        d_model=cfg.d_model, n_layer=cfg.n_layers, vocab_size=cfg.vocab, ssm_cfg=ssm, rms_norm=True,
        residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=1, tie_embeddings=tied,
    )  # fmt: skip
    return MambaLMHeadModel(c, device=device, dtype=torch.float32)


class MambaSSM(External):
    """mamba_ssm's model; decode as its generate(cg=True): the weights cast to the dtype (no
    autocast) and one CUDA graph a token over its own inference cache."""

    impl = "mamba-ssm"

    def __init__(self, arch, weights, cfg, device, amp_dtype):
        module = _mamba_ssm_module(arch, cfg, device, tied=LM_HEAD not in weights)
        _load(module, {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in weights.items()})
        super().__init__(module, device, amp_dtype)
        self.arch, self.graphs, self.decoding = arch, None, False

    def _for_decode(self):
        if not self.decoding:  # decode is the last thing a model does here: a point times one mode
            self.module.eval().to(self.amp_dtype or torch.float32)
            self.opt, self.decoding = None, True

    @torch.inference_mode()
    def init_state(self, batch, capacity):
        from mamba_ssm.utils.generation import update_graph_cache

        self._for_decode()
        self.graphs = update_graph_cache(self.module, self.graphs, batch, 0, capacity)
        params = self.graphs.inference_params
        params.reset(capacity, batch)
        return params

    @torch.inference_mode()
    def prefill(self, tokens, capacity):
        params = self.init_state(tokens.shape[0], capacity)
        self.module(tokens, inference_params=params, num_last_tokens=1)
        params.seqlen_offset += tokens.shape[1]
        return params

    @torch.inference_mode()
    def step(self, token, params):
        ids = token[:, None]
        if params.seqlen_offset == 0:  # the first token is a prefill of one: mamba-ssm's graphs are for later ones
            logits = self.module(ids, inference_params=params, num_last_tokens=1).logits[:, -1]
        else:
            pos = torch.full_like(ids, params.seqlen_offset)
            logits = self.graphs.run(ids, pos, params.seqlen_offset)[:, -1]
        params.seqlen_offset += 1
        return logits, params

    def execution(self) -> dict:
        import mamba_ssm

        mixer = self.module.backbone.layers[0].mixer
        path = "fused kernels" + (", mem-efficient path without causal-conv1d" if getattr(mixer, "use_mem_eff_path", True) is False else "")
        return {"impl_version": mamba_ssm.__version__, "impl_path": path + ("; decode: CUDA graph a token" if self.decoding else "")}


IMPLS = {"hf": HF, "mamba-ssm": MambaSSM}


def build(impl: str, arch: str, weights: dict, cfg, device: torch.device, amp_dtype) -> External:
    """``impl``'s model of ``arch`` from ssmbench's weights (BackendUnavailable says why it cannot run here)."""
    if arch not in ARCHS:
        raise BackendUnavailable(f"{impl} implements {', '.join(ARCHS)}; {arch} is ssmbench's own")
    return IMPLS[impl](arch, weights, cfg, device, amp_dtype)
