"""The shape of the code: dependencies run one way, face3d <- ganrefine <- facesynth, with no
import cycle anywhere (imports inside functions count), no private name imported from another
module, and every package module importable on its own. Read from the source with `ast`."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: each package and the packages it may import, in the one direction the layers allow
LAYERS = {"face3d": set(), "ganrefine": {"face3d"}, "facesynth": {"face3d", "ganrefine"}}


def package_modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


MODULES = package_modules()


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def internal_target(name: str) -> str | None:
    """The package module an import names (a submodule import counts as its module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for target, names, _ in imports_of(path):
            for full in [f"{target}.{n}" for n in names] + [target]:
                t = internal_target(full)
                if t and t != m and not (MODULES[m].name == "__init__.py" and t.startswith(m + ".")):
                    graph[m].add(t)
                    break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_layers_import_one_way():
    wrong = []
    for m, targets in import_graph().items():
        layer = m.split(".")[0]
        wrong += [f"{m} -> {t}" for t in targets if t.split(".")[0] not in LAYERS[layer] | {layer}]
    assert wrong == []


def test_no_private_name_imported_across_modules():
    wrong = []
    for m, path in MODULES.items():
        for target, names, line in imports_of(path):
            if internal_target(target) is None:
                continue
            if any(part.startswith("_") and part != "__init__" for part in target.split(".")):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports module {target}")
            wrong += [f"{path.relative_to(ROOT)}:{line} imports {target}.{n}" for n in names
                      if n.startswith("_") and internal_target(target) != m]
    assert wrong == []


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The walk itself: a made-up graph with a cycle is caught, and a private name is one."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from face3d.render import _private\n")
    assert imports_of(f) == [("face3d.render", ["_private"], 2)]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


#: the longest a function of the packages may be, in lines (docstring and comments included)
MAX_FUNCTION_LINES = 100


def test_no_function_over_100_lines():
    long = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_imports_inside_functions_say_why():
    """Imports sit at module top; one inside a function has a comment with the word "deferred"
    (on its line or the three above) saying what its import would cost at the top."""
    silent = []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                i = node.lineno - 1
                if not any("deferred" in line for line in lines[max(0, i - 3):i + 1]):
                    silent.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[i].strip()}")
    assert silent == []
