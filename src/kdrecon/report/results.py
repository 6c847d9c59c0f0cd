"""What an experiment's run directory holds, read once for the report: stages by name and seed.

:func:`load_results` reads the manifest and every complete stage's evaluation (per slice and per
volume) through :mod:`kdrecon.report.run_layout`. Stages not complete yet are listed in
:attr:`ExperimentResults.pending`, so a report of a study still running shows what is done.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdrecon.data.dataset import same_data
from kdrecon.data.image import MAGNITUDE
from kdrecon.data.task import RECONSTRUCTION
from kdrecon.evaluation.evaluate import BICUBIC, METRICS, MODEL, RECONSTRUCTIONS, ZERO_FILLED, baseline_label, metrics_key
from kdrecon.report.run_layout import RunLayout, StageFiles, is_finished, read_json
from kdrecon.report.stage_names import Role
from kdrecon.training.checkpoint import DATA_IDENTITY, checkpoint_path
from kdrecon.training.config import DataConfig

#: Roles in report order.
ROLE_ORDER = tuple(Role)
SWEEP_ROLES = tuple(role for role in ROLE_ORDER if role.startswith(Role.SWEEP))
MAIN_ROLES = tuple(role for role in ROLE_ORDER if role not in SWEEP_ROLES)

#: ``(volume, slice)`` → metric → value
SliceMetrics = dict[tuple[str, int], dict[str, float]]
#: volume → metric → value
VolumeMetrics = dict[str, dict[str, float]]


@dataclass
class StageResult:
    """One complete stage of one seed."""

    id: str
    name: str
    seed: int
    role: str
    label: str
    method: str | None
    model: str
    variant: str
    ablation_of: str
    files: StageFiles
    state: dict[str, Any]
    summary: dict[str, Any]
    per_slice: SliceMetrics
    per_volume: VolumeMetrics
    #: The record (``scripts/record_experiment.sh``) this stage was read from, None for the run's own:
    #: a record keeps scores per volume and the history, not per-slice scores, reconstructions or checkpoints.
    recorded_in: Path | None = None

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Mean ± std over volumes of each metric (``summary.json``)."""
        return self.summary["model_metrics"]


