"""``scseg-predict RUN_DIR IN OUT``: segment an image, or every image of a folder, with a trained run.

IN is a folder or one image file. Each ``.nii``, ``.nii.gz`` or ``.mgz`` image in a folder IN (for multi-modality
runs, nnU-Net style ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... are grouped) gives ``<case>.nii.gz`` in the
folder OUT: a label volume in that input's own geometry (same shape, affine and orientation), with the run's class
indices. A single file IN gives OUT itself when OUT ends with ``.nii``, ``.nii.gz`` or ``.mgz``, else
``OUT/<case>.nii.gz``; for a multi-modality run that file must be ``<case>_0000.*`` with its ``_0001``, ...
siblings next to it (they are read with it). Bad input ends in one ``error: ...`` line and exit code 2.

Each slice is padded to the canvas stored in the run's checkpoint (the in-plane size the network was trained on,
restored by ``scseg.engine.loading.load_run``), so a prediction sees the same padding as training did, whatever
the data present on this machine.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

from scseg.data.errors import DataError
from scseg.data.io import IMAGE_SUFFIXES, strip_image_suffix, write_label
from scseg.engine.allocator import tune_allocator
from scseg.engine.inference import predict_canonical
from scseg.engine.loading import eval_resample_of, load_run


def _stem(path: Path) -> str:
    """File name without its image suffix."""
    return strip_image_suffix(path.name)


def _case_of(path: Path) -> tuple[str, int]:
    name = _stem(path)
    match = re.fullmatch(r"(.+)_(\d{4})", name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def is_image_name(path: Path) -> bool:
    """Whether the file name is one of the image types predict reads (.nii, .nii.gz, .mgz)."""
    return path.name.endswith(IMAGE_SUFFIXES)


def _single_case(path: Path) -> str:
    """Case name of a single-modality image: `<case>_0000.nii.gz` and `<case>.nii.gz` both give `<case>`."""
    return _case_of(path)[0] if re.search(r"_0000\.", path.name) else path.name.split(".")[0]


def group_file(path: Path, modalities: int) -> dict[str, list[Path]]:
    """{case: [channel 0 path, ...]} for one image file given as IN.

    A multi-modality run needs every channel, so one file is accepted only as the `<case>_0000` file of an
    nnU-Net style group whose `_0001`, ... siblings lie next to it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    if not is_image_name(path):
        raise ValueError(f"input {path}: not a .nii, .nii.gz or .mgz image (or a folder of them)")
    if modalities == 1:
        return {_single_case(path): [path]}
    expected = f"{modalities} modalities (<case>_0000 .. <case>_{modalities - 1:04d})"
    match = re.fullmatch(r"(.+)_(\d{4})", _stem(path))
    if match is None or int(match.group(2)) != 0:
        raise ValueError(
            f"input {path}: the run expects {expected} per case; give the case's _0000 file (with its siblings "
            f"next to it) or a folder"
        )
    case = match.group(1)
    paths = [path]
    missing = []
    for channel in range(1, modalities):
        stem = f"{case}_{channel:04d}"
        found = [path.parent / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
        found = [f for f in found if f.is_file()]
        if found:
            paths.append(found[0])
        else:
            missing.append(f"{stem}.nii.gz/.nii/.mgz")
    if missing:
        raise ValueError(
            f"input {path}: the run expects {expected} per case, but {', '.join(missing)} not found in {path.parent}"
        )
    return {case: paths}


def output_for(output: Path, case: str, single_file: bool) -> Path:
    """Where the label of `case` goes: OUT itself for one input file and an image-named OUT, else OUT/<case>.nii.gz."""
    if single_file and is_image_name(output) and not output.is_dir():
        return output
    return output / f"{case}.nii.gz"


def group_images(folder: Path, modalities: int) -> dict[str, list[Path]]:
    """{case: [channel 0 path, channel 1 path, ...]}; single-modality runs take every image as its own case."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
    if modalities == 1:
        return {_single_case(p): [p] for p in files}
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
    parser = argparse.ArgumentParser(description="Segment an image, or a folder of images, with a trained run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("input", type=Path, help="an image file (.nii, .nii.gz, .mgz) or a folder of them")
    parser.add_argument(
        "output",
        type=Path,
        help="for a single input file: a label file (.nii, .nii.gz, .mgz); else a folder for <case>.nii.gz",
    )
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    tune_allocator()  # keep large buffers in the process; SCSEG_TUNE_MALLOC=0 turns it off

    try:
        single_file = not args.input.is_dir()
        # Input mistakes are found before the run is loaded (that reads the checkpoint and the run's data config).
        if single_file and not args.input.is_file():
            raise FileNotFoundError(f"input {args.input} does not exist (expected an image file or a folder)")
        if single_file and not is_image_name(args.input):
            raise ValueError(f"input {args.input}: not a .nii, .nii.gz or .mgz image (or a folder of them)")
        if not single_file and is_image_name(args.output) and not args.output.is_dir():
            raise ValueError(
                f"output {args.output}: a folder of images gives a folder of labels; name a folder, not an image file"
            )
        cfg, dm, model, _ = load_run(args.run_dir, args.checkpoint)
        if single_file:
            cases = group_file(args.input, dm.modalities)
        else:
            cases = group_images(args.input, dm.modalities)
        if not cases:
            raise FileNotFoundError(f"no .nii, .nii.gz or .mgz images in {args.input}")
        device = torch.device(args.device)
        model.to(device)
        for case, paths in cases.items():
            subject = dm.prepare_images(paths, case_id=case)
            batch_size = int(cfg.trainer.eval_batch_size)
            labels = predict_canonical(model, dm, subject, batch_size, device, resample=eval_resample_of(cfg))
            out = output_for(args.output, case, single_file)
            write_label(labels, dm.geometry(subject), out)
            print(f"{paths[0].name} -> {out}")
    except (OSError, ValueError, RuntimeError, DataError) as exc:
        message = str(exc).strip().splitlines()
        print(f"error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
