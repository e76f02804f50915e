"""The house: featx's subpackages import only downwards (docs/architecture.md's map) and no module imports itself
back through others, counting imports inside functions and under TYPE_CHECKING (issue #26)."""
import ast
from pathlib import Path

import featx

ROOT = Path(featx.__file__).parent
# each folder, and the folders it may import from (the map in docs/architecture.md)
MAY_IMPORT = {
    "images": set(),
    "backbones": {"images"},
    "reports": {"images"},
    "features": {"backbones", "images"},
    "viz": {"features", "backbones", "images"},
    "classify": {"features", "reports", "backbones", "images"},
    "finetuning": {"classify", "features", "reports", "backbones", "images"},
    "auditing": {"classify", "features", "reports", "backbones", "images"},
    "comparing": {"classify", "features", "reports", "backbones", "images"},
    "exploring": {"auditing", "classify", "features", "reports", "backbones", "images"},
}
TOP = {"errors", "names", "outputs", "_lazy", "_moved", "datasets", "__init__"}  # loose modules, importable from anywhere


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every featx module `path` imports, wherever the import statement is."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("featx")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("featx"):
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names if (ROOT.parent / f"{base}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else "top"


def test_folders_import_only_downwards():
    wrong = []
    for module, targets in graph().items():
        here = folder(module)
        if here == "top":
            continue
        for target in targets:
            there = folder(target)
            if there not in ("top", here) and there not in MAY_IMPORT[here]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    edges = {m: {t for t in ts if not t.endswith(".__init__") and t != "featx"} for m, ts in edges.items()}
    state, cycles = {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # a package's __init__ names its modules only lazily (strings), so package -> module edges are not imports
    assert [c for c in cycles if not any(m.count(".") == 1 and m.split(".")[1] in MAY_IMPORT for m in c)] == []


def test_at_most_eight_loose_modules():
    assert len(list(ROOT.glob("*.py"))) <= 8


def test_every_subpackage_is_installed():
    """pyproject.toml names its packages: a subpackage missing there imports in a checkout but not once installed."""
    import tomllib

    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {f"featx.{p.parent.name}" for p in ROOT.glob("*/__init__.py")} | {"featx", "featx.cli"}
    assert found == listed
