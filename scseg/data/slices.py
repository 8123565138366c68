"""2D slice views of preprocessed volumes: the training Dataset and the in-order evaluation view.

Why this module exists: the networks are 2D, the data are volumes. Training draws slices (optionally
with 2.5D context, skipping near-empty slices, oversampling foreground) and augments them; evaluation
walks one subject's slices in order and stacks the predictions back into a volume. Every random draw
comes from `np.random.default_rng([seed, epoch, index])`, so an epoch is the same whatever the number of
DataLoader workers, and a resumed run sees the same samples.

One canvas: every slice the network sees, in training and in evaluation or prediction, is zero-padded (centred,
before augmentation and before normalisation) to the same in-plane canvas, by one function (`pad_to_canvas`).
The canvas is the largest in-plane size of the training subjects (`canvas_of`), unless
`data.preprocess.pad_size` already made every subject that size. A subject larger than the canvas at evaluation
time is evaluated on a canvas grown just enough to hold it (centred, same padding and normalisation), with a
warning naming the subject and both sizes: the network then sees more padding context than in training, which
is usually harmless but is said out loud; set `data.preprocess.pad_size` to pin one canvas for every subject.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from scseg.data.augment import apply_augmentation, normalize_image
from scseg.data.errors import DataError
from scseg.data.preprocess import PreprocessedSubject, axis_index

Canvas = tuple[int, int]


def canvas_of(subjects: Sequence[PreprocessedSubject]) -> Canvas:
    """The in-plane canvas (H, W) that holds a slice of every subject: the largest height and width."""
    if not subjects:
        raise DataError("canvas_of: no subjects (is the training split empty?)")
    planes = [s.meta.in_plane_shape for s in subjects]
    return max(p[0] for p in planes), max(p[1] for p in planes)


def canvas_padding(size: Sequence[int], canvas: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centred (before, after) zero padding of an (h, w) slice to `canvas` (which must hold it)."""
    pads = []
    for n, c in zip(size, canvas, strict=True):
        extra = int(c) - int(n)
        if extra < 0:
            raise DataError(f"slice of in-plane size {tuple(size)} does not fit the canvas {tuple(canvas)}")
        pads.append((extra // 2, extra - extra // 2))
    return pads[0], pads[1]


def pad_to_canvas(
    image: np.ndarray, label: np.ndarray | None, canvas: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero-pad a (C, h, w) image (and its (h, w) label) to the canvas, centred: the one padding rule of training
    and evaluation alike (called before augmentation and normalisation)."""
    ph, pw = canvas_padding(image.shape[1:], canvas)
    if ph == pw == (0, 0):
        return image, label
    image = np.pad(image, [(0, 0), ph, pw])
    return image, None if label is None else np.pad(label, [ph, pw])


def subject_canvas(subject: PreprocessedSubject, canvas: Sequence[int] | None) -> Canvas:
    """The canvas one subject is evaluated on: `canvas`, grown (with a warning) when the subject does not fit."""
    size = subject.meta.in_plane_shape
    if canvas is None:
        return size
    grown = (max(size[0], int(canvas[0])), max(size[1], int(canvas[1])))
    if grown != tuple(int(c) for c in canvas):
        warnings.warn(
            f"subject {subject.id}: in-plane size {size} exceeds the training canvas {tuple(canvas)}; it is "
            f"evaluated on a canvas of {grown} (centred zero padding as in training). Set "
            f"data.preprocess.pad_size to at least {list(grown)} to give every subject one canvas.",
            stacklevel=2,
        )
    return grown


def extract_slice(
    subject: PreprocessedSubject, axis: int, index: int, context: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Slice `index` along `axis` with `context` neighbours per side (edges replicated).

    Returns image (C, H, W) float32 with C = (2 * context + 1) * M, ordered neighbour-major
    (all modalities of slice index-context, then ..., then index+context), and label (H, W) or None.
    """
    n = subject.image.shape[1 + axis]
    if not 0 <= index < n:
        raise IndexError(f"slice {index} out of range for subject {subject.id} with {n} slices")
    parts = [
        np.take(subject.image, min(max(index + off, 0), n - 1), axis=1 + axis) for off in range(-context, context + 1)
    ]
    image = np.concatenate(parts, axis=0).astype(np.float32, copy=True)
    label = None if subject.label is None else np.array(np.take(subject.label, index, axis=axis))
    return image, label


def _norm_stats(subject: PreprocessedSubject, context: int) -> tuple[list[float], list[float]]:
    reps = 2 * context + 1
    return list(subject.meta.norm_mean) * reps, list(subject.meta.norm_std) * reps


class SliceDataset(Dataset):
    """Training slices of labelled, preprocessed subjects.

    Items are `{"image": float32 (C, H, W), "label": int64 (H, W)}` with C = (2*context+1) * modalities.
    `min_foreground`: skip slices whose labelled (class > 0) fraction is below it (0 keeps all).
    `foreground_oversample`: probability that an item is replaced by a slice drawn uniformly from the
    slices that contain foreground. `canvas`: the in-plane size (H, W) every slice is padded to, centred
    (`pad_to_canvas`); None = the largest in-plane size among `subjects` (`canvas_of`). Each subject is
    sliced along its own `meta.slice_axis`.
    """

    def __init__(
        self,
        subjects: Sequence[PreprocessedSubject],
        context: int = 0,
        augment: A.Compose | None = None,
        normalize: str = "zscore",
        seed: int = 0,
        min_foreground: float = 0.0,
        foreground_oversample: float = 0.0,
        canvas: Sequence[int] | None = None,
    ) -> None:
        if not subjects:
            raise DataError("SliceDataset: no subjects given (is the training split empty?)")
        if context < 0:
            raise DataError(f"data.slices.context: expected >= 0, got {context}")
        if not 0.0 <= min_foreground <= 1.0:
            raise DataError(f"data.slices.min_foreground: expected a fraction in [0, 1], got {min_foreground}")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise DataError(
                f"data.slices.foreground_oversample: expected a probability in [0, 1], got {foreground_oversample}"
            )
        if seed < 0:
            raise DataError(f"seed: expected a non-negative integer, got {seed}")
        normalize_image(np.zeros((1, 1, 1), np.float32), normalize, [0.0], [1.0])  # validates the mode
        self.subjects = list(subjects)
        for s in self.subjects:
            if s.label is None:
                raise DataError(f"subject {s.id}: training slices need a label, but this subject has none")
        self.context = context
        self.augment = augment
        self.normalize = normalize
        self.seed = int(seed)
        self.epoch = 0
        self.min_foreground = float(min_foreground)
        self.foreground_oversample = float(foreground_oversample)
        self.canvas: Canvas = canvas_of(self.subjects) if canvas is None else (int(canvas[0]), int(canvas[1]))
        for s in self.subjects:
            p = s.meta.in_plane_shape
            if p[0] > self.canvas[0] or p[1] > self.canvas[1]:
                raise DataError(f"subject {s.id}: in-plane size {p} exceeds the training canvas {self.canvas}")

        index: list[tuple[int, int]] = []
        foreground: list[tuple[int, int]] = []
        for si, s in enumerate(self.subjects):
            label = np.asarray(s.label)
            other = tuple(i for i in range(3) if i != s.meta.slice_axis)
            fg = np.count_nonzero(label, axis=other)
            frac = fg / float(np.prod([label.shape[i] for i in other]))
            index += [(si, int(j)) for j in np.flatnonzero(frac >= self.min_foreground)]
            foreground += [(si, int(j)) for j in np.flatnonzero(fg > 0)]
        if not index:
            raise DataError(f"data.slices.min_foreground={self.min_foreground} leaves no training slice; lower it")
        self.index = index
        self.foreground = foreground

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` reproduces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def in_channels(self) -> int:
        return (2 * self.context + 1) * int(self.subjects[0].image.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        si, sj = self.index[index]
        if rng.random() < self.foreground_oversample and self.foreground:
            si, sj = self.foreground[int(rng.integers(len(self.foreground)))]
        subject = self.subjects[si]
        image, label = extract_slice(subject, subject.meta.slice_axis, sj, self.context)
        assert label is not None
        image, label = pad_to_canvas(image, label, self.canvas)
        if self.augment is not None:
            hwc, label = apply_augmentation(self.augment, image.transpose(1, 2, 0), label, rng)
            image = np.ascontiguousarray(hwc.transpose(2, 0, 1))
        mean, std = _norm_stats(subject, self.context)
        image = normalize_image(image, self.normalize, mean, std)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.asarray(label, dtype=np.int64)),
        }


class SubjectSlices(Dataset):
    """One subject's slices in order, for evaluation / prediction (no augmentation).

    Items are `{"image": float32 (C, H, W), "index": int}` plus `"label": int64 (H, W)` when the subject has
    one, padded to `canvas` exactly as training pads them (None: no padding). Turn per-slice predictions back
    into a volume with `to_volume` (removes the canvas padding, stacks along the subject's slice axis), then
    invert with `preprocess.invert_to_canonical`.
    """

    def __init__(
        self,
        subject: PreprocessedSubject,
        context: int = 0,
        normalize: str = "zscore",
        canvas: Sequence[int] | None = None,
    ) -> None:
        if context < 0:
            raise DataError(f"data.slices.context: expected >= 0, got {context}")
        normalize_image(np.zeros((1, 1, 1), np.float32), normalize, [0.0], [1.0])
        self.subject = subject
        self.axis_index = int(subject.meta.slice_axis)
        self.context = context
        self.normalize = normalize
        self.canvas = subject_canvas(subject, canvas)
        self.padding = canvas_padding(subject.meta.in_plane_shape, self.canvas)

    def __len__(self) -> int:
        return int(self.subject.image.shape[1 + self.axis_index])

    def to_volume(self, slice_preds: Sequence[Any] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Per-slice predictions on the canvas (S, H, W), in slice order -> volume in the preprocessed grid."""
        stacked = stack_slices(slice_preds, self.axis_index, move=False)
        (t, b), (l, r) = self.padding
        stacked = stacked[:, t : stacked.shape[1] - b, l : stacked.shape[2] - r]
        return np.moveaxis(stacked, 0, self.axis_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = extract_slice(self.subject, self.axis_index, int(index), self.context)
        image, label = pad_to_canvas(image, label, self.canvas)
        mean, std = _norm_stats(self.subject, self.context)
        item: dict[str, Any] = {
            "image": torch.from_numpy(normalize_image(image, self.normalize, mean, std)),
            "index": int(index),
        }
        if label is not None:
            item["label"] = torch.from_numpy(label.astype(np.int64))
        return item


def stack_slices(
    slice_preds: Sequence[Any] | np.ndarray | torch.Tensor, axis: str | int, move: bool = True
) -> np.ndarray:
    """Put per-slice predictions (S, H, W), in slice order, back into a volume along `axis` (`move=False`: keep
    the slices first). For slices padded to a canvas use `SubjectSlices.to_volume`."""
    if isinstance(slice_preds, torch.Tensor):
        stacked = slice_preds.detach().cpu().numpy()
    elif isinstance(slice_preds, np.ndarray):
        stacked = slice_preds
    else:
        stacked = np.stack(
            [p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in slice_preds]
        )
    if stacked.ndim != 3:
        raise ValueError(f"stack_slices: expected (S, H, W) predictions, got shape {stacked.shape}")
    return np.moveaxis(stacked, 0, axis_index(axis)) if move else stacked
