"""Volumetric segmentation metrics: per-class confusion counts from one bincount, Dice from counts, tables.

The paper reports Dice per structure on each test VOLUME, then mean and standard deviation over volumes.
Everything here is pure numpy on whole integer label volumes (never slices). Counts are additive, so shards
of a volume or of a test set (DDP ranks) are merged by summing counts (:func:`merge_counts`), and Dice is
only ever computed from counts.

Dice convention: ``2TP / (2TP + FP + FN)``; NaN only when ``TP + FP + FN = 0`` (class absent from both
reference and prediction); a prediction on an empty reference scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# per_case.csv's columns; hd95 (mm) and nsd are empty where surface metrics were not computed (or undefined).
COUNT_ROW_KEYS = ("subject", "class_id", "class_name", "tp", "fp", "fn", "n_ref", "n_pred", "dice")
ROW_KEYS = (*COUNT_ROW_KEYS, "hd95", "nsd")
COUNT_FIELDS = ("tp", "fp", "fn", "n_ref", "n_pred")

AVERAGING = (
    "Dice per subject and class = 2TP / (2TP + FP + FN) over the whole volume; NaN when the class is absent "
    "from both reference and prediction, 0 when only one of them has it. per_class: mean and sample std "
    "(ddof=1) of that class's Dice over subjects, ignoring NaN (n_nan counts the subjects skipped; std is NaN "
    "with fewer than 2 values). fg_dice_per_subject: mean over foreground classes (class_id > 0) of the "
    "subject's Dice, ignoring NaN. fg_mean, fg_std: mean and sample std (ddof=1) of fg_dice_per_subject over "
    "subjects, ignoring NaN."
)


# Voxels per block of `confusion_counts` (512 KiB of int64 indices: stays in a core's L2 cache). Speed only.
CONFUSION_BLOCK = 1 << 16


def _check_label_volume(array: np.ndarray, name: str, num_classes: int) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{name} must be an integer label volume; got dtype {array.dtype}")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name} values must lie in 0..{num_classes - 1} (num_classes={num_classes}); got {low}..{high}"
            )


def confusion_counts(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """The ``(K, K)`` int64 confusion matrix (rows: reference class, columns: predicted class), one bincount."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"reference shape {reference.shape} and prediction shape {prediction.shape} differ; "
            "they must be the same volume"
        )
    _check_label_volume(reference, "reference", num_classes)
    _check_label_volume(prediction, "prediction", num_classes)
    ref, pred = reference.ravel(), prediction.ravel()
    cells = num_classes * num_classes
    # The pair index ref * K + pred is built and counted one cache-sized block at a time in one reused buffer:
    # a whole-volume int64 index would be written to and read back from main memory (2x slower at MALC size).
    block = np.empty(min(CONFUSION_BLOCK, ref.size), dtype=np.intp)
    counts = np.zeros(cells, dtype=np.int64)
    for start in range(0, ref.size, CONFUSION_BLOCK):
        stop = min(start + CONFUSION_BLOCK, ref.size)
        index = block[: stop - start]
        # widen before multiplying: ref * K computed in a uint8 / int16 label dtype wraps around (K = 28: any
        # label >= 10 in uint8), which silently corrupted MALC's Dice
        index[...] = ref[start:stop]
        index *= num_classes
        index += pred[start:stop]
        counts += np.bincount(index, minlength=cells)
    return counts.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ClassCounts:
    """Per-class voxel counts of one volume (or a sum of volumes): arrays of shape ``(K,)``, int64."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_ref: np.ndarray
    n_pred: np.ndarray

    def __post_init__(self) -> None:
        arrays = {name: np.asarray(getattr(self, name), dtype=np.int64) for name in COUNT_FIELDS}
        shapes = {arr.shape for arr in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"ClassCounts fields must be 1-D arrays of equal length; got shapes {shapes}")
        if any((arr < 0).any() for arr in arrays.values()):
            raise ValueError("ClassCounts must be non-negative")
        if not (
            np.array_equal(arrays["n_ref"], arrays["tp"] + arrays["fn"])
            and np.array_equal(arrays["n_pred"], arrays["tp"] + arrays["fp"])
        ):
            raise ValueError("inconsistent ClassCounts: need n_ref = tp + fn and n_pred = tp + fp")
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)

    @property
    def num_classes(self) -> int:
        return int(self.tp.shape[0])

    @classmethod
    def from_confusion(cls, confusion: np.ndarray) -> ClassCounts:
        """Counts from a ``(K, K)`` confusion matrix (rows: reference, columns: prediction)."""
        confusion = np.asarray(confusion, dtype=np.int64)
        if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
            raise ValueError(f"confusion matrix must be square (K, K); got shape {confusion.shape}")
        tp = np.diag(confusion).copy()
        n_ref = confusion.sum(axis=1)
        n_pred = confusion.sum(axis=0)
        return cls(tp=tp, fp=n_pred - tp, fn=n_ref - tp, n_ref=n_ref, n_pred=n_pred)

    def to_array(self) -> np.ndarray:
        """A ``(5, K)`` int64 array (rows in :data:`COUNT_FIELDS` order), e.g. for a DDP all-reduce."""
        return np.stack([getattr(self, name) for name in COUNT_FIELDS])

    as_array = to_array  # alias used by evaluation and the trainer

    def tp_fp_fn(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tp, fp, fn)``, the arguments of :func:`dice_from_counts`."""
        return self.tp, self.fp, self.fn

    @classmethod
    def from_array(cls, array: np.ndarray) -> ClassCounts:
        """Inverse of :meth:`to_array`."""
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[0] != len(COUNT_FIELDS):
            raise ValueError(f"expected a ({len(COUNT_FIELDS)}, K) counts array; got shape {array.shape}")
        return cls(**{name: array[i] for i, name in enumerate(COUNT_FIELDS)})

    def dice(self) -> np.ndarray:
        """Dice per class from these counts (see :func:`dice_from_counts`)."""
        return dice_from_counts(self.tp, self.fp, self.fn)


