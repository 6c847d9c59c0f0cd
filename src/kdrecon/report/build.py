"""The experiment report, laid out like the papers, rebuilt from what a run directory holds.

:func:`build_report` reads ``experiment.json``, each stage's ``evaluation/`` and ``stage.json``
and its ``metrics.csv``, and writes ``report.md``, a self-contained ``report.html`` (figures
embedded, no network needed) and ``figures/*.png``. Nothing is retrained or re-evaluated.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import yaml

from kdrecon.data.dataset import load_split
from kdrecon.data.layout import atomic_path
from kdrecon.evaluation.statistics import paired_wilcoxon
from kdrecon.report import figures

ROLE_ORDER = ("teacher", "sft-teacher", "student", "std-kd", "sft-kd", "sft-kd-random", "sweep")


@dataclass
class StageResult:
    name: str
    role: str
    label: str
    method: str | None
    model: str
    directory: Path
    state: dict[str, Any]
    summary: dict[str, Any]
    per_slice: dict[tuple[str, int], dict[str, float]]
    zero_filled: dict[tuple[str, int], dict[str, float]]


# --- a minimal document model rendered both as Markdown and as HTML ---------------------------


class Document:
    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, header: list[str], rows: Iterable[list[Any]]) -> None:
        self.blocks.append(("table", header, [[str(c) for c in row] for row in rows]))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("image", path, caption))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self, root: Path) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "paragraph":
                out.append(block[1])
            elif kind == "table":
                header, rows = block[1], block[2]
                out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                     + ["| " + " | ".join(row) + " |" for row in rows]))
            elif kind == "image":
                out.append(f"![{block[2]}]({block[1].relative_to(root).as_posix()})\n\n*{block[2]}*")
            elif kind == "code":
                out.append("```yaml\n" + block[1].rstrip() + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:0.8em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
            "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
            "img{max-width:100%}pre{background:#f6f6f6;padding:0.8em;overflow:auto}figcaption{font-style:italic}"
            "</style></head><body>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                out.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in block[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            elif kind == "image":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
            elif kind == "code":
                out.append(f"<pre>{html.escape(block[1])}</pre>")
        out.append("</body></html>")
        return "\n".join(out)


# --- reading a run directory ------------------------------------------------------------------


def _read_per_slice(path: Path) -> tuple[dict, dict]:
    model, zero_filled = {}, {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["volume"], int(row["slice"]))
            values = {m: float(row[m]) for m in ("psnr", "ssim", "nmse", "hfn", "vif")}
            (model if row["reconstruction"] == "model" else zero_filled)[key] = values
    return model, zero_filled


def load_results(run_dir: Path) -> tuple[dict[str, Any], list[StageResult]]:
    """The manifest and every completed stage's results, in report order."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "experiment.json"
    if not manifest_path.is_file():
        raise ValueError(f"{run_dir}: no experiment.json (run 'kdrecon run' first)")
    manifest = json.loads(manifest_path.read_text())
    results = []
    for stage in manifest["stages"]:
        directory = run_dir / stage["directory"]
        state = json.loads((directory / "stage.json").read_text()) if (directory / "stage.json").is_file() else {}
        if state.get("status") != "complete" or state.get("fingerprint") != stage["fingerprint"]:
            raise ValueError(f"{directory}: stage {stage['name']} is not complete; run 'kdrecon run' again")
        model, zero_filled = _read_per_slice(directory / "evaluation" / "per_slice.csv")
        summary = json.loads((directory / "evaluation" / "summary.json").read_text())
        results.append(StageResult(stage["name"], stage["role"], stage["label"], stage["method"], stage["model"],
                                   directory, state, summary, model, zero_filled))
    results.sort(key=lambda r: ROLE_ORDER.index(r.role))
    return manifest, results


def _history(path: Path) -> tuple[list[int], list[float]]:
    epochs, losses = [], []
    if path.is_file():
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                epochs.append(int(row["epoch"]))
                losses.append(float(row["validation_loss"]))
    return epochs, losses


def _mean_std(metrics: dict[str, dict[str, float]], name: str, digits: int) -> str:
    return f"{metrics[name]['mean']:.{digits}f} ± {metrics[name]['std']:.{digits}f}"


def _paired(a: StageResult, b: StageResult, metric: str) -> dict[str, Any]:
    keys = sorted(set(a.per_slice) & set(b.per_slice))
    return paired_wilcoxon([a.per_slice[k][metric] for k in keys], [b.per_slice[k][metric] for k in keys])


