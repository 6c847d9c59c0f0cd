"""The report's figures, drawn with matplotlib (no display needed) and saved as PNG.

* :func:`reconstruction_figure` — papers' Figure 3: target, a zoomed inset, zero-filled and each
  model's reconstruction, with absolute error maps on one shared scale;
* :func:`metric_boxplots` — papers' Figure 4: per-slice PSNR and SSIM per model;
* :func:`validation_curves` — validation loss per epoch of every stage;
* :func:`seed_effects` — each comparison's effect per seed with its interval over seeds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from kdrecon.data.layout import atomic_path  # noqa: E402
from kdrecon.evaluation.statistics import SeedEffect  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def _zoom_box(shape: tuple[int, int], zoom: float) -> tuple[int, int, int]:
    """(row, column, side) of a square inset centred on the image."""
    side = max(8, int(round(min(shape) * zoom)))
    return (shape[0] - side) // 2, (shape[1] - side) // 2, side


def reconstruction_figure(
    path: Path, target: np.ndarray, images: dict[str, np.ndarray], title: str, zoom: float = 0.35
) -> None:
    """One slice: a row of images (target, inset, then ``images``) and a row of |error| maps.

    ``images`` maps a label (zero-filled first, then models) to a reconstruction of ``target``.
    Every error map uses the same colour scale, the largest 99.5th percentile over them.
    """
    labels = list(images)
    columns = len(labels) + 2
    figure, axes = plt.subplots(2, columns, figsize=(2.1 * columns, 4.6))
    row, column, side = _zoom_box(target.shape, zoom)
    vmax = float(target.max())
    errors = {label: np.abs(images[label] - target) for label in labels}
    error_max = max(float(np.percentile(e, 99.5)) for e in errors.values()) or 1.0
    axes[0, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].add_patch(Rectangle((column, row), side, side, fill=False, edgecolor="yellow", linewidth=1))
    axes[0, 0].set_title("target", fontsize=9)
    axes[0, 1].imshow(target[row : row + side, column : column + side], cmap="gray", vmin=0, vmax=vmax)
    axes[0, 1].set_title("target (zoom)", fontsize=9)
    for index, label in enumerate(labels, start=2):
        axes[0, index].imshow(images[label], cmap="gray", vmin=0, vmax=vmax)
        axes[0, index].set_title(label, fontsize=9)
        shown = axes[1, index].imshow(errors[label], cmap="inferno", vmin=0, vmax=error_max)
    axes[1, 0].axis("off")
    axes[1, 1].text(0.5, 0.5, f"|error|\nshared scale\n0 – {error_max:.3f}", ha="center", va="center", fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    axes[1, 1].axis("off")
    figure.colorbar(shown, ax=axes[1, 2:].tolist(), fraction=0.02, pad=0.01)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


def metric_boxplots(path: Path, values: dict[str, dict[str, list[float]]]) -> None:
    """Box plots of per-slice PSNR and SSIM; ``values[metric][label]`` is a list over slices."""
    metrics = list(values)
    labels = list(values[metrics[0]])
    figure, axes = plt.subplots(1, len(metrics), figsize=(max(6, 0.9 * len(labels)) * len(metrics) / 1.6, 4))
    for axis, metric in zip(np.atleast_1d(axes), metrics):
        axis.boxplot([values[metric][label] for label in labels], showmeans=True)
        axis.set_xticks(range(1, len(labels) + 1), labels, rotation=35, ha="right", fontsize=8)
        axis.set_title(f"{metric.upper()} per slice", fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    _save(figure, path)


def validation_curves(
    path: Path,
    curves: dict[str, tuple[list[int], list[float]]],
    feature_curves: dict[str, tuple[list[int], list[float]]] | None = None,
) -> None:
    """Validation L1 per epoch of every stage; beside it, when given, each feature stage's
    validation feature loss relative to its first epoch (the methods' losses differ in scale)."""
    panels = 2 if feature_curves else 1
    figure, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 4.4), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for index, (label, (epochs, losses)) in enumerate(curves.items()):
        axes[0, 0].plot(epochs, losses, styles[index // 10 % 4], marker="o", markersize=2.5, linewidth=1.2, label=label)
    axes[0, 0].set_title("validation L1 (the loss that selects the checkpoint)", fontsize=10)
    axes[0, 0].set_ylabel("validation L1")
    if feature_curves:
        for index, (label, (epochs, losses)) in enumerate(feature_curves.items()):
            relative = [loss / losses[0] for loss in losses] if losses and losses[0] else losses
            axes[0, 1].plot(epochs, relative, styles[index // 10 % 4], marker="o", markersize=2.5, linewidth=1.2, label=label)
        axes[0, 1].set_title("feature stages: validation feature loss / first epoch", fontsize=10)
    for axis in axes[0]:
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(fontsize=7, ncol=2)
    _save(figure, path)


def seed_effects(path: Path, rows: list[tuple[str, SeedEffect]]) -> None:
    """One row per comparison: its per-seed effects as dots, the t interval over seeds as a bar."""
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for position, (label, effect) in enumerate(reversed(rows)):
        if effect.interval is not None:
            axis.plot(effect.interval, [position, position], color="tab:blue", linewidth=2, alpha=0.6)
        axis.scatter(effect.per_seed, [position] * len(effect.per_seed), color="black", s=14, zorder=3)
        axis.scatter([effect.mean], [position], marker="|", color="tab:red", s=200, zorder=4)
    axis.axvline(0, color="gray", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=8)
    axis.set_xlabel("PSNR difference B − A (dB): dots = seeds, red = mean, bar = 95% t interval over seeds")
    axis.grid(axis="x", alpha=0.3)
    _save(figure, path)
