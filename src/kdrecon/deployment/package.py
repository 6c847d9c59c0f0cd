"""A trained stage as a deployable weights file: its network, what data it expects, where it came from.

:func:`package_run` reads a run directory's best checkpoint and writes a safetensors file
(:mod:`kdrecon.models.weights`) whose ``data`` metadata holds everything :mod:`reconstruct
<kdrecon.deployment.reconstruct>` needs to apply it to new data: the task, the acceleration, the
exact sampling mask (:func:`kdrecon.mri.masks.describe_mask`) and the intensity normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kdrecon.data.dataset import load_split, prepared_slice_axis
from kdrecon.data.slicing import SLICE_AXIS_KEY
from kdrecon.data.subjects import subjects_of_split
from kdrecon.mri.masks import describe_mask
from kdrecon.models.weights import TRAINING_SUBJECTS, WeightsInfo, save_weights
from kdrecon.training.checkpoint import check_same_data, load_model, resolve_checkpoint
from kdrecon.training.config import trained_on

#: How every network is fed: each slice scaled to max 1 (the papers' recipe), rescaled on output.
NORMALISATION = "each slice divided by its maximum magnitude; the output multiplied back"


def describe_run(run_or_checkpoint: Path) -> tuple[nn.Module, WeightsInfo]:
    """The best network of a run (or a checkpoint) and the description a weights file would carry.

    The mask and image size are read from the dataset it was trained on, which must still exist.
    """
    model, payload = load_model(run_or_checkpoint)
    recorded = trained_on(payload)
    check_same_data(payload, recorded.dataset, run_or_checkpoint)  # its mask and subjects are read from there
    data = load_split(recorded.dataset, "validation", recorded.acceleration, recorded.task, recorded.image)
    description = {"task": recorded.task, "image": recorded.image, "acceleration": data.acceleration,
                   "image_shape": list(data.image_shape), "mask": describe_mask(data.mask.numpy()), "normalisation": NORMALISATION}
    slice_axis = prepared_slice_axis(recorded.dataset)
    if slice_axis is not None:  # new NIfTI volumes are sliced as the training ones were
        description[SLICE_AXIS_KEY] = slice_axis
    source = {"checkpoint": str(resolve_checkpoint(run_or_checkpoint)), "best_epoch": payload.get("best_epoch"),
              "seed": payload.get("config", {}).get("seed"), "dataset": recorded.dataset,
              "precision": payload.get("precision")}
    subjects = subjects_of_split(recorded.dataset, "train")
    if subjects is not None:
        source[TRAINING_SUBJECTS] = subjects.as_record()
    return model, WeightsInfo(Path(run_or_checkpoint), payload["model"], description, source)


def package_run(run_dir: Path, output: Path, provenance: dict[str, Any] | None = None) -> WeightsInfo:
    """Write the best checkpoint of ``run_dir`` as a weights file (``provenance`` added to its own)."""
    model, info = describe_run(run_dir)
    info = WeightsInfo(Path(output), info.model, info.data, {**info.provenance, **(provenance or {})})
    save_weights(output, model, info.model, info.data, info.provenance)
    return info
