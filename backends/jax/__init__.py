"""The JAX backends (jax-cpu, jax-cuda, jax-metal): backend.py, one module per architecture
(mamba.py, transformer.py: pure functions of the weights), the shared layers (layers.py) and the
Mamba scans (scans.py)."""

from .backend import BACKENDS

__all__ = ["BACKENDS"]
