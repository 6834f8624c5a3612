"""The layering the README's Development section states, enforced.

* The data plane (`tollway_dataplane`) and the operator (`tollway_operator`) never import each other; they meet
  in the shared packages: the config contract (`tollway_contract`) and the Kubernetes client (`tollway_kube`).
* The shared packages import neither plane, and nothing imports the composition layer (`tollway_cli`), which
  wires the planes into processes. The mock LLM stands alone.
* No import cycles between modules, counting imports inside functions (a lazy import hides a cycle, it does not
  remove it); only `if TYPE_CHECKING:` blocks are left out, because they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "tollway_dataplane": ROOT / "dataplane" / "tollway_dataplane",
    "tollway_contract": ROOT / "dataplane" / "tollway_contract",
    "tollway_kube": ROOT / "dataplane" / "tollway_kube",
    "tollway_mock": ROOT / "dataplane" / "tollway_mock",
    "tollway_operator": ROOT / "operator" / "tollway_operator",
    "tollway_cli": ROOT / "cli" / "tollway_cli",
}
# What each package may import, besides itself and third-party libraries.
ALLOWED = {
    "tollway_contract": set(),
    "tollway_kube": set(),
    "tollway_mock": set(),
    "tollway_dataplane": {"tollway_contract", "tollway_kube"},
    "tollway_operator": {"tollway_contract", "tollway_kube"},
    "tollway_cli": {"tollway_contract", "tollway_kube", "tollway_dataplane", "tollway_operator", "tollway_mock"},
}


def _module_name(package: str, path: Path) -> str:
    relative = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *relative.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules a module imports at run time (anywhere in it)."""
    found: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules: dict[str, tuple[ast.AST, bool]] = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            modules[_module_name(package, path)] = (ast.parse(path.read_text()), path.name == "__init__.py")
    graph: dict[str, set[str]] = {}
    for name, (tree, is_package) in modules.items():
        graph[name] = {target for target in _imports(tree, name, is_package) if target in modules and target != name}
    return graph


def test_planes_meet_only_in_the_shared_packages() -> None:
    wrong = []
    for module, targets in sorted(_graph().items()):
        package = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "layering broken:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle of design; leave those edges out.
    edges = {m: {t for t in ts if not (m == t.rsplit(".", 1)[0] and m in graph)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            strongconnect(node)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
