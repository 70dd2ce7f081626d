"""PyTorch backend: torch-cpu, torch-cuda, torch-mps.

The model math is ssmbench.reference's, written with torch ops; module names reproduce
mamba-ssm's state dict so ``load_state_dict`` takes a real checkpoint. Mixed precision runs
through autocast (bf16/fp16 matmuls, fp32 residual stream, norms and SSM state).

Scans (sequential, chunked, parallel, and triton on CUDA) live in torch_scans.py and
torch_triton.py; decode always uses the recurrent step.
"""

from __future__ import annotations

import time

import numpy as np

from ssmbench.config import ModelConfig, TransformerConfig
from ssmbench.interface import ADAMW, Availability, Backend

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from .torch_head import head_loss
    from .torch_scans import add_norm, conv_silu, rmsnorm, selective_scan
except ImportError:  # availability() reports it; nothing below runs without torch
    torch = None

SCANS = ("chunked", "parallel", "sequential")  # pure PyTorch, every device (torch_scans.SCAN_FNS)


# ============================================================================ models
if torch is not None:

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return rmsnorm(x, self.weight)

    class MambaMixer(nn.Module):
        def __init__(self, c: ModelConfig, scan: str):
            super().__init__()
            D, E, N, K, R = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank
            self.E, self.N, self.R, self.K, self.scan = E, N, R, K, scan
            self.in_proj = nn.Linear(D, 2 * E, bias=False)
            self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=True)
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
            self.dt_proj = nn.Linear(R, E, bias=True)
            self.A_log = nn.Parameter(torch.zeros(E, N))
            self.D = nn.Parameter(torch.ones(E))
            self.out_proj = nn.Linear(E, D, bias=False)

        def _ssm_inputs(self, x):
            """x (..., E) after conv+silu -> dt (..., E) before its bias and softplus, Bm, Cm (..., N)."""
            dt, Bm, Cm = self.x_proj(x).split([self.R, self.N, self.N], dim=-1)
            return F.linear(dt, self.dt_proj.weight), Bm, Cm

        def forward(self, h, return_state=False):
            """h (B, L, D) -> (B, L, D) [, (conv_state (B, E, K), ssm_state (B, E, N))]."""
            L = h.shape[1]
            x, z = self.in_proj(h).chunk(2, dim=-1)
            xc = conv_silu(self.scan, x, self.conv1d.weight, self.conv1d.bias)
            dt, Bm, Cm = self._ssm_inputs(xc)
            A = -torch.exp(self.A_log.float())
            y, h_last = selective_scan(self.scan, xc, dt, A, Bm, Cm, self.D.float(), z, self.dt_proj.bias.float())
            out = self.out_proj(y.to(x.dtype))
            if not return_state:
                return out
            conv_state = F.pad(x.transpose(1, 2), (max(0, self.K - L), 0))[..., -self.K :]
            return out, (conv_state, h_last)

        def step(self, h, state):
            """h (B, D), state (conv (B, E, K), ssm (B, E, N)) -> (B, D), new state."""
            conv, ssm = state
            x, z = self.in_proj(h).chunk(2, dim=-1)
            if self.scan == "triton":  # two fused kernels (torch_fused.py): decode is launch-bound
                from .torch_fused import conv_step, ssm_step

                conv, xc = conv_step(conv, x, self.conv1d.weight, self.conv1d.bias)
                dt, Bm, Cm = self._ssm_inputs(xc)
                y, ssm = ssm_step(xc, dt, z, Bm, Cm, self.A_log, self.D, self.dt_proj.bias, ssm)
                return self.out_proj(y), (conv, ssm)
            conv = torch.cat([conv[..., 1:], x[..., None].to(conv.dtype)], -1)
            xc = F.silu((conv * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias).to(x.dtype)
            dt, Bm, Cm = self._ssm_inputs(xc)
            dt = F.softplus(dt.float() + self.dt_proj.bias.float())
            A = -torch.exp(self.A_log.float())
            xf = xc.float()
            ssm = torch.exp(dt[..., None] * A) * ssm + (dt * xf)[..., None] * Bm.float()[:, None, :]
            y = torch.einsum("ben,bn->be", ssm, Cm.float()) + xf * self.D.float()
            return self.out_proj((y * F.silu(z.float())).to(x.dtype)), (conv, ssm)

    class MambaBlock(nn.Module):
        def __init__(self, c, scan):
            super().__init__()
            self.norm = RMSNorm(c.d_model)
            self.mixer = MambaMixer(c, scan)

    class Backbone(nn.Module):
        def __init__(self, c, scan):
            super().__init__()
            self.embedding = nn.Embedding(c.vocab, c.d_model)
            self.layers = nn.ModuleList(MambaBlock(c, scan) for _ in range(c.n_layers))
            self.norm_f = RMSNorm(c.d_model)

    class MambaLM(nn.Module):
        """mamba-ssm's MambaLMHeadModel: the residual stream is kept in fp32."""

        def __init__(self, c: ModelConfig, scan: str):
            super().__init__()
            self.cfg = c
            self.backbone = Backbone(c, scan)

        def _final(self, hidden, residual, kind):
            """The last add + norm, in the blocks' output dtype: what the head multiplies."""
            return add_norm(kind, hidden, residual, self.backbone.norm_f.weight)[0].to(hidden.dtype)

        def _head(self, x):
            return x @ self.backbone.embedding.weight.T.to(x.dtype)

        def features(self, tokens, return_state=False):
            """tokens (B, L) -> the final norm's output (B, L, D) [, each layer's last state]."""
            hidden, residual, states = self.backbone.embedding(tokens), None, []
            kind = self.backbone.layers[0].mixer.scan  # the triton kind fuses add + norm too
            for layer in self.backbone.layers:
                x, residual = add_norm(kind, hidden, residual, layer.norm.weight)
                out = layer.mixer(x, return_state=return_state)
                hidden = out[0] if return_state else out
                if return_state:
                    states.append(out[1])
            x = self._final(hidden, residual, kind)
            return (x, states) if return_state else x

        def head_weight(self):
            return self.backbone.embedding.weight  # tied

        def forward(self, tokens, return_state=False):
            if return_state:
                x, states = self.features(tokens, return_state=True)
                return self._head(x), states
            return self._head(self.features(tokens))

        def init_state(self, batch, capacity, device, dtype):
            c = self.cfg  # the SSM state stays fp32 whatever the compute dtype
            return [
                (torch.zeros(batch, c.d_inner, c.d_conv, device=device), torch.zeros(batch, c.d_inner, c.d_state, device=device))
                for _ in range(c.n_layers)
            ]

        def prefill(self, tokens, capacity, dtype):
            return self.forward(tokens, return_state=True)[1]

        def step(self, token, state):
            hidden, residual, new = self.backbone.embedding(token), None, []
            kind = self.backbone.layers[0].mixer.scan
            for layer, s in zip(self.backbone.layers, state):
                x, residual = add_norm(kind, hidden, residual, layer.norm.weight)
                hidden, s = layer.mixer.step(x, s)
                new.append(s)
            return self._head(self._final(hidden, residual, kind)), new

    def sinusoidal(L, D, offset, device):
        half = D // 2
        freqs = 10000.0 ** (-torch.arange(half, device=device, dtype=torch.float64) / max(half, 1))
        ang = torch.arange(offset, offset + L, device=device, dtype=torch.float64)[:, None] * freqs
        pe = torch.cat([torch.sin(ang), torch.cos(ang)], 1)
        return F.pad(pe, (0, D - 2 * half)).float()

    class Attention(nn.Module):
        def __init__(self, t: TransformerConfig):
            super().__init__()
            self.H = t.n_head
            self.c_attn = nn.Linear(t.d_model, 3 * t.d_model)
            self.c_proj = nn.Linear(t.d_model, t.d_model)

        def forward(self, x, cache=None, pos=0):
            """x (B, L, D). With a cache (k, v each (B, H, cap, hd)) the L new keys go to
            positions pos..pos+L-1 and the queries attend to everything up to them."""
            Bt, L, D = x.shape
            q, k, v = (t.view(Bt, L, self.H, D // self.H).transpose(1, 2) for t in self.c_attn(x).split(D, -1))
            if cache is None:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                kc, vc = cache
                kc[:, :, pos : pos + L] = k.to(kc.dtype)
                vc[:, :, pos : pos + L] = v.to(vc.dtype)
                k, v = kc[:, :, : pos + L].to(q.dtype), vc[:, :, : pos + L].to(q.dtype)
                o = F.scaled_dot_product_attention(q, k, v, is_causal=L > 1)
            return self.c_proj(o.transpose(1, 2).reshape(Bt, L, D))

    class MLP(nn.Module):
        def __init__(self, t):
            super().__init__()
            self.c_fc = nn.Linear(t.d_model, t.d_mlp)
            self.c_proj = nn.Linear(t.d_mlp, t.d_model)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class GPTBlock(nn.Module):
        def __init__(self, t):
            super().__init__()
            self.ln_1 = nn.LayerNorm(t.d_model, eps=1e-5)
            self.attn = Attention(t)
            self.ln_2 = nn.LayerNorm(t.d_model, eps=1e-5)
            self.mlp = MLP(t)

        def forward(self, x, cache=None, pos=0):
            x = x + self.attn(self.ln_1(x), cache, pos)
            return x + self.mlp(self.ln_2(x))

    class GPTBody(nn.Module):
        def __init__(self, t):
            super().__init__()
            self.wte = nn.Embedding(t.vocab, t.d_model)
            self.h = nn.ModuleList(GPTBlock(t) for _ in range(t.n_layers))
            self.ln_f = nn.LayerNorm(t.d_model, eps=1e-5)

    class GPT(nn.Module):
        def __init__(self, t: TransformerConfig):
            super().__init__()
            self.cfg = t
            self.transformer = GPTBody(t)

        def features(self, tokens, caches=None, pos=0):
            """tokens (B, L) at positions pos.. -> the final LayerNorm's output (B, L, D)."""
            tr = self.transformer
            x = tr.wte(tokens) + sinusoidal(tokens.shape[1], self.cfg.d_model, pos, tokens.device)
            for i, block in enumerate(tr.h):
                x = block(x, None if caches is None else caches[i], pos)
            return tr.ln_f(x)

        def head_weight(self):
            return self.transformer.wte.weight  # tied

        def _run(self, tokens, caches=None, pos=0):
            x = self.features(tokens, caches, pos)
            return x @ self.transformer.wte.weight.T.to(x.dtype)

        def forward(self, tokens):
            return self._run(tokens)

        def init_state(self, batch, capacity, device, dtype):
            t = self.cfg  # the KV cache is kept in the compute dtype
            shape = (batch, t.n_head, capacity, t.d_model // t.n_head)
            caches = [
                (torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)) for _ in range(t.n_layers)
            ]
            return (caches, 0)

        def prefill(self, tokens, capacity, dtype):
            caches, _ = self.init_state(tokens.shape[0], capacity, tokens.device, dtype)
            self._run(tokens, caches, 0)
            return (caches, tokens.shape[1])

        def step(self, token, state):
            caches, pos = state
            if pos >= caches[0][0].shape[2]:
                raise ValueError(f"KV cache full at position {pos}")
            return self._run(token[:, None], caches, pos)[:, 0], (caches, pos + 1)


# ============================================================================ backend
class _Model:
    """What build() returns: the module, its optimiser, autocast settings."""

    def __init__(self, module, opt, device_type, amp_dtype):
        self.module, self.opt, self.device_type, self.amp_dtype = module, opt, device_type, amp_dtype
        self.decoders = {}  # batch -> torch_graphs.StaticDecoder (Mamba decode on CUDA)
        self.trainers = {}  # (tokens shape) -> torch_graphs.StaticTrainer (the train step on CUDA)
        self.train_graph = None  # why the train step runs eagerly, or "CUDA graph"

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.amp_dtype)


class TorchBackend(Backend):
    framework = "torch"
    scans = SCANS
    default_scan = "chunked"
    dtypes = ("float32", "bfloat16", "float16")
    device_type = "cpu"
    install_hint = "pip install torch==2.13.0  (CPU build; on a CUDA machine: pip install torch)"

    def __init__(self):
        super().__init__()
        self.device = torch.device(self.device_type)
        # An optimiser's first construction imports torch._dynamo, and Triton where installed:
        # about 130 MB of resident memory that belongs to starting the framework, not to a model,
        # so it happens here, before a worker takes its memory baseline (--memory-limit on CPU).
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])

    @classmethod
    def _torch_missing(cls):
        if torch is None:
            return Availability(False, "torch is not installed", cls.install_hint)
        return None

    def versions(self) -> dict:
        v = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
        if torch.version.cuda:
            v["cuda"] = torch.version.cuda
        if torch.backends.cudnn.is_available():
            v["cudnn"] = torch.backends.cudnn.version()
        return v

    # ---------------------------------------------------------------- model
    def build(self, arch, weights, cfg, *, scan=None, dtype="float32"):
        if arch == "mamba":
            module = MambaLM(cfg, scan or self.default_scan)
        else:
            module = GPT(cfg)
        sd = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items() if k != "lm_head.weight"}
        module.load_state_dict(sd, strict=True)
        module.to(self.device)
        opt = torch.optim.AdamW(
            module.parameters(),
            lr=ADAMW["lr"],
            betas=(ADAMW["b1"], ADAMW["b2"]),
            eps=ADAMW["eps"],
            weight_decay=ADAMW["weight_decay"],
            **self._adamw_kwargs(),
        )
        amp = None if dtype == "float32" else getattr(torch, dtype)
        return _Model(module, opt, self.device_type, amp)

    def _adamw_kwargs(self) -> dict:
        return {"foreach": True}

    def weights(self, model):
        return {k: v.detach().float().cpu().numpy() for k, v in model.module.state_dict().items()}

    def tokens(self, array):
        return torch.from_numpy(np.asarray(array, dtype=np.int64)).to(self.device)

    def forward(self, model, tokens):
        with torch.no_grad(), model.autocast():
            return model.module(tokens)

    @staticmethod
    def _train_math(model, tokens, targets):
        """Forward, cross-entropy, backward, AdamW update -> the loss; the gradients are left
        for the next backward, which assigns them afresh once they are None. The head and the
        loss are one chunked op (torch_head.py): the (tokens, vocab) logits are never whole."""
        with model.autocast():
            loss = head_loss(model.module.features(tokens), model.module.head_weight(), targets)
        loss.backward()
        model.opt.step()
        return loss.detach()

    graph_train = False  # the train step as one CUDA graph (torch_graphs.StaticTrainer)

    def train_step(self, model, tokens, targets):
        if self.graph_train and model.train_graph is None:
            model.train_graph = self._graph_refusal(model.module) or "CUDA graph"
        if model.train_graph == "CUDA graph":
            key = (tuple(tokens.shape), tuple(targets.shape))
            if key not in model.trainers:
                from .torch_graphs import StaticTrainer

                step = lambda x, y: self._train_math(model, x, y)  # noqa: E731
                model.trainers[key] = StaticTrainer(step, model.opt, tokens, targets)
            return model.trainers[key](tokens, targets)
        loss = self._train_math(model, tokens, targets)
        model.opt.zero_grad(set_to_none=True)
        return loss

    @staticmethod
    def _graph_refusal(module) -> str | None:
        """Why the step cannot be one CUDA graph, or None: every op must stay on the device."""
        if isinstance(module, MambaLM) and module.backbone.layers[0].mixer.scan == "chunked":
            return "eager (the chunked scan reads its chunk length back to the host)"
        return None

    def execution(self, model) -> dict:
        return {"train_step": model.train_graph} if model.train_graph else {}

    def init_state(self, model, batch, capacity):
        return model.module.init_state(batch, capacity, self.device, model.amp_dtype or torch.float32)

    def prefill(self, model, tokens, capacity):
        with torch.no_grad(), model.autocast():
            return model.module.prefill(tokens, capacity, model.amp_dtype or torch.float32)

    graph_decode = False  # Mamba decode as one CUDA graph per token (torch_graphs.py)

    def decode_step(self, model, token, state):
        if self.graph_decode and isinstance(model.module, MambaLM):
            from .torch_graphs import StaticDecoder

            batch = token.shape[0]
            if batch not in model.decoders:
                model.decoders[batch] = StaticDecoder(model.module, batch, self.device, model.amp_dtype, graph=True)
            return model.decoders[batch](token, state)
        with torch.no_grad(), model.autocast():
            return model.module.step(token, state)

    # ---------------------------------------------------------------- ops alone
    ops_supported = True
    ACTIVATIONS = ("x", "dt", "z", "Bm", "Cm", "q", "k", "v", "dout")  # in the run's dtype; A, D, dt_bias fp32

    def op_step(self, arch, scan, inputs, dtype, mode):
        t = {
            k: torch.from_numpy(v).to(self.device, getattr(torch, dtype) if k in self.ACTIVATIONS else torch.float32)
            for k, v in inputs.items()
        }
        dout = t.pop("dout")
        if arch == "mamba":
            names = ("x", "dt", "A", "Bm", "Cm", "D", "z", "dt_bias")
            fn = lambda *a: selective_scan(scan, *a)[0]  # noqa: E731
        else:
            names = ("q", "k", "v")
            fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
        args = [t[n] for n in names]
        if mode != "train":

            def forward():
                with torch.no_grad():
                    return fn(*args)

            return forward
        for a in args:
            a.requires_grad_(True)
        douts = {dout.dtype: dout, torch.float32: dout.float()}  # the pure-PyTorch scans return fp32

        def train():
            out = fn(*args)
            return torch.autograd.grad(out, args, douts[out.dtype])[0]

        return train

    def copy_bandwidth(self):
        n = (64 << 20) if self.device_type == "cuda" else (16 << 20)  # fp32 elements: 256 / 64 MiB
        src = torch.ones(n, device=self.device)
        dst = torch.empty_like(src)
        best = float("inf")
        for _ in range(5):
            self.synchronize()
            t0 = time.perf_counter()
            for _ in range(4):
                dst.copy_(src)
            self.synchronize()
            best = min(best, (time.perf_counter() - t0) / 4)
        del src, dst
        return 2 * n * 4 / best

    # ---------------------------------------------------------------- measurement
    def synchronize(self, out=None):
        pass  # eager CPU ops are synchronous

    def to_numpy(self, x):
        return x.detach().float().cpu().numpy()

    def all_finite(self, x):
        return bool(torch.isfinite(x).all())

    def peak_memory(self):
        return None, "no allocator statistics on CPU"

    def is_oom(self, exc):
        if isinstance(exc, MemoryError):
            return True
        oom = getattr(torch, "OutOfMemoryError", None)
        if oom is not None and isinstance(exc, oom):
            return True
        msg = str(exc).lower()
        return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg or "failed to allocate" in msg)


