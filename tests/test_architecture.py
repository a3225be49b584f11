"""The layering of docs/architecture.md, checked on the source: module-level imports only point
inward, and there is no import cycle among module-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: package directory -> import name
TREES = {ROOT / "ptycho_k3": "ptycho_k3", ROOT / "physics": "ptycho_k3.physics",
         ROOT / "cli": "ptycho_k3.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for tree, name in TREES.items():
        for path in tree.rglob("*.py"):
            rel = path.relative_to(tree).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


MODULES = _modules()


def _top_level_imports(module: str, path: Path) -> set[str]:
    """Absolute names imported at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _internal(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


IMPORTS = {m: _top_level_imports(m, p) for m, p in MODULES.items()}


def test_physics_imports_nothing_of_the_package_above_it():
    for module, names in IMPORTS.items():
        if module.startswith("ptycho_k3.physics"):
            bad = {n for n in _internal(names) if not n.startswith("ptycho_k3.physics")}
            assert not bad, f"{module} imports {sorted(bad)}"
            frameworks = {n.split(".")[0] for n in names} & {"tensorflow", "torch", "jax"}
            assert not frameworks, f"{module} imports {sorted(frameworks)}"


def test_nothing_below_cli_imports_cli_and_nothing_below_workflows_imports_workflows():
    for module, names in IMPORTS.items():
        if module.startswith("ptycho_k3.cli"):
            continue
        bad = {n for n in _internal(names) if n.startswith("ptycho_k3.cli")}
        assert not bad, f"{module} imports {sorted(bad)}"
        if not module.startswith("ptycho_k3.workflows"):
            bad = {n for n in _internal(names) if n.startswith("ptycho_k3.workflows")}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_lowest_layer_and_data_do_not_import_keras_or_upper_layers():
    lowest = {"ptycho_k3.backend", "ptycho_k3.config", "ptycho_k3.atomic", "ptycho_k3.config_io",
              "ptycho_k3.errors", "ptycho_k3.logs"}
    upper = ("ptycho_k3.model", "ptycho_k3.layers", "ptycho_k3.train", "ptycho_k3.infer",
             "ptycho_k3.refine", "ptycho_k3.bundle", "ptycho_k3.workflows")
    for module in lowest | {m for m in MODULES if m.startswith("ptycho_k3.data")}:
        names = IMPORTS[module]
        assert "keras" not in {n.split(".")[0] for n in names}, f"{module} imports keras"
        bad = {n for n in _internal(names) if n.startswith(upper)}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_no_import_cycle_at_module_level():
    graph = {m: {n for n in _internal(IMPORTS[m]) if n != m} for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # A package importing its own submodules (its __init__) is not a cycle of layers.
            if node.startswith(nxt + ".") or nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