def class_counts(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> ClassCounts:
    """Per-class TP, FP, FN, n_ref, n_pred of a volume, from one pass (see :func:`confusion_counts`)."""
    return ClassCounts.from_confusion(confusion_counts(reference, prediction, num_classes))


def merge_counts(counts: Iterable[ClassCounts]) -> ClassCounts:
    """Sum counts over shards (slabs of one volume, DDP ranks); all must have the same class count."""
    items = list(counts)
    if not items:
        raise ValueError("merge_counts needs at least one ClassCounts")
    sizes = {c.num_classes for c in items}
    if len(sizes) != 1:
        raise ValueError(f"cannot merge counts with different class counts: {sorted(sizes)}")
    return ClassCounts.from_array(np.sum([c.to_array() for c in items], axis=0))


def dice_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """``2TP / (2TP + FP + FN)`` per class, float64; NaN exactly where ``TP + FP + FN = 0``."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1.0), np.nan)


def per_case_rows(
    subject_id: str, counts: ClassCounts, class_names: Sequence[str], surface: np.ndarray | None = None
) -> list[dict]:
    """One table row per class for one subject, keys :data:`ROW_KEYS`, plain Python values (dice may be NaN);
    ``surface`` is :func:`surface_metrics`' ``(2, K)`` array (HD95, NSD), else both are NaN."""
    if len(class_names) != counts.num_classes:
        raise ValueError(
            f"{len(class_names)} class names for counts of {counts.num_classes} classes (subject {subject_id!r})"
        )
    dice = counts.dice()
    return [
        {
            "subject": str(subject_id),
            "class_id": k,
            "class_name": str(class_names[k]),
            "tp": int(counts.tp[k]),
            "fp": int(counts.fp[k]),
            "fn": int(counts.fn[k]),
            "n_ref": int(counts.n_ref[k]),
            "n_pred": int(counts.n_pred[k]),
            "dice": float(dice[k]),
            "hd95": math.nan if surface is None else float(surface[0, k]),
            "nsd": math.nan if surface is None else float(surface[1, k]),
        }
        for k in range(counts.num_classes)
    ]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    mean = float(np.mean(finite)) if finite else math.nan
    std = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    return mean, std


def _dice_table(
    rows_or_counts: Sequence[Mapping] | Mapping[str, ClassCounts], class_names: Sequence[str]
) -> dict[str, list[float]]:
    """``{subject: [dice per class]}`` in subject order of appearance, validated against ``class_names``."""
    if isinstance(rows_or_counts, Mapping):
        rows = [row for sid, c in rows_or_counts.items() for row in per_case_rows(sid, c, class_names)]
    else:
        rows = list(rows_or_counts)
    table: dict[str, list[float]] = {}
    seen: dict[str, set[int]] = {}
    for row in rows:
        missing = [key for key in COUNT_ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"table row {row!r} lacks keys {missing}; rows come from per_case_rows")
        subject, k = str(row["subject"]), int(row["class_id"])
        if not 0 <= k < len(class_names) or row["class_name"] != class_names[k]:
            raise ValueError(
                f"row of subject {subject!r} has class {k} {row['class_name']!r}; "
                f"expected one of the {len(class_names)} class names {list(class_names)}"
            )
        if k in seen.setdefault(subject, set()):
            raise ValueError(f"subject {subject!r} has two rows for class {k} {row['class_name']!r}")
        seen[subject].add(k)
        table.setdefault(subject, [math.nan] * len(class_names))[k] = float(row["dice"])
    for subject, classes in seen.items():
        if len(classes) != len(class_names):
            absent = [class_names[k] for k in range(len(class_names)) if k not in classes]
            raise ValueError(f"subject {subject!r} has no rows for classes {absent}; expected one row per class")
    return table


def summarize(
    rows_or_counts: Sequence[Mapping] | Mapping[str, ClassCounts], class_names: Sequence[str], split: str
) -> dict:
    """The ``summary.json`` payload of one split: per-class and foreground Dice statistics over subjects.

    ``rows_or_counts`` is either the rows of :func:`per_case_rows` for all subjects or ``{subject: ClassCounts}``.
    Keys: split, subjects (ids in order of appearance), per_class ``{name: {mean, std, n_nan}}``,
    fg_dice_per_subject, fg_mean, fg_std, averaging (the rules, in words: :data:`AVERAGING`).
    """
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique; got {list(class_names)}")
    table = _dice_table(rows_or_counts, class_names)
    per_class = {}
    for k, name in enumerate(class_names):
        values = [dice[k] for dice in table.values()]
        mean, std = _mean_std(values)
        per_class[name] = {"mean": mean, "std": std, "n_nan": sum(math.isnan(v) for v in values)}
    fg_per_subject = {subject: _mean_std(dice[1:])[0] for subject, dice in table.items()}
    fg_mean, fg_std = _mean_std(list(fg_per_subject.values()))
    summary = {
        "split": split,
        "subjects": list(table),
        "per_class": per_class,
        "fg_dice_per_subject": fg_per_subject,
        "fg_mean": fg_mean,
        "fg_std": fg_std,
        "averaging": AVERAGING,
    }
    if not isinstance(rows_or_counts, Mapping):
        summary.update(_surface_summary(list(rows_or_counts), class_names))
    return summary


def _surface_summary(rows: Sequence[Mapping], class_names: Sequence[str]) -> dict:
    """HD95 and NSD per class (mean over subjects) and per subject (mean over foreground classes), NaN ignored;
    empty when no row carries them."""
    out: dict = {}
    for key in SURFACE_KEYS:
        values: dict[str, list[float]] = {}
        for row in rows:
            value = row.get(key)
            value = math.nan if value is None or value == "" else float(value)
            values.setdefault(str(row["subject"]), [math.nan] * len(class_names))[int(row["class_id"])] = value
        if all(math.isnan(v) for vs in values.values() for v in vs):
            continue
        out[f"per_class_{key}"] = {
            name: _mean_std([vs[k] for vs in values.values()])[0] for k, name in enumerate(class_names)
        }
        per_subject = {subject: _mean_std(vs[1:])[0] for subject, vs in values.items()}
        out[f"fg_{key}_per_subject"] = per_subject
        out[f"fg_{key}_mean"], out[f"fg_{key}_std"] = _mean_std(list(per_subject.values()))
    return out


__all__ = [
    "AVERAGING",
    "COUNT_FIELDS",
    "COUNT_ROW_KEYS",
    "SURFACE_KEYS",
    "surface_metrics",
    "ROW_KEYS",
    "ClassCounts",
    "class_counts",
    "confusion_counts",
    "dice_from_counts",
    "merge_counts",
    "per_case_rows",
    "summarize",
]


def random_predictor_dice(n_ref: np.ndarray) -> np.ndarray:
    """Expected Dice per class of a predictor that draws every voxel's label at random with the class frequencies.

    With frequency ``f_c = n_ref_c / N`` it predicts class c on ``N f_c`` voxels and hits ``N f_c^2`` of them in
    expectation, so its Dice is ``2 N f_c^2 / (N f_c + N f_c) = f_c``: the chance level a trained model must beat.
    Classes absent from the reference give NaN.
    """
    n_ref = np.asarray(n_ref, dtype=np.float64)
    total = n_ref.sum()
    freq = n_ref / total if total > 0 else np.full_like(n_ref, np.nan)
    return np.where(n_ref > 0, freq, np.nan)


# ---------------------------------------------------------------------------------------------- boundary metrics
# Surface distances (HD95, normalised surface Dice) per structure, in millimetres of the file's own voxel spacing.
# Surfaces are a structure's face-connected boundary voxels (in it, with a face neighbour of another label or on the
# array's edge); a distance is the exact Euclidean distance in mm between voxel centres, from each surface voxel to
# the nearest voxel of the other surface. HD95 is the larger of the two directed 95th percentiles (MONAI's and
# DeepMind's surface-distance convention); NSD counts the surface voxels of each mask within the tolerance of the
# other's surface (Nikolov et al. 2021, on voxels as MONAI computes it).
#
# Why not a distance transform per structure: it costs the volume of the structure's box, and one false-positive
# voxel far away makes that box the whole image, twice per structure. One pass over each label volume finds every
# structure's surface voxels at once; nearest neighbours come from a KD-tree over those voxels only (same distances,
# checked against scipy's exact distance transform in tests/test_surface_metrics.py). Measured in docs/evaluation.md.
#
# Background (class 0) gets no boundary metric by default (NaN, like MONAI's include_background=False): its surface
# is the union of the structures' surfaces and the image's edge, so it repeats them, and it is the costliest class.
# Empty structures (the policy, tested): absent from both reference and prediction -> NaN for both metrics (like
# Dice, left out of means); present in only one of them -> NSD 0 and HD95 the diagonal of the image in mm (the
# largest distance the grid can hold: a finite worst value, so means stay defined and a miss is not rewarded).
SURFACE_KEYS = ("hd95", "nsd")
# Default NSD tolerance: 1 mm for every structure, about one voxel of MALC's 1 mm grid: surfaces that agree to a
# voxel count as agreeing. Tasks override it per structure (eval.nsd_tolerance_mm).
DEFAULT_NSD_TOLERANCE_MM = 1.0
TIE_MM = 1e-6  # distances equal to the tolerance up to rounding count as within it


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: in the mask, with a face neighbour outside it (or on the array's edge)."""
    from scipy import ndimage

    interior = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~interior


def _label_surfaces(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of every label's surface voxels, grouped by label, and where each label's group starts.

    A voxel is on its label's surface when a face neighbour has another label or it lies on the array's edge: the
    same voxels as :func:`_surface` of ``labels == k``, for all k in one pass. Returns ``(indices, starts)`` with
    label k's voxels at ``indices[starts[k]:starts[k + 1]]`` (ascending flat index).
    """
    edge = np.zeros(labels.shape, dtype=bool)
    for axis, n in enumerate(labels.shape):
        lower = [slice(None)] * labels.ndim
        upper = [slice(None)] * labels.ndim
        lower[axis], upper[axis] = slice(0, n - 1), slice(1, n)
        differs = labels[tuple(lower)] != labels[tuple(upper)]
        edge[tuple(lower)] |= differs
        edge[tuple(upper)] |= differs
        for end in (0, n - 1):
            lower[axis] = end
            edge[tuple(lower)] = True
    indices = np.flatnonzero(edge)
    surface_labels = labels.reshape(-1)[indices]
    order = np.argsort(surface_labels, kind="stable")
    starts = np.searchsorted(surface_labels[order], np.arange(num_classes + 1))
    return indices[order], starts


def _nearest_mm(points_mm: np.ndarray, targets_mm: np.ndarray) -> np.ndarray:
    """Distance in mm from every point to the nearest target (exact, by a KD-tree over the targets)."""
    from scipy.spatial import cKDTree

    return cKDTree(targets_mm).query(points_mm)[0]


def surface_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    num_classes: int,
    spacing: Sequence[float],
    tolerance_mm: float | Sequence[float] = DEFAULT_NSD_TOLERANCE_MM,
    include_background: bool = False,
) -> np.ndarray:
    """``(2, K)`` float64: HD95 (mm) and NSD per class (see the policy above; class 0 NaN unless
    ``include_background``).

    ``spacing`` is the voxel size of the volumes' grid in mm (the file's own); ``tolerance_mm`` one NSD tolerance
    for every class or one per class.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} and prediction shape {prediction.shape} differ")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {reference.ndim}D volume")
    tolerances = np.broadcast_to(np.asarray(tolerance_mm, dtype=float), (num_classes,))
    worst = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(reference.shape, spacing, strict=True))))
    scale = np.asarray(spacing)
    ref_indices, ref_starts = _label_surfaces(reference, num_classes)
    pred_indices, pred_starts = _label_surfaces(prediction, num_classes)
    out = np.full((2, num_classes), np.nan)
    for k in range(0 if include_background else 1, num_classes):
        ref_surface = ref_indices[ref_starts[k] : ref_starts[k + 1]]
        pred_surface = pred_indices[pred_starts[k] : pred_starts[k + 1]]
        if not ref_surface.size and not pred_surface.size:
            continue
        if not ref_surface.size or not pred_surface.size:
            out[:, k] = (worst, 0.0)
            continue
        ref_mm = np.stack(np.unravel_index(ref_surface, reference.shape), axis=1) * scale
        pred_mm = np.stack(np.unravel_index(pred_surface, reference.shape), axis=1) * scale
        to_pred, to_ref = _nearest_mm(ref_mm, pred_mm), _nearest_mm(pred_mm, ref_mm)
        out[0, k] = max(np.percentile(to_pred, 95), np.percentile(to_ref, 95))
        reach = tolerances[k] + TIE_MM  # a distance equal to the tolerance counts, whatever its last bit
        within = np.count_nonzero(to_pred <= reach) + np.count_nonzero(to_ref <= reach)
        out[1, k] = within / (to_pred.size + to_ref.size)
    return out
