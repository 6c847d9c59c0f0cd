"""``kdrecon`` command line: a thin layer over the Python API.

Every subcommand parses arguments, calls one API function and prints its result. Invalid
input (a bad config key, a missing file, a mask of the wrong shape, …) ends with one line
``kdrecon: error: …`` and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from kdrecon import __version__

if TYPE_CHECKING:  # the CLI imports its commands' modules lazily, so that --help stays fast
    from kdrecon.data.volume import Volume


def _add_prepare_options(parser: argparse.ArgumentParser, crop: int | None = None, mask: str | None = None) -> None:
    """The options every source of ``kdrecon prepare`` takes; defaults are :class:`PrepareOptions`'s, or
    the source's own ``crop`` (0: none) and ``mask``."""
    from kdrecon.data.prepare import CENTER_FRACTION, MASK_PARAMETERS, MASK_SEED, PrepareOptions
    from kdrecon.data.task import RECONSTRUCTION, TASKS

    defaults = PrepareOptions()
    crop = defaults.crop if crop is None else crop
    mask = defaults.mask if mask is None else mask
    # The source's defaults apply where an option is not given (None): an explicit --mask is refused for super-resolution.
    parser.set_defaults(source_crop=crop, source_mask=mask)
    parser.add_argument("output", type=Path, help="new dataset directory")
    parser.add_argument(
        "--task", choices=TASKS, default=RECONSTRUCTION,
        help="reconstruction (undersampled lines) or super-resolution (central 1/r of k-space per axis)",
    )
    parser.add_argument(
        "--acceleration", action="append",
        help=f"e.g. 4x (repeat for several; default {', '.join(defaults.accelerations)}); for super-resolution the factor per axis",
    )
    parser.add_argument(
        "--crop", type=int, help=f"centre crop size in pixels, 0 for none (default {crop or 'none'}; super-resolution: none)"
    )
    parser.add_argument(
        "--mask", help=f"papers | recipe | random | equispaced | PATH.npy (default {mask}; not for super-resolution)"
    )
    # No number as the default: an option the mask kind does not use is refused only if it was given.
    kinds = {name: "/".join(kind for kind, used in MASK_PARAMETERS.items() if name in used) for name in ("seed", "center_fraction")}
    parser.add_argument("--mask-seed", type=int, help=f"for {kinds['seed']} masks (default {MASK_SEED})")
    parser.add_argument("--center-fraction", type=float, help=f"for {kinds['center_fraction']} masks (default {CENTER_FRACTION})")
    parser.add_argument("--validation-subjects", nargs="+", default=(), metavar="SUBJECT")
    parser.add_argument("--validation-fraction", type=float,
                        help=f"of the subjects, where --validation-subjects is not given (default {defaults.validation_fraction})")


def _add_prepare(prepare: argparse.ArgumentParser) -> None:
    from kdrecon.data.sources import nifti as nifti_source
    from kdrecon.data.sources import sunnybrook as sunnybrook_source

    formats = prepare.add_subparsers(dest="format", required=True, metavar="FORMAT")

    sunnybrook = formats.add_parser(sunnybrook_source.FORMAT, help="Sunnybrook SCD*.npz subject files")
    sunnybrook.add_argument("source", type=Path)
    sunnybrook.add_argument("--phases", type=int, nargs="+", help="cardiac phases to keep (default all)")
    _add_prepare_options(sunnybrook)

    nifti = formats.add_parser("nifti", help="NIfTI volumes (.nii/.nii.gz), a file or a directory")
    nifti.add_argument("source", type=Path)
    nifti.add_argument("--slice-axis", type=int, default=nifti_source.SLICE_AXIS,
                       help="the spatial axis (-3..2 of X, Y, Z) the slices run along (default the last)")
    nifti.add_argument("--subject-pattern", help="regex with one group taken from the file name as the subject "
                       "(default: BIDS sub-<label> or ACDC patient<N> in the name, else the file stem)")
    nifti.add_argument("--exclude-pattern", help=r"regex of file names to skip, e.g. '_gt\.nii' (ACDC labels)")
    _add_prepare_options(nifti)

    dicom = formats.add_parser("dicom", help="a directory of DICOM files")
    dicom.add_argument("source", type=Path)
    _add_prepare_options(dicom)
    _add_prepare_raw_sources(formats)

    papers = formats.add_parser("papers-h5", help="existing files in the papers' h5 layout (read in place)")
    papers.add_argument("output", type=Path, help="new dataset directory (holds only a manifest and masks)")
    papers.add_argument("--train", type=Path, required=True, help="directory of training .h5 files")
    papers.add_argument("--validation", type=Path, required=True, help="directory of validation .h5 files")
    papers.add_argument("--mask", action="append", required=True, metavar="ACC=PATH", help="e.g. 4x=mask_4x.npy")


