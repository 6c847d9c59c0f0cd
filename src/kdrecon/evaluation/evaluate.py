"""Run a trained network over a split and score it with the field's conventions (spec §5).

Outputs in the evaluation directory:

* ``reconstructions/{volume}.h5`` — ``reconstruction`` ``(S, H, W)`` float32 (papers' layout);
* ``per_slice.csv`` — PSNR, SSIM, NMSE, HFN, VIF of every slice, data_range = that slice's
  target max, for the model and the zero-filled input;
* ``per_volume.csv`` — the same per volume with fastMRI's conventions (data_range = the
  volume's target max; SSIM averaged over slices; NMSE and PSNR over the whole volume);
* ``summary.json`` — mean ± std over volumes for the model and each baseline
  (``{baseline}_metrics``), and the ``precision`` the network ran in.

The baselines are the network's input (``zero_filled``: the zero-filled image, or in
super-resolution the low-resolution image on the full grid) and, in super-resolution, the
classical upsampling of the low-resolution image (stored as ``bicubic``: interpolation by cubic
B-splines, :func:`kdrecon.mri.resolution.bicubic_upsampling`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdrecon.data.dataset import SAMPLE, SliceData, load_split, read_manifest
from kdrecon.data.image import image_kind_of
from kdrecon.data.subjects import seen_subjects, subjects_of_split
from kdrecon.data.layout import atomic_path, parse_acceleration, write_reconstruction
from kdrecon.data.task import RECONSTRUCTION, SUPER_RESOLUTION, factor_of, task_of
from kdrecon.evaluation import metrics
from kdrecon.models.inference import inference_batch_size
from kdrecon.models.weights import SUFFIX
from kdrecon.mri.channels import magnitude
from kdrecon.mri.resolution import bicubic_upsampling
from kdrecon.evaluation.trained_network import TrainedNetwork, load_trained
from kdrecon.training.checkpoint import CHECKPOINTS, data_record
from kdrecon.training.config import AS_TRAINED, DataConfig
from kdrecon.training.fast_path import autocast, inference_precision
from kdrecon.training.trainer import prepare_module, resolve_device

METRICS = ("psnr", "ssim", "nmse", "hfn", "vif")

# File names in an evaluation directory (see the module docstring).
RECONSTRUCTIONS = "reconstructions"
PER_SLICE = "per_slice.csv"
PER_VOLUME = "per_volume.csv"
SUMMARY = "summary.json"
#: ``reconstruction`` column of the CSV files for the network's own rows.
MODEL = "model"
ZERO_FILLED, BICUBIC = "zero_filled", "bicubic"
#: A run directory's own evaluation folder (``RUN/evaluation``), where ``kdrecon evaluate RUN`` writes.
EVALUATION = "evaluation"
#: Everything an evaluation directory holds.
EVALUATION_FILES = (RECONSTRUCTIONS, PER_SLICE, PER_VOLUME, SUMMARY)


def baselines(data: SliceData) -> dict[str, np.ndarray]:
    """What every network is compared against, ``(N, H, W)``: its input and, in super-resolution, cubic-spline upsampling."""
    images = {ZERO_FILLED: magnitude(data.zero_filled).cpu().numpy()}
    if data.task == SUPER_RESOLUTION:
        images[BICUBIC] = bicubic_upsampling(data.kspace.cpu().numpy(), factor_of(data.acceleration))
    return images


def baseline_label(kind: str, task: str) -> str:
    """How tables and reports name a baseline of :func:`baselines` (``kind``) for ``task``."""
    if kind == BICUBIC:
        return "Cubic-spline upsampling"  # SciPy's interpolating cubic B-spline, not Keys' bicubic kernel
    return "Zero-filled" if task == RECONSTRUCTION else "LR input"


def metrics_key(reconstruction: str) -> str:
    """The key of ``summary.json`` holding mean ± std of a baseline or the model (``model_metrics``)."""
    return f"{reconstruction}_metrics"


@torch.no_grad()
def reconstruct(
    model: nn.Module, data: SliceData, device: torch.device, batch_size: int | None = None, precision: str = "fp32"
) -> np.ndarray:
    """Model output for every slice, ``(N, H, W)`` float32 on the CPU; ``batch_size`` slices per
    pass, by default the device's (:func:`kdrecon.models.inference.inference_batch_size`)."""
    model = prepare_module(model, device, channels_last=True).eval()
    data = data.to(device)
    outputs = []
    for batch in data.batches(batch_size or inference_batch_size(device, data.target.shape)):
        with autocast(device, precision):
            outputs.append(magnitude(model(batch.zero_filled, batch.kspace, batch.mask).float()).cpu())
    return torch.cat(outputs).numpy()


