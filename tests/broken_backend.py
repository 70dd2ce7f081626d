"""A torch-cpu whose logits are 1% off: parity must catch it (fp32 tolerance 1e-4) while bf16's
3e-2 tolerance lets it pass. Loaded with SSMBENCH_PLUGINS=broken_backend."""

from ssmbench.backends.torch.backend import TorchCPU


class BrokenCPU(TorchCPU):
    name = "broken-cpu"
    priority = -1

    def forward(self, model, tokens):
        return super().forward(model, tokens) * 1.01


BACKENDS = (BrokenCPU,)
