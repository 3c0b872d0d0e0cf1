"""The package's shape, checked from its source: imports point down the layers, none of
them (function-level ones included) forms a cycle, and no class grows past 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "twsip"

# Bottom up; a module may import from its own layer and the ones below it.
LAYERS = [
    ("twsip.outcome", "twsip.interfaces", "twsip.config", "twsip.lexical",
     "twsip.quiet_udp"),
    ("twsip.media",),  # below the dialogs, which will own one RTP endpoint per call
    ("twsip.sip",),
    ("twsip.manager", "twsip.testing"),
    ("twsip.flow",),
    ("twsip.report",),
    ("twsip.service", "twsip.__main__", "twsip.cli"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every twsip module `name` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def layer_of(name: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{name} is in no layer; add it to LAYERS")


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for name, targets in import_graph().items():
        if name == "twsip":  # the package's lazy public names span every layer
            continue
        wrong += [f"{name} -> {t}" for t in sorted(targets)
                  if t != "twsip" and layer_of(t) > layer_of(name)]
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from twsip.report.ladder import text_ladder\n"
                     "    from . import events\n")
    known = {"twsip.report.ladder", "twsip.flow.events", "twsip.flow.probe"}
    assert imports_of("twsip.flow.probe", probe, known) == {"twsip.report.ladder",
                                                            "twsip.flow.events"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_class_over_300_lines(name: str) -> None:
    path = modules()[name]
    tree = ast.parse(path.read_text(), str(path))
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > 300]
    assert long == []


def test_the_package_import_is_lazy() -> None:
    """`import twsip` must not import the reactor (the twistd plugin imports it first)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert all(getattr(node, "module", "") in ("__future__", "importlib", "typing")
               for node in top_level)
