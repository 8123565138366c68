"""The CPU presets of the paper's tasks build on the real data and take a training step with every architecture
(skipped when ../shared/data is absent)."""

from __future__ import annotations

import math

import pytest

from scseg.config import compose_train_config
from scseg.config.check import validate_config
from scseg.engine.run import build_datamodule, build_model
from scseg.engine.spec import RunSpec
from scseg.engine.trainer import Trainer

ARCHS = ("unet", "sdnet", "fcdensenet")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(
    "experiment, root_fixture", [("paper_malc_cpu", "malc_root"), ("paper_chaos_cpu", "chaos_root")]
)
def test_cpu_preset_builds_and_steps_every_architecture(experiment, root_fixture, tmp_path, request):
    """Budget: about 10 s each on 2 cores (the training subjects are preprocessed, one step per architecture)."""
    request.getfixturevalue(root_fixture)
    datamodule = None
    for arch in ARCHS:
        cfg = compose_train_config(
            [f"experiment={experiment}", f"model={arch}", "trainer.iters_per_epoch=1", f"paths.runs_dir={tmp_path}"]
        )
        validate_config(cfg)
        datamodule = datamodule or build_datamodule(
            RunSpec.from_config(cfg)
        )  # the data config is the same for every architecture
        model = build_model(RunSpec.from_config(cfg), datamodule.num_classes, datamodule.in_channels)
        trainer = Trainer(RunSpec.from_config(cfg), model, datamodule, run_dir=None)
        loss, _ = trainer.train_epoch(0)
        assert math.isfinite(loss) and trainer.state.step == 1, (arch, loss)
    assert datamodule is not None and datamodule.canvas is not None
