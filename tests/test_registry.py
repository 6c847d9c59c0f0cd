"""The KD methods are one registry: every list of method names derives from it."""

import ast
import re
from pathlib import Path

import pytest

import kdrecon
from kdrecon.cli import build_parser
from kdrecon.distillation.losses import FEATURE_LOSSES, METHOD_NAMES, method_label
from kdrecon.experiment.config import load_experiment
from kdrecon.training.config import ConfigError, DistillConfig, validate


def test_every_registered_method_is_accepted_everywhere_and_labelled():
    distill_help = build_parser()._subparsers._group_actions[0].choices["distill"].format_help()
    for name, cls in FEATURE_LOSSES.items():
        assert cls.name == name and method_label(name) not in ("", "feature loss"), name
        assert validate(DistillConfig, {"teacher": "t", "method": name}).method == name
        assert load_experiment("demo", {"methods": [name]}).methods == [name]
        assert name in distill_help, name
    with pytest.raises(ConfigError, match="method: unknown method 'kd'"):
        validate(DistillConfig, {"teacher": "t", "method": "kd"})


def _docstring_lines(source: str) -> set[int]:
    """Line numbers of a module's docstrings (their examples may name a method, as a user would)."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            first = node.body[0]
            lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def test_no_module_outside_the_losses_spells_a_method_name():
    root = Path(kdrecon.__file__).parent
    spelled = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(n) for n in METHOD_NAMES))
    offenders = []
    for path in root.rglob("*.py"):
        if "losses" in path.parts:
            continue
        source = path.read_text()
        documentation = _docstring_lines(source)
        offenders += [f"{path.relative_to(root)}:{number}" for number, line in enumerate(source.splitlines(), start=1)
                      if spelled.search(line) and number not in documentation and not line.lstrip().startswith("#")]
    assert not offenders, offenders
