"""Deployable weight files: safetensors with the network's description beside the tensors.

A weights file holds the tensors of one network (no optimiser, scheduler or random state: those
stay in the training checkpoints) and, in the safetensors header's string metadata, what is needed
to use it: ``model`` (name and options, e.g. ``{"name": "D3C5", "options": {"channels": 32}}``)
and ``data`` (task, acceleration, mask, image size, normalisation), plus free-form provenance.
The header is JSON, so any safetensors reader (Python, Rust, JavaScript) sees them without
kdrecon::

    python -c "from safetensors import safe_open; print(safe_open('m.safetensors', 'pt').metadata())"

safetensors never executes code on load; a file that is not safetensors (a pickle renamed
``.safetensors``, say) is refused before anything is built.

Example:
    >>> import tempfile, pathlib
    >>> from kdrecon.models import build_model
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "student.safetensors"
    >>> save_weights(path, build_model("D2C3", channels=4), {"name": "D2C3", "options": {"channels": 4}}, {"acceleration": "4x"})
    >>> model, info = load_weights(path)
    >>> info.model["name"], info.data["acceleration"], sum(p.numel() for p in model.parameters())
    ('D2C3', '4x', 231)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
import torch
from torch import nn

from kdrecon.data.layout import atomic_path, current_umask
from kdrecon.models.registry import build_model

FORMAT = "kdrecon-weights"
SUFFIX = ".safetensors"
#: The provenance key naming the subjects a network was trained on and their source
#: (:meth:`kdrecon.data.subjects.SplitSubjects.as_record`), so evaluation can refuse to score them.
TRAINING_SUBJECTS = "training_subjects"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about its network: ``model`` (name, options), ``data``, ``provenance``."""

    path: Path
    model: dict[str, Any]
    data: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def image_channels(self) -> int:
        """1 for a network of magnitude images, 2 for one of complex images (:mod:`kdrecon.mri.channels`)."""
        return self.model.get("options", {}).get("image_channels", 1)


def save_weights(path: Path, model: nn.Module, spec: dict[str, Any], data: dict[str, Any],
                 provenance: dict[str, Any] | None = None) -> None:
    """Write ``model``'s tensors and its description atomically to ``path`` (a ``.safetensors`` file)."""
    tensors = {name: tensor.detach().float().contiguous().cpu() for name, tensor in model.state_dict().items()}
    metadata = {"format": FORMAT, "model": json.dumps(spec), "data": json.dumps(data),
                "provenance": json.dumps(provenance or {})}
    with atomic_path(Path(path)) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
        temporary.chmod(0o666 & ~current_umask())  # save_file makes an owner-only file


def read_weights(path: Path) -> tuple[dict[str, Any], WeightsInfo]:
    """The tensors and description of a weights file; anything but kdrecon safetensors is refused."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a safetensors weights file ({str(error).splitlines()[0]}); "
                         "kdrecon does not load pickled weights from untrusted files") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: a safetensors file without kdrecon's description of the network")
    try:
        info = WeightsInfo(path, *(json.loads(metadata[key]) for key in ("model", "data", "provenance")))
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: malformed kdrecon metadata ({error})") from None
    return tensors, info


def load_weights(path: Path) -> tuple[nn.Module, WeightsInfo]:
    """Build the network a weights file describes and load its tensors (every one, by name), in eval mode."""
    tensors, info = read_weights(path)
    model = build_model(info.model["name"], **info.model.get("options", {}))
    load_by_name(model, tensors, f"{path} ({info.model['name']})")
    return model.eval(), info


def load_by_name(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy every tensor of ``model`` from ``tensors`` by name; a tensor missing, of another shape, with
    NaN or infinite values, or one ``model`` lacks is an error naming it and ``source``. Returns the
    names copied."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in tensors]
    unexpected = sorted(set(tensors) - set(expected))
    misshapen = [name for name in expected if name in tensors and tensors[name].shape != expected[name].shape]
    for problem, names in (("is missing", missing), ("is not in the network", unexpected), ("has another shape", misshapen)):
        if names:
            raise ValueError(f"{source}: tensor {names[0]} {problem} ({len(names)} such); is it the same network?")
    non_finite = [name for name in expected if tensors[name].is_floating_point() and not torch.isfinite(tensors[name]).all()]
    if non_finite:  # a diverged run's weights: every output would be NaN
        raise ValueError(f"{source}: tensor {non_finite[0]} has NaN or infinite values ({len(non_finite)} such)")
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(tensors[name])
    return list(expected)
