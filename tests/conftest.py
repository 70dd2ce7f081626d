import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


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
def rng():
    import numpy as np

    return np.random.default_rng(12345)


def pytest_report_header(config):
    return f"python {sys.version.split()[0]}"
