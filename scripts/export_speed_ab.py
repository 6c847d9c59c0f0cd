"""A/B timing of two versions of the exported graph: ``kdrecon.models.export`` at a git commit
against the working tree's, for the shipped teacher and student at batch 1 in ONNX Runtime.

    python scripts/export_speed_ab.py --before 5891eea --rounds 20 --threads 0

Both versions are exported from the same weights, their outputs compared, and the four sessions
timed in alternation (median of 5 calls per round, median over rounds), with the sessions' threads
not spinning between calls (spinning threads of one session slow the next one). ``--threads 0`` is
ONNX Runtime's default (one per core). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kdrecon.deployment.export import check_slices
from kdrecon.mri.masks import mask_from_description
from kdrecon.deployment.reconstruct import load_deployable
from kdrecon.models import export as current_export

MODELS = {"teacher": "sunnybrook-4x-teacher", "student": "sunnybrook-4x-student"}


def module_at(commit: str, directory: Path):
    """``kdrecon/models/export.py`` as it was at ``commit``, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:src/kdrecon/models/export.py"], capture_output=True, text=True,
                            check=True).stdout
    path = directory / "export_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("export_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit whose export is the baseline")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="export-ab-"))
    versions = {"before": module_at(args.before, directory), "after": current_export}
    sessions = {}
    for role, name in MODELS.items():
        network, info = load_deployable(name)
        mask = mask_from_description(info.data["mask"])
        inputs = check_slices(info, 2)
        outputs = []
        for label, module in versions.items():
            path = directory / f"{role}-{label}.onnx"
            module.export_network(network, mask, path, "onnx", inputs)
            sessions[(role, label)] = (session(path, args.threads), {n: t[:1].numpy() for n, t in
                                                                    zip(("zero_filled", "kspace_real", "kspace_imag"), inputs)})
            outputs.append(sessions[(role, label)][0].run(None, sessions[(role, label)][1])[0])
        print(f"{role}: largest difference between the two graphs' outputs {np.abs(outputs[0] - outputs[1]).max():.2e}")
    times = {key: [] for key in sessions}
    for _ in range(args.rounds):
        for key, (inference, feed) in sessions.items():
            start = time.perf_counter()
            for _ in range(5):
                inference.run(None, feed)
            times[key].append((time.perf_counter() - start) / 5 * 1e3)
    for label in versions:
        teacher, student = (float(np.median(times[(role, label)])) for role in MODELS)
        print(f"{label}: teacher {teacher:.2f} ms, student {student:.2f} ms, teacher/student {teacher / student:.2f}x")
    for role in MODELS:
        print(f"{role} before/after: {np.median(times[(role, 'before')]) / np.median(times[(role, 'after')]):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
