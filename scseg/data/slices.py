"""2D slice views of preprocessed volumes: the training Dataset and the in-order evaluation view.

Why this module exists: the networks are 2D, the data are volumes. Training draws slices (optionally
with 2.5D context, skipping near-empty slices, oversampling foreground) and augments them; evaluation
walks one subject's slices in order and stacks the predictions back into a volume. Every random draw
comes from `np.random.default_rng([seed, epoch, index])`, so an epoch is the same whatever the number of
DataLoader workers, and a resumed run sees the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from scseg.data.augment import apply_augmentation, normalize_image
from scseg.data.errors import DataError
from scseg.data.preprocess import PreprocessedSubject, axis_index


def _check_axis(subject: PreprocessedSubject, axis: str) -> int:
    a = axis_index(axis)
    settings = subject.meta.settings
    if settings.get("pad_size") is not None and axis_index(settings.get("axis", axis)) != a:
        raise DataError(
            f"subject {subject.id}: preprocessed (padded) for slice axis {settings.get('axis')!r}, "
            f"but data.slices.axis is {axis!r}; both must agree"
        )
    return a


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
    slices that contain foreground. `pad_to`: common in-plane size (H, W) for batching subjects of
    different sizes; None = the largest in-plane size among `subjects` (zero padding at the far end).
    """

    def __init__(
        self,
        subjects: Sequence[PreprocessedSubject],
        axis: str = "axial",
        context: int = 0,
        augment: A.Compose | None = None,
        normalize: str = "zscore",
        seed: int = 0,
        min_foreground: float = 0.0,
        foreground_oversample: float = 0.0,
        pad_to: tuple[int, int] | None = None,
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
        self.axis = axis
        self.axis_index = 0
        for s in self.subjects:
            self.axis_index = _check_axis(s, axis)
            if s.label is None:
                raise DataError(f"subject {s.id}: training slices need a label, but this subject has none")
        self.context = context
        self.augment = augment
        self.normalize = normalize
        self.seed = int(seed)
        self.epoch = 0
        self.min_foreground = float(min_foreground)
        self.foreground_oversample = float(foreground_oversample)
        planes = [tuple(d for i, d in enumerate(s.label.shape) if i != self.axis_index) for s in self.subjects]
        self.pad_to = tuple(pad_to) if pad_to is not None else tuple(max(p[i] for p in planes) for i in (0, 1))
        for s, p in zip(self.subjects, planes, strict=True):
            if p[0] > self.pad_to[0] or p[1] > self.pad_to[1]:
                raise DataError(f"subject {s.id}: in-plane size {p} exceeds the dataset's pad_to {self.pad_to}")

        index: list[tuple[int, int]] = []
        foreground: list[tuple[int, int]] = []
        for si, s in enumerate(self.subjects):
            label = np.asarray(s.label)
            other = tuple(i for i in range(3) if i != self.axis_index)
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
        image, label = extract_slice(subject, self.axis_index, sj, self.context)
        assert label is not None
        ph, pw = self.pad_to[0] - image.shape[1], self.pad_to[1] - image.shape[2]
        if ph or pw:
            image = np.pad(image, [(0, 0), (0, ph), (0, pw)])
            label = np.pad(label, [(0, ph), (0, pw)])
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

    Items are `{"image": float32 (C, H, W), "index": int}` plus `"label": int64 (H, W)` when the
    subject has one. Stack predictions with `stack_slices` then invert with `preprocess.invert_to_canonical`.
    """

    def __init__(
        self, subject: PreprocessedSubject, axis: str = "axial", context: int = 0, normalize: str = "zscore"
    ) -> None:
        if context < 0:
            raise DataError(f"data.slices.context: expected >= 0, got {context}")
        normalize_image(np.zeros((1, 1, 1), np.float32), normalize, [0.0], [1.0])
        self.subject = subject
        self.axis = axis
        self.axis_index = _check_axis(subject, axis)
        self.context = context
        self.normalize = normalize

    def __len__(self) -> int:
        return int(self.subject.image.shape[1 + self.axis_index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = extract_slice(self.subject, self.axis_index, int(index), self.context)
        mean, std = _norm_stats(self.subject, self.context)
        item: dict[str, Any] = {
            "image": torch.from_numpy(normalize_image(image, self.normalize, mean, std)),
            "index": int(index),
        }
        if label is not None:
            item["label"] = torch.from_numpy(label.astype(np.int64))
        return item


def stack_slices(slice_preds: Sequence[Any] | np.ndarray | torch.Tensor, axis: str) -> np.ndarray:
    """Put per-slice predictions (S, H, W), in slice order, back into the preprocessed volume (X, Y, Z)."""
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
    return np.moveaxis(stacked, 0, axis_index(axis))
