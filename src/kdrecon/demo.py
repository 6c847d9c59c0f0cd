"""The main job on the embedded sample: the ``demo`` experiment, evaluated and reported.

Teacher, baseline student, student-friendly teacher, and Std-KD and SFT-KD students (attention
transfer) on the embedded real Sunnybrook sample, sized for a few minutes on two CPU cores (README: measured times).
A second call reuses the finished stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdrecon.evaluation.evaluate import format_table
from kdrecon.experiment.config import load_experiment
from kdrecon.experiment.runner import run_experiment
from kdrecon.report.build import summary_rows
from kdrecon.report.results import load_results
from kdrecon.report.run_layout import REPORT_HTML, REPORT_MARKDOWN


def run_demo(run_dir: Path, overrides: dict[str, Any] | None = None, progress: bool = True,
             rerun: bool = False) -> dict[str, dict]:
    """Run the ``demo`` preset in ``run_dir``, print the results table; returns ``{label: metrics}``.

    ``rerun``: as in :func:`~kdrecon.experiment.runner.run_experiment`, stages already run with
    other settings are superseded only when asked."""
    run_dir = Path(run_dir)
    if run_experiment(load_experiment("demo", overrides), run_dir, progress=progress, rerun=rerun) is None:
        return {}  # not rank 0 under torchrun: that one reports
    results = load_results(run_dir)
    table = summary_rows(results)
    seeds = results.seeds
    print(f"seed {seeds[0]} (one seed):" if len(seeds) == 1 else
          f"each stage's lowest finished seed of {len(seeds)} ({', '.join(map(str, seeds))}); the report has every seed:")
    print(format_table(table))
    print(f"claims, with their verdicts over seeds: {run_dir / REPORT_MARKDOWN} and {run_dir / REPORT_HTML}")
    return table
