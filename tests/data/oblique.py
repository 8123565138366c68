"""A small anisotropic, oblique dataset in nnU-Net raw format, like a cardiac short-axis study.

Each subject is 1.25 x 1.25 x 8 mm with a rotated (oblique) affine; the thick voxel axis lies on a different
voxel axis from subject to subject, so the orientation codes differ (at least two sets in one dataset) and the
canonical axis that is the acquired slice direction differs too. Labels: an ellipsoid (1) inside a box (2),
defined in world coordinates, so every subject shows the same anatomy.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def _rotation(degrees: float, axis: int) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# (voxel-axis permutation: world axis of each voxel axis, signs, in-plane size, thick-axis slices, rotation)
SUBJECTS = (
    ((0, 1, 2), (1, 1, 1), (40, 36), 9, (20.0, 0)),
    ((1, 2, 0), (-1, 1, 1), (44, 40), 8, (15.0, 2)),
    ((2, 0, 1), (1, -1, -1), (38, 42), 10, (-25.0, 1)),
    ((0, 2, 1), (-1, -1, 1), (42, 38), 9, (10.0, 0)),
    ((1, 0, 2), (1, 1, -1), (36, 44), 8, (30.0, 2)),
)


def write_oblique_dataset(root: Path, n_subjects: int = 5) -> Path:
    """Write `dataset.json`, `imagesTr/` and `labelsTr/` under `root`; returns root."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_subjects):
        perm, signs, (h, w), thick, (degrees, rot_axis) = SUBJECTS[i % len(SUBJECTS)]
        shape = [h, w, thick]  # voxel axes 0, 1 in-plane (1.25 mm), axis 2 thick (8 mm)
        spacing = np.array([1.25, 1.25, 8.0])
        # permute the voxel axes so that the thick axis lands on a different voxel axis per subject
        order = np.argsort(perm)
        vox_shape = [shape[k] for k in order]
        vox_spacing = spacing[order]
        columns = np.zeros((3, 3))
        for v, world in enumerate(perm):
            columns[world, v] = signs[v] * vox_spacing[v]
        linear = _rotation(degrees, rot_axis) @ columns
        centre = (np.array(vox_shape) - 1) / 2.0
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = -linear @ centre
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in vox_shape], indexing="ij"), axis=-1)
        world = grid @ linear.T + affine[:3, 3]
        ellipsoid = ((world / np.array([14.0, 10.0, 24.0])) ** 2).sum(-1) <= 1.0
        box = (np.abs(world) <= np.array([22.0, 18.0, 40.0])).all(-1)
        label = np.where(ellipsoid, 1, np.where(box, 2, 0)).astype(np.int16)
        image = (0.2 + 0.4 * box + 0.3 * ellipsoid + 0.02 * rng.standard_normal(vox_shape)).astype(np.float32)
        image[~box] = 0.0
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "core": 1, "shell": 2},
        "numTraining": n_subjects,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root
