"""`python -m scseg.data inspect <dataset config name | folder>`: look at a dataset before training on it.

Why this module exists: a researcher pointing the framework at new data should see, in one command,
which cases were found in which split, their orientation, shapes and spacings, the plane each one will be
sliced in, the label histogram after mapping, the class weights the loss will use and where the cache lives;
and bad input should produce one clear line (the DataError message), not a traceback.

It also warns (lines starting `warning:`) about what would otherwise only show as a poor Dice after training:
slices that are strips across a thick axis, subjects sliced in different anatomical planes, and in-plane sizes
that call for a fixed `data.preprocess.pad_size` (the value to use is printed).

The command lives here with the other faces; `scseg/data/__main__.py` only forwards to it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import nibabel as nib
import numpy as np

from scseg.config import available_data_configs, compose_data_config
from scseg.data.datamodule import DataModule
from scseg.data.errors import DataError
from scseg.data.preprocess import ACQUISITION, PreprocessMeta, PreprocessSettings, in_plane_axes
from scseg.data.types import SPLITS

# How a folder given on the command line maps onto the folder / nnU-Net dataset configs.
NNUNET_CONFIG = "nnunet"
FOLDER_CONFIG = "folder"
ROOT_KEY = "layout.root"
FOLDER_KEYS = {"images": "layout.images", "labels": "layout.labels", "case_id": "layout.case_id"}


def _quote(value: str) -> str:
    """Quote a value for a Hydra override (paths and patterns contain characters Hydra would parse).

    Inside Hydra's quoted strings backslashes are literal except before a quote, so only quotes (and
    backslashes that end the value) need escaping.
    """
    trailing = len(value) - len(value.rstrip("\\"))
    return "'" + value[: len(value) - trailing].replace("'", "\\'") + "\\" * (2 * trailing) + "'"


def resolve_target(target: str, images: str | None, labels: str | None, case_id: str | None) -> tuple[str, list[str]]:
    """(config name, overrides) for a dataset config name or a data folder."""
    path = Path(target).expanduser()
    if target in available_data_configs() and not path.is_dir():
        if images or labels or case_id:
            raise DataError("--images / --labels / --case-id apply to a folder, not to a named dataset config")
        return target, []
    if not path.is_dir():
        raise DataError(f"{target}: neither a dataset config ({', '.join(available_data_configs())}) nor a folder")
    root = [f"{ROOT_KEY}={_quote(str(path.resolve()))}"]
    if (path / "dataset.json").is_file():
        if images or labels or case_id:
            raise DataError(f"{path}: has a dataset.json (nnU-Net layout); --images/--labels/--case-id do not apply")
        return NNUNET_CONFIG, root
    given = {"images": images, "labels": labels, "case_id": case_id}
    overrides = [f"{FOLDER_KEYS[k]}={_quote(v)}" for k, v in given.items() if v]
    return FOLDER_CONFIG, root + overrides


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    """'1.25x1.25x7.7' / '256x256x31': at most `digits` decimals, trailing zeros of decimals dropped."""
    texts = (f"{v:.{digits}f}" for v in values)
    return "x".join(t.rstrip("0").rstrip(".") if "." in t else t for t in texts)


# Warning thresholds of `inspect` (see `dataset_warnings`).
STRIP_RATIO = 3.0  # an in-plane axis this many times coarser than the other: the slices are strips
PAD_SPREAD = 1.25  # largest in-plane size above this many times the smallest (either axis): advise a pad_size
PLANE_NAMES = ("sagittal", "coronal", "axial")  # array axis of canonical (X, Y, Z) -> plane (preprocess.AXES)
MAX_LISTED = 5  # subjects named in one warning


@dataclass(frozen=True)
class SliceView:
    """How one subject will be sliced: what `inspect` prints per subject and what the warnings look at."""

    split: str
    id: str
    plane: str  # anatomical name of the slice axis: axial | coronal | sagittal
    reason: str  # why that axis: acquired | fallback_axis / configured on isotropic data | configured
    in_plane: tuple[int, int]  # (H, W) of its slices (preprocessed grid)
    in_plane_spacing: tuple[float, float]  # mm, the two in-plane axes (preprocessed grid)
    slices: int

    @property
    def strip_ratio(self) -> float:
        """Coarser over finer in-plane spacing (1 = square pixels)."""
        lo, hi = sorted(self.in_plane_spacing)
        return hi / lo if lo > 0 else float("inf")


def slice_view(split: str, meta: PreprocessMeta, settings: PreprocessSettings) -> SliceView:
    """The slice plane of one preprocessed subject, with the reason it was chosen (for the researcher)."""
    axis = int(meta.slice_axis)
    spacing = [float(v) for v in meta.spacing]
    anisotropic = max(spacing) >= settings.anisotropy_threshold * min(spacing)
    acquired = int(np.argmax(spacing)) if anisotropic else None
    if acquired == axis:
        reason = "acquired"  # the scanner's slice direction: thin slices of square-ish pixels
    elif acquired is None:
        isotropic = f"isotropic within {settings.anisotropy_threshold:g}x"  # explains the fallback
        reason = f"fallback_axis, {isotropic}" if settings.axis == ACQUISITION else "configured, isotropic"
    else:
        reason = f"configured; acquired plane is {PLANE_NAMES[acquired]}"
    first, second = in_plane_axes(axis)
    return SliceView(
        split=split,
        id=meta.id,
        plane=PLANE_NAMES[axis],
        reason=reason,
        in_plane=meta.in_plane_shape,
        in_plane_spacing=(spacing[first], spacing[second]),
        slices=int(meta.shape[axis]),
    )


def _listed(views: Sequence[SliceView], describe: Callable[[SliceView], str]) -> str:
    named = ", ".join(describe(v) for v in views[:MAX_LISTED])
    return named + (f" and {len(views) - MAX_LISTED} more" if len(views) > MAX_LISTED else "")


def dataset_warnings(
    views: Sequence[SliceView], settings: PreprocessSettings, canvas: Sequence[int] | None
) -> list[str]:
    """What would make training go wrong quietly: strip-shaped slices, mixed planes, no common in-plane size.

    `canvas` is the training canvas (None without training subjects). Each warning is one paragraph that ends
    with the setting to change.
    """
    warnings: list[str] = []
    strips = [v for v in views if v.strip_ratio > STRIP_RATIO]
    if strips:
        fix = (
            "set data.slices.axis=acquisition to slice each subject along its own acquired (thin) plane"
            if settings.axis != ACQUISITION
            else "resample the in-plane axes with data.preprocess.target_spacing"
        )
        warnings.append(
            f"{len(strips)} subject(s) would be sliced across an axis more than {STRIP_RATIO:g}x coarser than the "
            "other in-plane axis, so their slices are strips of thick voxels: "
            + _listed(strips, lambda v: f"{v.id} ({v.plane}, pixels {_fmt(v.in_plane_spacing)} mm)")
            + f"; {fix}."
        )
    planes = Counter(v.plane for v in views)
    if len(planes) > 1:
        counts = ", ".join(f"{name} {planes[name]}" for name in ("axial", "coronal", "sagittal") if planes[name])
        warnings.append(
            f"subjects are sliced in different anatomical planes ({counts}). This is expected for oblique "
            "acquisitions with data.slices.axis=acquisition (each subject is sliced along its own acquired plane), "
            "but the network then sees differently oriented anatomy from subject to subject; to give it one plane, "
            "set data.slices.axis to one of axial|coronal|sagittal (with data.preprocess.target_spacing to "
            "resample the thick axis)."
        )
    if views:
        heights = [v.in_plane[0] for v in views]
        widths = [v.in_plane[1] for v in views]
        spread = max(heights) > PAD_SPREAD * min(heights) or max(widths) > PAD_SPREAD * min(widths)
        outside = []
        if canvas is not None:
            outside = [
                v for v in views if v.split != "train" and (v.in_plane[0] > canvas[0] or v.in_plane[1] > canvas[1])
            ]
        if spread or outside:
            reasons = []
            if spread:
                reasons.append(
                    f"in-plane sizes vary (height {min(heights)}..{max(heights)}, width {min(widths)}..{max(widths)}), "
                    "so a new subject may well not fit the canvas learnt from the training subjects"
                )
            if outside:
                reasons.append(
                    f"{len(outside)} val/test subject(s) exceed the training canvas {_fmt(canvas, 0)} and would be "
                    "evaluated on a larger one: "
                    + _listed(outside, lambda v: f"{v.id} ({v.split}, {_fmt(v.in_plane, 0)})")
                )
            warnings.append(
                "; ".join(reasons)
                + f". Pin one canvas for every subject: data.preprocess.pad_size=[{max(heights)},{max(widths)}]."
            )
    return warnings


def _file_orientation(meta: PreprocessMeta) -> tuple[str, tuple[int, ...], tuple[float, ...]]:
    """(orientation codes, shape, spacing) of the image file itself, in its own voxel order."""
    geometry = meta.to_geometry()
    codes = "".join(str(c) for c in nib.aff2axcodes(geometry.affine))
    canonical_axis = [int(a) for a, _flip in geometry.ornt_to_canonical]
    spacing = tuple(float(meta.canonical_spacing[a]) for a in canonical_axis)
    return codes, tuple(int(s) for s in geometry.shape), spacing


def inspect_dataset(name: str, overrides: Sequence[str] = (), seed: int = 0, out: TextIO | None = None) -> list[str]:
    """Prepare (cache) every subject of the dataset, print what was found and warn about what would go wrong.

    Returns the warnings (also printed, each prefixed `warning:`).
    """
    out = out or sys.stdout
    cfg = compose_data_config(name, list(overrides))
    dm = DataModule(cfg, seed=seed)
    dm.cases("train")  # find the files (and fail on a bad layout) before printing anything
    settings = dm.settings
    rule = dm.axis
    if rule == ACQUISITION:
        rule += f" (fallback {settings.fallback_axis} below {settings.anisotropy_threshold:g}x anisotropy)"
    print(f"dataset: {dm.name} (config {name!r})", file=out)
    print(f"cache:   {dm.cache_dir}", file=out)
    print(f"slices:  axis={rule} context={dm.context} in_channels={dm.in_channels}", file=out)
    k = dm.num_classes
    hist = np.zeros(k, dtype=np.int64)
    views: list[SliceView] = []
    for split in SPLITS:
        cases = dm.cases(split)
        print(f"\n[{split}] {len(cases)} case(s)", file=out)
        for case in cases:
            s = dm.subject(case)
            m = s.meta
            codes, file_shape, file_spacing = _file_orientation(m)
            view = slice_view(split, m, settings)
            views.append(view)
            print(
                f"  {case.id:<20} orientation {codes}  shape {_fmt(file_shape, 0)}  spacing {_fmt(file_spacing)} mm"
                f"  -> preprocessed {_fmt(m.shape, 0)} x {m.modalities} modality(ies)"
                f"{'' if m.has_label else '  (no label)'}",
                file=out,
            )
            strip = "  <- strips" if view.strip_ratio > STRIP_RATIO else ""
            print(
                f"  {'':<20} sliced {view.plane} ({view.reason}): {view.slices} slices of "
                f"{_fmt(view.in_plane, 0)} at {_fmt(view.in_plane_spacing)} mm{strip}",
                file=out,
            )
            if m.class_voxels is not None:
                hist += np.asarray(m.class_voxels, dtype=np.int64)
    canvas = dm.canvas
    if canvas is not None:
        print(
            f"\ncanvas:  {_fmt(canvas, 0)} (every slice is padded to this in-plane size: the largest of the training "
            "subjects, or data.preprocess.pad_size)",
            file=out,
        )
    total = max(int(hist.sum()), 1)
    weights = None
    if dm.cases("train"):
        try:
            weights = dm.class_weights().numpy()
        except DataError as err:
            print(f"\nclass weights unavailable: {err}", file=out)
    print("\nlabel histogram after mapping (all labelled subjects, preprocessed grid) and class weights:", file=out)
    print(f"  {'idx':>3} {'class':<28} {'voxels':>12} {'%':>7} {'weight':>9}", file=out)
    for i, cname in enumerate(dm.class_names):
        w = "" if weights is None else f"{weights[i]:.4f}"
        print(f"  {i:>3} {cname:<28} {hist[i]:>12} {100 * hist[i] / total:>7.3f} {w:>9}", file=out)
    found = dataset_warnings(views, settings, canvas)
    if found:
        print("", file=out)
    for text in found:
        print(f"warning: {text}", file=out)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scseg.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="list cases, shapes, spacings, label histogram, class weights, cache")
    ins.add_argument("target", help="dataset config name (configs/data/<name>.yaml) or a data folder")
    ins.add_argument("--images", help="folder layout: glob of image files relative to the folder")
    ins.add_argument("--labels", help="folder layout: glob of label files relative to the folder")
    ins.add_argument("--case-id", dest="case_id", help="folder layout: regex whose group 1 is the case id")
    ins.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override relative to the data config, e.g. slices.axis=coronal (repeatable)",
    )
    ins.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        name, overrides = resolve_target(args.target, args.images, args.labels, args.case_id)
        inspect_dataset(name, overrides + list(args.override), seed=args.seed)
    except ValueError as err:  # DataError and bad settings (e.g. data.augment) are ValueErrors
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