class TorchCPU(TorchBackend):
    name = "torch-cpu"
    device_type = "cpu"
    priority = 10
    # fastest measured on CPU (README benchmarks): its (B, E, N) state stays in cache, while the
    # chunked and parallel scans stream (B, L, E, N) tensors through memory
    default_scan = "sequential"

    @classmethod
    def availability(cls):
        return cls._torch_missing() or Availability(True, f"torch {torch.__version__}, {torch.get_num_threads()} threads", cls.install_hint)

    def device_info(self):
        from ssmbench.envinfo import cpu_model, total_ram

        return {"device": cpu_model(), "memory_bytes": total_ram()}


class TorchCUDA(TorchBackend):
    name = "torch-cuda"
    device_type = "cuda"
    priority = 100
    scans = (*SCANS, "triton")
    default_scan = "triton"  # the fused kernel: fastest measured on the H100 (README benchmarks)
    install_hint = "pip install torch  (a CUDA build, on a machine with an NVIDIA GPU and driver)"

    @classmethod
    def availability(cls):
        missing = cls._torch_missing()
        if missing:
            return missing
        if not torch.backends.cuda.is_built():
            return Availability(False, f"torch {torch.__version__} is a CPU-only build", cls.install_hint)
        if not torch.cuda.is_available():
            return Availability(False, "no CUDA device visible (torch.cuda.is_available() is False)", cls.install_hint)
        n = torch.cuda.device_count()
        return Availability(True, f"CUDA {torch.version.cuda}, {n} x {torch.cuda.get_device_name(0)}", cls.install_hint)

    def __init__(self):
        super().__init__()
        # float32 means IEEE fp32: cuDNN would otherwise run convolutions in TF32 (10-bit mantissa)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    graph_decode = True
    graph_train = True

    def versions(self):
        v = {**super().versions(), "tf32": False, "device_count": torch.cuda.device_count()}
        return {**v, "mamba_decode": "CUDA graph, preallocated state"}

    def device_info(self):
        p = torch.cuda.get_device_properties(0)
        return {"device": p.name, "memory_bytes": p.total_memory, "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count}

    def _adamw_kwargs(self):
        return {"fused": True, "capturable": True}  # capturable: its step count on the GPU, for graphs

    def synchronize(self, out=None):
        torch.cuda.synchronize()

    def reset_peak_memory(self):
        torch.cuda.reset_peak_memory_stats()

    @classmethod
    def configure_process(cls, memory_limit):
        if memory_limit and cls.availability().available:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, memory_limit / total))
            return True
        return False

    def peak_memory(self):
        return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"

    def device_ceilings(self):
        from ssmbench.envinfo import matmul_rate

        rates = {}
        for dtype, n in (("bfloat16", 8192), ("float32", 4096)):  # fp32 is IEEE here (TF32 off)
            a = torch.randn(n, n, device=self.device, dtype=getattr(torch, dtype))
            b = torch.randn(n, n, device=self.device, dtype=a.dtype)
            a @ b
            rates[dtype] = 2 * n**3 / matmul_rate(lambda a=a, b=b: a @ b, self.synchronize)
            del a, b
        torch.cuda.empty_cache()
        return {"copy_bytes_per_s": self.copy_bandwidth(), "matmul_flops": rates}

    def energy_joules(self):
        if not hasattr(self, "_energy"):
            from ssmbench.envinfo import nvml_energy

            uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
            self._energy = nvml_energy(f"GPU-{uuid}" if uuid else None)
        return self._energy() if self._energy else None


