"""`python -m scseg.data inspect` warns before training: strip-shaped slices, mixed slice planes, pad_size advice."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from scseg.cli.inspect import SliceView, dataset_warnings, main
from scseg.config import compose_data_config
from scseg.data.datamodule import DataModule
from scseg.data.preprocess import PreprocessSettings
from scseg.data.types import SPLITS
from tests.data.oblique import write_oblique_dataset

PHANTOM = ["-o", "layout.n_subjects=4", "-o", "layout.n_test=1", "-o", "layout.size=[24,24,24]", "-o", "val_subjects=1"]


@pytest.fixture(scope="module")
def oblique_root(tmp_path_factory):
    return write_oblique_dataset(tmp_path_factory.mktemp("oblique") / "Dataset001_Oblique")


def _subjects(root, *overrides: str) -> list:
    dm = DataModule(compose_data_config("nnunet", [f"layout.root={root}", *overrides]))
    return [s for split in SPLITS for s in dm.subjects(split)]


def _warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("warning:")]


def _thick_canonical_axis(path: str) -> int:
    img = nib.load(path)
    return int(nib.io_orientation(img.affine)[int(np.argmax(img.header.get_zooms()[:3])), 0])


def _pad_advice(subjects: list) -> str:
    planes = [s.meta.in_plane_shape for s in subjects]
    return f"data.preprocess.pad_size=[{max(p[0] for p in planes)},{max(p[1] for p in planes)}]"


def test_oblique_sliced_axially_warns_about_strips_and_padding(oblique_root, capsys):
    assert main(["inspect", str(oblique_root), "-o", "slices.axis=axial"]) == 0
    out = capsys.readouterr().out
    warnings = _warnings(out)
    subjects = _subjects(oblique_root, "slices.axis=axial")
    across = sorted(s.id for s in subjects if _thick_canonical_axis(s.meta.image_paths[0]) != 2)
    assert across  # the dataset has subjects whose thick axis is not canonical Z
    strip = [w for w in warnings if "strips" in w]
    assert len(strip) == 1 and f"{len(across)} subject(s)" in strip[0]
    assert "data.slices.axis=acquisition" in strip[0]
    assert sorted(re.findall(r"(case_\d+) \(axial", strip[0])) == across
    assert not any("different anatomical planes" in w for w in warnings)  # one plane: axial for every subject
    pad = [w for w in warnings if "pad_size" in w]
    assert len(pad) == 1 and pad[0].endswith(_pad_advice(subjects) + ".")
    # per subject: file orientation codes and the plane it is sliced in
    for s in subjects:
        codes = "".join(nib.aff2axcodes(nib.load(s.meta.image_paths[0]).affine))
        assert re.search(rf"{s.id} +orientation {codes} ", out)
    assert "sliced axial (acquired)" in out and "sliced axial (configured; acquired plane is" in out


def test_oblique_sliced_by_acquisition_warns_about_mixed_planes(oblique_root, capsys):
    assert main(["inspect", str(oblique_root)]) == 0  # nnunet's default: data.slices.axis=acquisition
    out = capsys.readouterr().out
    warnings = _warnings(out)
    subjects = _subjects(oblique_root)
    names = ("sagittal", "coronal", "axial")
    counts = {names[a]: sum(s.meta.slice_axis == a for s in subjects) for a in range(3)}
    assert sum(n > 0 for n in counts.values()) >= 2
    plane = [w for w in warnings if "different anatomical planes" in w]
    assert len(plane) == 1 and "oblique" in plane[0]
    for name, n in counts.items():
        assert (f"{name} {n}" in plane[0]) == (n > 0)
    assert not any("strips" in w for w in warnings)
    pad = [w for w in warnings if "pad_size" in w]
    assert len(pad) == 1 and pad[0].endswith(_pad_advice(subjects) + ".")
    assert "sliced coronal (acquired)" in out and "sliced sagittal (acquired)" in out


def test_phantom_has_no_warnings(capsys):
    assert main(["inspect", "phantom", *PHANTOM]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out.lower()
    assert "orientation RAS" in out and "sliced axial (configured, isotropic)" in out


def _view(split: str, h: int, w: int, spacing=(1.0, 1.0), plane: str = "axial") -> SliceView:
    return SliceView(split, f"{split}{h}x{w}", plane, "acquired", (h, w), spacing, 10)


def test_pad_advice_thresholds():
    settings = PreprocessSettings(axis="acquisition")
    # 25 % larger is still fine; more is not
    assert dataset_warnings([_view("train", 40, 40), _view("train", 50, 40)], settings, (50, 40)) == []
    found = dataset_warnings([_view("train", 40, 40), _view("train", 51, 40)], settings, (51, 40))
    assert len(found) == 1 and found[0].endswith("data.preprocess.pad_size=[51,40].")
    # a test subject beyond the training canvas, even by one pixel: advise the max over all subjects
    found = dataset_warnings([_view("train", 40, 40), _view("test", 40, 41)], settings, (40, 40))
    assert len(found) == 1 and "test40x41" in found[0] and found[0].endswith("pad_size=[40,41].")
    # strips with the acquisition rule already on: the fix is resampling, not the axis
    found = dataset_warnings([_view("train", 40, 40, (1.0, 3.5))], settings, (40, 40))
    assert len(found) == 1 and "target_spacing" in found[0] and "axis=acquisition" not in found[0]
