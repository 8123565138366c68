"""`python -m scseg.data inspect <dataset config name | folder>`: look at a dataset before training on it.

Why this module exists: a researcher pointing the framework at new data should see, in one command,
which cases were found in which split, their shapes and spacings, the label histogram after mapping,
the class weights the loss will use and where the cache lives; and bad input should produce one clear
line (the DataError message), not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scseg.data.errors import DataError

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
    from scseg.data.config import available_data_configs

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


def inspect_dataset(name: str, overrides: Sequence[str] = (), seed: int = 0, out=None) -> None:
    """Prepare (cache) every subject of the dataset and print what was found."""
    from scseg.data.config import compose_data_config
    from scseg.data.datamodule import SPLITS, DataModule

    out = out or sys.stdout
    cfg = compose_data_config(name, list(overrides))
    dm = DataModule(cfg, seed=seed)
    dm.cases("train")  # find the files (and fail on a bad layout) before printing anything
    print(f"dataset: {dm.name} (config {name!r})", file=out)
    print(f"cache:   {dm.cache_dir}", file=out)
    print(f"slices:  axis={dm.axis} context={dm.context} in_channels={dm.in_channels}", file=out)
    k = dm.num_classes
    hist = np.zeros(k, dtype=np.int64)
    for split in SPLITS:
        cases = dm.cases(split)
        print(f"\n[{split}] {len(cases)} case(s)", file=out)
        for case in cases:
            s = dm.subject(case)
            m = s.meta
            print(
                f"  {case.id:<20} shape {_fmt(m.canonical_shape, 0)}  spacing {_fmt(m.canonical_spacing)} mm"
                f"  -> preprocessed {_fmt(m.shape, 0)} x {m.modalities} modality(ies)"
                f"{'' if m.has_label else '  (no label)'}",
                file=out,
            )
            if m.class_voxels is not None:
                hist += np.asarray(m.class_voxels, dtype=np.int64)
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
