"""The house rules of the source tree, checked on the AST (nothing is imported):

- no import cycles inside ``sensorml/``, ``firmware_bridge/`` and ``training/``, counting
  imports inside functions too (a lazy import that closes a cycle still ties two modules);
- no private name (``_x``) imported from another module;
- the edge (``sensorml/``, ``firmware_bridge/``) imports no training library at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sensorml", "firmware_bridge", "training")
TRAINING_ONLY = ("sklearn", "scipy", "pandas", "skl2onnx", "training")
#: the one command line mounts the training commands (``sensorml train``); training's CLI
#: module imports scikit-learn only inside the commands that need it
MOUNTS = {("sensorml.cli", "training.cli")}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def _imports(name: str, path: Path, mods: dict[str, Path]):
    """(target module, imported name or None) for every import in the file."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                yield (sub, None) if sub in mods else (mod, a.name)


def _graph():
    mods = _modules()
    edges, private, edge_bad = {}, [], []
    for name, path in mods.items():
        deps = set()
        for target, imported in _imports(name, path, mods):
            if target in mods and target != name:
                deps.add(target)
            if imported and imported.startswith("_") and not imported.startswith("__") \
                    and target != name and target.split(".")[0] in PACKAGES:
                private.append(f"{name} imports {imported} from {target}")
            if name.split(".")[0] in ("sensorml", "firmware_bridge") \
                    and target.split(".")[0] in TRAINING_ONLY and (name, target) not in MOUNTS:
                edge_bad.append(f"{name} imports {target}")
        edges[name] = deps
    return edges, private, edge_bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles():
    edges, _, _ = _graph()
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    _, private, _ = _graph()
    assert private == []


def test_the_edge_imports_no_training_library():
    _, _, edge_bad = _graph()
    assert edge_bad == []
