"""Time spent by an experiment's stages, from its run directory: per stage and per stage kind.

Usage: python scripts/study_times.py runs/study-sunnybrook-4x
Prints, per stage, the training wall time recorded in stage.json and the median epoch time from
metrics.csv (both training stages of a two-stage distillation); then the median epoch time per
stage kind (an epoch slowed by a paused or shared machine moves the median little) and the sums.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

run = Path(sys.argv[1])
if not (run / "stages").is_dir():
    sys.exit(f"{run}: not an experiment run directory (no stages/)")
by_kind: dict[str, list[float]] = {}
total_wall = total_session = 0.0
for state_file in sorted(run.glob("stages/*/*/stage.json")):
    state = json.loads(state_file.read_text())
    if state.get("status") != "complete":
        print(f"{state_file.parent.relative_to(run / 'stages')}: {state.get('status')}")
        continue
    epochs = []
    for history in (state_file.parent / "feature-stage" / "metrics.csv", state_file.parent / "metrics.csv"):
        if history.is_file():
            with open(history, newline="") as handle:
                epochs += [float(row["epoch_seconds"]) for row in csv.DictReader(handle)]
    name = state_file.parent.name
    kind = "sft-teacher" if name.startswith("sft-teacher") else name.split("-")[0] if name in ("teacher", "student") else "distillation"
    by_kind.setdefault(kind, []).extend(epochs)
    total_wall += state["wall_seconds"]
    total_session += state.get("session_seconds", state["wall_seconds"])
    print(f"{state_file.parent.relative_to(run / 'stages')}: training {state['wall_seconds'] / 60:.1f} min, "
          f"with evaluation {state.get('session_seconds', 0) / 60:.1f} min, median epoch {statistics.median(epochs):.0f} s")
for kind, epochs in by_kind.items():
    print(f"{kind}: median epoch {statistics.median(epochs):.0f} s over {len(epochs)} epochs")
print(f"all stages: training {total_wall / 3600:.2f} h, with evaluation {total_session / 3600:.2f} h")
