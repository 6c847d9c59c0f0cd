"""The KD methods are one registry: every list of method names derives from it."""

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


def test_no_module_outside_the_losses_spells_a_method_name():
    root = Path(kdrecon.__file__).parent
    spelled = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(n) for n in METHOD_NAMES if n != "at"))
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py") if "losses" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if spelled.search(line) and not line.lstrip().startswith(("#", ">>>"))
    ]
    assert not offenders, offenders
