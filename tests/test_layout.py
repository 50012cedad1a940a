"""The package's layout: every module's imports (module level and inside functions alike) form a graph without
a cycle, so each module can be read knowing only what lies below it; and the subpackages keep their roles."""
from __future__ import annotations

import ast
from pathlib import Path

import fastdiff

PACKAGE = Path(fastdiff.__file__).parent


def module_name(path: Path) -> str:
    parts = ("fastdiff",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "_csrc" not in p.parts}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The fastdiff modules `name` imports, anywhere in its code: `from .x import y` is an edge to x.y when that is
    a module, else to x."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "fastdiff.sampling.loop" in graph and graph["fastdiff.sampling.front"]  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_front_doors_import_the_sampling_features():
    """The engine (plan, loop) imports nothing above it; guidance and CUDA graphs are reached from the front door."""
    graph = import_graph()
    engine = {"fastdiff.sampling.plan", "fastdiff.sampling.loop"}
    features = {"fastdiff.sampling.front", "fastdiff.sampling.graph", "fastdiff.sampling.guidance",
                "fastdiff.sampling.inpainting", "fastdiff.sampling.general", "fastdiff.sampling.capture"}
    for module in engine:
        assert not graph[module] & features, f"{module} imports {sorted(graph[module] & features)}"
    assert graph["fastdiff.sampling.plan"].isdisjoint({"fastdiff.sampling.loop", "fastdiff.ops"}), \
        "the plan is the leaf: host arithmetic only"


def test_ops_never_import_the_samplers():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("fastdiff.ops"):
            above = {t for t in targets if t.startswith("fastdiff.sampling") or t in ("fastdiff", "fastdiff.training")}
            assert not above, f"{module} imports {sorted(above)}"
