"""Distil a student from a trained teacher: Std-KD, or SFT-KD from a student-friendly teacher.

A run directory holds the whole procedure; each stage is a resumable :func:`fit` run:

* ``two-stage`` (KD-MRI, the default): ``RUN/feature-stage/`` trains the student on the feature
  loss alone, then ``RUN/`` fine-tunes the best feature-stage student on
  ``α·L1(x_S, x) + (1 − α)·L1(x_S, x_T)``;
* ``single-stage``: ``RUN/`` trains on ``α·L1 + (1 − α)·imitation + β·feature`` at once;
* ``method: imitation``: ``RUN/`` trains on ``α·L1 + (1 − α)·imitation``.

``RUN/checkpoints/best.pt`` is always the final student, so ``kdrecon evaluate RUN`` scores it.
Calling :func:`distill_student` again on the same directory resumes where it stopped.

With ``init: sft`` the teacher must be a student-friendly teacher (``kdrecon train --model
sft-teacher``): the student's blocks S2..SN start from its branches, S1 from its random
initialisation or a trained baseline student (``first_block: baseline``), and the teacher that
distils is the SFT teacher's own teacher network.

Example (a short Std-KD run on the embedded sample, from a teacher trained before)::

    from kdrecon.training.config import DistillConfig
    config = DistillConfig.model_validate({"teacher": "runs/teacher", "method": "at",
                                           "optimization": {"epochs": 2}})
    result = distill_student(config, "runs/student-at")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdrecon.data.dataset import SliceData
from kdrecon.data.image import channels_of
from kdrecon.distillation.distiller import Distiller, LossWeights
from kdrecon.distillation.initialisation import initialise_from_student_friendly_teacher
from kdrecon.distillation.layer_pairs import LayerPairs, default_layer_pairs, feature_channels
from kdrecon.distillation.losses import FEATURE_LOSSES, FeatureLoss, build_feature_loss
from kdrecon.distillation.losses import feature_weight as weight_of_method
from kdrecon.distillation.preparation import prepare_feature_loss
from kdrecon.models import build_model
from kdrecon.models.sft import StudentFriendlyTeacher
from kdrecon.training.checkpoint import (check_same_data, checkpoint_path, data_record, load_checkpoint, load_model,
                                         refuse_unfinished, resolve_checkpoint)
from kdrecon.training.config import (DISTILL, IMITATION, ConfigError, DataConfig, DistillConfig, config_data, trained_on,
                                     validate, write_config)
from kdrecon.training.teacher_cache import teacher_cache_bytes
from kdrecon.training.supervised import CONFIG_FILE, check_resumed_on_same_data, claim_run_directory, load_splits
from kdrecon.training.distributed import barrier, current_world, local_device
from kdrecon.training.trainer import FitResult, TrainingPath, fit, prepare_module, resolve_device, training_path

FEATURE_STAGE = "feature-stage"


@dataclass
class _Distillation:
    """A distillation ready to train: the networks, their paired layers and the data."""

    config: DistillConfig
    teacher: nn.Module
    student: nn.Module
    teacher_layers: list[str]
    student_layers: list[str]
    feature_loss: FeatureLoss | None
    feature_weight: float
    record: dict[str, Any]
    device: torch.device
    #: The precision and layout both stages train in, resolved once (:func:`_training_path`).
    precision: str
    channels_last: bool
    train_data: SliceData
    validation_data: SliceData
    progress: bool
    on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None
    #: What the checkpoints record of the training data (:func:`~kdrecon.training.checkpoint.data_record`).
    recorded_data: dict[str, str] = field(default_factory=dict)

    def run_stage(self, directory: Path, stage: str, weights: LossWeights, loss: FeatureLoss | None,
                  epochs: int) -> FitResult:
        """One resumable :func:`fit` of the student on ``weights`` in ``directory``."""
        config = self.config
        if loss is not None and loss.preparation_epochs:
            self.record["preparation_losses"] = self._prepare(loss, directory)
        distiller = Distiller(self.student, self.teacher, weights, loss, self.student_layers, self.teacher_layers,
                              teacher_cache_bytes(config.teacher_cache_gib, self.device))
        extra = {
            "stage": stage,
            "model": {"name": config.student.name, "options": config.student.options()},
            "config": config_data(config),
            **self.recorded_data,
            "distillation": {**self.record, "weights": asdict(weights),
                             "connector_parameters": distiller.connector_parameter_count(),
                             "teacher_cache": distiller.cache_record},  # filled in as the run starts
        }
        report = self.on_epoch_end
        try:
            return fit(distiller, self.train_data, self.validation_data, directory,
                       config.optimization.model_copy(update={"epochs": epochs}), seed=config.seed,
                       device=self.device, precision=self.precision, channels_last=self.channels_last,
                       compile=config.compile, checkpoint_extra=extra, progress=self.progress,
                       on_epoch_end=(lambda epoch, row: report(stage, epoch, row)) if report else None)
        finally:
            distiller.close()

    def _prepare(self, loss: FeatureLoss, directory: Path) -> list[float]:
        """The method's preparatory step (FT's paraphraser) and its losses; a resumed stage restores the
        step with its checkpoint and takes the losses that checkpoint recorded."""
        if _has_checkpoint(directory):
            history = _recorded_preparation_losses(checkpoint_path(directory, "last"))
        else:
            history = prepare_feature_loss(loss.to(self.device), self.teacher, self.teacher_layers,
                                           self.train_data.to(self.device), self.config.optimization.batch_size,
                                           self.config.seed)
        loss.finish_preparation()
        return history


def _recorded_preparation_losses(last: Path) -> list[float]:
    """The preparatory step's losses as ``last`` recorded them."""
    return list(load_checkpoint(last).get("distillation", {}).get("preparation_losses", []))


