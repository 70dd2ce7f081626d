"""PyTorch backend: torch-cpu, torch-cuda, torch-mps.

Each architecture is its own module here (mamba.py, transformer.py: ssmbench.archs' math in
torch ops), built through the architecture registry; the scans are in scans.py and triton/ (the
fused scan and the fused kernels around it, torch-cuda), the fused head + loss of the train step
in head.py, and the CUDA graphs in graphs.py. This file is the Backend: building a model from the
shared weights, the train step, decode, the ops alone, and each device's synchronisation,
memory and energy readings.
"""

from __future__ import annotations

import time

import numpy as np

from ssmbench import archs
from ssmbench.interface import ADAMW, Availability, Backend
from ssmbench.weights import LM_HEAD, drop_tied_head

try:
    import torch

    from .head import head_loss
except ImportError:  # availability() reports it; nothing below runs without torch
    torch = None

SCANS = {"mamba": ("chunked", "parallel", "sequential"), "mamba2": ("ssd", "sequential")}  # pure PyTorch, every device


# ============================================================================ backend
class _Model:
    """What build() returns: the module, its optimiser, autocast settings."""

    def __init__(self, module, opt, device_type, amp_dtype):
        self.module, self.opt, self.device_type, self.amp_dtype = module, opt, device_type, amp_dtype
        self.decoders = {}  # batch -> the module's graph_decoder (graphs.py: decode on CUDA)
        self.trainers = {}  # (tokens shape) -> graphs.StaticTrainer (the train step on CUDA)
        self.forwards = {}  # tokens shape -> graphs.StaticForward (the forward on CUDA)
        self.forward_graph = None  # why the forward runs eagerly, or "CUDA graph"
        self.train_graph = None  # why the train step runs eagerly, or "CUDA graph"

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.amp_dtype)


