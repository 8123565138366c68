"""`scseg-predict RUN_DIR IN OUT` with a single image file as IN: OUT a label file or a folder; one-line errors."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from scseg.cli.predict import main
from scseg.data.layouts import group_file
from scseg.engine.loading import load_run
from scseg.engine.run import run_training


def _image(path, shape=(8, 8, 4)):
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def test_single_file_to_file_and_to_folder(tiny_config, tmp_path, capsys):
    run_dir = run_training(tiny_config("unet")).run_dir
    _, dm, _, _ = load_run(run_dir)
    source = dm.cases("test")[0].image_paths[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    one = inputs / "subj_a.nii.gz"
    shutil.copy(source, one)

    # OUT named like an image: that file is written (parents created), in the input's geometry
    out_file = tmp_path / "labels" / "mine.nii.gz"
    assert main([str(run_dir), str(one), str(out_file)]) == 0
    predicted, image = nib.load(str(out_file)), nib.load(str(one))
    assert predicted.shape == image.shape
    np.testing.assert_allclose(predicted.affine, image.affine)
    assert np.issubdtype(predicted.get_data_dtype(), np.integer)

    # OUT any other name: a folder receiving <case>.nii.gz (an nnU-Net _0000 name gives the bare case)
    shutil.copy(source, inputs / "subj_b_0000.nii.gz")
    assert main([str(run_dir), str(inputs / "subj_b_0000.nii.gz"), str(tmp_path / "folder")]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["subj_b.nii.gz"]
    # the same image gives the same labels whether given alone or in a folder
    assert main([str(run_dir), str(inputs), str(tmp_path / "all")]) == 0
    alone = np.asarray(nib.load(str(out_file)).dataobj)
    np.testing.assert_array_equal(alone, np.asarray(nib.load(str(tmp_path / "all" / "subj_a.nii.gz")).dataobj))
    capsys.readouterr()

    # .mgz output
    assert main([str(run_dir), str(one), str(tmp_path / "mine.mgz")]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "mine.mgz")).dataobj), alone)


@pytest.mark.parametrize(
    "case",
    ["missing", "not_an_image", "folder_to_file"],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, case):
    # every one of these is caught before the run is read: no run folder is needed
    run_dir = tmp_path / "run"
    if case == "missing":
        args, named = [str(tmp_path / "nosuch.nii.gz"), str(tmp_path / "out")], "nosuch.nii.gz"
    elif case == "not_an_image":
        (tmp_path / "notes.txt").write_text("x")
        args, named = [str(tmp_path / "notes.txt"), str(tmp_path / "out")], "notes.txt"
    else:
        (tmp_path / "in").mkdir()
        args, named = [str(tmp_path / "in"), str(tmp_path / "out.nii.gz")], "out.nii.gz"
    assert main([str(run_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and named in err


def test_multi_modality_single_file(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    first = _image(folder / "brain_0000.nii.gz")
    _image(folder / "brain_0001.nii")  # siblings may have another image suffix
    _image(folder / "brain_0002.nii.gz")
    assert group_file(first, 3) == {"brain": [first, folder / "brain_0001.nii", folder / "brain_0002.nii.gz"]}
    assert group_file(first, 1) == {"brain": [first]}

    with pytest.raises(ValueError, match=r"brain_0000\.nii\.gz.*4 modalities.*brain_0003"):
        group_file(first, 4)
    with pytest.raises(ValueError, match=r"brain_0001\.nii.*3 modalities.*_0000 file"):
        group_file(folder / "brain_0001.nii", 3)
    plain = _image(folder / "t1.nii.gz")
    with pytest.raises(ValueError, match=r"t1\.nii\.gz.*2 modalities"):
        group_file(plain, 2)

    # through the command line: one line naming the file and the modalities, exit code 2
    import scseg.cli.predict

    monkeypatch.setattr(scseg.cli.predict, "load_run", lambda *a, **k: (None, SimpleNamespace(modalities=2), None, {}))
    assert main([str(tmp_path / "run"), str(plain), str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: input ") and "t1.nii.gz" in err and "2 modalities" in err and "\n" not in err