def _with_teacher_data(config: DistillConfig, teacher_payload: dict[str, Any]) -> DistillConfig:
    """``config``, its data taken from what the teacher was trained on when it names none."""
    if config.data is not None:
        return config
    trained_on = teacher_payload.get("config", {}).get("data", {})
    validate(DataConfig, trained_on, f"{config.teacher} (data)")
    return validate(DistillConfig, {**config_data(config), "data": trained_on}, f"{config.teacher} (data)")


def _set_up(config: DistillConfig, run_dir: Path, progress: bool, train_data: SliceData | None,
            validation_data: SliceData | None,
            on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None) -> _Distillation:
    """Load the teacher, build and initialise the student, check everything, then claim ``run_dir``."""
    _check_finished("teacher", config.teacher)
    teacher_model, teacher_payload = load_model(config.teacher, config.teacher_checkpoint)
    teacher = teacher_model.teacher if isinstance(teacher_model, StudentFriendlyTeacher) else teacher_model
    if config.init == "sft" and not isinstance(teacher_model, StudentFriendlyTeacher):
        raise ConfigError(
            f"init: sft needs a student-friendly teacher (kdrecon train --model sft-teacher); "
            f"{config.teacher} holds {teacher_payload['model']['name']}"
        )
    data_from_teacher = config.data is None
    config = _with_teacher_data(config, teacher_payload)
    check_teacher_data(config, teacher_payload)
    if data_from_teacher and train_data is None:
        check_same_data(teacher_payload, config.data.dataset, config.teacher)
    if train_data is None:
        for stage_dir in (run_dir / FEATURE_STAGE, run_dir):
            check_resumed_on_same_data(stage_dir, config.data.dataset)
    data = data_record(config.data.dataset, train_data is None)
    device = local_device(resolve_device(config.device))
    train_data, validation_data = load_splits(config.data, train_data, validation_data)
    # Everything that can reject the config runs before the run directory is created.
    torch.manual_seed(config.seed)
    student = build_model(config.student.name, **config.student.options())
    initialised = _initialise(student, config, teacher_model, teacher_payload)
    teacher_layers, student_layers, feature_loss = plan_feature_loss(config, teacher, student)
    _check_features_fit(teacher, student, teacher_layers, student_layers, feature_loss, train_data)
    if current_world().is_main:
        claim_run_directory(run_dir, config_data(config))
        write_config(config, run_dir / CONFIG_FILE)
    barrier()
    path = _training_path(config, run_dir, device)
    prepare_module(teacher, device, path.channels_last)
    feature_weight = weight_of_method(feature_loss.name, config.feature_weight) if feature_loss else 0.0
    record = {
        "teacher": str(resolve_checkpoint(config.teacher, config.teacher_checkpoint)),
        "teacher_model": teacher_payload["model"],
        "method": config.method,
        "feature_weight": feature_weight,
        "teacher_layers": list(teacher_layers),
        "student_layers": list(student_layers),
        "initialised_tensors": len(initialised),
    }
    return _Distillation(config, teacher, student, teacher_layers, student_layers, feature_loss, feature_weight,
                         record, device, path.precision, path.channels_last, train_data, validation_data, progress,
                         on_epoch_end, data)


