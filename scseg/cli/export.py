"""``scseg-export RUN_DIR OUT.onnx``: a trained run as an ONNX model for onnxruntime (or any ONNX runtime).

Writes ``OUT.onnx`` (input ``image`` float32 ``(N, C, H, W)``, output ``logits`` ``(N, K, H, W)``; N, H and W
dynamic; standard ONNX operators only) and ``OUT.onnx.json``: the input convention read from the run (slice axis,
canvas and padding rule, intensity scaling, z-score, channel order, class names), so inputs can be prepared without
scseg. With ``--check`` (the default) onnxruntime is compared with PyTorch on random inputs of two sizes; a
difference above 1e-4 is an error. The logic is :mod:`scseg.engine.export`.

Exit status 0 when written (and checked), 2 on a bad run folder, a failed export or check, or when the optional
packages are missing (``pip install -e ".[onnx]"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scseg.data.errors import DataError
from scseg.engine.export import CHECK_TOLERANCE, DEFAULT_OPSET, OnnxMissingError, export_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a trained run to ONNX, with its input convention as JSON.")
    parser.add_argument("run_dir", type=Path, help="a finished run folder (holds .hydra/config.yaml, checkpoints/)")
    parser.add_argument("output", type=Path, help="the ONNX file to write, e.g. model.onnx (+ model.onnx.json)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"compare onnxruntime with PyTorch at two input sizes (max |difference| <= {CHECK_TOLERANCE:g})",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        result = export_run(args.run_dir, args.output, args.checkpoint, check=args.check, opset=args.opset)
    except OnnxMissingError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, DataError) as exc:
        message = str(exc).strip().splitlines()
        print(f"error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {result.onnx_path} and {result.sidecar_path}")
    for (batch, h, w), difference in zip(result.checked_sizes, result.differences):
        print(f"check: batch {batch}, {h} x {w}: max |onnxruntime - PyTorch| = {difference:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
