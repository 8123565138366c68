"""Ensembles of runs (scseg-predict RUN_DIR RUN_DIR ... IN OUT, engine.inference.Ensemble): probabilities averaged on
the shared preprocessed grid, restored to each file's grid; runs that disagree are refused by name."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from scseg.cli.predict import main
from scseg.engine.inference import Ensemble, Predictor
from scseg.engine.loading import load_run
from scseg.engine.run import run_training


def _member(run_dir):
    spec, dm, model, _ = load_run(run_dir)
    return str(run_dir), Predictor(model, dm, 8, resample=spec.trainer.eval_resample)


def test_two_seeds_average_their_probabilities_and_predict_in_the_file_grid(tiny_config, tmp_path, capsys):
    runs = [run_training(tiny_config("unet", f"seed={seed}")).run_dir for seed in (0, 1)]
    members = [_member(r) for r in runs]
    ensemble = Ensemble(members)
    dm = members[0][1].datamodule
    subject = dm.subjects("test")[0]
    expected = (members[0][1].stacked_probabilities(subject) + members[1][1].stacked_probabilities(subject)) / 2
    np.testing.assert_allclose(ensemble.stacked(subject), expected, rtol=1e-6)
    assert ensemble.predict(subject).shape == dm.reference(subject).shape
    counts = ensemble.evaluate([subject])
    assert counts[str(subject.id)].shape == (5, dm.num_classes)

    source = dm.cases("test")[0].image_paths[0]
    image = tmp_path / "case.nii.gz"
    shutil.copy(source, image)
    out = tmp_path / "labels.nii.gz"
    assert main([str(runs[0]), str(runs[1]), str(image), str(out)]) == 0
    assert nib.load(str(out)).shape == nib.load(str(image)).shape
    capsys.readouterr()


def test_runs_that_disagree_are_refused_by_name(tiny_config):
    base = run_training(tiny_config("unet")).run_dir
    other = run_training(tiny_config("unet", "data.slices.context=1")).run_dir
    with pytest.raises(ValueError, match=f"run {other}: its 2.5D context"):
        Ensemble([_member(base), _member(other)])
    name, member = _member(base)
    renamed = (*member.datamodule.class_names[:-1], "renamed")
    object.__setattr__(member.datamodule.label_map, "class_names", renamed)  # a run with another label map
    with pytest.raises(ValueError, match="renamed-run: its classes"):
        Ensemble([_member(base), ("renamed-run", member)])


def test_scseg_evaluate_scores_an_ensemble_into_its_own_folder(tiny_config, tmp_path, capsys):
    from scseg.cli.evaluate import main as evaluate

    runs = [str(run_training(tiny_config("unet", f"seed={seed}")).run_dir) for seed in (0, 1)]
    assert evaluate([*runs]) == 2 and "needs --out" in capsys.readouterr().err
    out = tmp_path / "ensemble"
    assert evaluate([*runs, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble"] == runs and 0.0 <= summary["fg_mean"] <= 1.0
    assert (out / "per_case.csv").is_file()
