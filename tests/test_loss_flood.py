"""No class may flood the empty background (issue 11): the loss settings recommended against it, on a phantom.

On MALC a network trained with ``configs/loss/ce_dice.yaml`` as it stands (median-frequency CE, soft Dice
without background and without absent classes) labelled ~45 % of the zero-intensity voxels outside the brain
as one structure: background's class weight was 258x below that structure's, and the Dice term ignores
background, so flooding it costs almost nothing. The phantom here reproduces the imbalance: a head-like
ellipse with a background rim, two large classes, four small ones and a rare one (in 30 % of the slices),
inside an empty (zero, label 0) field of about 70 % of every slice; background's median-frequency weight
is ~0.009, ~190x below the rarest class's. With today's settings the tiny U-Net floods the empty field
(100 % at seed 0 after 300 steps, measured; ``test_todays_loss_floods`` keeps that honest); with
:data:`RECOMMENDED` it labels 0.00 % of it as foreground (bar: 1 %).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scseg.data.cache import median_frequency_weights
from scseg.losses import CombinedLoss
from scseg.models import create_model
from tests.engine.tiny import TEST_THREADS

# The overrides recommended for the paper presets: background weight floored at 1/4 of the median class
# weight, and background inside the Dice mean (the rest as in configs/loss/ce_dice.yaml).
RECOMMENDED = {"min_class_weight_ratio": 0.25, "include_background": True}
TODAY = {"ce_weight": 1.0, "dice_weight": 1.0, "boundary_weight": 1.0, "include_background": False}
N_CLASSES = 8
SIZE = 32
FLOOD_BAR = 0.01


def phantom_slices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` slices ``(n, 1, SIZE, SIZE)`` and labels: zero field (label 0), background rim, classes 1-7."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, SIZE, SIZE), np.float32)
    labels = np.zeros((n, SIZE, SIZE), np.int64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    # (radius, intensity, probability of appearing) of the small classes 3..7; 7 is the rare one.
    blobs = [(2.0, 0.3, 1.0), (2.0, 0.55, 1.0), (1.8, 0.65, 1.0), (1.5, 0.35, 1.0), (1.2, 0.5, 0.3)]
    for i in range(n):
        cy, cx = SIZE / 2 + rng.uniform(-1.5, 1.5, 2)
        ry, rx = SIZE * rng.uniform(0.26, 0.32, 2)

        head = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image = np.zeros((SIZE, SIZE), np.float32)
        label = np.zeros((SIZE, SIZE), np.int64)
        image[head] = 0.6  # rim: background with signal, like skull and scalp
        for cls, margin, value in ((1, 2, 0.45), (2, 4, 0.8)):  # "cortex" and "white matter" inside the rim
            inner = ((yy - cy) / (ry - margin)) ** 2 + ((xx - cx) / (rx - margin)) ** 2 <= 1
            image[inner], label[inner] = value, cls
        for cls, (radius, value, p) in enumerate(blobs, start=3):
            if rng.uniform() > p:
                continue
            oy, ox = rng.uniform(-0.45, 0.45, 2) * np.array([ry - 4, rx - 4])
            blob = (yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 <= radius * radius
            image[blob], label[blob] = value, cls
        images[i, 0] = image + head * rng.normal(0, 0.05, image.shape).astype(np.float32)
        labels[i] = label
    return torch.from_numpy(images), torch.from_numpy(labels)


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Median-frequency weights exactly as the data module computes them (per-slice frequencies)."""
    voxels = np.array([int((labels == c).sum()) for c in range(N_CLASSES)])
    slice_voxels = np.array([sum(int(s.numel()) for s in labels if bool((s == c).any())) for c in range(N_CLASSES)])
    return torch.tensor(median_frequency_weights(voxels, slice_voxels), dtype=torch.float32)


def flood_fraction(loss_kwargs: dict, seed: int = 0, steps: int = 300) -> float:
    """Train a tiny U-Net with CombinedLoss(**loss_kwargs); share of held-out empty-field pixels called foreground."""
    images, labels = phantom_slices(64, seed=123)
    test_images, test_labels = phantom_slices(16, seed=7)
    weights = class_weights(labels)
    assert weights[0] < 0.02 and weights.max() / weights[0] > 100  # the MALC-like imbalance the test is about
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    try:
        torch.manual_seed(seed)
        model = create_model("unet", N_CLASSES, filters=8, depth=2, kernel_size=3)
        loss_fn = CombinedLoss(class_weights=weights, **loss_kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        draws = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = torch.randint(0, len(images), (8,), generator=draws)
            loss = loss_fn(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = model(test_images).argmax(1)
    finally:
        torch.set_num_threads(threads)
    empty = (test_images[:, 0] == 0) & (test_labels == 0)
    return float((pred[empty] != 0).float().mean())


@pytest.mark.learning
def test_recommended_loss_does_not_flood_the_empty_field():
    # ~5-10 s on one core. Measured: 0.00 % (seeds 0-3: at most 0.03 %); today's settings: 100 %.
    flood = flood_fraction({**TODAY, **RECOMMENDED})
    assert flood < FLOOD_BAR, f"{flood:.2%} of the empty field labelled foreground (bar {FLOOD_BAR:.0%})"


@pytest.mark.slow
@pytest.mark.learning
def test_todays_loss_floods():
    # ~5-10 s on one core: the phantom really does provoke the flood with today's settings (else the test
    # above would prove nothing). Measured: 100 % at seed 0 (seeds 1-3: 100 %, 94 %, 13 %).
    assert flood_fraction(TODAY) > 0.03
