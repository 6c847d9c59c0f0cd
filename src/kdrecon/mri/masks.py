"""Cartesian undersampling masks with an explicit k-space layout (spec §2).

A mask is a :class:`CartesianMask`: an ``(H, W)`` float32 array of 0/1 whose **rows** (axis 0,
the phase-encode direction) are either fully sampled or empty, together with the
:class:`KspaceLayout` it is written in:

* ``UNCENTRED`` — the papers' layout, for ``fft2(x, norm="ortho")`` with no shift
  (:func:`kdrecon.mri.fft.fft2`): the DC line is row 0 and the low frequencies wrap to both
  ends of axis 0. The shipped masks in ``shared/masks`` are stored this way.
* ``CENTRED`` — fastMRI's layout, for :func:`kdrecon.mri.fft.fft2c`: the DC line is row
  ``H // 2``.

``mask.to(layout)`` converts exactly, odd sizes included: centred → un-centred is
``np.fft.ifftshift`` along axis 0, un-centred → centred is ``np.fft.fftshift``.

Generators (all seeded per call with ``np.random.default_rng(seed)``):

* :func:`papers_mask` — the papers' variable-density recipe, returned UNCENTRED.
* :func:`random_mask`, :func:`equispaced_mask` — fastMRI's ``RandomMaskFunc`` and
  ``EquispacedMaskFractionFunc`` semantics, returned CENTRED like fastMRI. fastMRI masks the
  columns of ``(..., H, W)`` k-space (its lines run along the second-last axis of its
  ``(…, rows, cols, 2)`` tensors); here the sampled lines are the rows of an ``(H, W)`` mask,
  axis 0 = phase encode, as in the papers' masks. fastMRI draws from the legacy
  ``np.random.RandomState``, so the same integer seed gives the same *distribution* of masks,
  not the same mask.

Example:
    >>> m = papers_mask(150, acceleration=4, seed=0)
    >>> m.layout is KspaceLayout.UNCENTRED, m.sampled_lines, m.shape
    (True, 37, (150, 150))
    >>> bool(m.values[0, 0]), bool(m.centred().values[75, 0])  # DC sampled in both layouts
    (True, True)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CartesianMask",
    "KspaceLayout",
    "MaskFileError",
    "describe_mask",
    "equispaced_mask",
    "load_mask",
    "mask_from_description",
    "mask_statistics",
    "papers_mask",
    "random_mask",
    "to_uncentred",
]

Seed = int | Sequence[int]


class KspaceLayout(enum.Enum):
    """Where the DC (zero-frequency) line sits along axis 0 of a mask / k-space array."""

    UNCENTRED = "uncentred"
    """Papers' layout: DC at row 0, low frequencies wrap to both ends (``fft2``, no shift)."""
    CENTRED = "centred"
    """fastMRI's layout: DC at row ``H // 2`` (``fftshift(fft2(ifftshift(x)))``)."""


class MaskFileError(FileNotFoundError, ValueError):
    """A mask file is missing. Both a :class:`FileNotFoundError` and a :class:`ValueError`."""


