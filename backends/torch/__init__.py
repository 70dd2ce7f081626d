"""The PyTorch backends (torch-cpu, torch-cuda, torch-mps): backend.py, one module per
architecture (mamba.py, transformer.py), the pure-PyTorch scans (scans.py), the fused head + loss
(head.py), the CUDA graphs (graphs.py) and torch-cuda's Triton kernels (triton/)."""

from .backend import BACKENDS

__all__ = ["BACKENDS"]
