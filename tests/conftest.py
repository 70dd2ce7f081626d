import os
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

# Without an NVIDIA GPU, Triton kernels (the torch-cuda scan) run under Triton's interpreter.
# It must be chosen before anything imports triton: triton.language's own helpers are compiled
# for one mode at import.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA GPU: skipped elsewhere, saying so (tools/device_run.sh
    runs them on a lent one)."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if gpu and not _cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (marked gpu; tools/device_run.sh tests runs them on one)")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture
def fake_backends(monkeypatch):
    """Register tests/fake_backend.py as a plugin, here and in worker processes."""
    from ssmbench import backends as registry

    monkeypatch.setenv("SSMBENCH_PLUGINS", "fake_backend")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))
    registry.classes.cache_clear()
    yield registry
    registry.classes.cache_clear()


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run ssmbench.cli.main(argv) in process -> (exit code, stdout, stderr); plain 200-column output."""
    from rich.console import Console

    import ssmbench.cli as cli

    def _run(*argv):
        monkeypatch.setattr(cli, "err", Console(stderr=True, width=200, color_system=None))
        monkeypatch.setattr(cli, "out", Console(width=200, color_system=None))
        with pytest.raises(SystemExit) as ei:
            cli.main([str(a) for a in argv])
        cap = capsys.readouterr()
        return ei.value.code, cap.out, cap.err

    return _run


def options(**given):
    """ssmbench.options.build_options with every flag left unset except ``given``, as the CLI
    passes them (a plan-level test of what a command line would run)."""
    from ssmbench.options import build_options

    flags = ("backend", "arch", "preset", "d_model", "layers", "d_state", "d_conv", "expand", "vocab", "headdim", "ngroups", "chunk_size")
    flags += ("batch", "seq_len", "dtype")
    flags += ("scan", "mode", "warmup", "min_iters", "min_time", "repeats", "timeout", "memory_limit")
    return build_options(**{**dict.fromkeys(flags), "quick": False, "seed": 0, **given})


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)


def pytest_report_header(config):
    return f"python {sys.version.split()[0]}"
