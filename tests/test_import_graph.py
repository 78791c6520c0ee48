"""The modules of `jobkit` import each other without circles, TYPE_CHECKING and function-level
imports included, and the two public surfaces are what they say."""

from __future__ import annotations

import ast
from pathlib import Path

import jobkit
from jobkit import spi

PACKAGE = Path(jobkit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The jobkit modules `path` imports, a package's __init__ included when a submodule of it
    is imported from outside the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for end in range(2, len(parts) + 1):  # jobkit.a, jobkit.a.b, ...
                candidate = ".".join(parts[:end])
                if candidate in modules and not (name + ".").startswith(candidate + "."):
                    found.add(candidate)  # (a module's own packages are loaded before it)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, name, modules) for name, path in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_jobkit_modules_import_each_other_without_circles() -> None:
    assert cycles(graph()) == []


def test_core_modules_never_import_the_package_root_or_spi() -> None:
    """`jobkit` and `jobkit.spi` only re-export; a core module importing them closes a circle."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if module_name(path) in ("jobkit", "jobkit.spi"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("jobkit", "jobkit.spi"):
                offenders.append(f"{module_name(path)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(
                a.name in ("jobkit", "jobkit.spi") for a in node.names
            ):
                offenders.append(f"{module_name(path)}:{node.lineno}")
    assert offenders == []


def test_the_application_api_leaves_adapter_interfaces_to_spi() -> None:
    for name in ("Transport", "Backend", "TransportBackend", "Envelope", "JobStore", "Delivery"):
        assert not hasattr(jobkit, name), name
        assert hasattr(spi, name), name
    for name in ("App", "JobHandle", "RetryPolicy", "Retry", "Reject", "current_job"):
        assert hasattr(jobkit, name), name
    assert set(jobkit.__all__).isdisjoint(spi.__all__)