@dataclass(frozen=True)
class CartesianMask:
    """A Cartesian line mask and its k-space layout.

    Args:
        values: ``(H, W)`` array of 0/1; each row (axis 0 = phase encode) all 0 or all 1.
            Stored as a read-only float32 copy.
        layout: the :class:`KspaceLayout` that ``values`` is written in.

    Raises:
        ValueError: ``values`` is not 2-D, not 0/1, has partially sampled rows or samples no
            row, or ``layout`` is not a :class:`KspaceLayout`.

    Example:
        >>> import numpy as np
        >>> rows = np.zeros((6, 4)); rows[[0, 1, 5]] = 1
        >>> m = CartesianMask(rows, KspaceLayout.UNCENTRED)
        >>> m.sampled_lines, m.acceleration
        (3, 2.0)
        >>> m.centred().values[:, 0].tolist()  # DC moves from row 0 to row 6 // 2
        [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    """

    values: np.ndarray
    layout: KspaceLayout

    def __post_init__(self) -> None:
        if not isinstance(self.layout, KspaceLayout):
            raise ValueError(f"layout must be a KspaceLayout, got {self.layout!r}")
        raw = np.asarray(self.values)
        if raw.dtype.kind not in "biuf":
            raise ValueError(f"mask values must be a real or bool array, got dtype {raw.dtype}")
        if raw.ndim != 2 or raw.size == 0:
            raise ValueError(f"mask must be a non-empty 2-D (H, W) array, got shape {raw.shape}")
        bad = ~((raw == 0) | (raw == 1))
        if bad.any():
            found = np.unique(raw[bad])[:3].tolist()
            raise ValueError(f"mask values must be 0 or 1, found {found}")
        partial = np.flatnonzero(raw.min(axis=1) != raw.max(axis=1))
        if partial.size:
            raise ValueError(
                f"mask rows (axis 0 = phase encode) must be all 0 or all 1; "
                f"{partial.size} partial rows, first {partial[:5].tolist()}"
            )
        if not raw[:, 0].any():
            raise ValueError(f"mask of shape {raw.shape} samples no k-space row")
        arr = raw.astype(np.float32)  # always a copy
        arr.flags.writeable = False
        object.__setattr__(self, "values", arr)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CartesianMask):
            return NotImplemented
        return self.layout is other.layout and np.array_equal(self.values, other.values)

    def __hash__(self) -> int:
        return hash((self.layout, self.values.shape, self.values.tobytes()))

    def __repr__(self) -> str:
        return (
            f"CartesianMask(shape={self.shape}, layout={self.layout.name}, "
            f"sampled_lines={self.sampled_lines}, acceleration={self.acceleration:.3g})"
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (int(self.values.shape[0]), int(self.values.shape[1]))

    @property
    def lines(self) -> np.ndarray:
        """``(H,)`` bool: which rows (phase-encode lines) are sampled, in this mask's layout."""
        return self.values[:, 0].astype(bool)

    @property
    def sampled_lines(self) -> int:
        """Number of fully sampled rows."""
        return int(self.lines.sum())

    @property
    def acceleration(self) -> float:
        """``H / sampled_lines``."""
        return self.shape[0] / self.sampled_lines

    def to(self, layout: KspaceLayout) -> CartesianMask:
        """The same mask in ``layout``.

        Un-centred → centred is ``np.fft.fftshift`` along axis 0; centred → un-centred is
        ``np.fft.ifftshift`` (the two differ for odd ``H``). Returns ``self`` if already there.
        """
        if not isinstance(layout, KspaceLayout):
            raise ValueError(f"layout must be a KspaceLayout, got {layout!r}")
        if layout is self.layout:
            return self
        shift = np.fft.fftshift if layout is KspaceLayout.CENTRED else np.fft.ifftshift
        return CartesianMask(shift(self.values, axes=0), layout)

    def uncentred(self) -> CartesianMask:
        """Shorthand for ``to(KspaceLayout.UNCENTRED)`` (use with :func:`kdrecon.mri.fft.fft2`)."""
        return self.to(KspaceLayout.UNCENTRED)

    def centred(self) -> CartesianMask:
        """Shorthand for ``to(KspaceLayout.CENTRED)`` (use with :func:`kdrecon.mri.fft.fft2c`)."""
        return self.to(KspaceLayout.CENTRED)


def to_uncentred(mask: CartesianMask) -> CartesianMask:
    """``mask`` in the un-centred layout that :mod:`kdrecon.mri.undersample` works in."""
    return mask.uncentred()


def load_mask(path: str | Path, layout: KspaceLayout = KspaceLayout.UNCENTRED) -> CartesianMask:
    """Load a mask stored as a 2-D ``.npy`` array of 0/1.

    Args:
        path: ``.npy`` file, e.g. ``shared/masks/cardiac/mask_4x.npy`` (the papers' masks are
            float64 150×150 / 240×240, un-centred).
        layout: the layout the file is written in; the papers' masks are ``UNCENTRED``.

    Returns:
        A :class:`CartesianMask` with float32 values of shape ``(H, W)``.

    Raises:
        MaskFileError: the file does not exist (a ``ValueError`` and a ``FileNotFoundError``).
        ValueError: the file is not a readable ``.npy`` array or is not a valid mask; the
            message names the file.

    Example:
        >>> import tempfile, numpy as np
        >>> f = tempfile.NamedTemporaryFile(suffix=".npy", delete=False)
        >>> np.save(f, np.ones((4, 3))); f.close()
        >>> load_mask(f.name).acceleration
        1.0
    """
    path = Path(path)
    if not path.is_file():
        raise MaskFileError(f"mask file {path} does not exist")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"mask file {path} is not a readable .npy array: {err}") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise ValueError(f"mask file {path} holds an archive, expected a single .npy array")
    try:
        return CartesianMask(arr, layout)
    except ValueError as err:
        raise ValueError(f"mask file {path}: {err}") from None


