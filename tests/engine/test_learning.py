"""A short training run on phantom data really learns (loss falls, Dice far above chance)."""

from __future__ import annotations

import csv

import numpy as np

from scseg.engine.checkpoint import load_checkpoint
from scseg.engine.run import run_training
from scseg.metrics import random_predictor_dice


def test_short_run_learns(tiny_config):
    # ~15 s on one core: 8 phantom subjects of 48^3, small U-Net, 5 epochs x 30 steps.
    cfg = tiny_config(
        "unet",
        "data.layout.n_subjects=8",
        "data.layout.size=[48,48,48]",
        "data.slices.min_foreground=0.01",
        "model.filters=16",
        "model.depth=3",
        "optimizer.lr=3e-3",
        "scheduler=cosine",
        "trainer.max_epochs=5",
        "trainer.iters_per_epoch=30",
        "trainer.val_every=5",
    )
    result = run_training(cfg)
    assert result.state == "done"

    losses = [r["train_loss"] for r in load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["history"]]
    assert losses[-1] < 0.7 * losses[0], losses
    fg = result.summary["fg_mean"]

    chance = []
    with (result.run_dir / "per_case.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for subject in {r["subject"] for r in rows}:
        n_ref = np.array([int(r["n_ref"]) for r in rows if r["subject"] == subject])
        chance.append(np.nanmean(random_predictor_dice(n_ref)[1:]))
    assert fg >= 0.5, fg
    assert fg >= 3 * float(np.mean(chance)), (fg, np.mean(chance))
