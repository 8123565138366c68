"""TensorBoard output of a run: scalars, label overlays, SE gate maps, hparams and text, all in the run's own folder.

Only rank 0 creates a writer; every method is a no-op when logging is disabled, so the trainer never branches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

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


def _metric_columns(summary: Mapping) -> list[tuple[str, str, dict, str]]:
    """(key, title, {structure: mean}, format) for Dice and, where the run computed them, HD95 and NSD."""
    dice = {name: (stats or {}).get("mean") for name, stats in (summary.get("per_class") or {}).items()}
    columns = [("dice", "Dice", dice, "{:.3f}")]
    for key, title, fmt in (("hd95", "HD95 (mm)", "{:.2f}"), ("nsd", "NSD", "{:.3f}")):
        if summary.get(f"per_class_{key}"):
            columns.append((key, title, dict(summary[f"per_class_{key}"]), fmt))
    return columns


def _fg_mean(summary: Mapping, key: str) -> float | None:
    return summary.get("fg_mean") if key == "dice" else summary.get(f"fg_{key}_mean")


def test_metrics_table(summary: Mapping, class_names: Sequence[str]) -> str:
    """The evaluation's metrics per structure as a Markdown table for TensorBoard's TEXT tab: Dice, and HD95 / NSD
    where computed, each the mean over subjects; then the subject-level foreground means."""

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None or not np.isfinite(value) else fmt.format(value)

    columns = _metric_columns(summary)
    lines = ["| structure | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in list(class_names)[1:]:
        lines.append(f"| {name} | " + " | ".join(cell(values.get(name), fmt) for _, _, values, fmt in columns) + " |")
    means = " | ".join(cell(_fg_mean(summary, key), fmt) for key, _, _, fmt in columns)
    lines.append(f"| **foreground mean** | {means} |")
    return "\n".join(lines)


def test_metric_scalars(summary: Mapping, prefix: str = "test") -> dict[str, float]:
    """``<prefix>/<metric>/<structure>`` and ``<prefix>/<metric>_mean`` (metric: dice, hd95, nsd) for the SCALARS
    tab; finite values only."""
    values: dict[str, float | None] = {}
    for key, _, per_class, _ in _metric_columns(summary):
        values.update({f"{prefix}/{key}/{name}": value for name, value in per_class.items()})
        values[f"{prefix}/{key}_mean"] = _fg_mean(summary, key)
    return {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}


class RunLogger:
    """Thin wrapper around ``SummaryWriter`` writing into ``run_dir``."""

    def __init__(self, run_dir: Path | None, enabled: bool) -> None:
        self.writer = None
        if enabled and run_dir is not None:
            self.writer = SummaryWriter(log_dir=str(run_dir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, chw: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, torch.from_numpy(chw), step, dataformats="CHW")

    def histogram(self, tag: str, values: np.ndarray | torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_histogram(tag, values, step)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, markdown, step)

    def hparams(self, hparams: Mapping[str, object], metrics: Mapping[str, float]) -> None:
        """Write hparams into this run's own event file (no time-stamped subfolder), for the HPARAMS tab."""
        if self.writer is None:
            return
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


# Viridis at nine stops: perceptually ordered and readable for colour-blind viewers; gate maps share one 0..1 scale.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float32,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped), any shape S -> (3, *S) viridis RGB in [0, 1]."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_VIRIDIS) - 1)
    frac = (v - lo)[..., None]
    rgb = (1 - frac) * _VIRIDIS[lo] + frac * _VIRIDIS[hi]
    return np.moveaxis(rgb / 255.0, -1, 0).astype(np.float32)


def upsample_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) by nearest neighbour, so a coarse block's gate shows its true resolution."""
    h, w = values.shape
    rows = np.minimum((np.arange(size[0]) * h) // size[0], h - 1)
    cols = np.minimum((np.arange(size[1]) * w) // size[1], w - 1)
    return values[rows][:, cols]


def gate_heatmap_grid(images: Sequence[np.ndarray], gates: Sequence[np.ndarray], alpha: float = 0.6) -> np.ndarray:
    """One row per slice: the sSE gate (h, w) as a heat map | the same over the grey input slice (H, W).

    The gate is shown at its block's resolution (nearest upsampling) on a fixed 0..1 scale, so blocks and
    validations compare directly; a colour bar (0 left, 1 right) runs along the bottom.
    """
    rows = []
    for image, gate in zip(images, gates):
        heat = colormap(upsample_nearest(np.asarray(gate, dtype=np.float32), image.shape))
        grey = overlay(image, np.zeros(image.shape, dtype=np.int64), 1)
        rows.append(np.concatenate([heat, (1 - alpha) * grey + alpha * heat], axis=2))
    grid = np.concatenate(rows, axis=1)
    scale = colormap(np.broadcast_to(np.linspace(0.0, 1.0, grid.shape[2]), (4, grid.shape[2])))
    return np.concatenate([grid, np.ones((3, 2, grid.shape[2]), np.float32), scale], axis=1).astype(np.float32)


def channel_bars(gates: np.ndarray, panel_height: int = 40, max_width: int = 256) -> np.ndarray:
    """cSE gates ``(N, C)`` -> one bar chart per slice (one bar per channel, 0..1), stacked: (3, H, W).

    A red line marks 0.5, the gate of a block that does not recalibrate at all (sigmoid of 0).
    """
    gates = np.clip(np.nan_to_num(np.asarray(gates, dtype=np.float32)), 0.0, 1.0)
    n, c = gates.shape
    bar = int(np.clip(max_width // max(c, 1), 1, 8))
    inner = panel_height - 2
    panels = []
    for g in gates:
        heights = np.round(g * inner).astype(int)
        panel = np.full((3, panel_height, c * bar), 0.15, np.float32)
        filled = np.arange(inner)[::-1, None] < heights[None, :]  # (inner, C): row 0 is the top
        panel[:, 1:-1, :] = np.where(
            np.repeat(filled, bar, axis=1)[None], np.array([0.95, 0.75, 0.3], np.float32)[:, None, None], 0.15
        )
        half = 1 + inner - int(round(0.5 * inner))
        panel[:, half, :] = np.array([0.9, 0.1, 0.1], np.float32)[:, None]
        panels.append(panel)
        panels.append(np.zeros((3, 2, c * bar), np.float32))
    return np.concatenate(panels[:-1] if n else [np.zeros((3, 1, 1), np.float32)], axis=1)