def _centre_block(num_lines: int, num_centre: int) -> slice:
    """Rows of the papers' forced centre block in the centred layout (DC at ``num_lines // 2``).

    ``[N//2 - c//2, N//2 - c//2 + c)``: for ``c = 10`` the offsets -5…4 from DC, i.e. un-centred
    rows 0–4 and N-5…N-1 as in the papers' masks.
    """
    start = num_lines // 2 - num_centre // 2
    return slice(start, start + num_centre)


def _from_lines(lines: np.ndarray, width: int, layout: KspaceLayout) -> CartesianMask:
    """Broadcast a ``(H,)`` 0/1 line pattern to an ``(H, width)`` mask."""
    values = np.repeat(lines.astype(np.float32)[:, None], width, axis=1)
    return CartesianMask(values, layout)


def papers_mask(
    size: int,
    acceleration: float,
    seed: Seed,
    centre_lines: int = 10,
    *,
    sigma_fraction: float = 0.1,
    floor: float | None = None,
    width: int | None = None,
) -> CartesianMask:
    """The papers' 1-D variable-density random Cartesian mask (spec §2).

    Recipe, on the centred line index ``i`` with offset ``d = i - N // 2`` from DC:

    1. ``centre_lines`` rows around DC are always sampled (centred rows
       ``[N//2 - c//2, N//2 - c//2 + c)``; for ``c = 10`` the un-centred rows 0–4 and N-5…N-1).
    2. The other ``int(N / acceleration) - centre_lines`` rows are drawn without replacement with
       weight ``exp(-d² / (2 σ²)) + floor``, ``σ = sigma_fraction · N`` (default ``N / 10``),
       ``floor = 1 / (2 · acceleration)`` by default (the Gaussian peak is 1).
    3. ``np.fft.ifftshift`` along axis 0 to the un-centred layout.

    So the mask has exactly ``int(N / acceleration)`` rows (18 for 150 at 8x, 30 for 240 at 8x).
    The defaults fit the shipped masks: pooled over the four of them, a likelihood grid over
    ``sigma_fraction`` ∈ {0.04 … 0.2} and the floor peaks at ``σ ≈ N/10`` with a floor of
    1–2 × ``1/(2·acc)``; the mean ``|d| / N`` of the random lines is 0.219 / 0.158 / 0.183 /
    0.143 for cardiac 4x / 5x, brain 4x / 5x against 0.178 / 0.166 / 0.169 / 0.157 (± 0.02)
    for this recipe. They are also the width and floor of the widely used variable-density
    sampler of DC-CNN (Schlemper et al., 2018; ``js3611/Deep-MRI-Reconstruction``), whose
    Gaussian is centred at ``N / 2`` where this one is centred at ``N // 2`` (the DC row).

    Args:
        size: ``N``, number of phase-encode lines (rows).
        acceleration: ``acc ≥ 1``; the mask samples ``int(N / acc)`` lines.
        seed: seed for ``np.random.default_rng``.
        centre_lines: size of the always-sampled block around DC.
        sigma_fraction: Gaussian standard deviation as a fraction of ``N``.
        floor: uniform weight added to the Gaussian; ``None`` → ``1 / (2 · acc)``.
        width: number of columns ``W``; ``None`` → ``N`` (square).

    Returns:
        An UNCENTRED :class:`CartesianMask` of shape ``(N, W)``.

    Example:
        >>> m = papers_mask(150, 8, seed=1)
        >>> m.sampled_lines, bool(m.lines[[0, 4, 145, 149]].all())
        (18, True)
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    total = int(size / acceleration)
    if centre_lines < 0:
        raise ValueError(f"centre_lines must be >= 0, got {centre_lines}")
    if centre_lines > total:
        raise ValueError(
            f"acceleration {acceleration:g}x samples int({size}/{acceleration:g}) = {total} of {size} lines, fewer than "
            f"the {centre_lines} always-sampled centre lines: at most {size / centre_lines:.3g}x for {size} lines"
        )
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be positive, got {sigma_fraction}")
    if width is not None and width < 1:
        raise ValueError(f"width must be positive, got {width}")
    floor = 1.0 / (2.0 * acceleration) if floor is None else floor
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")

    offsets = np.arange(size) - size // 2
    weights = np.exp(-0.5 * (offsets / (sigma_fraction * size)) ** 2) + floor
    centre = _centre_block(size, centre_lines)
    weights[centre] = 0.0
    lines = np.zeros(size, dtype=bool)
    lines[centre] = True
    rng = np.random.default_rng(seed)
    drawn = rng.choice(size, size=total - centre_lines, replace=False, p=weights / weights.sum())
    lines[drawn] = True
    width = size if width is None else width
    return _from_lines(np.fft.ifftshift(lines), width, KspaceLayout.UNCENTRED)


def _fastmri_centre(
    num_lines: int, center_fraction: float, acceleration: float
) -> tuple[int, int]:
    """fastMRI's centre block: ``(num_low, pad)``, rows ``[pad, pad + num_low)`` centred."""
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must lie in [0, 1], got {center_fraction}")
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    num_low = round(num_lines * center_fraction)
    if num_low > num_lines / acceleration:
        raise ValueError(
            f"centre block of {num_low} lines already exceeds N/acc = "
            f"{num_lines / acceleration:g} for N={num_lines}; lower center_fraction"
        )
    return num_low, (num_lines - num_low + 1) // 2


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def random_mask(
    shape: Sequence[int], center_fraction: float, acceleration: float, seed: Seed
) -> CartesianMask:
    """fastMRI's ``RandomMaskFunc``: a centre block plus uniformly random lines.

    With ``N = H`` lines: ``num_low = round(N · center_fraction)`` centred rows starting at
    ``(N - num_low + 1) // 2`` are sampled; independently, every row is sampled with
    probability ``(N/acc - num_low) / (N - num_low)``, so the *expected* number of sampled rows
    is ``N / acc``. Lines are rows (axis 0 = phase encode), where fastMRI masks the columns of
    ``(…, W)`` k-space.

    Args:
        shape: ``(H, W)``.
        center_fraction: fraction of lines in the fully sampled centre block, e.g. 0.08.
        acceleration: target acceleration, e.g. 4.
        seed: seed for ``np.random.default_rng`` (fastMRI seeds per file, e.g. from its name).

    Returns:
        A CENTRED :class:`CartesianMask` of shape ``(H, W)``.

    Example:
        >>> m = random_mask((320, 320), 0.08, 4, seed=0)
        >>> m.layout.name, bool(m.lines[147:173].all())
        ('CENTRED', True)
    """
    num_lines, width = _check_shape(shape)
    num_low, pad = _fastmri_centre(num_lines, center_fraction, acceleration)
    prob = (num_lines / acceleration - num_low) / max(num_lines - num_low, 1)
    rng = np.random.default_rng(seed)
    lines = rng.random(num_lines) < prob
    lines[pad : pad + num_low] = True
    return _from_lines(lines, width, KspaceLayout.CENTRED)