def score(data: SliceData, prediction: np.ndarray) -> tuple[list[dict], list[dict]]:
    """Per-slice and per-volume metric rows for ``prediction`` ``(N, H, W)`` against ``data``."""
    target = magnitude(data.target).cpu().numpy()
    slice_rows, volume_rows = [], []
    for volume in tqdm(data.volumes, desc="score", unit="volume", leave=False, disable=None):
        rows, row = metrics.slice_and_volume_metrics(target[volume.start : volume.stop],
                                                     prediction[volume.start : volume.stop])
        slice_rows += [{"volume": volume.name, "slice": index, **values} for index, values in enumerate(rows)]
        volume_rows.append({"volume": volume.name, **row})
    return slice_rows, volume_rows


#: Scores of baselines already computed in this process, by content: every stage of an
#: experiment is evaluated on the same slices, so their zero-filled input is scored once.
_BASELINE_SCORES: OrderedDict[str, tuple[list[dict], list[dict]]] = OrderedDict()
_BASELINES_KEPT = 8


def _score_baseline(data: SliceData, images: np.ndarray) -> tuple[list[dict], list[dict]]:
    """:func:`score` of a baseline, computed once per content of target, baseline and volumes."""
    digest = hashlib.sha256()
    for part in (data.target.cpu().numpy(), np.ascontiguousarray(images)):
        digest.update(part.tobytes())
    digest.update(repr([(v.name, v.start, v.stop) for v in data.volumes]).encode())
    key = digest.hexdigest()
    if key not in _BASELINE_SCORES:
        _BASELINE_SCORES[key] = score(data, images)
        while len(_BASELINE_SCORES) > _BASELINES_KEPT:
            _BASELINE_SCORES.popitem(last=False)
    slices, volumes = _BASELINE_SCORES[key]
    return [dict(row) for row in slices], [dict(row) for row in volumes]  # callers add columns to their rows


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation of each metric over ``rows``."""
    return {
        name: {"mean": float(np.mean([r[name] for r in rows])), "std": float(np.std([r[name] for r in rows]))}
        for name in METRICS
    }


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write dict rows as CSV atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


@dataclass(frozen=True)
class Evaluation:
    directory: Path
    summary: dict[str, Any]


def evaluate(
    run_or_checkpoint: Path,
    output_dir: Path,
    dataset: str | Path | None = None,
    split: str = "validation",
    acceleration: str | None = None,
    device: str = "auto",
    which: str = "best",
    precision: str = AS_TRAINED,
    data: SliceData | None = None,
) -> Evaluation:
    """Evaluate a trained network on a split: ``run_or_checkpoint`` is a run directory, a checkpoint,
    a weights file or a shipped model's name (:func:`kdrecon.evaluation.trained_network.load_trained`).
    Dataset and acceleration default to those it was trained on (a weights file's dataset must be
    given), the precision to the one it was trained in (:func:`kdrecon.training.fast_path.inference_precision`).

    ``data`` is that split already in memory, as :func:`kdrecon.data.dataset.load_split` of
    ``dataset`` and ``split`` returns it (an experiment loads it once for all its stages; the
    summary names ``dataset`` and ``split``); one of another acceleration, task or image kind than
    the checkpoint's is refused.
    ``output_dir`` is written whole or not at all; an existing evaluation there is replaced.
    """
    output_dir = Path(output_dir)
    network = load_trained(run_or_checkpoint, which)
    _check_replaceable(output_dir, network.file)
    torch_device = resolve_device(device)
    precision = inference_precision(precision, network.precision, torch_device)
    recorded = network.trained_on
    if dataset is None and data is None:  # the data it was trained on, which the path must still hold
        if not network.dataset_known:
            raise ValueError(f"{run_or_checkpoint}: a weights file does not say where its training data is now; "
                             f"name the dataset to evaluate on (--dataset: a prepared dataset, or {SAMPLE!r} for the embedded sample)")
        network.check_training_data(recorded.dataset)
    dataset = dataset if dataset is not None else recorded.dataset
    data = _split_to_evaluate(run_or_checkpoint, network, dataset, split, acceleration or recorded.acceleration, data)
    prediction = reconstruct(network.model, data, torch_device, precision=precision)
    if not np.isfinite(prediction).all():
        raise ValueError(f"{run_or_checkpoint}: the model produced non-finite values")
    summary = {
        "checkpoint": str(network.file.resolve()),
        "model": network.spec,
        "epoch": network.epoch,  # of the checkpoint scored (last.pt's can be after the best)
        "best_epoch": network.best_epoch,
        "dataset": str(dataset),
        **_data_record(dataset),
        "split": split,
        "acceleration": data.acceleration,
        "task": data.task,
        "image": data.image,
        "volumes": len(data.volumes),
        "slices": len(data),
        "precision": precision,
        "conventions": "per volume, data_range = volume target max (fastMRI); mean ± std over volumes",
        # What the network was trained on: scores on other data (another acceleration or mask) are not its own.
        "trained_on": _trained_on(network, data),
    }
    return Evaluation(output_dir, _write_whole(output_dir, data, prediction, summary))


def _trained_on(network: TrainedNetwork, data: SliceData) -> dict[str, Any]:
    """The summary's record of the network's training data; ``same_mask`` where its source records its
    mask (a weights file's), as a dataset path alone cannot tell a weights file's mask from another's."""
    record: dict[str, Any] = {"dataset": str(network.trained_on.dataset), "acceleration": network.trained_on.acceleration}
    if network.mask is not None:
        record["same_mask"] = bool(np.array_equal(network.mask, data.mask.numpy()))
        if network.mask.shape != tuple(data.mask.shape):  # another image size: the note names both
            record["mask_shape"], record["evaluated_mask_shape"] = list(network.mask.shape), list(data.mask.shape)
    return record


def _write_whole(output_dir: Path, data: SliceData, prediction: np.ndarray, summary: dict[str, Any]) -> dict[str, Any]:
    """:func:`_write_evaluation` into a staging directory, then swapped in for ``output_dir``: an
    interrupted evaluation leaves no reconstructions without their summary, nor a staging directory,
    and old and new results never mix."""
    staging = output_dir.with_name(f".{output_dir.name}.writing")
    _recover(output_dir)
    shutil.rmtree(staging, ignore_errors=True)  # a killed process's
    try:
        summary = _write_evaluation(staging, data, prediction, summary)
        _replace_directory(staging, output_dir)
    except BaseException:
        _recover(output_dir)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _previous(target: Path) -> Path:
    """Where :func:`_replace_directory` keeps the evaluation it replaces until the new one is in place."""
    return target.with_name(f".{target.name}.previous")


def _recover(target: Path) -> None:
    """Put back the previous evaluation of a replacement stopped between its two renames (the only
    complete copy then), or remove a leftover one."""
    previous = _previous(target)
    if previous.exists():
        if target.exists():
            shutil.rmtree(previous)
        else:
            previous.rename(target)


def _data_record(dataset: str | Path) -> dict[str, str]:
    """The digest of the dataset scored, for a summary (none for slices whose folder is not a dataset's)."""
    try:
        return data_record(dataset, loaded_from_config=True)
    except ValueError:
        return {}


def data_differences(summary: dict[str, Any]) -> list[str]:
    """How the evaluated data differ from the network's training data, as a summary records both
    (empty for the same dataset, acceleration and, where recorded, mask; and for summaries from before the record)."""
    trained = summary.get("trained_on")
    if not trained:
        return []
    differences = []
    if trained["acceleration"] != summary["acceleration"]:
        differences.append(f"trained at {trained['acceleration']}, evaluated at {summary['acceleration']}")
    if Path(trained["dataset"]).resolve() != Path(summary["dataset"]).resolve() and trained["dataset"] != summary["dataset"]:
        differences.append(f"trained on {trained['dataset']}, evaluated on {summary['dataset']}")
    if "mask_shape" in trained:
        size = "×".join(map(str, trained["mask_shape"]))
        evaluated = "×".join(map(str, trained["evaluated_mask_shape"]))
        differences.append(f"trained with a {size} {trained['acceleration']} sampling mask, evaluated on {evaluated} "
                            "images under their own mask")
    elif trained.get("same_mask") is False and trained["acceleration"] == summary["acceleration"]:
        differences.append(f"trained with another {summary['acceleration']} sampling mask than the evaluated data's")
    return differences


def _check_dataset_fits(source: Path, recorded: DataConfig, dataset: str | Path) -> None:
    """Refuse a dataset prepared for another task or image kind than the network ``source`` was trained on,
    in the words of evaluation (the data loader's own refusal speaks of a configuration to change)."""
    if str(dataset) == SAMPLE:
        return
    manifest = read_manifest(Path(dataset))
    task, image = task_of(manifest), image_kind_of(manifest)
    if (task, image) != (recorded.task, recorded.image):
        raise ValueError(f"{dataset}: prepared for {task} on {image} images, but {source} was trained for "
                         f"{recorded.task} on {recorded.image} images; evaluate it on a dataset prepared like its own")


def _check_unseen_subjects(source: str | Path, network: TrainedNetwork, dataset: str | Path, split: str) -> None:
    """Refuse to score as validation the subjects a network was trained on: a dataset prepared again
    from the same source with other validation subjects would give training scores as validation ones.
    Subjects are compared as :func:`kdrecon.data.subjects.seen_subjects` can (same source, or the same
    public dataset); nothing is refused where the training subjects are unknown (a training dataset
    that is gone, a weights file written before kdrecon recorded them)."""
    trained, evaluated = network.training_subjects(), subjects_of_split(dataset, split)
    if split != "validation" or trained is None or evaluated is None:
        return
    seen = seen_subjects(trained, evaluated)
    if seen:
        where = f"{network.trained_on.dataset}, prepared from the same {trained.format} data" if network.dataset_known \
            else f"its weights file names its {trained.format} training subjects"
        raise ValueError(f"{dataset}: its {split} split holds {', '.join(seen)}, on which {source} was trained "
                         f"({where}); evaluate on subjects it has not seen")


def _split_to_evaluate(source: str | Path, network: TrainedNetwork, dataset: str | Path, split: str, acceleration: str,
                       data: SliceData | None) -> SliceData:
    """``data``, checked against what ``network`` was trained on, or the split loaded."""
    recorded = network.trained_on
    if data is None:
        _check_dataset_fits(source, recorded, dataset)
        _check_unseen_subjects(source, network, dataset, split)
        data = load_split(dataset, split, acceleration, recorded.task, recorded.image)
    elif (data.acceleration, data.task, data.image) != (parse_acceleration(acceleration), recorded.task, recorded.image):
        raise ValueError(f"{source}: trained on {acceleration} {recorded.task} {recorded.image} data, "
                         f"given {data.acceleration} {data.task} {data.image} slices to evaluate on")
    if len(data) == 0:
        raise ValueError(f"{dataset}: the {split} split is empty")
    return data


def _write_evaluation(directory: Path, data: SliceData, prediction: np.ndarray, summary: dict[str, Any]) -> dict[str, Any]:
    """Reconstructions, per-slice and per-volume scores of the model and each baseline, summary."""
    (directory / RECONSTRUCTIONS).mkdir(parents=True)
    for volume in data.volumes:
        write_reconstruction(directory / RECONSTRUCTIONS / f"{volume.name}.h5", prediction[volume.start : volume.stop])
    slice_rows, volume_rows = [], []
    for kind, images in {MODEL: prediction, **baselines(data)}.items():
        slices, volumes = score(data, images) if kind == MODEL else _score_baseline(data, images)
        for row in slices + volumes:
            row["reconstruction"] = kind
        slice_rows += slices
        volume_rows += volumes
        summary[metrics_key(kind)] = summarise(volumes)
    write_csv(directory / PER_SLICE, slice_rows)
    write_csv(directory / PER_VOLUME, volume_rows)
    write_json(directory / SUMMARY, summary)
    return summary


def _check_replaceable(output_dir: Path, checkpoint: Path) -> None:
    """An existing output directory is replaced only if it holds nothing, or an evaluation (its files
    alone) of a checkpoint of the same run as ``checkpoint``: another run's evaluation (an experiment
    stage's) is someone else's result, and files beside an evaluation are the user's."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir() or (any(output_dir.iterdir()) and not (output_dir / SUMMARY).is_file()):
        raise ValueError(f"{output_dir}: exists and is not an evaluation directory; choose another output")
    others = sorted(entry.name for entry in output_dir.iterdir() if entry.name not in EVALUATION_FILES)
    if others:
        raise ValueError(f"{output_dir}: holds {', '.join(others)} besides an evaluation, which replacing it would "
                         "delete; choose another output")
    if not (output_dir / SUMMARY).is_file() or _is_own_evaluation(output_dir, checkpoint):
        return
    try:
        previous = Path(json.loads((output_dir / SUMMARY).read_text())["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{output_dir / SUMMARY}: unreadable; choose another output or remove the directory") from None
    if not previous.exists():  # moved, or a relative path from another working directory (older summaries)
        raise ValueError(f"{output_dir}: holds the evaluation of {previous}, which is not there to compare with "
                         f"{checkpoint}; choose another output or remove the directory")
    if not _same_run(previous, checkpoint):
        raise ValueError(f"{output_dir}: holds the evaluation of {previous}, not of {checkpoint}; choose another output")


def _same_run(previous: Path, checkpoint: Path) -> bool:
    """Whether two checkpoints are of one run (its best and last), or two paths of one weights file
    (weights files of different networks can share a folder)."""
    if SUFFIX in (previous.suffix, checkpoint.suffix):
        return os.path.samefile(previous, checkpoint)
    return os.path.samefile(previous.parent, checkpoint.parent)


def _is_own_evaluation(output_dir: Path, checkpoint: Path) -> bool:
    """Whether ``output_dir`` is the evaluation folder of ``checkpoint``'s own run directory
    (``RUN/checkpoints/best.pt`` → ``RUN/evaluation``), wherever the run has been moved."""
    checkpoint, output_dir = checkpoint.resolve(), output_dir.resolve()
    return (checkpoint.parent.name == CHECKPOINTS and output_dir.name == EVALUATION
            and output_dir.parent == checkpoint.parent.parent)


def _replace_directory(new: Path, target: Path) -> None:
    """Put ``new`` where ``target`` is, removing the previous evaluation only once the new one is in place."""
    previous = _previous(target)
    if target.exists():
        target.rename(previous)
    new.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def format_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table of mean ± std per model, e.g. ``{"teacher": summary["model_metrics"]}``."""
    width = max([16] + [len(label) + 2 for label in rows])
    header = f"{'model':<{width}}" + "".join(f"{name.upper():>20}" for name in METRICS)
    lines = [header, "-" * len(header)]
    for label, values in rows.items():
        cells = []
        for name in METRICS:
            mean, std = values[name]["mean"], values[name]["std"]
            cells.append(f"{mean:.4g} ± {std:.2g}".rjust(20) if name != "psnr" else f"{mean:.2f} ± {std:.2f}".rjust(20))
        lines.append(f"{label:<{width}}" + "".join(cells))
    return "\n".join(lines)
