"""`python -m scseg.data inspect`: dataset configs, nnU-Net and plain folders, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from scseg.cli.inspect import main

TINY = ["-o", "layout.n_subjects=4", "-o", "layout.n_test=1", "-o", "layout.size=[24,24,24]", "-o", "val_subjects=1"]
REPO = Path(__file__).resolve().parents[2]


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.zeros((20, 20, 12), np.float32)
    image[3:17, 3:17, 2:10] = rng.uniform(50, 100, (14, 14, 8))
    label = np.zeros((20, 20, 12), np.uint8)
    label[6:12, 6:12, 4:8] = 1
    return image, label


def _nnunet_folder(root: Path, n: int = 3) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        image, label = _volume(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"case{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"case{i}.nii.gz")
    meta = {
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_inspect_phantom_prints_everything(capsys):
    assert main(["inspect", "phantom", *TINY]) == 0
    out = capsys.readouterr().out
    assert f"cache:   {Path(os.environ['SCSEG_CACHE']).resolve()}" in out
    assert "[train] 2 case(s)" in out and "[val] 1 case(s)" in out and "[test] 1 case(s)" in out
    assert "phantom_000" in out and "shape 24x24x24" in out and "spacing 1x1x1 mm" in out
    table = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "10 "))]
    assert table[0][1] == "background" and table[1][1] == "tiny"
    assert float(table[0][-1]) > 0  # weights column present


def test_inspect_nnunet_folder(tmp_path, capsys):
    folder = _nnunet_folder(tmp_path / "Dataset001_Test")
    assert main(["inspect", str(folder), "-o", "layout.test_fraction=0.34"]) == 0
    out = capsys.readouterr().out
    assert "config 'nnunet'" in out and "lesion" in out and "case0" in out
    assert "[test] 1 case(s)" in out


def test_inspect_plain_folder_with_patterns(tmp_path, capsys):
    for i in range(3):
        image, label = _volume(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / f"s{i}-t1.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / f"s{i}-seg.nii.gz")
    rc = main(
        ["inspect", str(tmp_path), "--images", "*-t1.nii.gz", "--labels", "*-seg.nii.gz", "--case-id", r"^(s\d+)-"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "config 'folder'" in out and "s2" in out and "foreground" in out


def test_bad_inputs_exit_nonzero_with_one_line(tmp_path, capsys):
    assert main(["inspect", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: nosuch") and "phantom" in err and "\n" not in err

    assert main(["inspect", str(tmp_path), "--images", "*.nii.gz", "--case-id", "(x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.layout.case_id" in err and "\n" not in err

    folder = _nnunet_folder(tmp_path / "ds")
    (folder / "labelsTr" / "case1.nii.gz").write_bytes(b"not a nifti")
    assert main(["inspect", str(folder), "-o", "layout.test_fraction=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "case1.nii.gz" in err and "\n" not in err


def test_module_entry_point_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "scseg.data", "inspect", "nosuch"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # hang guard only: importing torch on a loaded machine can take a minute
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error: nosuch")
