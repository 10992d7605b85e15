"""The package's one-way layers (docs/design.md): a module imports only its own layer or lower ones,
and no two modules import each other, directly or through a chain (lazy imports inside functions count).

The package root is left out: it defines ``__version__`` and resolves the API names lazily (PEP 562),
so ``from edgeseg import __version__`` imports nothing else."""
from __future__ import annotations

import ast
from pathlib import Path

import edgeseg

ROOT = Path(edgeseg.__file__).parent

LAYERS = {
    "edgeseg.recipe": 1, "edgeseg.manifest": 1, "edgeseg.metrics": 1, "edgeseg.data": 1, "edgeseg.errors": 1,
    "edgeseg.fsutil": 1, "edgeseg.compat": 1, "edgeseg.ui": 1,
    "edgeseg.models": 2, "edgeseg.runtime": 2,
    "edgeseg.train": 3, "edgeseg.bench": 3, "edgeseg.apply": 3, "edgeseg.evaluation": 3,
    "edgeseg.export": 4,
    "edgeseg.api": 5,
    "edgeseg.cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    return None


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if name == "edgeseg":
            continue
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeseg"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("edgeseg"))
        graph[name] = {m for m in found if m != "edgeseg" and (ROOT.parent / m.replace(".", "/")).with_suffix(".py").exists()
                       or (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()}
    return graph


def test_every_module_has_a_layer():
    assert [m for m in _imports() if _layer(m) is None] == []


def test_imports_go_down_the_layers_only():
    upward = [f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
              for mod, deps in _imports().items()
              for dep in deps if _layer(dep) is not None and _layer(dep) > _layer(mod)]
    assert upward == []


def test_no_import_cycles():
    graph = _imports()
    cycles = []

    def visit(node, stack, done):
        for dep in graph.get(node, ()):
            if dep in stack:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in done:
                done.add(dep)
                visit(dep, stack + [dep], done)

    for start in graph:
        visit(start, [start], {start})
    assert cycles == []


def test_package_root_imports_nothing_at_import_time():
    import subprocess
    import sys

    code = "import sys, edgeseg; print(sorted(m for m in sys.modules if m.startswith('edgeseg')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['edgeseg']"
