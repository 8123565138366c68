"""Tiny end-to-end settings shared by the engine tests."""

from __future__ import annotations

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
    "trainer.num_threads=1",
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