def equispaced_mask(
    shape: Sequence[int],
    center_fraction: float,
    acceleration: float,
    seed: Seed,
    offset: int | None = None,
) -> CartesianMask:
    """fastMRI's ``EquispacedMaskFractionFunc``: a centre block plus equispaced lines.

    With ``N = H`` lines and the same centre block as :func:`random_mask`, the spacing is
    adjusted so the sampled fraction comes out near ``1 / acc`` overall:
    ``s = acc · (N - num_low) / (N - num_low · acc)``; rows ``round(offset + k·s)`` for
    ``offset + k·s < N - 1`` are sampled (NumPy's round-half-to-even), with
    ``offset`` drawn uniformly from ``[0, round(s))`` unless given. Lines are rows
    (axis 0 = phase encode), where fastMRI masks columns of ``(…, W)`` k-space.

    Args:
        shape: ``(H, W)``.
        center_fraction: fraction of lines in the fully sampled centre block, e.g. 0.08.
        acceleration: target acceleration, e.g. 4.
        seed: seed for ``np.random.default_rng`` (draws the offset).
        offset: first equispaced row; ``None`` → random.

    Returns:
        A CENTRED :class:`CartesianMask` of shape ``(H, W)``.

    Example:
        >>> m = equispaced_mask((368, 320), 0.08, 4, seed=0)
        >>> round(m.acceleration, 1)
        4.0
    """
    num_lines, width = _check_shape(shape)
    num_low, pad = _fastmri_centre(num_lines, center_fraction, acceleration)
    if num_low * acceleration >= num_lines and num_low < num_lines:
        raise ValueError(
            f"centre block of {num_low} lines leaves no room for equispaced lines at "
            f"acc={acceleration} for N={num_lines}; lower center_fraction"
        )
    if num_low == num_lines:
        spacing = 1.0
    else:
        spacing = acceleration * (num_lines - num_low) / (num_lines - num_low * acceleration)
    if offset is None:
        offset = int(np.random.default_rng(seed).integers(0, max(round(spacing), 1)))
    lines = np.zeros(num_lines, dtype=bool)
    lines[np.around(np.arange(offset, num_lines - 1, spacing)).astype(np.intp)] = True
    lines[pad : pad + num_low] = True
    return _from_lines(lines, width, KspaceLayout.CENTRED)