def _add_prepare_raw_sources(formats: argparse._SubParsersAction) -> None:
    """``prepare fastmri`` and ``prepare kspace``: sources that can hold k-space."""
    from kdrecon.data.image import IMAGE_KINDS, MAGNITUDE
    from kdrecon.data.sources import fastmri as fastmri_source
    from kdrecon.data.sources import raw_kspace

    fastmri = formats.add_parser(fastmri_source.FORMAT, help="fastMRI single-coil h5 files")
    fastmri.add_argument("source", type=Path)
    fastmri.add_argument("--image-source", choices=("reconstruction", "kspace"), default="reconstruction")
    fastmri.add_argument("--image", choices=IMAGE_KINDS, default=MAGNITUDE,
                         help="complex: keep the phase of the kspace image (with --image-source kspace)")
    _add_prepare_options(fastmri, crop=0)

    kspace = formats.add_parser("kspace", help="a scanner's fully sampled complex k-space as .npy (lines, coils, readout): "
                                "complex images, one volume per coil")
    kspace.add_argument("source", type=Path, help="a .npy file or a directory of them")
    kspace.add_argument("--readout-oversampling", type=int, default=raw_kspace.READOUT_OVERSAMPLING,
                        help="kept: the central 1/N of the readout")
    _add_prepare_options(kspace, crop=0, mask="equispaced")


def _register_papers_h5(args: argparse.Namespace) -> None:
    from kdrecon.data import prepare

    masks = {}
    for item in args.mask:
        acceleration, separator, path = item.partition("=")
        if not separator:
            raise ValueError(f"--mask {item!r}: expected ACC=PATH such as 4x=mask_4x.npy")
        masks[acceleration] = Path(path)
    out = prepare.register_papers_h5(args.train, args.validation, masks, args.output)
    print(f"dataset registered at {out}")


def _read_source_volumes(args: argparse.Namespace) -> Iterable[Volume]:
    """The volumes of ``args.source`` read by the reader of ``args.format``."""
    from kdrecon.data.sources import fastmri, sunnybrook

    if args.format == sunnybrook.FORMAT:
        return sunnybrook.read_volumes(args.source, phases=args.phases)
    if args.format == "nifti":
        from kdrecon.data.sources import nifti

        return nifti.read_volumes(args.source, slice_axis=args.slice_axis, subject_pattern=args.subject_pattern,
                                  exclude_pattern=args.exclude_pattern)
    if args.format == "dicom":
        from kdrecon.data.sources import dicom

        return dicom.read_volumes(args.source)
    if args.format == "kspace":
        from kdrecon.data.sources import raw_kspace

        return raw_kspace.read_volumes(args.source, args.readout_oversampling)
    return fastmri.read_volumes(args.source, image_source=args.image_source, complex_images=args.image == "complex")


def _source_manifest_entries(args: argparse.Namespace) -> dict[str, str | int]:
    """What a source's reader adds to the dataset's manifest (fastMRI, DICOM: their images' orientation;
    NIfTI: the axis its volumes were sliced along)."""
    from kdrecon.data.sources import fastmri

    if args.format == fastmri.FORMAT:
        return dict(fastmri.MANIFEST_ORIENTATION)
    if args.format == "dicom":
        from kdrecon.data.sources import dicom

        return dict(dicom.MANIFEST_ORIENTATION)
    if args.format == "nifti":
        from kdrecon.data.slicing import slice_axis_record

        return slice_axis_record(args.slice_axis)
    return {}


def _run_prepare(args: argparse.Namespace) -> None:
    from kdrecon.data import prepare
    from kdrecon.data.task import SUPER_RESOLUTION

    if args.format == "papers-h5":
        _register_papers_h5(args)
        return
    if args.validation_subjects and args.validation_fraction is not None:
        raise ValueError("--validation-fraction: the split is given by --validation-subjects; give one of the two")
    from kdrecon.data.sources import sunnybrook

    if args.format == sunnybrook.FORMAT and not args.validation_subjects and args.validation_fraction is None:
        from kdrecon.data.dataset import SAMPLE_VALIDATION_SUBJECTS  # the sample's split, kept on the full data

        args.validation_subjects = SAMPLE_VALIDATION_SUBJECTS
    if args.task == SUPER_RESOLUTION and args.mask is not None:
        raise ValueError("--mask: super-resolution keeps the central block of k-space; it takes no mask")
    defaults = prepare.PrepareOptions()
    crop = args.crop if args.crop is not None else (0 if args.task == SUPER_RESOLUTION else args.source_crop)
    options = prepare.PrepareOptions(
        accelerations=args.acceleration or list(defaults.accelerations),
        crop=crop or None,
        mask=args.mask or (defaults.mask if args.task == SUPER_RESOLUTION else args.source_mask),  # SR takes none
        task=args.task,
        mask_seed=args.mask_seed,
        center_fraction=args.center_fraction,
        validation_subjects=args.validation_subjects,
        validation_fraction=defaults.validation_fraction if args.validation_fraction is None else args.validation_fraction,
        source=f"{args.format}:{args.source.resolve()}",
        extra=_source_manifest_entries(args),
    )
    out = prepare.prepare_dataset(_read_source_volumes(args), args.output, options)
    print(f"dataset written to {out}")


