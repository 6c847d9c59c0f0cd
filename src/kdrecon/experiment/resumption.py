"""Continuing an experiment in its run directory: which stages to run, reuse or supersede.

A stage is identified by ``seed-{s}/{name}`` and its fingerprint (its settings and, recursively,
its inputs'). A complete stage with the current fingerprint is reused, an interrupted one resumes;
one whose fingerprint changed is *stale*: :func:`rerun_refusal` names it and what changed, and
only with ``--rerun`` does :func:`move_aside` move it to ``RUN/superseded/{time}/`` (never deleted;
moved back, it is reused again once the settings are the old ones). Where a run directory or a
dataset is, or how its path is typed, is not a setting (:func:`recorded_locations`,
:func:`follow_moves`), so a moved run directory resumes.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kdrecon.data.dataset import same_data
from kdrecon.experiment.config import ExperimentConfig
from kdrecon.experiment.stages import Stage
from kdrecon.report.run_layout import STAGE_FILE, RunLayout, StageStatus, is_finished, read_history, read_json
from kdrecon.training.checkpoint import DATA_IDENTITY
from kdrecon.training.config import ConfigError, config_data, read_yaml, write_yaml
from kdrecon.training.supervised import CONFIG_FILE, RESUMABLE_WITH_ANOTHER_VALUE


#: Config keys that locate another stage of the same run rather than set anything: a stage's
#: fingerprint names its teacher stage (``stage:seed-42/teacher``), its ``config.yaml`` the
#: directory, which moves with the run directory. (``init_from`` is a user's path, part of the
#: fingerprint: changing it is a change of settings.)
LOCATION_KEYS = ("teacher",)


def follow_moves(config_file: Path, stage_config: Any) -> None:
    """Bring an interrupted stage's recorded locations up to date, so that it resumes.

    Its fingerprint matched, so its settings are the same; only where its inputs are may differ.
    """
    if not config_file.is_file():
        return
    recorded = read_yaml(config_file)
    current = config_data(stage_config)
    moved = {key: current[key] for key in LOCATION_KEYS if key in recorded and key in current and recorded[key] != current[key]}
    if moved:
        write_yaml({**recorded, **moved}, config_file)


def data_changed(state: dict[str, Any], identity: str) -> bool:
    """Whether a stage's ``stage.json`` records data other than ``identity`` (stages run before
    kdrecon recorded it are taken as unchanged)."""
    return not same_data(str(state.get(DATA_IDENTITY, identity)), identity)


def pending_stages(stages: list[Stage], prints: dict[str, str], layout: RunLayout, only: set[str],
                   identity: str) -> tuple[set[str], list[Path]]:
    """Stages to run, and the directories of those whose settings or data changed (moved aside, then
    rerun); ``identity`` is :func:`kdrecon.data.dataset.dataset_identity` of the experiment's data."""
    pending, stale = set(), []
    for stage in stages:
        files = layout.stage(stage.id)
        state = files.state()
        if state.get("fingerprint") != prints[stage.id] or data_changed(state, identity):
            if files.directory.exists() and (not only or stage.id in only):
                stale.append(files.directory)  # its config or an upstream stage changed
            pending.add(stage.id)
        elif state.get("status") != StageStatus.COMPLETE:
            pending.add(stage.id)
    return pending, stale


def copy_reusable(stages: list[Stage], prints: dict[str, str], layout: RunLayout, source: RunLayout,
                   display_enabled: bool, identity: str) -> None:
    """Copy in ``source``'s complete stages whose fingerprint equals ours and that were trained on the
    same data (``identity``, where recorded), where we have none yet."""
    for stage in stages:
        here, there = layout.stage(stage.id), source.stage(stage.id)
        state = there.state()
        if here.directory.exists() or not is_finished(state, prints[stage.id]):
            continue
        if data_changed(state, identity):  # stages of older versions record none: taken as unchanged
            if display_enabled:
                print(f"[reuse] {stage.id}: not copied, trained on other data", flush=True)
            continue
        staging = here.directory.with_name(here.directory.name + ".copying")
        shutil.rmtree(staging, ignore_errors=True)  # debris of an interrupted copy
        shutil.copytree(there.directory, staging)
        staging.rename(here.directory)
        if display_enabled:
            print(f"[reuse] {stage.id}: copied from {source.root} (same settings and inputs)", flush=True)


