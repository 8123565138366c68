"""`make gpu-check`: what only a GPU can show, in one script (<= 8 minutes on one H100/H200), no ../shared needed.

1. each architecture trains 300 steps on the phantom with trainer=gpu (CUDA, bf16 autocast, channels-last) and
   torch.compile, and must learn (test foreground Dice >= 0.5);
2. DDP at world size 1 with NCCL (torchrun) trains and writes its run folder;
3. the benchmark's GPU section (slices/s per architecture at 256 x 256, channels-last / bf16 / compile, the paper
   U-Net's scSE step time against none) is written to docs/benchmarks_gpu.md with the machine named.

On a machine without CUDA it prints `no CUDA device` and exits with status 2 at once (tested).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("unet", "sdnet", "fcdensenet")
STEPS = 300
FLOOR = 0.5


def _train(runs: Path, arch: str, *extra: str, launcher: list[str] | None = None) -> dict:
    command = [
        *(launcher or [sys.executable, "-m", "scseg.train"]),
        "experiment=demo",
        f"model={arch}",
        "se=scse",
        "trainer.max_epochs=1",
        f"trainer.iters_per_epoch={STEPS}",
        f"paths.runs_dir={runs}",
        "experiment_name=gpu_check",
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu-check: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summaries = sorted(runs.glob(f"gpu_check/{arch}-*/summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(summaries[-1].read_text())
    return {"arch": arch, "dice": summary["fg_mean"], "seconds": time.perf_counter() - started}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: gpu-check needs one (see the device tool or a CUDA machine)")
        return 2
    device = torch.cuda.get_device_name(0)
    print(f"gpu-check on {device}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        for arch in ARCHS:
            result = _train(runs, arch, "trainer=gpu", "trainer.compile=true", "trainer.channels_last=true")
            results.append(result)
            print(f"{arch}: test Dice {result['dice']:.3f} in {result['seconds']:.0f} s", flush=True)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "scseg.train"]
        ddp = _train(runs / "ddp", "unet", "trainer=ddp", "trainer.backend=nccl", launcher=torchrun)
        print(f"DDP (NCCL, world size 1): test Dice {ddp['dice']:.3f} in {ddp['seconds']:.0f} s", flush=True)
    failed = [r["arch"] for r in results if not r["dice"] >= FLOOR] + (["ddp"] if not ddp["dice"] >= FLOOR else [])
    page = REPO / "docs" / "benchmarks_gpu.md"
    bench = subprocess.run(
        [
            sys.executable,
            "scripts/benchmark.py",
            "--sections",
            "gpu",
            "--out",
            "runs/benchmark_gpu.json",
            "--markdown",
            str(page),
            "--command",
            "make gpu-check",
        ],
        cwd=REPO,
        env={**os.environ},
    )
    if failed:
        print(f"gpu-check: below the Dice floor {FLOOR}: {', '.join(failed)}")
    return 1 if failed or bench.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
