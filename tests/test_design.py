"""The package's shape, checked: no import cycles (imports inside functions count), each package imports
only the packages below it, and the cost model never names a layer kind.

These read the source as data (``ast``), so a violation fails here with the offending module and line,
before it becomes a tangle that only shows at import time in some user's order of imports."""

from __future__ import annotations

import ast
from pathlib import Path

import paramcalc
from paramcalc.core import registry

SOURCE = Path(paramcalc.__file__).parent

# What each package may import (besides itself). Lower packages never reach up: the core knows no kind,
# the kinds know no cost model, the cost model knows only the core's description of each kind's work.
ALLOWED = {
    "core": set(),
    "layers": {"core"},
    "cost": {"core"},
    "frontends": {"core", "layers"},
    "io": {"core", "frontends"},
    "calibration": {"core", "io"},
    "analysis": {"core", "layers", "cost", "frontends"},
    "interfaces": {"core", "layers", "cost", "frontends", "io", "calibration", "analysis", "paramcalc"},
    "testing": {"core", "cost", "analysis"},
    "pytest_plugin": {"testing"},
    "paramcalc": {"core", "layers", "cost", "analysis"},
    "__main__": {"interfaces"},
    "profiles": set(),
}
# The one upward import, made inside the method that needs it: Estimate.summary() hands the estimate to
# the text renderer, which the CLI shares.
EXCEPTIONS = {("paramcalc.analysis.estimate", "paramcalc.interfaces.render")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        parts = ("paramcalc",) + path.relative_to(SOURCE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the file, at any depth, resolved to a module of ours."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                          for alias in node.names]
        else:
            continue
        for target in candidates:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            # a package's own __init__ runs before its modules anyway: importing it from inside is no edge
            if target in modules and target != name and not name.startswith(target + "."):
                targets.append((target, node.lineno))
    return targets


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    return {name: dict(_imports(name, path, modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "paramcalc"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles_even_through_imports_inside_functions():
    assert _cycles(_graph()) == []


def test_each_package_imports_only_the_packages_below_it():
    modules = _modules()
    graph = _graph()
    assert set(map(_package, modules)) <= set(ALLOWED), "a new package: say in ALLOWED what it may import"
    wrong = []
    for module, targets in graph.items():
        for target, line in targets.items():
            here, there = _package(module), _package(target)
            if here != there and there not in ALLOWED[here] and (module, target) not in EXCEPTIONS:
                wrong.append(f"{modules[module].relative_to(SOURCE)}:{line} {module} imports {target}")
    assert wrong == []


def _kind_switches(path: Path, kinds: set[str]) -> list[int]:
    """Lines that read a layer's ``kind`` or compare anything with a kind's name (``== "dense"``,
    ``in ("conv", "pool")``, a ``match`` case): the forms a switch on kinds takes."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr == "kind":
            found.append(node.lineno)
        elif isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                names = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                if any(isinstance(n, ast.Constant) and n.value in kinds for n in names):
                    found.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) and node.value.value in kinds:
            found.append(node.lineno)
    return sorted(found)


def test_the_switch_finder_finds_switches(tmp_path):
    source = tmp_path / "switch.py"
    source.write_text("def f(layer, k):\n"
                      "    if layer.kind: pass\n"
                      "    if k == 'dense': pass\n"
                      "    if k in ('conv', 'pool'): pass\n"
                      "    match k:\n"
                      "        case 'rnn': pass\n"
                      "    return {'dropout': 1}['dropout' if k else 'plain']\n", encoding="utf-8")
    assert _kind_switches(source, {"dense", "conv", "pool", "rnn", "dropout"}) == [2, 3, 4, 6]


def test_the_cost_model_never_switches_on_a_layer_kind():
    """FLOPs, memory and time come from each kind's own description of its work: a switch on a kind's
    name in the cost model is one a new kind would silently fall through."""
    kinds = set(registry.layer_kinds())
    assert {"dense", "conv", "rnn", "flatten"} <= kinds
    switches = [f"{path.relative_to(SOURCE)}:{line}" for path in sorted((SOURCE / "cost").glob("*.py"))
                for line in _kind_switches(path, kinds)]
    assert switches == []
