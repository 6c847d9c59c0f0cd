"""A trained stage as a deployable weights file: its network, what data it expects, where it came from.

:func:`package_run` reads a run directory's best checkpoint and writes a safetensors file
(:mod:`kdrecon.models.weights`) whose ``data`` metadata holds everything :mod:`reconstruct
<kdrecon.deployment.reconstruct>` needs to apply it to new data: the task, the acceleration, the
exact sampling mask (sampled rows and columns of the un-centred ``(H, W)`` mask, so line masks and
the low-pass box of super-resolution are both one outer product) and the intensity normalisation.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((6, 4), np.float32); mask[[0, 1, 5]] = 1
    >>> description = describe_mask(mask)
    >>> description["rows"], np.array_equal(mask_from_description(description), mask)
    ([0, 1, 5], True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from kdrecon.data.dataset import load_split
from kdrecon.models.weights import WeightsInfo, save_weights
from kdrecon.training.checkpoint import load_model, resolve_checkpoint
from kdrecon.training.config import trained_on

#: How every network is fed: each slice scaled to max 1 (the papers' recipe), rescaled on output.
NORMALISATION = "each slice divided by its maximum magnitude; the output multiplied back"


def describe_mask(mask: np.ndarray) -> dict[str, Any]:
    """An un-centred ``(H, W)`` 0/1 mask that is an outer product of sampled rows and columns, as indices."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    description = {"layout": "uncentred", "shape": list(mask.shape), "rows": rows.tolist(), "columns": columns.tolist()}
    if not np.array_equal(mask_from_description(description), mask):
        raise ValueError("the mask is not a product of sampled rows and columns; it cannot be described by indices")
    return description


def mask_from_description(description: dict[str, Any]) -> np.ndarray:
    """The un-centred float32 mask of :func:`describe_mask`."""
    rows, columns = np.zeros(description["shape"][0], bool), np.zeros(description["shape"][1], bool)
    rows[description["rows"]], columns[description["columns"]] = True, True
    return np.outer(rows, columns).astype(np.float32)


def describe_run(run_or_checkpoint: Path) -> tuple[nn.Module, WeightsInfo]:
    """The best network of a run (or a checkpoint) and the description a weights file would carry.

    The mask and image size are read from the dataset it was trained on, which must still exist.
    """
    model, payload = load_model(run_or_checkpoint)
    recorded = trained_on(payload)
    data = load_split(recorded.dataset, "validation", recorded.acceleration, recorded.task, recorded.image)
    description = {"task": recorded.task, "image": recorded.image, "acceleration": data.acceleration,
                   "image_shape": list(data.image_shape), "mask": describe_mask(data.mask.numpy()), "normalisation": NORMALISATION}
    source = {"checkpoint": str(resolve_checkpoint(run_or_checkpoint)), "best_epoch": payload.get("best_epoch"),
              "seed": payload.get("config", {}).get("seed"), "dataset": recorded.dataset,
              "precision": payload.get("precision")}
    return model, WeightsInfo(Path(run_or_checkpoint), payload["model"], description, source)


def package_run(run_dir: Path, output: Path, provenance: dict[str, Any] | None = None) -> WeightsInfo:
    """Write the best checkpoint of ``run_dir`` as a weights file (``provenance`` added to its own)."""
    model, info = describe_run(run_dir)
    info = WeightsInfo(Path(output), info.model, info.data, {**info.provenance, **(provenance or {})})
    save_weights(output, model, info.model, info.data, info.provenance)
    return info
