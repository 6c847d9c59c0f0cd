"""Checkpoints as plain data: tensors, numbers, strings, lists and dicts only.

They are written atomically with :func:`torch.save` and read with ``weights_only=True``, so
loading one never unpickles code (the papers' checkpoints held argparse objects).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdrecon.data.dataset import dataset_identity, same_data
from kdrecon.data.layout import atomic_path
from kdrecon.models import build_model
from kdrecon.models.weights import load_by_name

FORMAT = "kdrecon-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format and version tags) to ``path`` atomically."""
    with atomic_path(Path(path)) as temporary:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, temporary)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        # weights_only names the class or function ("GLOBAL") it refused to import
        if isinstance(error, pickle.UnpicklingError) and "unsupported global" in str(error).lower():
            raise ValueError(f"{path}: holds pickled objects other than tensors and plain data, which could run code "
                             "when loaded; refused") from None
        raise ValueError(f"{path}: not a readable kdrecon checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a kdrecon checkpoint")
    return payload


#: The folder of a run directory that holds its checkpoints, ``best.pt`` and ``last.pt``.
CHECKPOINTS = "checkpoints"


def checkpoint_path(run_dir: Path, which: str = "best") -> Path:
    """Where a run directory keeps its ``best`` or ``last`` checkpoint (whether or not it exists)."""
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def stopped_early(run_or_checkpoint: Path) -> str | None:
    """Why a run directory's network is not the one its training set out to make: its training
    stopped (interrupted, failed) before the planned last epoch. None for a finished run, and for a
    checkpoint file, which is taken as the user chose it.
    """
    last = checkpoint_path(run_or_checkpoint, "last")
    if not Path(run_or_checkpoint).is_dir() or not last.is_file():
        return None
    payload = load_checkpoint(last)
    planned = payload.get("config", {}).get("optimization", {}).get("epochs")
    epoch = payload.get("epoch")
    if isinstance(planned, int) and isinstance(epoch, int) and epoch < planned:
        return f"its training stopped at epoch {epoch} of {planned}"
    return None


def refuse_unfinished(run_or_checkpoint: Path, where: str) -> None:
    """Refuse a run directory whose training stopped early (:func:`stopped_early`): its network would
    be used, scored or shipped as the trained one. Naming one of its checkpoint files uses it as it is."""
    problem = stopped_early(run_or_checkpoint)
    if problem is not None:
        raise ValueError(f"{where}: {run_or_checkpoint}: {problem}; finish it (run its command again, it resumes), or "
                         f"give one of its checkpoint files, e.g. {checkpoint_path(run_or_checkpoint, 'best')}, "
                         "to use it as it is")


def resolve_checkpoint(run_or_checkpoint: Path, which: str = "best") -> Path:
    """A checkpoint file, given the file itself or a run directory (``best`` or ``last``)."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        path = checkpoint_path(path, which)
        if not path.is_file() and path.parent.is_dir():  # a run directory: say what it lacks and holds
            present = sorted(p.name for p in path.parent.glob("*.pt"))
            held = f"it holds {', '.join(present)}" if present else "no epoch has finished"
            raise ValueError(f"{run_or_checkpoint}: the run directory has no {path.relative_to(run_or_checkpoint)} ({held})")
    if not path.is_file():
        raise ValueError(f"{run_or_checkpoint}: no checkpoint found (expected a .pt file or a run directory)")
    return path


def load_model(
    run_or_checkpoint: Path, which: str = "best", map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint (or a run's best/last checkpoint), in eval mode.

    Returns the model and the whole checkpoint payload (config, history, epoch, …).
    """
    path = resolve_checkpoint(run_or_checkpoint, which)
    payload = load_checkpoint(path, map_location)
    spec = payload.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{path}: the checkpoint does not say which model it holds")
    model = build_model(spec["name"], **spec.get("options", {}))
    try:
        model.load_state_dict(payload["modules"]["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit {spec['name']} ({str(error).splitlines()[0]})") from None
    return model.eval(), payload


def initialise_from(model: nn.Module, run_or_checkpoint: Path, which: str = "best") -> list[str]:
    """Copy every tensor of ``model`` from a trained network's checkpoint, by name (fine-tuning).

    Strict, as the SFT initialisation is: a tensor of ``model`` missing from the checkpoint, one
    of another shape, or one in the checkpoint that ``model`` lacks is an error naming it.
    Returns the names copied.
    """
    path = resolve_checkpoint(run_or_checkpoint, which)
    source = load_checkpoint(path).get("modules", {}).get("model")
    if not isinstance(source, dict):
        raise ValueError(f"{path}: the checkpoint holds no model weights")
    return load_by_name(model, source, f"init_from {path}")


#: The checkpoint key holding :func:`kdrecon.data.dataset.dataset_identity` of the data a network was trained on.
DATA_IDENTITY = "data_identity"


def data_record(dataset: str | Path, loaded_from_config: bool) -> dict[str, str]:
    """``{DATA_IDENTITY: ...}`` for a checkpoint when the training data was loaded from ``dataset``
    (none when the caller passed slices in memory, which the path does not describe)."""
    return {DATA_IDENTITY: dataset_identity(dataset)} if loaded_from_config else {}


def check_same_data(payload: dict[str, Any], dataset: str | Path, source: str | Path) -> None:
    """Refuse ``dataset`` as the data the checkpoint ``payload`` (of ``source``) was trained on when the
    path now holds other data: prepared again with other options, or a relative path read from
    another working directory."""
    recorded = payload.get(DATA_IDENTITY)
    if recorded is not None and not same_data(recorded, dataset_identity(dataset)):
        raise ValueError(f"{source}: {dataset} does not hold the data it was trained on (prepared again with other "
                         "options, or the path is relative to another directory); name the dataset to use explicitly")
