"""``scseg-predict RUN_DIR [RUN_DIR ...] IN OUT``: segment an image, or every image of a folder, with a trained run
or an ensemble of runs (their class probabilities averaged, ``--weights`` one per run; runs sliced along different axes
are fused view by view; see ``scseg.engine.inference.combine``).

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
import sys
from pathlib import Path

import torch

from scseg.data.errors import DataError
from scseg.data.io import write_label
from scseg.data.layouts import group_file, group_images, is_image_name
from scseg.engine.allocator import tune_allocator
from scseg.engine.inference import Predictor, combine
from scseg.engine.loading import load_run


def output_for(output: Path, case: str, single_file: bool) -> Path:
    """Where the label of `case` goes: OUT itself for one input file and an image-named OUT, else OUT/<case>.nii.gz."""
    if single_file and is_image_name(output) and not output.is_dir():
        return output
    return output / f"{case}.nii.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Segment an image, or a folder of images, with a trained run.")
    parser.add_argument("run_dir", type=Path, nargs="+", help="one run folder, or several: their ensemble")
    parser.add_argument("input", type=Path, help="an image file (.nii, .nii.gz, .mgz) or a folder of them")
    parser.add_argument(
        "output",
        type=Path,
        help="for a single input file: a label file (.nii, .nii.gz, .mgz); else a folder for <case>.nii.gz",
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", default=None, help="one weight per run for an ensemble or fusion"
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
        loaded = [(run_dir, *load_run(run_dir, args.checkpoint)[:3]) for run_dir in args.run_dir]
        modalities = loaded[0][2].modalities
        cases = group_file(args.input, modalities) if single_file else group_images(args.input, modalities)
        if not cases:
            raise FileNotFoundError(f"no .nii, .nii.gz or .mgz images in {args.input}")
        device = torch.device(args.device)
        members = []
        for run_dir, spec, dm, model in loaded:
            model.to(device)
            predictor = Predictor(
                model, dm, spec.trainer.eval_batch_size, device, resample=spec.trainer.eval_resample, tta=spec.eval.tta
            )
            members.append((str(run_dir), predictor))
        predictor = combine(members, args.weights)
        dm = predictor.datamodule
        for case, paths in cases.items():
            subject = dm.prepare_images(paths, case_id=case)
            labels = predictor.predict(subject, grid="canonical")
            out = output_for(args.output, case, single_file)
            write_label(labels, subject.meta.to_geometry(), out)
            print(f"{paths[0].name} -> {out}")
    except (OSError, ValueError, RuntimeError, DataError) as exc:
        message = str(exc).strip().splitlines()
        print(f"error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
