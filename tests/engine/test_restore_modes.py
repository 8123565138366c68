"""Evaluation on resampled data: ``trainer.eval_resample`` linear vs nearest through the whole evaluation path.

Oblique, anisotropic files of mixed orientation (tests/data/oblique.py), resampled in-plane from 1.25 mm to 2 mm.
The network is replaced by an oracle that returns the reference of each slice on the coarse grid (one-hot
probabilities, or the labels), so what is measured is the way back: stacking, uncropping, resampling and
reorientation to each file's grid. Linear must land every class on the file's labels at least as well as nearest.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from scseg.config import compose_data_config
from scseg.data.datamodule import DataModule
from scseg.data.preprocess import resamples, restore
from scseg.engine import inference
from scseg.metrics import ClassCounts, dice_from_counts
from tests.data.oblique import write_oblique_dataset


@pytest.fixture
def resampled_dm(tmp_path) -> DataModule:
    root = write_oblique_dataset(tmp_path / "Dataset001_Oblique")
    overrides = [f"layout.root={root}", "augment.enabled=false", "preprocess.target_spacing=[2.0,2.0,null]"]
    overrides.append("preprocess.pad_size=[48,48]")
    return DataModule(compose_data_config("nnunet", overrides), seed=0)


def _oracle(monkeypatch, dm: DataModule) -> None:
    """The predictor's slice labels / probabilities answer with each slice's own reference label."""

    def labels(self, slices):
        return np.stack([slices[i]["label"].numpy() for i in range(len(slices))]).astype(np.int16)

    def probabilities(self, slices):
        lab = torch.from_numpy(labels(self, slices).astype(np.int64))
        return torch.nn.functional.one_hot(lab, dm.num_classes).permute(0, 3, 1, 2).float().numpy()

    monkeypatch.setattr(inference.Predictor, "slice_labels", labels)
    monkeypatch.setattr(inference.Predictor, "slice_probabilities", probabilities)


def test_linear_and_nearest_return_every_file_to_its_grid(monkeypatch, resampled_dm):
    dm = resampled_dm
    _oracle(monkeypatch, dm)
    subjects = [s for split in ("train", "val", "test") for s in dm.subjects(split)]
    assert all(resamples(s.meta) for s in subjects)
    dice = {}
    for mode in ("linear", "nearest"):
        counts = inference.Predictor(torch.nn.Identity(), dm, 16, resample=mode).evaluate(subjects)
        dice[mode] = np.stack([dice_from_counts(*ClassCounts.from_array(c).tp_fp_fn()) for c in counts.values()])
    for s in subjects:  # the prediction has the label file's shape (orientation handled per file)
        raw = np.asarray(nib.load(s.meta.label_path).dataobj)
        assert inference.Predictor(torch.nn.Identity(), dm, 16).predict(s).shape == raw.shape
    assert np.all(dice["nearest"][:, 1:] > 0.8)  # a 1.6x coarser grid still finds both structures
    assert np.all(dice["linear"][:, 1:] >= dice["nearest"][:, 1:] - 0.01)
    assert not np.array_equal(dice["linear"], dice["nearest"])  # the modes really differ here


def test_an_unknown_mode_is_refused(resampled_dm):
    with pytest.raises(ValueError, match="resample='cubic'"):
        inference.Predictor(torch.nn.Identity(), resampled_dm, 16, resample="cubic")
    subject = resampled_dm.subjects("test")[0]
    with pytest.raises(ValueError, match="resample='cubic'"):
        restore(np.zeros(subject.meta.shape, np.int16), subject.meta, "cubic")
