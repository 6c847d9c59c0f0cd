"""A trained network to score, wherever it is kept: a run directory, a training checkpoint (``.pt``),
a weights file (``.safetensors``, :mod:`kdrecon.models.weights`) or a model shipped with kdrecon
(:mod:`kdrecon.models.shipped`).

A checkpoint records its whole training configuration; a weights file only the network and the data
it expects (task, acceleration, image kind, mask) and where it came from. Both are read into one
:class:`TrainedNetwork`, so evaluation needs no branch per source.

Example:
    >>> network = load_trained("sunnybrook-4x-sft-kd-at")
    >>> network.spec["name"], network.trained_on.acceleration, network.dataset_known
    ('D3C5', '4x', False)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from kdrecon.data.subjects import SplitSubjects, subjects_of_split
from kdrecon.mri.masks import mask_from_description
from kdrecon.models.shipped import shipped_models, shipped_weights
from kdrecon.models.weights import SUFFIX, TRAINING_SUBJECTS, load_weights
from kdrecon.training.checkpoint import check_same_data, load_model, resolve_checkpoint
from kdrecon.training.config import DataConfig, trained_on


@dataclass(frozen=True)
class TrainedNetwork:
    """A network in eval mode with what its source says about it.

    ``file`` is the file its weights were read from (cited in an evaluation's summary);
    ``precision`` the one it was trained in where recorded; ``epoch`` and ``best_epoch`` those of a
    checkpoint (a weights file keeps the best epoch in its provenance). ``checkpoint_payload`` is a
    checkpoint's whole content, which can tell whether a dataset path still holds its training data;
    a weights file cannot (``dataset_known`` is False), so its dataset must be named. ``mask`` is the
    un-centred sampling mask a weights file records (a checkpoint's is its dataset's).
    """

    model: nn.Module
    name: str
    file: Path
    spec: dict[str, Any]
    trained_on: DataConfig
    precision: str | None
    epoch: int | None
    best_epoch: int | None
    checkpoint_payload: dict[str, Any] | None = None
    mask: np.ndarray | None = None
    #: The subjects a weights file says the network was trained on (a checkpoint's are its dataset's).
    recorded_training_subjects: SplitSubjects | None = None

    @property
    def dataset_known(self) -> bool:
        return self.checkpoint_payload is not None

    def training_subjects(self) -> SplitSubjects | None:
        """The subjects the network was trained on: as its weights file records them, or the training
        split of the dataset its checkpoint names (None where neither tells)."""
        if self.checkpoint_payload is None:
            return self.recorded_training_subjects
        return subjects_of_split(self.trained_on.dataset, "train")

    def check_training_data(self, dataset: str | Path) -> None:
        """Refuse ``dataset`` as this network's training data when the path now holds other data."""
        if self.checkpoint_payload is not None:
            check_same_data(self.checkpoint_payload, dataset, self.name)


def is_weights(source: str | Path) -> bool:
    """Whether ``source`` names a weights file or a shipped model (not a run or a checkpoint)."""
    return str(source) in shipped_models() or Path(source).suffix == SUFFIX


def load_trained(source: str | Path, which: str = "best") -> TrainedNetwork:
    """The network of a run directory (its ``which`` checkpoint), a ``.pt`` checkpoint, a weights file
    or a shipped model's name."""
    if is_weights(source):
        if which != "best":
            raise ValueError(f"{source}: a weights file holds one network (its run's best); --which {which} "
                             "applies to run directories")
        return _from_weights(source)
    model, payload = load_model(Path(source), which)
    return TrainedNetwork(model, str(source), resolve_checkpoint(Path(source), which), payload["model"],
                          trained_on(payload), payload.get("precision"), payload.get("epoch"),
                          payload.get("best_epoch"), payload)


def _from_weights(source: str | Path) -> TrainedNetwork:
    path = shipped_weights(str(source)) if str(source) in shipped_models() else Path(source)
    model, info = load_weights(path)
    data = info.data
    recorded = DataConfig(dataset=str(info.provenance.get("dataset", "unknown")), acceleration=data["acceleration"],
                          task=data["task"], image=data.get("image", DataConfig().image))
    mask = mask_from_description(data["mask"]) if "mask" in data else None
    return TrainedNetwork(model, str(source), path, info.model, recorded, info.provenance.get("precision"),
                          None, info.provenance.get("best_epoch"), mask=mask,
                          recorded_training_subjects=SplitSubjects.from_record(info.provenance.get(TRAINING_SUBJECTS)))