def _add_stage_options(parser: argparse.ArgumentParser) -> None:
    """Options every training stage shares; each overrides the same key of --config."""
    from kdrecon.training.config import PRECISIONS

    parser.add_argument("--config", type=Path, help="YAML config (see configs/); options below override it")
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (resumes if it holds a run)")
    parser.add_argument("--dataset", help="dataset directory or 'sample'")
    parser.add_argument("--acceleration")
    parser.add_argument("--task", help="reconstruction or super-resolution (must match the dataset)")
    parser.add_argument("--image", help="magnitude or complex (two-channel networks; must match the dataset)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--precision", choices=PRECISIONS,
        help="default auto: bf16 autocast or float32, whichever is faster here (FFTs stay float32)",
    )
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the networks")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set sft.imitation_weight=0.5 (VALUE is read as YAML)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _stage_overrides(args: argparse.Namespace, options: dict) -> dict:
    """The config keys a stage command's options set (``options``: the command's own, then the common
    ones), then its ``--set`` values; a key that both an option and ``--set`` give is refused, since
    which one wins would be a guess."""
    options = {**options, **_stage_options(args)}
    values = _key_values(args.set)
    for key, value in values.items():
        if options.get(key) is not None:
            raise ValueError(f"--set {key}={'null' if value is None else value}: an option of this command already "
                             f"sets {key} (to {options[key]}); give it once")
    return {"name": args.run_dir.name, **options, **values}  # the run directory's name unless --set names it


def _stage_options(args: argparse.Namespace) -> dict:
    return {
        "data.dataset": args.dataset,
        "data.acceleration": args.acceleration,
        "data.task": args.task,
        "data.image": args.image,
        "optimization.epochs": args.epochs,
        "optimization.batch_size": args.batch_size,
        "optimization.learning_rate": args.learning_rate,
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        "compile": args.compile,
    }


def _key_values(items: list[str]) -> dict:
    """``["a.b=3", ...]`` → ``{"a.b": 3, ...}`` with each value read as YAML; ``null`` removes the key."""
    import yaml

    from kdrecon.training.config import UNSET, parse_yaml

    values = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE such as optimization.epochs=10")
        if not value.strip():
            # An empty value would read as YAML null and silently restore the default.
            raise ValueError(f"--set {item!r}: no value after '='; write {key.strip()}=null to remove the key")
        try:
            parsed = parse_yaml(value)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({str(error).splitlines()[0]})") from None
        values[key.strip()] = UNSET if parsed is None else parsed
    return values


def _is_main_process() -> bool:
    from kdrecon.training.distributed import current_world

    return current_world().is_main


@contextlib.contextmanager
def _run_directory_lock(run_dir: Path) -> Iterator[None]:
    """One ``train`` or ``distill`` at a time in ``run_dir``, as ``kdrecon run`` holds its directory
    (under torchrun rank 0 holds it for every rank); inside an experiment's run directory (one of its
    stages), the experiment's lock too, so that no ``kdrecon run`` writes that stage meanwhile."""
    if not _is_main_process():
        yield
        return
    from kdrecon.experiment.run_lock import run_lock
    from kdrecon.report.run_layout import RunLayout, enclosing_experiment

    with contextlib.ExitStack() as locks:
        experiment = enclosing_experiment(run_dir)
        if experiment is not None:
            locks.enter_context(run_lock(experiment))
        locks.enter_context(run_lock(RunLayout(run_dir)))
        yield


def _add_train(train: argparse.ArgumentParser) -> None:
    _add_stage_options(train)
    train.add_argument("--model", help=f"a network, e.g. {_model_names()}, or sft-teacher")
    train.add_argument("--residual", action="store_true", default=None, help="add each block's input to its output")
    train.add_argument("--padding", type=int, help="zero-pad block inputs by this many pixels (SFT-KD-Recon code: 5)")
    train.add_argument("--init-from", help="fine-tune: start from this run directory's or checkpoint's weights")
    from kdrecon.training.config import SFT_PRESETS

    train.add_argument(
        "--sft-preset",
        choices=tuple(SFT_PRESETS),
        help="SFT loss weights: sft-code (imitation 0, default) or sft-paper-equations (all 1)",
    )


def _run_train(args: argparse.Namespace) -> None:
    from kdrecon.training.config import TrainConfig, load_config
    from kdrecon.training.supervised import train_model

    overrides = _stage_overrides(args, {
        "model.name": args.model,
        "model.residual": args.residual,
        "model.padding": args.padding,
        "init_from": args.init_from,
        "sft.preset": args.sft_preset,
    })
    config = load_config(TrainConfig, args.config, overrides)
    _check_writable(args.run_dir, "--run-dir")
    with _run_directory_lock(args.run_dir):
        result = train_model(config, args.run_dir, progress=not args.quiet)
    if _is_main_process():
        print(f"best validation loss {result.best_validation_loss:.6f} at epoch {result.best_epoch}; run in {result.run_dir}")


def _add_distill(distill: argparse.ArgumentParser) -> None:
    from kdrecon.training.config import DEFAULT_PROCEDURE, PROCEDURES

    _add_stage_options(distill)
    distill.add_argument("--teacher", help="the teacher's run directory or checkpoint (an SFT teacher for --init sft)")
    distill.add_argument("--method", help=" | ".join(_methods()))
    distill.add_argument("--student", help=f"the student network, e.g. {_model_names()} (default D3C5)")
    distill.add_argument("--procedure", choices=PROCEDURES, help=f"default {DEFAULT_PROCEDURE} (KD-MRI)")
    distill.add_argument("--init", choices=("random", "sft"), help="sft: start S2..SN from the SFT teacher's branches")
    distill.add_argument("--baseline", help="with --init sft: take S1 from this trained baseline student")
    distill.add_argument("--alpha", type=float, help="weight of L1 to the target against imitation (default 0.5)")
    distill.add_argument("--feature-weight", type=float, help="β of the feature loss (default: the method's)")
    distill.add_argument("--feature-epochs", type=int, help="epochs of the feature stage (default: --epochs)")


