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


def test_no_module_imports_a_higher_layer():
    root = Path(kdrecon.__file__).parent
    violations = []
    for path in root.rglob("*.py"):
        own = layer_of("kdrecon." + ".".join(path.relative_to(root).with_suffix("").parts))
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                imported = layer_of(name)
                if imported is not None and imported > own:
                    violations.append(f"{path.relative_to(root)} imports {name}")
    assert not violations, violations
