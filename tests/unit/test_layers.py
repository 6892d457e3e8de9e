"""The package's layers, read from the source: no import cycles (deferred imports included), and the core
(`facegen.core`: face, models, methods, config) imports nothing of the platform layer (`facegen.cluster`: data, train,
eval, serving, the world, the job helpers) nor Ray, pandas or pyarrow — so the library can be used, and reasoned
about, without the platform. The folder tree is the rule: no list of exceptions."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "platform"
CORE = "facegen.core"
# The platform layer: Ray, storage and the jobs. The CLI (facegen.cli) is an entry point on top of both, like
# jobs/ and serve/; facegen/__init__.py names the library's public classes (lazily).
PLATFORM = ("facegen.cluster", "facegen.cli", "facegen.__main__")  # __main__: `python -m facegen`, the CLI
PLATFORM_LIBS = ("ray", "pandas", "pyarrow")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(nodes) -> set[str]:
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def module_level_imports(path: Path) -> set[str]:
    """Modules imported by statements that run at import time (not inside functions or classes' methods)."""
    return imported_modules(ast.parse(path.read_text()).body)


def all_imports(path: Path) -> set[str]:
    """Modules imported anywhere in the file, function-level imports (run on first use) included."""
    return imported_modules(ast.walk(ast.parse(path.read_text())))


def graph(imports=module_level_imports) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "facegen").rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = set()
        for imported in imports(path):
            if imported in files and imported != name:
                targets.add(imported)
            elif not imported.startswith("facegen"):
                targets.add(imported.split(".")[0])
        edges[name] = targets
    return edges


def is_platform(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PLATFORM)


def is_core(name: str) -> bool:
    return name == CORE or name.startswith(CORE + ".")


def test_no_import_cycles():
    """Among all imports, function-level ones included: a deferred import still ties the two modules together."""
    edges = graph(all_imports)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for start in edges:
        if start not in state:
            visit(start, [start])


def test_core_imports_no_platform_module():
    """Not at import time, and not inside a function either (a function-level import is still a dependency)."""
    bad = [(name, t) for name, targets in graph(all_imports).items() if is_core(name)
           for t in targets if not is_core(t) and (t.startswith("facegen") or t in PLATFORM_LIBS)]
    assert not bad, bad


def test_the_rule_is_checked_against_real_modules():
    edges = graph()
    assert "facegen.core.methods.dreamidentity.pipeline" in edges and "facegen.cluster.serving.ingress" in edges
    assert is_platform("facegen.cluster.serving.ingress") and not is_platform("facegen.core.config.data")
    assert "ray" in edges["facegen.cluster.serving.ingress"]  # the platform layer does import Ray
    assert is_core("facegen.core.config.data") and not is_core("facegen.cluster.data.build")


def test_every_module_lives_in_one_layer():
    """The tree shows the layers: every module is under core/ or cluster/, but the package's entry points."""
    loose = [name for name in graph() if not (is_core(name) or is_platform(name)) and name != "facegen"]
    assert not loose, loose
