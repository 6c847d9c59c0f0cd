"""Seeds of an experiment kept in a record, pooled with a run of the same experiment for its report.

A record is what ``scripts/record_experiment.sh`` copies out of a finished run into ``docs/``: per
stage and seed (``seed-{s}/{stage}/``) its ``stage.json``, training history and per-volume
evaluation, no checkpoints or reconstructions. When the run directories of earlier seeds are gone
(another machine, another session), new seeds run in a new directory and the report pools them
with the record's, so claims rest on every seed trained.

A recorded stage is pooled only when its fingerprint equals the one this run's experiment gives
that stage for that seed: same settings, data path, dependencies and seed. Anything else is refused,
naming the stage. Settings left to the machine (``auto`` precision or layout) may have resolved
otherwise there; the report names the training path of the record's stages beside the run's own.

A seed both the run and a record hold is refused: two trainings of one stage and seed (equal
fingerprints, yet not bitwise equal across machines and sessions) must not both count. When a
newer run retrains some of a record's seeds (for stages the record lacks), ``seeds`` takes only
the record's others.

Usage (``kdrecon report RUN --with-record RECORD[:SEED,...]`` does this, once per record)::

    stages = recorded_stages(Path("runs/sr-study"), Path("docs/super-resolution-sample-4x"))
    build_report(Path("runs/sr-study"), recorded=stages)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdrecon.experiment.config import load_experiment
from kdrecon.experiment.stages import Stage, build_stages, fingerprints
from kdrecon.report.results import StageResult, recorded_stage_result
from kdrecon.report.run_layout import SEED_FOLDER, RunLayout, StageFiles, StageStatus, read_json
from kdrecon.training.checkpoint import DATA_IDENTITY

def record_seeds(record: Path) -> list[int]:
    """The seeds a record holds (its ``seed-{s}`` folders)."""
    seeds = []
    for folder in Path(record).glob(SEED_FOLDER + "*"):
        suffix = folder.name.removeprefix(SEED_FOLDER)
        if folder.is_dir() and suffix.isdigit():
            seeds.append(int(suffix))
    if not seeds:
        raise ValueError(f"{record}: no seed-N folders; not a record of scripts/record_experiment.sh")
    return sorted(seeds)


def _entry(stage: Stage) -> dict:
    return {"id": stage.id, "name": stage.name, "seed": stage.seed, "role": stage.role, "label": stage.label,
            "method": stage.method, "model": stage.model, "variant": stage.variant, "ablation_of": stage.ablation_of}


def recorded_stages(run_dir: Path, record: Path, seeds: Sequence[int] | None = None) -> list[StageResult]:
    """The complete stages of ``record``'s seeds (or of those of ``seeds``, each of which it must
    hold), checked to be stages of the experiment in ``run_dir`` (fingerprints equal for their
    seeds); the run itself must not have those seeds."""
    layout = RunLayout(Path(run_dir))
    manifest = read_json(layout.manifest)
    if manifest is None or not layout.config.is_file():
        raise ValueError(f"{run_dir}: not an experiment run directory (no {layout.manifest.name} or {layout.config.name})")
    held = record_seeds(record)
    if seeds is not None:
        missing = sorted(set(seeds) - set(held))
        if missing:
            raise ValueError(f"{record}: has no seed {missing[0]} (its seeds: {', '.join(map(str, held))})")
    seeds = held if seeds is None else sorted(set(seeds))
    shared = sorted(set(seeds) & set(manifest["seeds"]))
    if shared:
        raise ValueError(f"{record}: seed {shared[0]} is also a seed of {run_dir}; pool only seeds the run does not have")
    # Every recorded seed may hold ablations (the run's ``ablation_seeds`` counts the run's own
    # seeds); only the stages the record has, complete and of equal fingerprint, are pooled.
    config = load_experiment(layout.config, {"seeds": seeds, "ablation_seeds": len(seeds)})
    stages = build_stages(config)
    expected = fingerprints(stages)
    results = []
    for stage in stages:
        state = StageFiles(Path(record) / stage.id).state()
        if state.get("status") != StageStatus.COMPLETE:
            continue  # not finished when it was recorded, as the record's report says
        if state.get("fingerprint") != expected[stage.id]:
            raise ValueError(
                f"{Path(record) / stage.id}: fingerprint {state.get('fingerprint')}, but {run_dir}'s experiment gives "
                f"{expected[stage.id]} for this stage and seed: recorded with other settings, data path or code (a "
                f"default changed since? run the new seeds with --set KEY=<the recorded value>)")
        results.append(recorded_stage_result(_entry(stage), record, config.data, manifest.get(DATA_IDENTITY)))
    if not results:
        raise ValueError(f"{record}: no complete stage of {run_dir}'s experiment for seeds {seeds}")
    return results