class TorchMPS(TorchBackend):
    name = "torch-mps"
    device_type = "mps"
    priority = 50
    default_scan = "parallel"  # a GPU: like CUDA, the O(log L)-depth scan (not measured on MPS yet)
    install_hint = "pip install torch  (macOS 12.3+ on Apple silicon)"

    @classmethod
    def availability(cls):
        missing = cls._torch_missing()
        if missing:
            return missing
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_built():
            return Availability(False, "this torch build has no MPS support (needs macOS on Apple silicon)", cls.install_hint)
        if not mps.is_available():
            return Availability(False, "MPS not available (needs macOS 12.3+ on Apple silicon)", cls.install_hint)
        return Availability(True, f"torch {torch.__version__} MPS", cls.install_hint)

    def device_info(self):
        from ssmbench.envinfo import cpu_model, total_ram

        return {"device": f"Apple MPS ({cpu_model()})", "memory_bytes": total_ram()}

    def synchronize(self, out=None):
        torch.mps.synchronize()

    def peak_memory(self):
        return int(torch.mps.driver_allocated_memory()), "torch.mps.driver_allocated_memory (at end of point)"

    def is_oom(self, exc):
        return super().is_oom(exc) or "mps backend out of memory" in str(exc).lower()


BACKENDS = (TorchCPU, TorchCUDA, TorchMPS)