def _run_distill(args: argparse.Namespace) -> None:
    from kdrecon.training.config import DistillConfig, load_config
    from kdrecon.training.distill import distill_student

    overrides = _stage_overrides(args, {
        "teacher": args.teacher,
        "method": args.method,
        "student.name": args.student,
        "procedure": args.procedure,
        "init": args.init,
        "first_block": "baseline" if args.baseline else None,
        "baseline": args.baseline,
        "alpha": args.alpha,
        "feature_weight": args.feature_weight,
        "feature_epochs": args.feature_epochs,
    })
    config = load_config(DistillConfig, args.config, overrides)
    _check_writable(args.run_dir, "--run-dir")
    with _run_directory_lock(args.run_dir):
        result = distill_student(config, args.run_dir, progress=not args.quiet)
    if _is_main_process():
        print(
            f"student: best validation loss {result.best_validation_loss:.6f} at epoch {result.best_epoch}; "
            f"run in {result.run_dir} (kdrecon evaluate {result.run_dir})"
        )


def _add_evaluate(evaluate: argparse.ArgumentParser) -> None:
    from kdrecon.training.config import AS_TRAINED, INFERENCE_PRECISIONS

    evaluate.add_argument("checkpoint", type=Path, help="a run directory, a .pt checkpoint, a .safetensors weights "
                          "file or a shipped model (kdrecon models)")
    evaluate.add_argument("--output", type=Path, help="evaluation directory (default RUN/evaluation; required for "
                          "weights files and shipped models)")
    evaluate.add_argument("--dataset", help="default: the dataset the model was trained on (a run's or checkpoint's; "
                          "'sample' is the embedded sample)")
    evaluate.add_argument("--split", default="validation", choices=("train", "validation"))
    evaluate.add_argument("--acceleration")
    evaluate.add_argument("--which", default="best", choices=("best", "last"))
    evaluate.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    evaluate.add_argument("--precision", default=AS_TRAINED, choices=INFERENCE_PRECISIONS,
                          help="default: bf16 if the model was trained in bf16 and bf16 is this device's fast path, else fp32")


def _run_evaluate(args: argparse.Namespace) -> None:
    from kdrecon.data.task import RECONSTRUCTION
    from kdrecon.evaluation.evaluate import MODEL, baseline_label, data_differences, evaluate, format_table, metrics_key
    from kdrecon.evaluation.trained_network import is_weights
    from kdrecon.report.run_layout import EVALUATION
    from kdrecon.training.checkpoint import refuse_unfinished

    if is_weights(args.checkpoint) and args.output is None:
        raise ValueError(f"evaluate: {args.checkpoint} is a weights file or shipped model, which has no run directory "
                         "to write into; give --output")
    output = args.output or (args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent) / EVALUATION
    _check_writable(output, "--output")
    if not is_weights(args.checkpoint):
        refuse_unfinished(args.checkpoint, "evaluate")
    result = evaluate(args.checkpoint, output, args.dataset, args.split, args.acceleration, args.device, args.which,
                      args.precision)
    summary = result.summary
    run_name = _network_name(args.checkpoint)
    label = f"{run_name} ({summary['model']['name']})"
    baselines = [key.removesuffix("_metrics") for key in summary if key.endswith("_metrics") and key != metrics_key(MODEL)]
    rows = {baseline_label(name, summary.get("task", RECONSTRUCTION)): summary[metrics_key(name)] for name in baselines}
    print(format_table({**rows, label: summary[metrics_key(MODEL)]}))
    print(f"({summary['volumes']} volumes, {summary['slices']} slices, {summary['precision']}, {summary['conventions']}); "
          f"written to {output}")
    for difference in data_differences(summary):  # scores on other data than its own: say so beside them
        print(f"note: {run_name} was {difference}")


def _network_name(source: Path) -> str:
    """What a table calls the evaluated network: its run's name, or the weights file's or shipped model's."""
    from kdrecon.models.weights import SUFFIX

    if source.is_dir():
        return source.name
    if source.suffix == ".pt":
        return source.parent.parent.name
    return source.name.removesuffix(SUFFIX)


#: What ``kdrecon bench`` writes into its ``--output``, and what ``bench --experiment`` writes.
BENCH_FILES = ("bench.json", "bench.md")
ESTIMATE_FILES = ("estimate.json", "estimate.md")


