"""The published number beside a stage of ours, shown only where it was measured like ours.

A number of the papers (:mod:`kdrecon.report.published`) is comparable with a stage when its
setting is the data's (task, acceleration, magnitude images), the networks are as wide, and the
networks the stage's number depends on are the paper's: the teacher for a teacher, the student
for a student, both for an SFT teacher or a distilled student. Anywhere else the report shows
"—", and :func:`paper_note` says why.
"""

from __future__ import annotations

from kdrecon.models.registry import SFT_TEACHER as SFT_TEACHER_MODEL
from kdrecon.report.published import (PSNR_SSIM, PUBLISHED, PUBLISHED_IMAGE, PUBLISHED_INFERENCE_CHANNELS,
                                      PUBLISHED_INFERENCE_MS, PublishedSetting)
from kdrecon.report.results import ExperimentResults, StageResult
from kdrecon.report.stage_names import Role


def paper_setting(results: ExperimentResults) -> PublishedSetting | None:
    return PUBLISHED.get(results.paper_setting) if results.paper_setting else None


def setting_problem(results: ExperimentResults) -> str | None:
    """Why no published number of the experiment's paper setting compares with its stages, or None."""
    setting, data = paper_setting(results), results.stages[0].summary
    ours = f"{results.task} at {data['acceleration']}"
    if setting is None:
        return f"the papers publish no numbers for {ours}"
    if (setting.task, setting.acceleration) != (results.task, data["acceleration"]):
        return f"the paper's numbers are of {setting.task} at {setting.acceleration}, this experiment's of {ours}"
    if results.image != PUBLISHED_IMAGE:
        return f"the paper's networks take {PUBLISHED_IMAGE} images, this experiment's {results.image} ones"
    channels = results.manifest["config"]["channels"]
    if channels != setting.channels:
        return f"the paper's networks are {setting.channels} channels wide, this experiment's {channels}"
    return None


def _networks(results: ExperimentResults, result: StageResult) -> tuple[str | None, str | None]:
    """The teacher and the student ``result``'s number depends on (None: one it does not depend on)."""
    teacher = results.manifest["config"]["teacher"]
    if result.role == Role.TEACHER:
        return teacher, None
    if result.role in (Role.STUDENT, Role.SWEEP):
        return None, result.model
    if result.model == SFT_TEACHER_MODEL:  # its student branches are in the stage's config, alike for every seed
        entry = next(e for e in results.manifest["stages"] if e["name"] == result.name)  # a pooled seed has no entry
        return teacher, entry["config"]["model"]["student"]
    return teacher, result.model


def network_differences(results: ExperimentResults, name: str) -> list[str]:
    """How the networks of stage ``name`` differ from those the paper's number of it was measured
    with, e.g. ``["teacher D3C2, not the paper's D5C5"]``; empty when they do not or none is published."""
    result, setting = results.first(name), paper_setting(results)
    if result is None or setting is None or name not in setting.numbers:
        return []
    ours, paper = _networks(results, result), setting.measured_with(name)
    return [f"{part} {mine}, not the paper's {theirs}" for part, mine, theirs in zip(("teacher", "student"), ours, paper)
            if mine is not None and mine != theirs]


def published_numbers(results: ExperimentResults, name: str) -> PSNR_SSIM | None:
    """The paper's PSNR and SSIM of stage ``name``, where published and measured like ours."""
    setting = paper_setting(results)
    if setting is None or setting_problem(results) or network_differences(results, name):
        return None
    return setting.numbers.get(name)


def published_text(results: ExperimentResults, name: str) -> str:
    numbers = published_numbers(results, name)
    return "—" if numbers is None else f"{numbers[0]:.2f} / {numbers[1]:.4f}"


def published_inference_ms(results: ExperimentResults) -> tuple[float, float] | None:
    """The paper's inference times (ms per slice) of the experiment's teacher and student, where it timed them."""
    config = results.manifest["config"]
    times = [PUBLISHED_INFERENCE_MS.get(config[part]) for part in ("teacher", "student")]
    if None in times or config["channels"] != PUBLISHED_INFERENCE_CHANNELS:
        return None
    return times[0], times[1]


def column_heading(results: ExperimentResults) -> str:
    return results.paper_setting or "none published"


def paper_note(results: ExperimentResults) -> str:
    """What the paper columns show, and why a stage the paper has a number for shows none."""
    setting = paper_setting(results)
    text = ("Paper columns: a published number only beside a stage measured with the same networks in the same "
            "setting" + ("" if setting is None else f" ({results.paper_setting}: {setting.describe()})")
            + "; — where the paper has no such stage or its number is not comparable")
    problem = setting_problem(results)
    if problem is None:
        differences = [d for name in dict.fromkeys(r.name for r in results.stages)
                       for d in network_differences(results, name)]
        problem = "; ".join(dict.fromkeys(differences))  # each difference once, in report order
    return text + (f": {problem}." if problem else ".")