def _read_rows(path: Path, key: str) -> tuple[dict, dict]:
    """Model and zero-filled rows of an evaluation CSV, keyed by ``key``'s columns."""
    model, zero_filled = {}, {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            index = (row["volume"], int(row["slice"])) if key == "slice" else row["volume"]
            values = {m: float(row[m]) for m in METRICS}
            if row["reconstruction"] in (MODEL, ZERO_FILLED):
                (model if row["reconstruction"] == MODEL else zero_filled)[index] = values
    return model, zero_filled


@dataclass
class ExperimentResults:
    """The manifest, the complete stages (report order, then seed) and the ids still pending."""

    layout: RunLayout
    manifest: dict[str, Any]
    stages: list[StageResult]
    pending: list[str]

    @property
    def seeds(self) -> list[int]:
        """The run's seeds and those of the records pooled with it."""
        return sorted(set(self.manifest["seeds"]) | {r.seed for r in self.stages})

    @property
    def records(self) -> dict[Path, list[int]]:
        """Each record pooled into these results and the seeds read from it."""
        seeds: dict[Path, set[int]] = {}
        for result in self.stages:
            if result.recorded_in is not None:
                seeds.setdefault(result.recorded_in, set()).add(result.seed)
        return {record: sorted(found) for record, found in seeds.items()}

    def with_recorded(self, recorded: list[StageResult]) -> ExperimentResults:
        """These results and the stages of other seeds read from records, in report order."""
        seen = {r.id: self.layout.root for r in self.stages}
        for result in recorded:
            if result.id in seen:
                raise ValueError(f"{result.id}: both in {seen[result.id]} and in {result.recorded_in}; "
                                 "pool each seed from one place only")
            seen[result.id] = result.recorded_in
        return ExperimentResults(self.layout, self.manifest, _in_report_order(self.manifest, self.stages + recorded),
                                 self.pending)

    def own(self) -> ExperimentResults:
        """The run's own stages only: what needs files a record does not keep (per-slice tests,
        reconstructions, networks to time)."""
        return ExperimentResults(self.layout, self.manifest, [r for r in self.stages if r.recorded_in is None],
                                 self.pending)

    def from_record(self, record: Path) -> ExperimentResults:
        """The stages pooled from ``record`` only."""
        return ExperimentResults(self.layout, self.manifest, [r for r in self.stages if r.recorded_in == record],
                                 self.pending)

    @property
    def task(self) -> str:
        """``reconstruction`` or ``super-resolution`` (evaluations written before tasks: reconstruction)."""
        return self.stages[0].summary.get("task", RECONSTRUCTION)

    @property
    def image(self) -> str:
        """``magnitude`` or ``complex`` (evaluations written before complex data: magnitude)."""
        return self.stages[0].summary.get("image", MAGNITUDE)

    def baselines(self) -> list[tuple[str, dict[str, dict[str, float]]]]:
        """``(label, mean ± std over volumes)`` of each baseline, the same for every stage and seed."""
        summary = self.stages[0].summary
        return [(baseline_label(kind, self.task), summary[metrics_key(kind)])
                for kind in (ZERO_FILLED, BICUBIC) if metrics_key(kind) in summary]

    @property
    def methods(self) -> list[str]:
        """The KD methods of the main Std-KD stages, in the experiment's order."""
        return list(dict.fromkeys(r.method for r in self.stages if r.role == Role.STD_KD and not r.variant))

    @property
    def paper_setting(self) -> str | None:
        """The papers' column shown beside ours, e.g. ``cardiac-4x``."""
        return self.manifest["paper_setting"]

    def by_name(self, name: str) -> dict[int, StageResult]:
        """Seed → result of stage ``name`` (complete seeds only)."""
        return {r.seed: r for r in self.stages if r.name == name}

    def names(self, roles: tuple[str, ...] = ROLE_ORDER, variants: bool = True) -> list[str]:
        """Stage names in report order, each once."""
        seen: dict[str, None] = {}
        for result in self.stages:
            if result.role in roles and (variants or not result.variant):
                seen.setdefault(result.name)
        return list(seen)

    def first(self, name: str) -> StageResult | None:
        """The result of ``name`` for the first seed that has it."""
        results = self.by_name(name)
        return results[min(results)] if results else None


#: What every stage entry of ``experiment.json`` must have for a report to be built from it.
_MANIFEST_KEYS = frozenset({"id", "name", "seed", "role", "label", "fingerprint"})


def evaluation_problem(files: StageFiles, data: DataConfig, identity: str | None) -> str | None:
    """What makes a complete stage's evaluation unusable in its experiment's report, or None: files
    missing (reconstructions removed to save disk, say), or its scores unusable (:func:`scores_problem`)."""
    summary = read_json(files.summary)
    if summary is None:
        return f"{files.summary} is missing or unreadable"
    for path in (files.per_slice, files.per_volume):
        if not path.is_file():
            return f"{path} is missing"
    stored = len(list((files.evaluation / RECONSTRUCTIONS).glob("*.h5")))
    if stored != summary.get("volumes"):
        return f"{files.evaluation / RECONSTRUCTIONS} holds {stored} of its {summary.get('volumes')} volumes"
    try:
        slices, _ = _read_rows(files.per_slice, "slice")
    except (OSError, KeyError, ValueError, TypeError) as error:
        return f"{files.per_slice} is not an evaluation's table ({type(error).__name__}: {error})"
    if "slices" in summary and len(slices) != summary["slices"]:  # a truncated file: per-slice tests on fewer slices
        return f"{files.per_slice} has {len(slices)} rows of the network, {files.summary.name} counts {summary['slices']} slices"
    return scores_problem(files, data, identity)


def scores_problem(files: StageFiles, data: DataConfig, identity: str | None) -> str | None:
    """What makes a stage's recorded scores unusable in its experiment's report, or None: scores of
    another dataset (``identity``, :func:`kdrecon.data.dataset.dataset_identity` of the experiment's,
    where recorded), split, acceleration, task or checkpoint than the experiment's (``kdrecon evaluate``
    run into it by hand), or per-volume rows that do not average to the summary's means (an edited file)."""
    summary = read_json(files.summary)
    if summary is None:
        return f"{files.summary} is missing or unreadable"
    expected = {"split": "validation", "acceleration": data.acceleration, "task": data.task}
    for key, value in expected.items():
        if summary.get(key, RECONSTRUCTION if key == "task" else None) != value:
            return f"it scores {key} {summary.get(key)}, the experiment's is {value}"
    if identity is not None and not same_data(str(summary.get(DATA_IDENTITY, identity)), identity):
        return f"it scores other data ({summary.get('dataset')}) than the experiment's"
    if Path(str(summary.get("checkpoint"))).name != checkpoint_path(Path(), "best").name:
        return f"it scores {summary.get('checkpoint')}, not the stage's best checkpoint"
    try:
        model, zero_filled = _read_rows(files.per_volume, "volume")
    except (OSError, KeyError, ValueError, TypeError) as error:  # TypeError: a row cut short
        return f"{files.per_volume} is not an evaluation's table ({type(error).__name__}: {error})"
    return _disagreement(model, summary, MODEL) or _disagreement(zero_filled, summary, ZERO_FILLED)


def _disagreement(per_volume: VolumeMetrics, summary: dict[str, Any], kind: str) -> str | None:
    """Where ``per_volume.csv``'s rows of ``kind`` (the model or a baseline) do not average to the means
    ``summary.json`` records for them, or None. The report's effects and claims come from the rows and
    its tables from the summary: an edited or stale file would make them tell two stories."""
    recorded = summary.get(metrics_key(kind))
    if recorded is None:
        return None
    if len(per_volume) != summary.get("volumes"):
        return f"per_volume.csv has {len(per_volume)} {kind} rows, summary.json counts {summary.get('volumes')} volumes"
    for metric in METRICS:
        mean = sum(row[metric] for row in per_volume.values()) / len(per_volume)
        if not math.isclose(mean, recorded[metric]["mean"], rel_tol=1e-9, abs_tol=1e-12):
            return (f"its {kind} {metric} in per_volume.csv averages {mean:.6g}, "
                    f"summary.json records {recorded[metric]['mean']:.6g}")
    return None


def _stage_result(layout: RunLayout, entry: dict[str, Any], data: DataConfig, identity: str | None) -> StageResult | None:
    files = layout.stage(entry["id"])
    state = files.state()
    if not is_finished(state, entry["fingerprint"]):
        return None
    problem = evaluation_problem(files, data, identity)
    if problem is not None:
        raise ValueError(f"stage {entry['id']}: its evaluation cannot be reported: {problem}; "
                         "'kdrecon run' with the experiment evaluates it again")
    per_slice, _ = _read_rows(files.per_slice, "slice")
    return _result(entry, files, state, per_slice)


def _result(entry: dict[str, Any], files: StageFiles, state: dict[str, Any], per_slice: SliceMetrics,
            recorded_in: Path | None = None) -> StageResult:
    per_volume, _ = _read_rows(files.per_volume, "volume")
    return StageResult(entry["id"], entry["name"], entry["seed"], entry["role"], entry["label"], entry["method"],
                       entry["model"], entry["variant"], entry["ablation_of"], files, state, read_json(files.summary),
                       per_slice, per_volume, recorded_in)


def recorded_stage_result(entry: dict[str, Any], record: Path, data: DataConfig, identity: str | None) -> StageResult:
    """Stage ``entry`` (a manifest entry) of a record: its directory ``record/{id}`` as
    ``scripts/record_experiment.sh`` copies it, checked as :func:`scores_problem` checks a run's."""
    files = StageFiles(Path(record) / entry["id"])
    problem = scores_problem(files, data, identity)
    if problem is not None:
        raise ValueError(f"{files.directory}: its evaluation cannot be reported: {problem}")
    return _result(entry, files, files.state(), {}, Path(record))


def _in_report_order(manifest: dict[str, Any], results: list[StageResult]) -> list[StageResult]:
    order = {name: index for index, name in enumerate(e["name"] for e in manifest["stages"])}
    return sorted(results, key=lambda r: (ROLE_ORDER.index(r.role), order.get(r.name, len(order)), r.seed))


def load_results(run_dir: Path) -> ExperimentResults:
    """Every complete stage of the experiment in ``run_dir``; fails when none is complete."""
    layout = RunLayout(Path(run_dir))
    manifest = read_json(layout.manifest)
    if manifest is None:
        raise ValueError(f"{layout.manifest}: missing or not valid JSON (run 'kdrecon run' first)")
    entries = manifest.get("stages")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) and _MANIFEST_KEYS <= entry.keys() for entry in entries):
        raise ValueError(f"{layout.manifest}: 'stages' is not a list of stages with {', '.join(sorted(_MANIFEST_KEYS))}")
    if "paper_setting" not in manifest or any("ablation_of" not in entry for entry in manifest.get("stages", [])):
        raise ValueError(f"{layout.manifest}: written by an older kdrecon without seeds; run 'kdrecon run' again")
    results, pending = [], []
    data = DataConfig.model_validate(manifest.get("config", {}).get("data", {}))
    for entry in manifest["stages"]:
        result = _stage_result(layout, entry, data, manifest.get(DATA_IDENTITY))
        if result is None:
            pending.append(entry["id"])
        else:
            results.append(result)
    if not results:
        raise ValueError(f"{layout.root}: no stage is complete yet; run 'kdrecon run' again")
    return ExperimentResults(layout, manifest, _in_report_order(manifest, results), pending)