def _run_length(lines: np.ndarray) -> int:
    """Number of leading ``True`` entries of a 1-D bool array."""
    gaps = np.flatnonzero(~lines)
    return int(gaps[0]) if gaps.size else int(lines.size)


def mask_statistics(mask: CartesianMask) -> dict[str, Any]:
    """Summary numbers of a mask, independent of its layout.

    Returns:
        ``{"shape": (H, W), "layout": str, "sampled_lines": int, "acceleration": float,
        "fraction": float, "centre_lines": int}``; ``centre_lines`` is the length of the
        contiguous run of sampled rows containing DC (0 if DC is not sampled).

    Example:
        >>> mask_statistics(papers_mask(240, 5, seed=3))["sampled_lines"]
        48
    """
    centred = mask.centred().lines
    num_lines = centred.size
    dc = num_lines // 2
    block = 0
    if centred[dc]:
        block = _run_length(centred[dc:]) + _run_length(centred[: dc + 1][::-1]) - 1
    return {
        "shape": mask.shape,
        "layout": mask.layout.value,
        "sampled_lines": mask.sampled_lines,
        "acceleration": mask.acceleration,
        "fraction": mask.sampled_lines / num_lines,
        "centre_lines": block,
    }


def describe_mask(mask: np.ndarray) -> dict[str, Any]:
    """An un-centred ``(H, W)`` 0/1 mask that is an outer product of sampled rows and columns, as indices
    (line masks and super-resolution's low-pass box alike), for a weights file's metadata.

    Example:
        >>> mask = np.zeros((6, 4), np.float32); mask[[0, 1, 5]] = 1
        >>> description = describe_mask(mask)
        >>> description["rows"], np.array_equal(mask_from_description(description), mask)
        ([0, 1, 5], True)
    """
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    description = {"layout": "uncentred", "shape": list(mask.shape), "rows": rows.tolist(), "columns": columns.tolist()}
    if not np.array_equal(mask_from_description(description), mask):
        raise ValueError("the mask is not a product of sampled rows and columns; it cannot be described by indices")
    return description


def mask_from_description(description: dict[str, Any]) -> np.ndarray:
    """The un-centred float32 mask of :func:`describe_mask`."""
    rows, columns = np.zeros(description["shape"][0], bool), np.zeros(description["shape"][1], bool)
    rows[description["rows"]], columns[description["columns"]] = True, True
    return np.outer(rows, columns).astype(np.float32)
