"""TensorBoard output of a run: scalars, label-overlay image grids and hparams, all in the run's own folder.

Only rank 0 creates a writer; every method is a no-op when logging is disabled, so the trainer never branches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

# A fixed, colour-blind-friendly-ish palette; class 0 (background) is transparent in overlays.
_PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
        [170, 255, 195],
        [128, 128, 0],
        [255, 215, 180],
        [0, 0, 128],
        [128, 128, 128],
    ],
    dtype=np.float32,
)


def label_colours(num_classes: int) -> np.ndarray:
    """(K, 3) RGB in [0, 1]; classes beyond the palette get deterministic pseudo-random colours."""
    rng = np.random.default_rng(1234)
    extra = rng.uniform(40, 255, size=(max(0, num_classes - len(_PALETTE)), 3)).astype(np.float32)
    return np.concatenate([_PALETTE, extra])[:num_classes] / 255.0


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """Grey image (H, W) with a coloured label overlay -> (3, H, W) float in [0, 1]."""
    lo, hi = float(image.min()), float(image.max())
    grey = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    rgb = np.repeat(grey[None], 3, axis=0)
    colours = label_colours(num_classes)[labels].transpose(2, 0, 1)
    mask = (labels > 0)[None]
    return np.where(mask, (1 - alpha) * rgb + alpha * colours, rgb).astype(np.float32)


def comparison_grid(
    images: Sequence[np.ndarray], references: Sequence[np.ndarray], predictions: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """One row per slice: input | reference overlay | prediction overlay, as a (3, H_total, W_total) image."""
    rows = []
    for image, ref, pred in zip(images, references, predictions):
        grey = overlay(image, np.zeros_like(ref), num_classes)
        rows.append(np.concatenate([grey, overlay(image, ref, num_classes), overlay(image, pred, num_classes)], axis=2))
    width = max(r.shape[2] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, 0), (0, width - r.shape[2]))) for r in rows]
    return np.concatenate(padded, axis=1)


class RunLogger:
    """Thin wrapper around ``SummaryWriter`` writing into ``run_dir``."""

    def __init__(self, run_dir: Path | None, enabled: bool) -> None:
        self.writer = None
        if enabled and run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, chw: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, torch.from_numpy(chw), step, dataformats="CHW")

    def hparams(self, hparams: Mapping[str, object], metrics: Mapping[str, float]) -> None:
        """Write hparams into this run's own event file (no time-stamped subfolder), for the HPARAMS tab."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        experiment, start, end = hparams_summary(clean, dict(metrics))
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, float(value), 0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