def recorded_locations(config: ExperimentConfig, layout: RunLayout) -> ExperimentConfig:
    """``config`` with the dataset path as the run directory recorded it, when both name the same
    directory: how a path is typed (relative, absolute, through a link) is not a setting."""
    if not layout.config.is_file():
        return config
    recorded = read_yaml(layout.config).get("data", {})
    before = recorded.get("dataset") if isinstance(recorded, dict) else None
    now = config.data.dataset
    if isinstance(before, str) and before != now and Path(before).exists() and Path(now).exists() \
            and os.path.samefile(before, now):
        return config.model_copy(update={"data": config.data.model_copy(update={"dataset": before})})
    return config


def _differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs as plain data."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [key for name in sorted(set(before) | set(after))
                for key in _differences(before.get(name), after.get(name), f"{prefix}{name}.")]
    return [] if before == after else [prefix.rstrip(".")]


def _recorded_config(directory: Path, manifest: dict[str, Any], identifier: str) -> Any:
    """The config a stage trained with: its own ``config.yaml``, else the experiment manifest's entry
    (which a run of other stages alone, ``--only``, does not rewrite for this one)."""
    try:
        recorded = read_yaml(directory / CONFIG_FILE)
    except ConfigError:
        recorded = None
    return recorded if isinstance(recorded, dict) else manifest.get(identifier)


def rerun_refusal(stale: list[Path], layout: RunLayout, configs: dict[str, Any], identity: str) -> str:
    """Which stages already run would be superseded, and what changed for each."""
    manifest = {entry.get("id"): entry.get("config") for entry in (read_json(layout.manifest) or {}).get("stages", [])
                if isinstance(entry, dict)}
    reasons = []
    for directory in stale:
        identifier = directory.relative_to(layout.stages).as_posix()
        recorded = _recorded_config(directory, manifest, identifier)
        changed = [key for key in _differences(recorded, config_data(configs[identifier]))
                   if key not in LOCATION_KEYS and key not in RESUMABLE_WITH_ANOTHER_VALUE] if recorded is not None else []
        state = layout.stage(identifier).state()
        if not changed and data_changed(state, identity):
            changed = ["the data in data.dataset"]
        if not changed and "fingerprint" not in state:
            changed = [f"its {STAGE_FILE} is missing or holds no fingerprint"]
        reasons.append(f"{identifier} ({', '.join(changed) if changed else 'a stage it depends on changed'})")
    shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    return (f"{layout.root}: settings changed for stages already run: {shown}. Pass --rerun to move them to "
            f"{layout.superseded}/ and run them again, or give another --run-dir")


def epochs_done(layout: RunLayout, pending: set[str]) -> dict[str, int]:
    """Epochs each pending stage finished before (its feature stage's included)."""
    done = {}
    for identifier in pending:
        files = layout.stage(identifier)
        done[identifier] = len(read_history(files.history)[0]) + len(read_history(files.feature_history)[0])
    return done


def move_aside(stale: list[Path], layout: RunLayout, display_enabled: bool) -> Path | None:
    """Move stages whose settings changed (or a stage's unusable evaluation) to ``RUN/superseded/{time}/``,
    never deleting them; returns that folder."""
    if not stale:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target, count = layout.superseded / stamp, 1
    while target.exists():  # two changes within one second
        target, count = layout.superseded / f"{stamp}-{count}", count + 1
    for directory in stale:
        destination = target / directory.relative_to(layout.stages)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(directory), str(destination))
    if display_enabled:
        names = ", ".join(d.relative_to(layout.stages).as_posix() for d in stale)
        print(f"settings changed for {names}: rerunning; the previous runs are in {target}", flush=True)
    return target