def _add_bench(bench: argparse.ArgumentParser) -> None:
    from kdrecon.evaluation.bench_settings import IMAGE_SIZE, INFERENCE_REPEATS, TRAINING_BATCH_SIZE, TRAINING_STEPS
    from kdrecon.models.registry import DEFAULT_STUDENT, DEFAULT_TEACHER

    # None where not given: bench --experiment refuses the options it would not use.
    bench.add_argument("--teacher", help=f"any network, e.g. {_model_names()} (default {DEFAULT_TEACHER})")
    bench.add_argument("--student", help=f"default {DEFAULT_STUDENT}")
    bench.add_argument("--size", type=int, help=f"image size (a centre crop of the sample; default {IMAGE_SIZE})")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    bench.add_argument("--steps", type=int, default=TRAINING_STEPS, help="timed training steps per measurement")
    bench.add_argument("--batch-size", type=int, help=f"slices per training step (default {TRAINING_BATCH_SIZE}, the papers')")
    bench.add_argument("--repeats", type=int, help=f"timed inference calls per measurement (default {INFERENCE_REPEATS})")
    bench.add_argument("--output", type=Path, default=Path("bench"), help=f"directory for {' and '.join(BENCH_FILES)}")
    bench.add_argument("--overwrite", action="store_true", help="replace the results of an earlier measurement in --output")
    bench.add_argument("--experiment", metavar="PRESET_OR_YAML",
                       help="instead: estimate how long this experiment takes here, from its stages' measured costs "
                            f"(writes {' and '.join(ESTIMATE_FILES)})")
    bench.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                       help="leave out the torch.compile and AOTInductor paths (each compiles every network first, seconds each)")


