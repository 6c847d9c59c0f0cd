"""Imports go one way: mri → data → models → distillation → training → evaluation → report → experiment → deployment → demo → cli."""

import ast
from pathlib import Path

import kdrecon

ORDER = ["mri", "data", "models", "distillation", "training", "evaluation", "report", "experiment", "deployment", "demo",
         "cli"]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "kdrecon" or len(parts) < 2:
        return None
    return ORDER.index(parts[1]) if parts[1] in ORDER else None


def imported_modules(node: ast.AST, package: list[str]) -> list[str]:
    """The absolute names an import statement brings in; relative imports resolved against ``package``
    (the importing module's package), and ``from kdrecon import x`` read as importing ``kdrecon.x``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = package[: len(package) - node.level + 1] if node.level else []
    module = ".".join(base + ([node.module] if node.module else []))
    return [module] + [f"{module}.{alias.name}" for alias in node.names]


def test_every_package_has_a_layer():
    root = Path(kdrecon.__file__).parent
    packages = {path.parent.name for path in root.glob("*/__init__.py")} | {path.stem for path in root.glob("*.py")}
    assert packages - {"__init__", "__main__"} <= set(ORDER), sorted(packages - set(ORDER))


def test_no_module_imports_a_higher_layer():
    root = Path(kdrecon.__file__).parent
    violations = []
    for path in root.rglob("*.py"):
        parts = ["kdrecon", *path.relative_to(root).with_suffix("").parts]
        own = layer_of(".".join(parts))
        if own is None:
            continue
        package = parts[:-1]  # the module's package; for an __init__.py, the package it initialises
        for node in ast.walk(ast.parse(path.read_text())):
            for name in imported_modules(node, package):
                imported = layer_of(name)
                if imported is not None and imported > own:
                    violations.append(f"{path.relative_to(root)} imports {name}")
        source = path.read_text()
        assert "import_module(" not in source and "__import__(" not in source, f"{path}: imports by name escape this test"
    assert not violations, violations


def test_the_import_reader_resolves_relative_and_package_imports():
    statement = ast.parse("from ..cli import main\nfrom kdrecon import report").body
    assert imported_modules(statement[0], ["kdrecon", "training", "losses"])[0] == "kdrecon.training.cli"
    assert imported_modules(statement[0], ["kdrecon", "training"])[0] == "kdrecon.cli"
    assert "kdrecon.report" in imported_modules(statement[1], ["kdrecon", "data"])
    # In kdrecon/training/__init__.py (package kdrecon.training), ".." is kdrecon.
    assert imported_modules(statement[0], ["kdrecon", "training"]) == ["kdrecon.cli", "kdrecon.cli.main"]


def test_every_name_the_scripts_import_from_kdrecon_exists():
    """The measurement scripts in scripts/ run rarely (benchmarks, one machine kind at a time): a moved
    function must not leave them broken until the next machine that needs them."""
    import importlib

    scripts = Path(__file__).parents[1] / "scripts"
    missing = []
    for path in sorted(scripts.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdrecon"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        missing.append(f"{path.name}:{node.lineno}: {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("kdrecon"):
                        importlib.import_module(alias.name)
    assert not missing, missing
