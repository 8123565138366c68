"""Tiny end-to-end settings shared by the engine tests."""

from __future__ import annotations

import os

# Torch threads of the training tests; `make test-cpus` runs the training tests at 1 and 2.
TEST_THREADS = int(os.environ.get("SCSEG_TEST_THREADS", "1"))

# Phantom data small enough that a whole run (train, validate, test) takes seconds on one CPU core.
TINY_DATA = [
    "data.layout.n_subjects=5",
    "data.layout.n_test=2",
    "data.layout.size=[32,32,32]",
    "data.val_subjects=1",
    "data.augment.enabled=false",
    "data.loader.batch_size=4",
]
TINY_TRAINER = [
    "width=small",
    "trainer.max_epochs=2",
    "trainer.iters_per_epoch=2",
    f"trainer.num_threads={TEST_THREADS}",
    "trainer.eval_batch_size=32",
    "logger.image_slices=2",
]
TINY_MODELS = {
    "unet": ["model=unet", "model.filters=4", "model.depth=2"],
    "sdnet": ["model=sdnet", "model.filters=4", "model.depth=2"],
    "fcdensenet": [
        "model=fcdensenet",
        "model.growth_rate=4",
        "model.first_filters=4",
        "model.down_layers=[1,1]",
        "model.up_layers=[1,1]",
        "model.bottleneck_layers=1",
    ],
}