def _check_results_folder(directory: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """Before measuring: earlier results of these ``names`` in ``directory`` are kept unless ``overwrite``
    (a GPU machine's, say), and a run or evaluation directory is not a place for them."""
    from kdrecon.evaluation.evaluate import SUMMARY
    from kdrecon.report.run_layout import MANIFEST, STAGE_FILE
    from kdrecon.training.checkpoint import CHECKPOINTS

    _check_writable(directory, "--output")
    marker = next((name for name in (CHECKPOINTS, SUMMARY, STAGE_FILE, MANIFEST) if (directory / name).exists()), None)
    if marker is not None:
        raise ValueError(f"--output {directory}: a run or evaluation directory (it has {marker}); choose another folder")
    existing = [name for name in names if (directory / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"--output {directory}: {' and '.join(existing)} exist(s) from an earlier measurement; "
                         "choose another folder or pass --overwrite to replace")


def _write_atomically(directory: Path, files: dict[str, str]) -> None:
    from kdrecon.data.layout import atomic_path, remove_debris

    for name, text in files.items():
        remove_debris(directory, name, recursive=False)  # of an interrupted earlier run
        with atomic_path(directory / name) as temporary:
            temporary.write_text(text)


def _run_estimate(args: argparse.Namespace) -> None:
    import json

    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.estimate import estimate_data, estimate_experiment, format_estimate

    config = load_experiment(args.experiment, {"device": args.device if args.device != "auto" else None})
    _check_results_folder(args.output, ESTIMATE_FILES, args.overwrite)
    estimate = estimate_experiment(config, args.steps,
                                   progress=lambda message: print(f"measuring {message} ...", file=sys.stderr, flush=True))
    table = format_estimate(estimate)
    _write_atomically(args.output, dict(zip(ESTIMATE_FILES, (json.dumps(estimate_data(estimate), indent=2), table + "\n"))))
    print(table)
    print(f"written to {args.output}/{' and '.join(ESTIMATE_FILES)}")


def _run_bench(args: argparse.Namespace) -> None:
    import json

    from kdrecon.evaluation.bench_settings import IMAGE_SIZE, INFERENCE_REPEATS, TRAINING_BATCH_SIZE
    from kdrecon.evaluation.benchmark import check_pair, format_markdown, run_benchmark
    from kdrecon.models.registry import DEFAULT_STUDENT, DEFAULT_TEACHER, canonical_model_name
    from kdrecon.training.trainer import resolve_device

    # Everything that can be refused is checked before minutes of measuring.
    defaults = {"teacher": DEFAULT_TEACHER, "student": DEFAULT_STUDENT, "size": IMAGE_SIZE, "batch_size": TRAINING_BATCH_SIZE,
                "repeats": INFERENCE_REPEATS, "compile": True}
    for option, default in defaults.items():
        if args.experiment is not None and getattr(args, option) is not None:
            flag = "--no-compile" if option == "compile" else f"--{option.replace('_', '-')}"
            raise ValueError(f"{flag}: bench --experiment does not use it (it times the experiment's own networks "
                             "and settings); leave it out")
        if getattr(args, option) is None:
            setattr(args, option, default)
    for name in (args.teacher, args.student):
        canonical_model_name(name)
    for option, value, least in (("--steps", args.steps, 1), ("--repeats", args.repeats, 1), ("--size", args.size, 16),
                                 ("--batch-size", args.batch_size, 1)):
        if value < least:
            raise ValueError(f"{option} {value}: must be at least {least}")
    resolve_device(args.device)
    if args.experiment is not None:
        _run_estimate(args)
        return
    _check_results_folder(args.output, BENCH_FILES, args.overwrite)
    check_pair(args.teacher, args.student)
    result = run_benchmark(
        args.teacher, args.student, args.size, args.device, args.steps, args.repeats,
        progress=lambda message: print(f"measuring {message} ...", file=sys.stderr, flush=True), compile=args.compile,
        training_batch_size=args.batch_size,
    )
    table = format_markdown(result)
    _write_atomically(args.output, dict(zip(BENCH_FILES, (json.dumps(result, indent=2), table + "\n"))))
    print(table)
    print(f"written to {args.output}/{' and '.join(BENCH_FILES)}")


#: ``--rerun`` of ``run`` and ``demo``.
RERUN_HELP = "stages already run whose settings changed: move them to RUN/superseded/ and run them again"


def _add_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("experiment", help="an experiment YAML file, or a preset: " + ", ".join(_presets()))
    run.add_argument("--run-dir", type=Path, help="default runs/NAME; rerun to continue or update")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any experiment key")
    run.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="replicates: run every stage once per seed")
    run.add_argument("--parallel", type=int, default=1, help="run up to N independent stages at once (one per GPU)")
    run.add_argument("--only", action="append", default=[], metavar="STAGE",
                     help="run just this stage: seed-42/teacher, or a name (teacher) for every seed")
    run.add_argument("--reuse-from", type=Path, metavar="RUN",
                     help="copy in this run directory's finished stages that have the same settings and inputs")
    run.add_argument("--rerun", action="store_true", help=RERUN_HELP)
    run.add_argument("--no-report", action="store_true", help="skip writing the report")
    run.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def _check_writable(directory: Path, option: str) -> None:
    """Refuse an output directory that cannot be created or written, before any work.

    A file is created and removed in the nearest existing folder: ``os.access`` says yes to root
    everywhere, even in ``/proc``.
    """
    import tempfile

    existing = next(path for path in (Path(directory).absolute(), *Path(directory).absolute().parents) if path.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(existing)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise ValueError(f"{option} {directory}: cannot write there ({existing} is not a writable directory)") from None


def _model_names() -> str:
    from kdrecon.models.registry import model_name_help

    return model_name_help()


def _methods() -> tuple[str, ...]:
    from kdrecon.distillation.losses import METHOD_NAMES
    from kdrecon.training.config import IMITATION

    return (*METHOD_NAMES, IMITATION)


def _presets() -> tuple[str, ...]:
    from kdrecon.experiment.config import PRESETS

    return PRESETS


def _run_run(args: argparse.Namespace) -> None:
    from kdrecon.experiment.config import load_experiment
    from kdrecon.experiment.runner import run_experiment

    overrides = _key_values(args.set)
    if args.seeds:
        overrides["seeds"] = args.seeds
    config = load_experiment(args.experiment, overrides)
    run_dir = args.run_dir or Path("runs") / config.name
    _check_writable(run_dir, "--run-dir")
    if args.parallel < 1:
        raise ValueError(f"--parallel {args.parallel}: must be at least 1")
    manifest = run_experiment(
        config, run_dir, progress=not args.quiet, report=not args.no_report, only=args.only, parallel=args.parallel,
        reuse_from=args.reuse_from, rerun=args.rerun,
    )
    if not _is_main_process():
        return
    if manifest is None:
        print(f"stage(s) {', '.join(args.only)} complete in {run_dir}")
    elif not args.no_report:
        from kdrecon.report.run_layout import REPORT_HTML, REPORT_MARKDOWN

        print(f"experiment complete; report: {run_dir / REPORT_MARKDOWN} and {run_dir / REPORT_HTML}")


def _add_report(report: argparse.ArgumentParser) -> None:
    report.add_argument("run_dir", type=Path)
    report.add_argument("--with-record", action="append", default=[], metavar="RECORD[:SEED,...]",
                        help="pool the seeds of this record (scripts/record_experiment.sh) of the same experiment, "
                             "or only those listed after a colon (where this run retrained some of the record's "
                             "seeds); repeatable")


def _record_and_seeds(value: str) -> tuple[Path, list[int] | None]:
    """``--with-record RECORD[:SEED,SEED]``: the record and the seeds to take from it (None: all)."""
    record, _, seeds = value.rpartition(":")
    if record and seeds and all(seed.isdigit() for seed in seeds.split(",")):
        return Path(record), [int(seed) for seed in seeds.split(",")]
    return Path(value), None


def _run_report(args: argparse.Namespace) -> None:
    from kdrecon.experiment.records import recorded_stages
    from kdrecon.report.build import build_report
    from kdrecon.report.run_layout import REPORT_HTML

    records = [_record_and_seeds(value) for value in args.with_record]
    recorded = [stage for record, seeds in records for stage in recorded_stages(args.run_dir, record, seeds)]
    print(f"report written: {build_report(args.run_dir, recorded)} and {args.run_dir / REPORT_HTML}")


def _add_models(models: argparse.ArgumentParser) -> None:
    """``kdrecon models`` takes no options."""


def _run_models(args: argparse.Namespace) -> None:
    from kdrecon.models.shipped import model_card, shipped_models, shipped_weights
    from kdrecon.models.weights import read_weights

    for name in shipped_models():
        _, info = read_weights(shipped_weights(name))
        psnr = info.provenance.get("study_validation_psnr")
        quality = f", validation PSNR {psnr:.2f} dB (seed {info.provenance.get('seed')})" if psnr is not None else ""
        print(f"{name:<28} {info.model['name']}, {info.data['task']} {info.data['acceleration']}{quality}; card: {model_card(name)}")


def _add_reconstruct(reconstruct: argparse.ArgumentParser) -> None:
    from kdrecon.data.sources.raw_kspace import READOUT_OVERSAMPLING
    from kdrecon.deployment.reconstruct import LOW_RESOLUTION_OPTION, SKIP_EXISTING_OPTION, SLICE_AXIS_OPTION
    from kdrecon.training.config import AS_TRAINED, INFERENCE_PRECISIONS

    reconstruct.add_argument("--model", required=True, help="a shipped model (kdrecon models), .safetensors, run directory or .pt")
    reconstruct.add_argument("--input", type=Path, required=True, help="a file or a directory of .nii/.nii.gz/.h5/.npy/DICOM files")
    reconstruct.add_argument("--output", type=Path, required=True, help="directory for the reconstructions (same names)")
    reconstruct.add_argument("--mask", help="undersample images with this mask: recipe | random | equispaced | PATH.npy "
                                            "(default the model's own; needed for images of another size; not for acquired k-space)")
    reconstruct.add_argument("--batch-size", type=int, help="slices per forward pass (default: the device's)")
    reconstruct.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    reconstruct.add_argument("--readout-oversampling", type=int, default=READOUT_OVERSAMPLING,
                             help="raw .npy k-space: the central 1/N of the readout is kept (as prepare kspace)")
    reconstruct.add_argument("--precision", default=AS_TRAINED, choices=INFERENCE_PRECISIONS,
                             help="default: bf16 if the model was trained in bf16 and bf16 is this device's fast path "
                                  "(measured on a CPU), else fp32")
    reconstruct.add_argument("--overwrite", action="store_true", help="replace reconstructions already in --output")
    reconstruct.add_argument(SKIP_EXISTING_OPTION, action="store_true",
                             help="keep reconstructions already in --output and reconstruct only the other inputs "
                                  "(continues an interrupted run)")
    reconstruct.add_argument(LOW_RESOLUTION_OPTION, action="store_true",
                             help="super-resolution: the images are genuine low-resolution ones, restored at the model's "
                                  "factor times their size (default: full-resolution images, low-passed first as in evaluation)")
    reconstruct.add_argument(SLICE_AXIS_OPTION, type=int,
                             help="NIfTI: the spatial axis (-3..2 of X, Y, Z) the slices run along (default: the axis "
                                  "the model's NIfTI data was prepared along, which its weights record, else the last)")


def _run_reconstruct(args: argparse.Namespace) -> None:
    from kdrecon.deployment.reconstruct import reconstruct_files

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.output.resolve() == args.input.resolve() or args.input.resolve() in args.output.resolve().parents:
        raise ValueError(f"--output {args.output}: must not be the input or inside it")
    _check_writable(args.output, "--output")
    if args.readout_oversampling < 1:
        raise ValueError(f"--readout-oversampling {args.readout_oversampling}: must be at least 1")
    written = reconstruct_files(args.model, args.input, args.output, args.batch_size, args.device, args.mask,
                                readout_oversampling=args.readout_oversampling, precision=args.precision,
                                overwrite=args.overwrite, low_resolution_input=args.low_resolution_input,
                                skip_existing=args.skip_existing, slice_axis=args.slice_axis)
    kept = f"; {len(written.kept)} already there kept" if written.kept else ""
    print(f"{len(written.files)} reconstruction(s) written to {args.output} ({written.precision}): {written.derivation}{kept}")


def _reconstruct_after_interrupt() -> str:
    from kdrecon.deployment.reconstruct import SKIP_EXISTING_OPTION

    return f"the reconstructions written are kept: add {SKIP_EXISTING_OPTION} to the same command to do the rest"


def _add_export(export: argparse.ArgumentParser) -> None:
    from kdrecon.models.export import BF16_FORMATS, FORMATS, SUFFIXES
    from kdrecon.training.config import AS_TRAINED, INFERENCE_PRECISIONS

    export.add_argument("--model", required=True, help="a shipped model (kdrecon models), .safetensors, run directory or .pt")
    export.add_argument("--format", default="onnx", choices=FORMATS,
                        help="aot-inductor: compiled ahead of time for this CPU, batch 1 (needs a C++ compiler)")
    export.add_argument("--output", type=Path, required=True,
                        help="the file to write (" + ", ".join(f"{s} for {f}" for f, s in SUFFIXES.items()) + ")")
    export.add_argument("--precision", default=AS_TRAINED, choices=INFERENCE_PRECISIONS,
                        help=f"{' or '.join(BF16_FORMATS)} only (the others are float32); default: as the model was "
                             "trained, where bf16 is this CPU's fast path")
    export.add_argument("--overwrite", action="store_true", help="replace --output if it exists (only by an export that passed its check)")
    export.add_argument("--no-thin-kernels", dest="thin_kernels", action="store_false",
                        help="a bf16 aot-inductor package with oneDNN's convolutions only, loadable without kdrecon "
                             "(by default it uses kdrecon's kernels for each block's thin convolutions where this CPU has "
                             "AVX-512 BF16)")


def _run_export(args: argparse.Namespace) -> None:
    from kdrecon.deployment.export import export_and_check
    from kdrecon.models.export import SUFFIXES

    if args.output.suffix != SUFFIXES[args.format]:
        raise ValueError(f"--output {args.output}: a {args.format} file must end in {SUFFIXES[args.format]}")
    _check_writable(args.output.parent if str(args.output.parent) else Path("."), "--output")
    check = export_and_check(args.model, args.output, args.format, precision=args.precision, overwrite=args.overwrite,
                             thin_kernels_allowed=args.thin_kernels)
    kernels = ", kdrecon's thin-convolution kernels" if check.thin_kernels else ""
    print(f"{args.output} written ({check.precision}{kernels}); checked on {check.slices} real slices against PyTorch: "
          f"max |difference| {check.max_abs_difference:.2g} (output max {check.max_reference:.2g})")


def _add_demo(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set any experiment key")
    demo.add_argument("--rerun", action="store_true", help=RERUN_HELP)
    demo.add_argument("--quiet", action="store_true")


def _run_demo(args: argparse.Namespace) -> None:
    from kdrecon.demo import run_demo

    _check_writable(args.run_dir, "--run-dir")
    run_demo(args.run_dir, overrides=_key_values(args.set), progress=not args.quiet, rerun=args.rerun)


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, the function that adds its options to its parser (which may
    import torch, so only the command being run gets its options) and the function that runs it."""

    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    #: What to do after Ctrl-C (printed after "kdrecon: interrupted; ").
    after_interrupt: Callable[[], str] = lambda: "run the same command again to resume"


COMMANDS = {
    "prepare": Command("prepare a dataset directory from real data", _add_prepare, _run_prepare),
    "train": Command(
        "train a teacher or student on L1, or a student-friendly teacher (--model sft-teacher)",
        _add_train, _run_train,
    ),
    "distill": Command("distil a student from a trained teacher (Std-KD or SFT-KD)", _add_distill, _run_distill),
    "evaluate": Command("evaluate a checkpoint on a dataset split", _add_evaluate, _run_evaluate),
    "bench": Command("measure speed: parameters, MACs, latency, training throughput", _add_bench, _run_bench),
    "run": Command("run a whole experiment (stage graph, evaluation, report)", _add_run, _run_run),
    "report": Command("rebuild an experiment's report from its run directory", _add_report, _run_report),
    "models": Command("list the trained models shipped with kdrecon", _add_models, _run_models),
    "reconstruct": Command(
        "apply a trained network to new data (NIfTI, papers' or fastMRI h5, DICOM, raw k-space .npy)",
        _add_reconstruct, _run_reconstruct,
        after_interrupt=_reconstruct_after_interrupt,
    ),
    "export": Command(
        "export a network with its data-consistency layer (ONNX, torch.export, AOTInductor)",
        _add_export, _run_export,
    ),
    "demo": Command(
        "the 'demo' experiment on the embedded sample (minutes on a laptop CPU; README: Timings)",
        _add_demo, _run_demo,
    ),
}


PROGRAM = "kdrecon"


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a refusal in one line like every other error (not the usage block)."""

    def error(self, message: str) -> NoReturn:
        command = f"{self.prog}: " if self.prog != PROGRAM else ""  # a command's parser names the command
        self.exit(2, f"{PROGRAM}: error: {command}{message} (see '{self.prog} --help')\n")

    #: The commands' parsers by name (set on the program's parser by :func:`build_parser`).
    command_parsers: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 (argparse's signature)
        """As argparse, but an option the command does not take is refused by that command's parser,
        which points at its own help rather than the program's."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            refusing = self.command_parsers.get(getattr(parsed, "command", None), self)
            refusing.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the options of ``commands`` (default: all); the other commands are listed with
    their help only, so that ``kdrecon --help`` does not import torch."""
    parser = OneLineParser(prog=PROGRAM, description="Knowledge distillation for MRI reconstruction.")
    parser.add_argument("--version", action="version", version=f"kdrecon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    selected = COMMANDS.keys() if commands is None else set(commands)
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help)
        if name in selected:
            command.add_options(subparser)
    parser.command_parsers = subparsers.choices
    return parser


def _command_named(argv: list[str]) -> list[str]:
    """The command on a command line, as a list (empty if none): the first word that is not an option
    (kdrecon's own options take no values)."""
    return [word for word in argv if not word.startswith("-")][:1]


# commands that join the process group when started by torchrun
DISTRIBUTED_COMMANDS = ("train", "distill", "run", "demo")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning of the command line on one line, as its errors are (Python's default adds the
    warning's source file and line of code, which say nothing to a user)."""
    print(f"kdrecon: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_named(argv)).parse_args(argv)
    try:
        if args.command in DISTRIBUTED_COMMANDS:
            from kdrecon.training.distributed import initialise_from_environment

            initialise_from_environment()  # torchrun: join the other processes
        COMMANDS[args.command].run(args)
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"kdrecon: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug, not bad input: still one line, the traceback with --debug
        if args.debug:
            raise
        print(f"kdrecon: internal error: {type(error).__name__}: {error} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kdrecon: interrupted; {COMMANDS[args.command].after_interrupt()}", file=sys.stderr)
        return 130
    finally:
        if args.command in DISTRIBUTED_COMMANDS:
            from kdrecon.training.distributed import shutdown

            shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
