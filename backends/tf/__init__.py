"""The TensorFlow backends (tf-cpu, tf-gpu): backend.py, one module per architecture (mamba.py,
transformer.py), what they share (common.py: TensorFlow itself, the layers, ``Net``) and the
Mamba scans (scans.py)."""

from .backend import BACKENDS

__all__ = ["BACKENDS"]
