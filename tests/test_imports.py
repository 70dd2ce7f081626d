"""The package's own imports: no cycles among its modules, and no private names taken from
another module.

Read from the source (ast), not by importing it: every import counts, those inside functions
included, and no framework needs to be installed. The package is ssmbench/, with backends/ as
ssmbench.backends and suites/ as ssmbench.suites (pyproject's package-dir). Tests may reach into
the module under test; only the package is scanned.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"ssmbench": REPO / "ssmbench", "ssmbench.backends": REPO / "backends", "ssmbench.suites": REPO / "suites"}


def modules() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package."""
    out = {}
    for package, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


MODULES = modules()


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def scan(name: str, path: Path, text: str | None = None) -> tuple[set[str], list[str]]:
    """(the package's modules this one imports, its uses of another module's private names).
    ``text``: the module's source, where it is not the file's."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    where = path.relative_to(REPO)
    deps, bad, aliases = set(), [], {}  # aliases: a local name bound to one of the package's modules
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    deps.add(a.name)
                    if a.asname:
                        aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base not in MODULES:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:  # from package import module
                    deps.add(sub)
                    aliases[a.asname or a.name] = sub
                    continue
                deps.add(base)
                if private(a.name) and base != name:
                    bad.append(f"{where}:{node.lineno}: from {base} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if private(node.attr) and target != name:
                bad.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr} ({target})")
    deps.discard(name)
    return deps, bad


def graph() -> tuple[dict[str, set[str]], list[str]]:
    edges, bad = {}, []
    for name, path in MODULES.items():
        edges[name], b = scan(name, path)
        bad += b
    return edges, bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_package():
    edges, _ = graph()
    assert {"ssmbench.cli", "ssmbench.report", "ssmbench.backends", "ssmbench.suites.scan"} <= set(edges)
    assert "ssmbench.fmt" in edges["ssmbench.report"] and "ssmbench.sections" in edges["ssmbench.report"]  # one inside a function


def test_no_import_cycles():
    edges, _ = graph()
    assert cycles(edges) == []


def test_the_report_modules_depend_one_way():
    """fmt <- sections <- report -> html: the page converter and the formatting know no report."""
    edges, _ = graph()
    assert edges["ssmbench.html"] == set()
    for module in ("ssmbench.fmt", "ssmbench.merge", "ssmbench.sections", "ssmbench.console", "ssmbench.plots", "ssmbench.analysis"):
        assert "ssmbench.report" not in edges[module], module


def test_no_private_names_imported_across_modules():
    _, bad = graph()
    assert bad == [], "\n".join(bad)


def test_a_cycle_and_a_private_import_are_caught():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    text = """
def f():
    from .sections import _who, sections
    from . import fmt
    from .report import _own  # its own name: fine
    return fmt._unfinished(None), fmt.__name__
"""
    deps, bad = scan("ssmbench.report", ROOTS["ssmbench"] / "report.py", text)
    assert deps == {"ssmbench.sections", "ssmbench.fmt"}
    assert bad == [
        "ssmbench/report.py:3: from ssmbench.sections import _who",
        "ssmbench/report.py:6: fmt._unfinished (ssmbench.fmt)",
    ]
