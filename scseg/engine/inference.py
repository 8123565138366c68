"""Volumetric prediction and evaluation, the way the paper evaluates: whole volumes, Dice per structure at the
file's resolution. One :class:`Predictor` serves validation, ``scseg-evaluate`` and ``scseg-predict``:

    subject -> ordered slices -> batched logits -> per slice arg-max (or softmax) -> stacked volume
            -> preprocess.restore (padding, crop, resampling, orientation undone) -> counts against the reference

When preprocessing resampled the subject and ``resample="linear"`` (``trainer.eval_resample``, the default), the
softmax probabilities are stacked instead of the arg-max, interpolated to the file's grid class by class, and the
arg-max is taken there; ``"nearest"`` is the arg-max on the coarse grid copied by nearest neighbour (blocky).

Nothing here loads a checkpoint (``scseg.engine.loading`` does) or reads a command line (``scseg.cli.evaluate`` and
``scseg.cli.predict`` do).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from scseg.data.preprocess import RESTORE_MODES, PreprocessMeta, in_plane_axes, restore, wants_probabilities
from scseg.data.types import Case
from scseg.metrics import DEFAULT_NSD_TOLERANCE_MM, ClassCounts, class_counts, per_case_rows, surface_metrics

# Turns (S, C, H, W) float slices into logits; the trainer passes one that applies autocast / channels-last.
ForwardFn = Callable[[torch.Tensor], torch.Tensor]
# Test-time augmentation (eval.tta): none; mirror = the mean of the class probabilities over the flips of the two
# in-plane axes (identity, H, W, both), each flipped back (nnU-Net's); mirror_lr = identity and the left-right flip
# only (FastSurfer's choice for brains: a network trained without flips has never seen an upside-down head). A
# left-right flip swaps the probabilities of paired lateral classes (left_x <-> right_x) back, since the network
# names hemispheres by what it sees.
TTA_MODES = ("none", "mirror", "mirror_lr")
MIRRORS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
LEFT_RIGHT_AXIS = 0  # canonical X: preprocessing reorients every subject to RAS+
_SIDES = {"left": "right", "right": "left", "l": "r", "r": "l", "lh": "rh", "rh": "lh"}


def lateral_pairs(class_names: Sequence[str]) -> list[int]:
    """The class permutation a left-right flip calls for: index ``k`` -> the index of ``k``'s mirror class
    (``left_amygdala`` <-> ``right_amygdala``, ``Left-Hippocampus`` <-> ``Right-Hippocampus``, ``kidney_l`` <->
    ``kidney_r``), itself for classes without a side or without a partner."""
    index = {name.lower(): k for k, name in enumerate(class_names)}
    permutation = list(range(len(class_names)))
    for k, name in enumerate(class_names):
        parts = re.split(r"([_\- ])", name.lower())
        for i, part in enumerate(parts):
            if part in _SIDES:
                partner = "".join(parts[:i] + [_SIDES[part]] + parts[i + 1 :])
                if partner in index:
                    permutation[k] = index[partner]
                    break
    return permutation


class Predictor:
    """A trained network and the data module that preprocessed its subjects: label volumes in each file's grid.

    ``datamodule`` provides ``eval_slices(subject)`` (the subject's slices on the training canvas) and
    ``reference(subject)`` (the mapped reference in the file grid, for :meth:`counts`); ``forward`` replaces
    ``model(x)`` (the trainer's autocast / memory-format wrapper). The model is put in eval mode while predicting
    and given back in the mode it was in.
    """

    def __init__(
        self,
        model: nn.Module,
        datamodule: Any,
        batch_size: int,
        device: torch.device | str = "cpu",
        forward: ForwardFn | None = None,
        resample: str = "linear",
        nsd_tolerance_mm: float | Sequence[float] = DEFAULT_NSD_TOLERANCE_MM,
        tta: str = "none",
    ) -> None:
        if resample not in RESTORE_MODES:
            raise ValueError(f"resample={resample!r}: expected one of {', '.join(RESTORE_MODES)}")
        if tta not in TTA_MODES:
            raise ValueError(f"eval.tta={tta!r}: expected one of {', '.join(TTA_MODES)}")
        self.tta = tta
        self.model = model
        self.datamodule = datamodule
        self.batch_size = int(batch_size)
        self.device = device
        self.forward = forward
        self.resample = resample
        self.nsd_tolerance_mm = nsd_tolerance_mm

    def adopt_settings(self, other: Predictor) -> None:
        """Give ``other`` (an ensemble or fusion led by this run) this predictor's model, data module and
        evaluation settings."""
        Predictor.__init__(
            other,
            self.model,
            self.datamodule,
            self.batch_size,
            self.device,
            self.forward,
            self.resample,
            self.nsd_tolerance_mm,
            self.tta,
        )

    def _flips(self, slice_axis: int | None) -> list[tuple[tuple[int, ...], bool]]:
        """``(dims to flip, swap lateral classes)`` per mirroring of ``eval.tta`` for slices cut along canonical
        ``slice_axis`` (None: unknown, no class swap and no left-right-only mirroring)."""
        if self.tta == "none":
            return [((), False)]
        lr_dim = None
        if slice_axis is not None:
            first, second = in_plane_axes(slice_axis)
            lr_dim = -2 if first == LEFT_RIGHT_AXIS else -1 if second == LEFT_RIGHT_AXIS else None
        mirrors = MIRRORS if self.tta == "mirror" else (((), (lr_dim,)) if lr_dim is not None else ((),))
        return [(dims, lr_dim is not None and lr_dim in dims) for dims in mirrors]

    def _scores(self, images: torch.Tensor, slice_axis: int | None = None) -> torch.Tensor:
        """Logits of a batch, or with ``eval.tta`` the class probabilities averaged over its mirrorings (each
        flipped back first, lateral classes swapped back after a left-right flip)."""
        run = self.forward or self.model
        if self.tta == "none":
            return run(images)
        flips = self._flips(slice_axis)
        total = None
        for dims, swap in flips:
            flipped = images.flip(dims) if dims else images
            probs = torch.softmax(run(flipped).float(), dim=1)
            probs = probs.flip(dims) if dims else probs
            if swap:
                probs = probs[:, self._lateral_permutation(probs.shape[1])]
            total = probs if total is None else total + probs
        return total / len(flips)

    def _lateral_permutation(self, num_classes: int) -> list[int]:
        names = getattr(self.datamodule, "class_names", None)
        if names is None or len(names) != num_classes:
            return list(range(num_classes))
        return lateral_pairs(names)

    @torch.no_grad()
    def _per_slice(self, slices: Iterable[Any], head: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        slice_axis = getattr(slices, "axis_index", None)
        out = []
        try:
            for batch in DataLoader(slices, batch_size=self.batch_size, shuffle=False, num_workers=0):
                images = batch["image"] if isinstance(batch, dict) else batch
                scores = self._scores(images.to(self.device, non_blocking=True), slice_axis)
                out.append(head(scores).cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(out, axis=0)

    def slice_labels(self, slices: Iterable[Any]) -> np.ndarray:
        """Arg-max label of every slice, in order: ``(S, H, W)`` int16."""
        return self._per_slice(slices, lambda scores: scores.argmax(dim=1).to(torch.int16))

    def slice_probabilities(self, slices: Iterable[Any]) -> np.ndarray:
        """Softmax class probabilities of every slice, in order: ``(S, K, H, W)`` float32."""
        if self.tta != "none":  # already probabilities
            return self._per_slice(slices, lambda probs: probs.float())
        return self._per_slice(slices, lambda logits: torch.softmax(logits.float(), dim=1))

    def stacked(self, subject: Any) -> np.ndarray:
        """The subject's prediction in its preprocessed grid: class probabilities ``(K, *grid)`` when the restore
        interpolates them (linear restore of a resampled subject), else the label volume."""
        slices = self.datamodule.eval_slices(subject)
        if wants_probabilities(subject.meta, self.resample):
            probs = self.slice_probabilities(slices)
            return np.stack([slices.to_volume(probs[:, k]) for k in range(probs.shape[1])])
        return slices.to_volume(self.slice_labels(slices))

    def stacked_probabilities(self, subject: Any) -> np.ndarray:
        """Class probabilities ``(K, *grid)`` of the subject in its preprocessed grid (what ensembles average)."""
        slices = self.datamodule.eval_slices(subject)
        probs = self.slice_probabilities(slices)
        return np.stack([slices.to_volume(probs[:, k]) for k in range(probs.shape[1])])

    def predict(self, subject: Any, grid: str = "file") -> np.ndarray:
        """Label volume of one subject in its file's own grid (``grid="canonical"``: the RAS+ canonical grid)."""
        return restore(self.stacked(subject), subject.meta, self.resample, grid)

    def measure(self, subject: Any, surfaces: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``(5, K)`` confusion counts (tp, fp, fn, n_ref, n_pred) against the reference, in the file's grid, so
        the Dice is the one a user would compute on the files; with ``surfaces`` also the ``(2, K)`` HD95 (mm) and
        NSD in the file's own voxel spacing (:func:`scseg.metrics.surface_metrics`)."""
        prediction = self.predict(subject)
        reference = self.datamodule.reference(subject)
        k = self.datamodule.num_classes
        counts = class_counts(reference, prediction, k).to_array()
        if not surfaces:
            return counts, None
        return counts, self.surfaces(subject, reference, prediction)

    def surfaces(self, subject: Any, reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """``(2, K)`` HD95 (mm) and NSD of ``prediction`` against ``reference``, both in the subject's file grid,
        in that file's voxel spacing with this predictor's NSD tolerances."""
        spacing = np.linalg.norm(np.asarray(subject.meta.to_geometry().affine)[:3, :3], axis=0)
        return surface_metrics(reference, prediction, self.datamodule.num_classes, spacing, self.nsd_tolerance_mm)

    def counts(self, subject: Any) -> np.ndarray:
        """The subject's ``(5, K)`` confusion counts (see :meth:`measure`)."""
        return self.measure(subject)[0]

    def evaluate(self, subjects: Iterable[Any]) -> dict[str, np.ndarray]:
        """Per-subject counts ``{subject id: (5, K) int64 array}`` (validation: Dice only)."""
        return {subject_id(s): self.counts(s) for s in subjects}

    def evaluate_with_surfaces(self, subjects: Iterable[Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per-subject counts and ``(2, K)`` surface metrics (the test evaluation and ``scseg-evaluate``)."""
        counts, surfaces = {}, {}
        for s in subjects:
            counts[subject_id(s)], surfaces[subject_id(s)] = self.measure(s, surfaces=True)
        return counts, surfaces


class Ensemble(Predictor):
    """Several trained runs as one predictor: their class probabilities averaged on the preprocessed grid they share,
    then restored to each file's grid like a single run's (nnU-Net's way of ensembling folds).

    ``members`` are ``(name, predictor)`` pairs; the first sets the data module, batch size, restore mode, NSD
    tolerance and test-time mirroring of the whole. Every member must have the same classes and preprocess subjects
    identically (settings, slice canvas, 2.5D context, normalisation): a ``ValueError`` names the run and what
    differs otherwise. Runs sliced along other axes are fused by :class:`MultiViewFusion` instead. ``weights``
    (default: equal) weigh the members' probabilities; they are normalised to sum to 1.
    """

    def __init__(self, members: Sequence[tuple[str, Predictor]], weights: Sequence[float] | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one run")
        self.weights = _normalised_weights(weights, len(members))
        first_name, first = members[0]
        first.adopt_settings(self)
        for name, member in members[1:]:
            for what, get in ENSEMBLE_AGREEMENT.items():
                a, b = get(first.datamodule), get(member.datamodule)
                if a != b:
                    raise ValueError(
                        f"run {name}: its {what} ({b}) differs from run {first_name}'s ({a}); an ensemble averages "
                        "probabilities of runs that share classes and preprocessing"
                    )
        self.members = [member for _, member in members]

    def stacked(self, subject: Any) -> np.ndarray:
        total = None
        for member, weight in zip(self.members, self.weights, strict=True):
            probs = member.stacked_probabilities(subject) * np.float32(weight)
            total = probs if total is None else total + probs
        return total


class MultiViewFusion(Predictor):
    """Runs of the same data sliced along different axes (e.g. coronal, axial, sagittal), fused at probability level
    in the subject's own geometry with per-view ``weights`` (FastSurfer: axial 0.4, coronal 0.4, sagittal 0.2; the
    authors' QuickNAT code sums coronal and axial; default: equal), normalised to sum to 1.

    Each view preprocesses the subject its own way (in-plane padding follows the slice axis), so probabilities
    cannot be averaged on one preprocessed grid. They are averaged on the subject's resampled canonical grid, inside
    the union of the views' crop boxes (background with probability 1 where a view's crop does not reach), and the
    result is restored to the file's grid like a single run's. Views must share classes and the resampled grid
    (``data.preprocess.target_spacing``); a ``ValueError`` names the run otherwise.
    """

    def __init__(self, members: Sequence[tuple[str, Predictor]], weights: Sequence[float] | None = None) -> None:
        if not members:
            raise ValueError("a multi-view fusion needs at least one run")
        self.weights = _normalised_weights(weights, len(members))
        first_name, first = members[0]
        first.adopt_settings(self)
        classes = tuple(first.datamodule.class_names)
        for name, member in members[1:]:
            other = tuple(member.datamodule.class_names)
            if other != classes:
                raise ValueError(
                    f"run {name}: its classes ({other}) differ from run {first_name}'s ({classes}); views fuse "
                    "probabilities of runs with the same label map"
                )
        self.names = [name for name, _ in members]
        self.members = [member for _, member in members]

    def _view_subject(self, member: Predictor, subject: Any) -> Any:
        """The subject as ``member`` preprocesses it (its own slice axis and canvas), from the same files."""
        if member.datamodule is self.datamodule:
            return subject
        meta = subject.meta
        case = Case(
            id=meta.id,
            image_paths=tuple(Path(p) for p in meta.image_paths),
            label_path=None if meta.label_path is None else Path(meta.label_path),
        )
        return member.datamodule.subject(case)

    def stacked(self, subject: Any) -> np.ndarray:
        """Fused class probabilities ``(K, *box)`` on the resampled canonical grid's crop-box union (see
        :meth:`predict`, which restores them with the matching geometry)."""
        return self._fuse(subject)[0]

    def _fuse(self, subject: Any) -> tuple[np.ndarray, PreprocessMeta]:
        views = []
        for name, member in zip(self.names, self.members, strict=True):
            own = self._view_subject(member, subject)
            if tuple(own.meta.resampled_shape) != tuple(subject.meta.resampled_shape):
                raise ValueError(
                    f"run {name}: subject {subject.meta.id} resampled to {tuple(own.meta.resampled_shape)}, the first "
                    f"view to {tuple(subject.meta.resampled_shape)}; views fuse on one grid (same "
                    "data.preprocess.target_spacing)"
                )
            views.append((member, own))
        box = tuple(
            (min(own.meta.crop[a][0] for _, own in views), max(own.meta.crop[a][1] for _, own in views))
            for a in range(3)
        )
        shape = tuple(hi - lo for lo, hi in box)
        total = None
        for (member, own), weight in zip(views, self.weights, strict=True):
            probs = member.stacked_probabilities(own)
            meta = own.meta
            unpad = tuple(slice(b, n - a) for (b, a), n in zip(meta.pad, meta.shape, strict=True))
            view = np.zeros((probs.shape[0], *shape), dtype=np.float32)
            view[0] = 1.0  # background where this view's crop does not reach
            inside = tuple(slice(c0 - b0, c1 - b0) for (c0, c1), (b0, _) in zip(meta.crop, box, strict=True))
            view[(slice(None), *inside)] = probs[(slice(None), *unpad)]
            view *= np.float32(weight)
            total = view if total is None else total + view
        fused_meta = dataclasses.replace(
            subject.meta, crop=box, pad=((0, 0), (0, 0), (0, 0)), shape=tuple(int(s) for s in shape)
        )
        return total, fused_meta

    def predict(self, subject: Any, grid: str = "file") -> np.ndarray:
        """Label volume of the fused views in the subject's file grid (``grid="canonical"``: RAS+ canonical)."""
        fused, meta = self._fuse(subject)
        return restore(fused, meta, self.resample, grid)


def combine(members: Sequence[tuple[str, Predictor]], weights: Sequence[float] | None = None) -> Predictor:
    """One predictor from several runs: the run itself, an :class:`Ensemble` when they preprocess alike, or a
    :class:`MultiViewFusion` when they slice along different axes (any other difference: the ensemble's error)."""
    if len(members) == 1 and weights is None:
        return members[0][1]
    axes = {member.datamodule.settings.axis for _, member in members}
    if len(axes) > 1:
        return MultiViewFusion(members, weights)
    return Ensemble(members, weights)


def _normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    values = [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"{len(values)} weights for {n} runs: give one weight per run")
    if any(not w >= 0 or w == float("inf") for w in values) or sum(values) <= 0:
        raise ValueError(f"weights {values}: expected non-negative finite numbers with a positive sum")
    total = sum(values)
    return [w / total for w in values]


# What every run of an ensemble must share (read from each run's data module).
ENSEMBLE_AGREEMENT: dict[str, Callable[[Any], Any]] = {
    "classes": lambda dm: tuple(dm.class_names),
    "preprocessing": lambda dm: dm.settings,
    "slice canvas": lambda dm: None if dm.canvas is None else tuple(dm.canvas),
    "2.5D context": lambda dm: dm.context,
    "normalisation": lambda dm: dm.normalize,
}


def counts_to_rows(
    counts: dict[str, np.ndarray], class_names: Sequence[str], surfaces: dict[str, np.ndarray] | None = None
) -> list[dict]:
    """Rows of per_case.csv (``scseg.metrics.ROW_KEYS``: counts, Dice, HD95 and NSD), subjects sorted."""
    rows: list[dict] = []
    for sid in sorted(counts):
        surface = None if surfaces is None else surfaces.get(sid)
        rows.extend(per_case_rows(sid, ClassCounts.from_array(counts[sid]), class_names, surface))
    return rows


def subject_id(subject: Any) -> str:
    """The id a subject is reported under (per_case.csv, summary.json)."""
    return str(subject.id)


__all__ = [
    "LEFT_RIGHT_AXIS",
    "MIRRORS",
    "TTA_MODES",
    "Ensemble",
    "ForwardFn",
    "MultiViewFusion",
    "Predictor",
    "combine",
    "counts_to_rows",
    "lateral_pairs",
    "subject_id",
]