class TorchBackend(Backend):
    framework = "torch"
    scans = SCANS
    default_scan = {"mamba": "chunked", "mamba2": "ssd"}
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
    impls = ("ssmbench", "hf")  # --impl: whose code runs the model (impls.py)

    def build(self, arch, weights, cfg, *, scan=None, dtype="float32", impl="ssmbench"):
        amp = None if dtype == "float32" else getattr(torch, dtype)
        weights = drop_tied_head(dict(weights))  # an lm_head.weight left is an untied head
        if impl != "ssmbench":
            from . import impls

            return impls.build(impl, arch, weights, cfg, self.device, amp)
        module = archs.framework_module(arch, "torch").build(cfg, scan or self.default_scan.get(arch))
        if LM_HEAD in weights:
            module.untie()
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}, strict=True)
        module.to(self.device)
        opt = torch.optim.AdamW(
            module.parameters(),
            lr=ADAMW["lr"],
            betas=(ADAMW["b1"], ADAMW["b2"]),
            eps=ADAMW["eps"],
            weight_decay=ADAMW["weight_decay"],
            **self._adamw_kwargs(),
        )
        return _Model(module, opt, self.device_type, amp)

    def _adamw_kwargs(self) -> dict:
        return {"foreach": True}

    def weights(self, model):
        return {k: v.detach().float().cpu().numpy() for k, v in model.module.state_dict().items()}

    def tokens(self, array):
        return torch.from_numpy(np.asarray(array, dtype=np.int64)).to(self.device)

    graph_forward = False  # the forward as one CUDA graph (graphs.StaticForward)

    def forward(self, model, tokens):
        if not isinstance(model, _Model):  # another implementation (impls.py): its own path
            return model.forward(tokens)
        if self.graph_forward and model.forward_graph is None:
            model.forward_graph = model.module.graph_refusal() or "CUDA graph"
        if model.forward_graph == "CUDA graph":
            key = tuple(tokens.shape)
            if key not in model.forwards:
                from .graphs import StaticForward

                model.forwards[key] = StaticForward(lambda x: self._forward_math(model, x), tokens)
            return model.forwards[key](tokens)
        return self._forward_math(model, tokens)

    @staticmethod
    def _forward_math(model, tokens):
        with torch.no_grad(), model.autocast():
            return model.module(tokens)

    @staticmethod
    def _train_math(model, tokens, targets):
        """Forward, cross-entropy, backward, AdamW update -> the loss; the gradients are left
        for the next backward, which assigns them afresh once they are None. The head and the
        loss are one chunked op (head.py): the (tokens, vocab) logits are never whole."""
        with model.autocast():
            loss = head_loss(model.module.features(tokens), model.module.head_weight(), targets)
        loss.backward()
        model.opt.step()
        return loss.detach()

    graph_train = False  # the train step as one CUDA graph (graphs.StaticTrainer)

    def train_step(self, model, tokens, targets):
        if not isinstance(model, _Model):
            return model.train_step(tokens, targets)
        if self.graph_train and model.train_graph is None:
            model.train_graph = model.module.graph_refusal() or "CUDA graph"
        if model.train_graph == "CUDA graph":
            key = (tuple(tokens.shape), tuple(targets.shape))
            if key not in model.trainers:
                from .graphs import StaticTrainer

                step = lambda x, y: self._train_math(model, x, y)  # noqa: E731
                model.trainers[key] = StaticTrainer(step, model.opt, tokens, targets)
            return model.trainers[key](tokens, targets)
        loss = self._train_math(model, tokens, targets)
        model.opt.zero_grad(set_to_none=True)
        return loss

    def execution(self, model) -> dict:
        if not isinstance(model, _Model):
            return model.execution()
        how = {"train_step": model.train_graph, "forward": model.forward_graph}
        return {k: v for k, v in how.items() if v}

    def init_state(self, model, batch, capacity):
        if not isinstance(model, _Model):
            return model.init_state(batch, capacity)
        return model.module.init_state(batch, capacity, self.device, model.amp_dtype or torch.float32)

    def prefill(self, model, tokens, capacity):
        if not isinstance(model, _Model):
            return model.prefill(tokens, capacity)
        with torch.no_grad(), model.autocast():
            return model.module.prefill(tokens, capacity, model.amp_dtype or torch.float32)

    graph_decode = False  # decode as one CUDA graph per token (graphs.py)

    def decode_step(self, model, token, state):
        if not isinstance(model, _Model):
            return model.step(token, state)
        if self.graph_decode:
            batch = token.shape[0]
            if batch not in model.decoders:
                kind = model.module.graph_decoder
                model.decoders[batch] = kind(model.module, batch, self.device, model.amp_dtype, graph=True)
            return model.decoders[batch](token, state)
        with torch.no_grad(), model.autocast():
            return model.module.step(token, state)

    # ---------------------------------------------------------------- ops alone
    ops_supported = True

    def op_step(self, arch, scan, inputs, dtype, mode):
        a, module = archs.get(arch), archs.framework_module(arch, "torch")
        fn, inputs = module.op(scan, inputs)
        t = {k: torch.from_numpy(v).to(self.device, torch.float32 if k in a.OP_FP32 else getattr(torch, dtype)) for k, v in inputs.items()}
        dout = t.pop("dout")
        args = [t[n] for n in a.OP_ARGS]
        if mode != "train":

            def step():
                with torch.no_grad():
                    return fn(*args)

        else:
            for t_ in args:
                t_.requires_grad_(True)
            douts = {dout.dtype: dout, torch.float32: dout.float()}  # the pure-PyTorch scans return fp32

            def step():
                out = fn(*args)
                return torch.autograd.grad(out, args, douts[out.dtype])[0]

        step.graph_refusal = module.op_graph_refusal(scan)  # why graph_replay cannot capture it, or None
        return step

    def graph_replay(self, step):
        if self.device_type != "cuda":
            return super().graph_replay(step)
        if getattr(step, "graph_refusal", None):
            return None, step.graph_refusal
        from .graphs import replay

        return replay(step), None

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
    host_memory = True
    priority = 10
    # Mamba-1: fastest measured on CPU (docs/results.md): its (B, E, N) state stays in cache,
    # while the chunked and parallel scans stream (B, L, E, N) tensors through memory
    default_scan = {"mamba": "sequential", "mamba2": "ssd"}

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
    scans = {arch: (*s, "triton") for arch, s in SCANS.items()}
    impls = ("ssmbench", "hf", "mamba-ssm")
    default_scan = {"mamba": "triton", "mamba2": "triton"}  # the fused kernels: fastest measured on the H100 (docs/results.md)
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
    graph_forward = True

    def versions(self):
        v = {**super().versions(), "tf32": False, "device_count": torch.cuda.device_count()}
        decode = {"mamba_decode": "CUDA graph, preallocated state", "transformer_decode": "CUDA graph, KV cache masked to its capacity"}
        return {**v, **decode}

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
    default_scan = {"mamba": "parallel", "mamba2": "ssd"}  # a GPU: the O(log L)-depth scan, SSD's matmuls (not measured on MPS yet)
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
