"""The house rules, checked on the source: no import circles between files or folders
(every import of the package counts: module level, inside functions, under
TYPE_CHECKING), the package's own imports at module level, and no module over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fmri2img"
MAX_LINES = 500


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[int, bool, str]]:
    """(line, at module level, imported package module) for every import of the package in
    ``module``; imports under a module-level ``if`` (TYPE_CHECKING) count as module level."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = _resolve(name)
            if target and target != module:
                out.append((node.lineno, id(node) in top, target))
    return out


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for _, _, target in _imports(m):
            # a package's __init__ handing on its own submodules is not a dependency
            if path.name == "__init__.py" and target.startswith(m + "."):
                continue
            edges[m].add(target)
    return edges


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else module  # fmri2img.<folder>.x; top files stand alone


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_files() -> None:
    assert _cycles(_graph()) == []


def test_no_import_circle_between_folders() -> None:
    folders: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        folders.setdefault(_folder(m), set())
        for t in targets:
            if _folder(t) != _folder(m):
                folders[_folder(m)].add(_folder(t))
                folders.setdefault(_folder(t), set())
    assert _cycles(folders) == []


def test_training_imports_no_models() -> None:
    """The training loop takes any nn.Module: it must not know the package's models."""
    bad = [(m, t) for m, ts in _graph().items() if _folder(m) == "training"
           for t in ts if _folder(t) == "models"]
    assert bad == []


def test_package_imports_stand_at_module_level() -> None:
    """Imports of the package's own modules inside functions hide the graph."""
    hidden = [f"{MODULES[m].relative_to(SRC)}:{line} imports {target}"
              for m in MODULES for line, at_top, target in _imports(m) if not at_top]
    assert hidden == []


def test_modules_are_under_the_size_limit() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in MODULES.values()}
    assert {k: n for k, n in sizes.items() if n > MAX_LINES} == {}