# --- the report --------------------------------------------------------------------------------


def build_report(run_dir: Path) -> Path:
    """Write ``report.md``, ``report.html`` and ``figures/`` for the experiment in ``run_dir``."""
    run_dir = Path(run_dir)
    manifest, results = load_results(run_dir)
    by_name = {r.name: r for r in results}
    config = manifest["config"]
    zero_filled = results[0].summary["zero_filled_metrics"]
    first = results[0].summary
    document = Document()
    document.heading(f"kdrecon report: {manifest['name']}", 1)
    document.paragraph(
        f"Dataset {first['dataset']}, {first['acceleration']} undersampling, {first['split']} split: "
        f"{first['volumes']} volumes, {first['slices']} slices. Metrics: {first['conventions']}. "
        f"Device {manifest['device']}, seed {manifest['seed']}, precision {config['precision']}."
    )

    # Table 1: PSNR / SSIM
    teacher = by_name.get("teacher")
    document.heading("Reconstruction quality (papers' Table 1)")
    rows = [["Zero-filled", _mean_std(zero_filled, "psnr", 2), _mean_std(zero_filled, "ssim", 4), ""]]
    for result in results:
        if result.role == "sweep":
            continue
        metrics = result.summary["model_metrics"]
        gap = f"{teacher.summary['model_metrics']['psnr']['mean'] - metrics['psnr']['mean']:+.2f}" if teacher else ""
        rows.append([result.label, _mean_std(metrics, "psnr", 2), _mean_std(metrics, "ssim", 4), gap if result is not teacher else ""])
    document.table(["model", "PSNR (dB)", "SSIM", "teacher − model PSNR (dB)"], rows)
    methods = [r.method for r in results if r.role == "std-kd"]
    if methods:
        compact = []
        for method in methods:
            std, sft = by_name[f"std-kd-{method}"], by_name[f"sft-kd-{method}"]
            cells = [std.label.replace(" Std-KD", "")]
            for result in (std, sft):
                metrics = result.summary["model_metrics"]
                cells.append(f"{metrics['psnr']['mean']:.2f} / {metrics['ssim']['mean']:.4f}")
            compact.append(cells)
        document.paragraph("Std-KD against SFT-KD, PSNR / SSIM (mean over volumes):")
        document.table(["method", "Std-KD", "SFT-KD"], compact)

    # Tables 3 / 5: HFN and VIF (and the random-initialisation ablation, when run)
    document.heading("High-frequency error and visual information fidelity (papers' Tables 3 and 5)")
    rows = [["Zero-filled", _mean_std(zero_filled, "hfn", 4), _mean_std(zero_filled, "vif", 4), _mean_std(zero_filled, "nmse", 4)]]
    for result in results:
        if result.role != "sweep":
            metrics = result.summary["model_metrics"]
            rows.append([result.label, _mean_std(metrics, "hfn", 4), _mean_std(metrics, "vif", 4), _mean_std(metrics, "nmse", 4)])
    document.table(["model", "HFN (lower is better)", "VIF", "NMSE"], rows)

    # Table 8: model size, cost and quality
    document.heading("Size, cost and quality per network (papers' Table 8)")
    sized = [r for r in results if r.role in ("teacher", "student", "sweep")]
    sized.sort(key=lambda r: -r.state["parameters"])
    timing = sized[0].state.get("timing", "") if sized else ""
    document.table(
        ["network", "parameters", "GMAC per slice", "inference (ms per slice)", "PSNR (dB)", "SSIM"],
        [[r.label, f"{r.state['parameters']:,}", f"{r.state['macs_per_slice'] / 1e9:.3f}",
          f"{r.state['inference_ms_per_slice']:.2f}", _mean_std(r.summary["model_metrics"], "psnr", 2),
          _mean_std(r.summary["model_metrics"], "ssim", 4)] for r in sized],
    )
    document.paragraph(f"Inference time: {timing}; MACs count the convolutions (the FFTs of data consistency are left out).")

    # Significance
    document.heading("Paired Wilcoxon signed-rank tests (per slice, α = 0.05)")
    student = by_name.get("student")
    rows = []
    for method in methods:
        comparisons = [(by_name[f"sft-kd-{method}"], by_name[f"std-kd-{method}"])]
        if student is not None:
            comparisons += [(by_name[f"std-kd-{method}"], student), (by_name[f"sft-kd-{method}"], student)]
        for a, b in comparisons:
            for metric in ("psnr", "ssim"):
                test = _paired(a, b, metric)
                rows.append([f"{a.label} vs {b.label}", metric.upper(), f"{test['mean_difference']:+.4f}",
                             f"{test['p_value']:.3g}", "yes" if test["significant"] else "no", test["slices"]])
    if rows:
        document.table(["comparison", "metric", "mean difference (a − b)", "p-value", "p < 0.05", "slices"], rows)
        document.paragraph(
            "Each test takes the slices of one training run per stage as its sample, as the papers do: "
            "it says whether the two networks differ on these slices, not whether retraining with another "
            "seed would give the same difference. On short runs that run-to-run spread can exceed the "
            "differences tested (docs/benchmarks.md)."
        )
    else:
        document.paragraph("No distillation stages were run, so there is nothing to compare.")

    # Figures
    figure_dir = run_dir / "figures"
    document.heading("Reconstructions (papers' Figure 3)")
    shown = [r for r in results if r.role in ("teacher", "student")] + [
        r for r in results if r.role in ("std-kd", "sft-kd") and r.method == (methods[0] if methods else None)
    ]
    data = load_split(first["dataset"], first["split"], first["acceleration"])
    for volume in data.volumes[: config["report"]["figure_slices"]]:
        index = (volume.start + volume.stop) // 2
        target = data.target[index, 0].numpy()
        images = {"zero-filled": data.zero_filled[index, 0].numpy()}
        for result in shown:
            with h5py.File(result.directory / "evaluation" / "reconstructions" / f"{volume.name}.h5", "r") as file:
                images[result.label] = file["reconstruction"][index - volume.start]
        path = figure_dir / f"reconstruction-{volume.name}.png"
        figures.reconstruction_figure(path, target, images, f"{volume.name}, slice {index - volume.start}", config["report"]["zoom"])
        document.image(path, f"{volume.name}, slice {index - volume.start} (middle slice): images, zoomed inset and |error| on a shared scale")

    document.heading("Per-slice distributions and training curves (papers' Figure 4)")
    keys = sorted(results[0].zero_filled)
    values = {m: {"zero-filled": [results[0].zero_filled[k][m] for k in keys]} for m in ("psnr", "ssim")}
    for result in results:
        for metric in values:
            values[metric][result.label] = [result.per_slice[k][metric] for k in keys]
    figures.metric_boxplots(figure_dir / "per-slice-metrics.png", values)
    document.image(figure_dir / "per-slice-metrics.png", "PSNR and SSIM of every validation slice (box: quartiles; triangle: mean)")
    curves, feature_curves = {}, {}
    for result in results:
        if (result.directory / "feature-stage" / "metrics.csv").is_file():
            feature_curves[result.label] = _history(result.directory / "feature-stage" / "metrics.csv")
        curves[result.label] = _history(result.directory / "metrics.csv")
    figures.validation_curves(figure_dir / "validation-curves.png", curves, feature_curves)
    document.image(
        figure_dir / "validation-curves.png",
        "Validation loss per epoch of every stage: L1 of the trained network (for a distilled student, of its "
        "final stage) and, for KD-MRI's feature stages, the feature loss relative to its first epoch",
    )

    # Provenance
    document.heading("How these numbers were made")
    document.paragraph(
        f"kdrecon {manifest['kdrecon']}, PyTorch {manifest['torch']}, Python {manifest['python']}, {manifest['platform']}. "
        f"Checkpoint selection: {manifest['checkpoint_selection']}."
    )
    document.table(
        ["stage", "fingerprint", "best epoch", "epochs", "training wall time (s)", "device", "finished"],
        [[r.name, r.state["fingerprint"], r.state.get("best_epoch", ""),
          len(_history(r.directory / "metrics.csv")[0]),
          f"{r.state.get('wall_seconds', 0):.0f}", r.state.get("device", ""), r.state.get("finished", "")] for r in results],
    )
    document.code(yaml.safe_dump(config, sort_keys=False))

    with atomic_path(run_dir / "report.md") as temporary:
        temporary.write_text(document.markdown(run_dir))
    with atomic_path(run_dir / "report.html") as temporary:
        temporary.write_text(document.html(f"kdrecon report: {manifest['name']}"))
    return run_dir / "report.md"