def _training_path(config: DistillConfig, run_dir: Path, device: torch.device) -> TrainingPath:
    """The precision and layout of the whole distillation: as its latest checkpoint (fine-tune,
    else feature stage) recorded for a setting left to ``auto``, else resolved now. Both stages and
    the teacher then share them, whichever process a resumed run measures ``auto`` in."""
    checkpoints = [checkpoint_path(directory, "last") for directory in (run_dir, run_dir / FEATURE_STAGE)]
    latest = next((path for path in checkpoints if path.is_file()), checkpoints[0])
    return training_path(latest, device, config.precision, config.channels_last, config.compile)


def distill_student(
    config: DistillConfig,
    run_dir: Path,
    progress: bool = True,
    train_data: SliceData | None = None,
    validation_data: SliceData | None = None,
    on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Run the distillation ``config`` describes in ``run_dir``; returns the final stage's result
    (best epoch and loss) with the wall time of both stages.

    ``train_data``/``validation_data`` replace the configured dataset (for notebooks and tests);
    ``on_epoch_end(stage, epoch, row)`` is called after every epoch of every stage.
    """
    run_dir = Path(run_dir)
    distillation = _set_up(config, run_dir, progress, train_data, validation_data, on_epoch_end)
    config, alpha = distillation.config, distillation.config.alpha
    if config.has_feature_stage:
        epochs = config.feature_epochs or config.optimization.epochs
        feature = distillation.run_stage(run_dir / FEATURE_STAGE, "feature",
                                         LossWeights(0.0, 0.0, distillation.feature_weight),
                                         distillation.feature_loss, epochs)
        best = load_checkpoint(resolve_checkpoint(run_dir / FEATURE_STAGE, "best"), distillation.device)
        distillation.student.load_state_dict(best["modules"]["model"])
        final = distillation.run_stage(run_dir, "fine-tune", LossWeights(alpha, 1 - alpha, 0.0), None,
                                       config.optimization.epochs)
        # The distillation's training time is both stages'.
        return replace(final, wall_seconds=final.wall_seconds + feature.wall_seconds)
    feature_weight = 0.0 if config.method == IMITATION else distillation.feature_weight
    return distillation.run_stage(run_dir, DISTILL, LossWeights(alpha, 1 - alpha, feature_weight),
                                  distillation.feature_loss, config.optimization.epochs)


def check_teacher_data(config: DistillConfig, teacher_payload: dict[str, Any]) -> None:
    """Refuse a teacher trained on another image kind (magnitude or complex), task or acceleration
    than the student's data: its outputs there are not what it learnt, and a comparison of teacher
    and student would compare two settings."""
    teacher_channels = teacher_payload["model"].get("options", {}).get("image_channels", 1)
    if teacher_channels != channels_of(config.data.image):
        raise ConfigError(f"teacher: {config.teacher} takes {teacher_channels}-channel images, "
                          f"but data.image is {config.data.image} ({channels_of(config.data.image)} channels)")
    _check_trained_for(config.data, teacher_payload, f"the teacher {config.teacher}")


def _check_features_fit(teacher: nn.Module, student: nn.Module, teacher_layers: list[str], student_layers: list[str],
                        feature_loss: FeatureLoss | None, data: SliceData) -> None:
    """Run both networks and the feature loss on one training slice, so that paired maps the loss
    cannot compare (of other sizes: another ``padding``, say) are refused before anything is written,
    not at the first step. In eval mode: normalisation statistics stay as initialised."""
    if feature_loss is None:
        return
    modes = [(module, module.training) for module in (student, feature_loss)]
    probe = Distiller(student, teacher, LossWeights(0.0, 0.0, 1.0), feature_loss, student_layers, teacher_layers)
    try:
        for module, _ in modes:
            module.eval()
        with torch.no_grad():
            probe.training_losses(data.batch(torch.arange(1, device=data.target.device)))
    except ValueError as error:
        raise ConfigError(f"layers: the paired features do not fit: {error}") from None
    finally:
        probe.close()
        for module, training in modes:
            module.train(training)


def _check_finished(key: str, run_or_checkpoint: Path) -> None:
    """Refuse a teacher or baseline run directory whose training stopped early: distilling from a
    half-trained network would be reported as distilling from the trained one."""
    try:
        refuse_unfinished(run_or_checkpoint, key)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_trained_for(data: DataConfig, payload: dict[str, Any], what: str) -> None:
    """Refuse a network (``payload``) trained for another task or acceleration than ``data``."""
    if "data" not in payload.get("config", {}):
        return  # nothing recorded to compare with
    recorded = trained_on(payload)
    for key in ("task", "acceleration"):
        if getattr(recorded, key) != getattr(data, key):
            raise ConfigError(f"data.{key}: {getattr(data, key)}, but {what} was trained for {getattr(recorded, key)}; "
                              f"use one of the same {key}")


def _has_checkpoint(directory: Path) -> bool:
    try:
        resolve_checkpoint(directory, "last")
    except ValueError:
        return False
    return True


def _initialise(
    student: nn.Module, config: DistillConfig, teacher_model: nn.Module, teacher_payload: dict[str, Any]
) -> list[str]:
    """Apply ``config.init``; returns the names of the tensors copied (none for random)."""
    if config.init == "random":
        return []
    trained_with = teacher_payload["model"]["options"]
    expected = {"name": config.student.name, **config.student.options()}
    found = {"name": trained_with.get("student"), **{key: trained_with.get(key) for key in config.student.options()}}
    differing = [key for key in expected if expected[key] != found[key]]
    if differing:
        key = differing[0]
        raise ConfigError(
            f"student.{key}: is {expected[key]!r} but the SFT teacher {config.teacher} was trained with {found[key]!r}"
        )
    first_block_state = None
    if config.first_block == "baseline":
        _check_finished("baseline", config.baseline)
        baseline, baseline_payload = load_model(config.baseline)
        if baseline_payload["model"]["name"] != config.student.name:
            raise ConfigError(
                f"baseline: {config.baseline} holds {baseline_payload['model']['name']}, not the student {config.student.name}"
            )
        _check_trained_for(config.data, baseline_payload, f"the baseline {config.baseline}")
        first_block_state = baseline.state_dict()
    return initialise_from_student_friendly_teacher(student, teacher_model.student_state_dict(), first_block_state)


def plan_feature_loss(
    config: DistillConfig, teacher: nn.Module, student: nn.Module
) -> tuple[list[str], list[str], FeatureLoss | None]:
    """The paired layers ``(teacher, student)`` and the feature loss built for them (none for imitation).

    Raises :class:`ConfigError` naming the key (``layers``, ``method_options``) that does not fit.
    """
    if config.method == IMITATION:
        return [], [], None
    try:
        pairs = (LayerPairs(list(config.layers.teacher), list(config.layers.student)) if config.layers is not None
                 else default_layer_pairs(config.method, teacher, student))
    except ValueError as error:
        raise ConfigError(f"layers: {error}") from None
    return pairs.teacher, pairs.student, _feature_loss(config, teacher, student, pairs.teacher, pairs.student)


def check_distillation(config: DistillConfig, teacher_model: nn.Module) -> None:
    """Everything :func:`distill_student` checks before it writes, against an untrained ``teacher_model``
    of the right architecture: so an experiment refuses a bad distillation before its teacher trains."""
    teacher = teacher_model.teacher if isinstance(teacher_model, StudentFriendlyTeacher) else teacher_model
    if config.init == "sft" and not isinstance(teacher_model, StudentFriendlyTeacher):
        raise ConfigError(f"init: sft needs a student-friendly teacher, not {type(teacher_model).__name__}")
    student = build_model(config.student.name, **config.student.options())
    plan_feature_loss(config, teacher, student)


def _feature_loss(
    config: DistillConfig, teacher: nn.Module, student: nn.Module, teacher_layers: list[str], student_layers: list[str]
) -> FeatureLoss:
    for key, model, paths in (("layers.teacher", teacher, teacher_layers), ("layers.student", student, student_layers)):
        missing = [path for path in paths if path not in dict(model.named_modules())]
        if missing:
            raise ConfigError(f"{key}: no module {missing[0]!r} in the {key.split('.')[1]} ({type(model).__name__})")
    method = FEATURE_LOSSES[config.method]
    accepted = [name for name, parameter in inspect.signature(method).parameters.items() if parameter.kind is parameter.KEYWORD_ONLY]
    unknown = sorted(set(config.method_options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"method_options: {config.method} has no option {unknown[0]!r} (it has: {', '.join(accepted) or 'none'})"
        )
    try:
        return build_feature_loss(
            config.method,
            feature_channels(student, student_layers),
            feature_channels(teacher, teacher_layers),
            **config.method_options,
        )
    except ValueError as error:
        keys = "layers or method_options" if config.method_options else "layers"
        raise ConfigError(f"{keys}: {error}") from None
