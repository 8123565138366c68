"""Smoke runs of the paper experiments on the real data (skipped when ../shared/data is absent)."""

from __future__ import annotations

import pytest

from scseg.config import compose_train_config
from scseg.engine.run import run_training


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("experiment, n_test, fg_classes", [("paper_chaos", 8, 4), ("paper_malc", 15, 27)])
def test_paper_experiment_runs_end_to_end_on_cpu(experiment, n_test, fg_classes, tmp_path, request):
    """Budget: about 45 s (CHAOS) and 80 s (MALC) on 2 cores: preprocessing, 3 steps, volumetric test evaluation."""
    request.getfixturevalue("chaos_root" if experiment == "paper_chaos" else "malc_root")
    cfg = compose_train_config(
        [
            f"experiment={experiment}",
            "width=small",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "trainer.iters_per_epoch=3",
            "data.loader.num_workers=0",
            f"paths.runs_dir={tmp_path}",
        ]
    )
    result = run_training(cfg)
    summary = result.summary
    assert result.state == "done" and len(summary["subjects"]) == n_test
    assert len([name for name in summary["per_class"] if name != "background"]) == fg_classes
