"""Multi-view fusion (engine.inference.MultiViewFusion): runs sliced along different axes, fused at probability level in
the subject's geometry with per-view weights; scseg-evaluate/-predict pick it for runs whose slice axes differ."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scseg.engine.inference import Ensemble, MultiViewFusion, Predictor, combine
from scseg.engine.loading import load_run
from scseg.engine.run import run_training


def _member(run_dir):
    spec, dm, model, _ = load_run(run_dir)
    return str(run_dir), Predictor(model, dm, 8, resample=spec.trainer.eval_resample)


@pytest.fixture(params=["no-resampling", "resampled"])
def two_views(request, tiny_config):
    extra = ["data.preprocess.target_spacing=[1.5,1.5,1.5]"] if request.param == "resampled" else []
    runs = [
        run_training(tiny_config("unet", f"data.slices.axis={axis}", *extra)).run_dir for axis in ("axial", "coronal")
    ]
    return [_member(r) for r in runs]


def test_a_view_weighted_one_alone_is_that_view_and_equal_weights_fuse_both(two_views):
    axial, coronal = two_views
    subject = axial[1].datamodule.subjects("test")[0]
    coronal_subject = coronal[1].datamodule.subjects("test")[0]
    assert axial[1].datamodule.settings.axis != coronal[1].datamodule.settings.axis

    alone = MultiViewFusion([axial, coronal], weights=[1.0, 0.0]).predict(subject)
    np.testing.assert_array_equal(alone, axial[1].predict(subject))
    other = MultiViewFusion([axial, coronal], weights=[0.0, 3.0]).predict(subject)
    np.testing.assert_array_equal(other, coronal[1].predict(coronal_subject))

    fused = MultiViewFusion([axial, coronal])
    labels = fused.predict(subject)
    reference = axial[1].datamodule.reference(subject)
    assert labels.shape == reference.shape
    probs = fused.stacked(subject)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)  # a weighted mean of distributions is one
    counts = fused.evaluate([subject])[str(subject.id)]
    assert counts.shape == (5, axial[1].datamodule.num_classes)


def test_combine_fuses_views_ensembles_alike_runs_and_checks_weights(two_views, tiny_config):
    axial, coronal = two_views
    assert isinstance(combine([axial, coronal]), MultiViewFusion)
    assert isinstance(combine([axial, axial]), Ensemble)
    assert combine([axial]) is axial[1]
    with pytest.raises(ValueError, match="3 weights for 2 runs"):
        combine([axial, coronal], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        combine([axial, coronal], [1, -1])


def test_views_with_other_classes_are_refused_by_name(two_views):
    axial, coronal = two_views
    dm = coronal[1].datamodule
    renamed = (*dm.class_names[:-1], "renamed")
    object.__setattr__(dm.label_map, "class_names", renamed)
    with pytest.raises(ValueError, match="renamed-view: its classes"):
        MultiViewFusion([axial, ("renamed-view", coronal[1])])


def test_scseg_evaluate_fuses_views_with_weights(tiny_config, tmp_path, capsys):
    from scseg.cli.evaluate import main as evaluate

    runs = [str(run_training(tiny_config("unet", f"data.slices.axis={a}")).run_dir) for a in ("axial", "sagittal")]
    out = tmp_path / "views"
    assert evaluate([*runs, "--out", str(out), "--weights", "0.6", "0.2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble_kind"] == "views"
    assert summary["ensemble_weights"] == [0.75, 0.25]
    assert 0.0 <= summary["fg_mean"] <= 1.0
    assert evaluate([*runs, "--out", str(out), "--weights", "1"]) == 2
    assert "1 weights for 2 runs" in capsys.readouterr().err
