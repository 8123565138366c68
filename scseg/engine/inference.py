"""Volumetric evaluation, the way the paper evaluates: whole volumes, Dice per structure at the file's resolution.

Pure functions: a model that is already built and loaded, and subjects from the data module, go in; label
volumes, per-class counts and tables come out. Nothing here loads a checkpoint (``scseg.engine.loading`` does)
or reads a command line (``scseg.cli.evaluate`` and ``scseg.cli.predict`` do), so the trainer and the commands
share one code path:

    subject -> ordered slices -> batched logits -> argmax per slice -> stacked volume (preprocessed grid)
            -> undo padding, cropping, resampling and reorientation -> counts against the mapped reference

When preprocessing resampled the subject and ``resample="linear"`` (``trainer.eval_resample``, the default), the
softmax probabilities are stacked instead of the arg-max, interpolated to the file's grid class by class, and the
arg-max is taken there; ``"nearest"`` is the arg-max on the coarse grid copied by nearest neighbour (blocky).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from scseg.data.preprocess import RESTORE_MODES
from scseg.metrics import ClassCounts, class_counts, per_case_rows

# Turns (S, C, H, W) float slices into logits; the trainer passes one that applies autocast / channels-last.
ForwardFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def _per_slice(
    model: nn.Module,
    slices: torch.utils.data.Dataset,
    batch_size: int,
    device: torch.device | str,
    forward: ForwardFn | None,
    head: Callable[[torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """``head(logits)`` of every slice of one subject, in order, as one array (model in eval mode meanwhile)."""
    was_training = model.training
    model.eval()
    run = forward or model
    loader = DataLoader(slices, batch_size=batch_size, shuffle=False, num_workers=0)
    out = []
    for batch in loader:
        images = batch["image"] if isinstance(batch, dict) else batch
        out.append(head(run(images.to(device, non_blocking=True))).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out, axis=0)


def predict_slices(
    model: nn.Module,
    slices: torch.utils.data.Dataset,
    batch_size: int,
    device: torch.device | str = "cpu",
    forward: ForwardFn | None = None,
) -> np.ndarray:
    """Arg-max label of every slice of one subject, in order: ``(S, H, W)`` int16 array."""
    return _per_slice(model, slices, batch_size, device, forward, lambda logits: logits.argmax(dim=1).to(torch.int16))


def predict_slice_probabilities(
    model: nn.Module,
    slices: torch.utils.data.Dataset,
    batch_size: int,
    device: torch.device | str = "cpu",
    forward: ForwardFn | None = None,
) -> np.ndarray:
    """Softmax class probabilities of every slice of one subject, in order: ``(S, K, H, W)`` float32 array."""
    return _per_slice(model, slices, batch_size, device, forward, lambda logits: torch.softmax(logits.float(), dim=1))


def predict_volume(
    model: nn.Module,
    datamodule: Any,
    subject: Any,
    batch_size: int,
    device: torch.device | str = "cpu",
    forward: ForwardFn | None = None,
) -> np.ndarray:
    """Label volume of one subject in the preprocessed grid (slices predicted in order, then stacked)."""
    slices = datamodule.eval_slices(subject)
    return slices.to_volume(predict_slices(model, slices, batch_size, device, forward))


def predict_canonical(
    model: nn.Module,
    datamodule: Any,
    subject: Any,
    batch_size: int,
    device: torch.device | str = "cpu",
    forward: ForwardFn | None = None,
    resample: str = "linear",
) -> np.ndarray:
    """Label volume of one subject in its canonical (RAS+) grid at the file's resolution; ``resample`` is one of
    ``preprocess.RESTORE_MODES`` and matters only for subjects that preprocessing resampled."""
    if resample not in RESTORE_MODES:
        raise ValueError(f"resample={resample!r}: expected one of {', '.join(RESTORE_MODES)}")
    if resample == "linear" and datamodule.resamples(subject):
        slices = datamodule.eval_slices(subject)
        probs = predict_slice_probabilities(model, slices, batch_size, device, forward)
        volume = np.stack([slices.to_volume(probs[:, k]) for k in range(probs.shape[1])])
        del probs
        return datamodule.probabilities_to_canonical(subject, volume)
    return datamodule.to_canonical(subject, predict_volume(model, datamodule, subject, batch_size, device, forward))


def predict_subject(
    model: nn.Module,
    datamodule: Any,
    subject: Any,
    batch_size: int,
    device: torch.device | str = "cpu",
    forward: ForwardFn | None = None,
    resample: str = "linear",
) -> np.ndarray:
    """Label volume of one subject in its file's own voxel grid (shape and orientation of the input file)."""
    canonical = predict_canonical(model, datamodule, subject, batch_size, device, forward, resample)
    return datamodule.canonical_to_original(subject, canonical)


def evaluate_subjects(
    model: nn.Module,
    datamodule: Any,
    subjects: Sequence[Any],
    batch_size: int,
    device: torch.device | str = "cpu",
    forward: ForwardFn | None = None,
    resample: str = "linear",
) -> dict[str, np.ndarray]:
    """Per-subject confusion counts ``{subject id: (5, K) int64 array}`` (rows: tp, fp, fn, n_ref, n_pred).

    Each subject is predicted slice by slice, stacked, brought back to the original geometry and compared with
    the label-mapped reference there, so the Dice is the one a user would compute on the files.
    """
    results = {}
    for subject in subjects:
        prediction = predict_subject(model, datamodule, subject, batch_size, device, forward, resample)
        reference = datamodule.reference(subject)
        counts = class_counts(reference, prediction, datamodule.num_classes)
        results[subject_id(subject)] = counts.to_array()
    return results


def counts_to_rows(counts: dict[str, np.ndarray], class_names: Sequence[str]) -> list[dict]:
    """Rows of per_case.csv (subject, class_id, class_name, tp, fp, fn, n_ref, n_pred, dice), subjects sorted."""
    rows: list[dict] = []
    for sid in sorted(counts):
        rows.extend(per_case_rows(sid, ClassCounts.from_array(counts[sid]), class_names))
    return rows


def subject_id(subject: Any) -> str:
    return str(subject.id)
