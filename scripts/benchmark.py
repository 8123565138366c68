"""The benchmark suite: `python scripts/benchmark.py [--quick] [--sections ...] [--markdown PAGE]`.

Why this script exists: speed claims (the allocator gain, the SE overhead, the trainer's own cost, the input
pipeline, start-up, evaluation) are only worth what their measurement is worth. Every figure here is a
throughput or a ratio measured in one process (start-up: in child processes, one per measurement) with the
variants interleaved round by round; the median over rounds is reported, and ratios are the median of the
per-round ratios, so a slow drift of the machine cancels. The markdown table goes to stdout (and, with
``--markdown``, the whole ``docs/benchmarks.md`` page is written from it); the JSON holds every raw time.

Sections (``--sections``, comma-separated; default: all):

- ``se_blocks``: forward + backward time and bytes kept for backward of scseg's cSE, sSE and scSE (every
  aggregation) against a reference written as common libraries do (``x * c + x * s`` as separate products).
- ``training``: slices/s of every architecture x SE variant at the CPU presets (``width=small`` at 256 x 256,
  ``width=cpu`` at 96 x 96) and of the paper U-Net at 96 x 96, each variant's step time against ``none``; and the
  real ``Trainer``'s slices/s (what ``scseg-train`` runs per step) against a bare PyTorch loop over the very same
  DataLoader and model.
- ``pipeline``: slices/s the training DataLoader delivers (augmentation included) next to the U-Net step rate.
- ``startup``: MALC time to the first step, cold (NIfTI read + preprocessing) vs warm (cache); peak anonymous
  resident memory against the number of training subjects. Skipped when MALC is absent.
- ``evaluation``: per-case per-class Dice of 15 volumes x 28 classes: scseg.metrics vs per-class numpy loops vs
  MONAI's DiceMetric (when installed; ``pip install -e '.[bench]'``); the numbers are checked to agree. Then the
  restore of probabilities, and the boundary metrics (HD95, NSD) against the network's prediction time.
- ``evaluation_runs`` (``--eval-run RUN_DIR``, repeatable; skipped without): real data. Each run predicts its first
  test subjects with every ``eval.tta`` mode, and the boundary metrics are timed against the prediction.
- ``compile``: torch.compile on the CPU against eager ATen and the fused SE kernels (one scSE block; a U-Net
  training step at the MALC preset), compile time apart.
- ``precision``: bf16 autocast against fp32 for a U-Net step on this CPU (the measurement behind trainer.amp=auto).
- ``gpu`` (CUDA only): slices/s per architecture at 256 x 256 with channels-last, bf16 autocast, torch.compile.
- ``gpu_profile`` (CUDA only): the paper U-Net's scSE against none under the profiler (the operators scSE adds) and
  the floor a perfectly fused scSE could reach at the device's copy bandwidth.

Timings are only as good as the machine is quiet: run it on an idle machine (``make bench``); the load average
before and after each section is recorded next to its numbers. ``--quick`` shrinks everything for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench package beside this script

from bench.common import SECTIONS, Section, load_average, machine_info
from bench.compile import section_compile
from bench.evaluation import section_evaluation, section_evaluation_runs
from bench.gpu import section_gpu
from bench.gpu_profile import section_gpu_profile
from bench.page import meta_line, output_path, render_page, render_results, render_section, render_targets
from bench.pipeline import section_pipeline
from bench.precision import section_precision
from bench.se_blocks import section_se_blocks
from bench.startup import section_startup, startup_child
from bench.training import section_training

RUNNERS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "se_blocks": section_se_blocks,
    "training": section_training,
    "pipeline": section_pipeline,
    "startup": section_startup,
    "evaluation": section_evaluation,
    "evaluation_runs": section_evaluation_runs,
    "gpu": section_gpu,
    "gpu_profile": section_gpu_profile,
    "compile": section_compile,
    "precision": section_precision,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated from {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 rounds: a smoke test (< 60 s)")
    parser.add_argument("--out", default="benchmark.json", help="JSON file, or a folder for benchmark.json")
    parser.add_argument("--markdown", default=None, help="also write the whole benchmarks page here")
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=default_threads, help="torch intra-op threads (pinned)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--train-size", type=int, default=256, help="slice side of the CPU-preset step table")
    parser.add_argument("--command", default=None, help="the command line shown on the page (default: this one)")
    parser.add_argument(
        "--malc-override", action="append", default=[], help="extra override for the MALC config (repeatable)"
    )
    parser.add_argument(
        "--eval-run",
        action="append",
        default=[],
        help="evaluation_runs: a finished run folder whose test subjects are predicted and scored (repeatable)",
    )
    parser.add_argument("--eval-subjects", type=int, default=3, help="test subjects per --eval-run")
    parser.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # "cpu": check the code path
    parser.add_argument("--gpu-size", type=int, default=256, help="gpu: slice side")
    parser.add_argument("--gpu-batch", type=int, default=32, help="gpu: slices per training step")
    parser.add_argument("--gpu-steps", type=int, default=10, help="gpu: training steps per timed round")
    parser.add_argument("--gpu-archs", default="unet,sdnet,fcdensenet", help="gpu: comma-separated architectures")
    parser.add_argument("--child-startup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-split", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_startup:
        startup_child(args)
        return
    from scseg.engine.allocator import tune_allocator

    allocator = tune_allocator()  # first, as every entry point does
    import torch

    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    meta = machine_info(args.threads, allocator)
    command = args.command or " ".join(
        ["python", "scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print(f"# scseg benchmarks\n\nMachine: {meta_line(meta)}\n", flush=True)
    sections = []
    for name in names:
        before, started = load_average(), time.perf_counter()
        section = RUNNERS[name](args)
        section.seconds, section.load = time.perf_counter() - started, (before, load_average())
        sections.append(section)
        print(render_section(meta, section), flush=True)
    print(render_targets(sections, args.quick), flush=True)
    results = render_results(meta, sections, command, args.quick)
    report = {
        "meta": meta,
        "command": command,
        "quick": args.quick,
        "repeats": args.repeats,
        "sections": {s.name: s.as_json() for s in sections},
        "targets": [t for s in sections for t in s.targets],
    }
    path = output_path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    print(f"JSON: {path}", flush=True)
    if args.markdown:
        Path(args.markdown).write_text(render_page(results))
        print(f"page: {args.markdown}", flush=True)


if __name__ == "__main__":
    main()
