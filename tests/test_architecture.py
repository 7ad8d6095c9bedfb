"""The layering of docs/architecture.md, read from the code's own imports (ast).

Bottom: common/ (environment, settings, config, file contracts). Middle: pipelines/,
simulator/, trainer/, serving/, which import only the bottom and themselves. Top:
twotower/ (command line, handlers, demo, benchmarks), the only code that imports several
packages. No module imports itself back through others (no circles), one entry point
parses arguments, and the file-contract names are spelled in one module.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOTTOM = {"common"}
MIDDLE = {"pipelines", "simulator", "trainer", "serving"}
TOP = {"twotower"}
PACKAGES = BOTTOM | MIDDLE | TOP


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = _modules()


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """Project modules `path` imports anywhere in it (functions included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    top = module.split(".")[0]
    return "bottom" if top in BOTTOM else "middle" if top in MIDDLE else "top"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    package = module.split(".")[0]
    for target in GRAPH[module]:
        other = target.split(".")[0]
        if _layer(module) == "bottom":
            assert other in BOTTOM, f"{module} (bottom) imports {target}"
        elif _layer(module) == "middle":
            assert other in BOTTOM or other == package, (
                f"{module} ({package}, a middle package) imports {target}: the middle "
                "packages meet through files (common/contracts.py), the top wires them"
            )


def test_no_import_circles():
    # Depth-first search for a back edge; the package __init__ files hand nothing on.
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)


def test_the_graph_is_read():
    # The checks above would pass on an empty graph; these arrows are known to exist.
    assert "common.contracts" in GRAPH["trainer.export"]
    assert "serving.index_io" in GRAPH["twotower.wiring"]
    assert "simulator.world" in GRAPH["simulator.simulate"]


def test_one_entry_point_parses_arguments():
    parsers = sorted(
        name
        for name, path in MODULES.items()
        if any(
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "ArgumentParser"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert parsers == ["twotower.cli"]
    mains = sorted(name for name, p in MODULES.items() if '__name__ == "__main__"' in p.read_text())
    # Only the top runs as a program: the CLI, and the benchmarks' measured child processes.
    assert all(name.startswith("twotower") for name in mains), mains


# Names of the file contracts: each may be written as a literal in common/contracts.py only.
CONTRACT_LITERALS = {
    "manifest.json",
    "export_manifest.json",
    "run.json",
    "metrics.json",
    "item_catalog.jsonl",
    "item_frequency.tsv",
    "random_exposure.jsonl",
    "true_top_k.jsonl",
    "world.json",
    "world.npz",
    "user.",
    "serving_default",
    "item_embeddings.npy",
}


def test_contract_names_are_spelled_once():
    where: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in CONTRACT_LITERALS:
                where.setdefault(node.value, []).append(name)
    assert where, "no contract literal found at all: the scan is broken"
    assert {v: m for v, m in where.items() if set(m) != {"common.contracts"}} == {}
