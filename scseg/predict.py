"""``scseg-predict RUN_DIR INPUT_FOLDER OUTPUT_FOLDER``: segment every image of a folder with a trained run.

Each ``.nii``, ``.nii.gz`` or ``.mgz`` image in INPUT_FOLDER (for multi-modality runs, nnU-Net style
``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... are grouped) gives ``<case>.nii.gz`` in OUTPUT_FOLDER: a label
volume in that input's own geometry (same shape, affine and orientation), with the run's class indices.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz")


def _case_of(path: Path) -> tuple[str, int]:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    match = re.fullmatch(r"(.+)_(\d{4})", name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def group_images(folder: Path, modalities: int) -> dict[str, list[Path]]:
    """{case: [channel 0 path, channel 1 path, ...]}; single-modality runs take every image as its own case."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
    if modalities == 1:
        return {_case_of(p)[0] if re.search(r"_0000\.", p.name) else p.name.split(".")[0]: [p] for p in files}
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    for p in files:
        case, channel = _case_of(p)
        grouped[case][channel] = p
    cases = {}
    for case, channels in grouped.items():
        if sorted(channels) != list(range(modalities)):
            raise ValueError(
                f"case {case!r} in {folder}: expected channels _0000.._{modalities - 1:04d}, found {sorted(channels)}"
            )
        cases[case] = [channels[i] for i in range(modalities)]
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Segment a folder of images with a trained run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("input_folder", type=Path)
    parser.add_argument("output_folder", type=Path)
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from scseg.data.errors import DataError
    from scseg.data.io import write_label
    from scseg.evaluate import load_run
    from scseg.evaluation import predict_volume

    try:
        cfg, dm, model, _ = load_run(args.run_dir, args.checkpoint)
        if not args.input_folder.is_dir():
            raise FileNotFoundError(f"input folder {args.input_folder} does not exist")
        cases = group_images(args.input_folder, dm.modalities)
        if not cases:
            raise FileNotFoundError(f"no .nii, .nii.gz or .mgz images in {args.input_folder}")
        device = torch.device(args.device)
        model.to(device)
        args.output_folder.mkdir(parents=True, exist_ok=True)
        for case, paths in cases.items():
            subject = dm.prepare_images(paths, case_id=case)
            volume = predict_volume(model, dm, subject, int(cfg.trainer.eval_batch_size), device)
            out = args.output_folder / f"{case}.nii.gz"
            write_label(dm.to_canonical(subject, volume), dm.geometry(subject), out)
            print(f"{paths[0].name} -> {out}")
    except (OSError, ValueError, RuntimeError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
