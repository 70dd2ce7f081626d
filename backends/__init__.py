"""Backend registry: name -> class, availability, and resolving --backend values.

One folder per framework (torch/, jax/, tf/), each exporting ``BACKENDS``; a framework's
package is imported lazily (each imports its framework). Extra modules that define
``BACKENDS = (cls, ...)`` can be added with SSMBENCH_PLUGINS=module[,module] (the tests use
this for fake backends that raise OOM, crash or hang); worker processes inherit it.
"""

from __future__ import annotations

import importlib
import os
from functools import cache

from ssmbench.interface import Availability, Backend

FRAMEWORK_MODULES = {  # framework prefix -> its package (one folder each, exporting BACKENDS)
    "torch": "ssmbench.backends.torch",
    "jax": "ssmbench.backends.jax",
    "tf": "ssmbench.backends.tf",
}
# Every name SPEC knows, with the module that will provide it; names whose module does not
# exist yet are reported as unavailable ("not implemented in this version") rather than unknown.
KNOWN_NAMES = ("torch-cpu", "torch-cuda", "torch-mps", "jax-cpu", "jax-cuda", "jax-metal", "tf-cpu", "tf-gpu", "mlx-cpu", "mlx-gpu")


def _plugins() -> list[str]:
    return [m.strip() for m in os.environ.get("SSMBENCH_PLUGINS", "").split(",") if m.strip()]


def _load(modules) -> dict[str, type[Backend]]:
    found: dict[str, type[Backend]] = {}
    for mod in modules:
        for cls in importlib.import_module(mod).BACKENDS:
            found[cls.name] = cls
    return found


@cache
def classes() -> dict[str, type[Backend]]:
    """Every implemented backend class (imports every framework module)."""
    return _load([*FRAMEWORK_MODULES.values(), *_plugins()])


def names() -> list[str]:
    """Every backend name ssmbench knows, implemented or not, in a stable order."""
    impl = classes()
    return list(dict.fromkeys([*KNOWN_NAMES, *impl]))


def availability(name: str) -> Availability:
    cls = classes().get(name)
    if cls is None:
        fw = name.split("-")[0]
        return Availability(False, f"the {fw} backend is not part of this ssmbench version yet", "upgrade ssmbench")
    try:
        return cls.availability()
    except Exception as e:  # a broken framework install must not crash `ssmbench backends`
        return Availability(False, f"{type(e).__name__}: {e}".splitlines()[0], cls.install_hint)


def available() -> list[str]:
    """Available backends, fastest first (GPU backends before CPU ones)."""
    impl = classes()
    ok = [n for n in impl if availability(n).available]
    return sorted(ok, key=lambda n: -impl[n].priority)


def get_class(name: str) -> type[Backend]:
    """One backend's class, importing only its framework's module (workers use this)."""
    mod = FRAMEWORK_MODULES.get(name.split("-")[0])
    cls = _load([mod] if mod else []).get(name) or _load(_plugins()).get(name)
    if cls is None:
        raise KeyError(f"unknown backend {name!r}")
    return cls


def get(name: str) -> Backend:
    return get_class(name)()


def resolve(values: list[str]) -> list[str]:
    """--backend values (repeatable, comma lists, 'all', 'auto') -> backend names, in order.

    Raises ValueError naming an unknown value and the allowed ones."""
    allowed = names()
    out: list[str] = []
    for v in values or ["auto"]:
        for part in (p.strip() for p in v.split(",")):
            if not part:
                continue
            if part == "all":
                out += available()
            elif part == "auto":
                av = available()
                out += av[:1]
            elif part in allowed:
                out.append(part)
            else:
                raise ValueError(f"unknown backend {part!r}; allowed: {', '.join(allowed)}, all, auto")
    return list(dict.fromkeys(out))
