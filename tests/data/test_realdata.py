"""Real data (skipped when ../shared/data is absent): MALC and CHAOS layouts, label maps, geometry round trip.

Kept light: layouts only glob, and at most one volume per dataset is read.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from omegaconf import OmegaConf

from scseg.data.io import read_subject, to_original
from scseg.data.label_map import load_label_map
from scseg.data.layouts import load_layout, split_validation
from scseg.metrics import class_counts, confusion_counts, dice_from_counts

LABEL_MAPS = Path(__file__).resolve().parents[2] / "configs" / "label_map"
RESCANS = {"1023", "1024", "1025", "1038", "1039"}


def test_malc_split_15_15_without_rescans(malc_root):
    splits = load_layout({"type": "malc", "root": str(malc_root), "split_file": "split.json"})
    assert len(splits["train"]) == 15 and len(splits["test"]) == 15
    ids = {c.id for v in splits.values() for c in v}
    assert not ids & RESCANS
    with_rescans = load_layout({"type": "malc", "root": str(malc_root), "include_rescans_in_test": True})
    assert {c.id for c in with_rescans["test"]} - {c.id for c in splits["test"]} == RESCANS
    assert len(with_rescans["train"]) == 15  # every rescan repeats a test subject: none may enter train
    train, val = split_validation(splits["train"], 3, 0)
    assert len(train) == 12 and len(val) == 3


def test_malc_label_map_gives_28_classes_and_round_trips(malc_root):
    lm = load_label_map(OmegaConf.load(LABEL_MAPS / "malc.yaml"))
    case = next(c for c in load_layout({"type": "malc", "root": str(malc_root)})["train"] if c.id == "1000")
    subject = read_subject(case)
    raw_file = np.asarray(nib.load(str(case.label_path)).dataobj)
    assert subject.label is not None
    # geometry round trip: canonical label back in the file's grid equals the file's data
    assert np.array_equal(to_original(subject.label, subject.geometry), raw_file)
    mapped = lm.apply(subject.label, str(case.label_path))  # unknown: error -> every raw id is accounted for
    present = np.unique(mapped)
    assert present.tolist() == list(range(28))
    labelled = subject.label != 0
    share = float(np.mean(mapped[labelled] == 0))
    print(f"\nMALC {case.id}: {100 * share:.3f} % of labelled voxels map to background")
    assert 0.0 < share < 0.02


def test_chaos_split_and_classes(chaos_root):
    splits = load_layout({"type": "chaos", "root": str(chaos_root), "split_file": "split.json"})
    assert len(splits["train"]) == 12 and len(splits["test"]) == 8
    lm = load_label_map(OmegaConf.load(LABEL_MAPS / "chaos.yaml"))
    subject = read_subject(splits["test"][0])
    assert subject.label is not None
    assert set(np.unique(subject.label).tolist()) <= {0, 1, 2, 3, 4}
    mapped = lm.apply(subject.label, str(splits["test"][0].label_path))
    assert mapped.max() <= 4 and np.count_nonzero(mapped) > 0
    assert subject.image.shape[1:] == subject.label.shape


def test_malc_reference_scored_against_itself_counts_every_class_on_the_diagonal(malc_root):
    """The label dtype a real MALC file maps to, through the Dice counts: a narrow dtype once wrapped ref * 28
    around and scored perfect predictions at Dice ~0.16 (phantoms have too few classes to show it)."""
    lm = load_label_map(OmegaConf.load(LABEL_MAPS / "malc.yaml"))
    case = next(c for c in load_layout({"type": "malc", "root": str(malc_root)})["train"] if c.id == "1000")
    subject = read_subject(case)
    mapped = lm.apply(subject.label, str(case.label_path))
    confusion = confusion_counts(mapped, mapped, 28)
    np.testing.assert_array_equal(confusion, np.diag(np.bincount(mapped.ravel().astype(np.int64), minlength=28)))
    counts = class_counts(mapped, mapped, 28)
    np.testing.assert_array_equal(dice_from_counts(counts.tp, counts.fp, counts.fn), np.ones(28))
