"""Section startup: MALC time to the first step (cold vs warm cache) and peak memory, in child processes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, PeakSampler, Section, Table, malc_overrides, median, status_kib
from bench.pipeline import malc_root
from bench.training import compose


def startup_child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process: time to the first optimizer step, peak anonymous memory."""
    from scseg.engine.allocator import tune_allocator

    tune_allocator()
    import torch

    torch.set_num_threads(args.threads)
    sampler = PeakSampler().__enter__()
    started = time.perf_counter()
    import scseg.data.datamodule  # noqa: F401 - imported before the clock starts: imports are the same cold or warm
    from scseg.engine.run import build_datamodule, build_model
    from scseg.engine.spec import RunSpec
    from scseg.engine.trainer import Trainer, configure_determinism, seed_everything

    overrides = [
        *malc_overrides(args.malc_override),
        f"data.cache_dir={args.child_cache}",
        f"trainer.iters_per_epoch={args.child_steps}",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    if args.child_split:
        overrides += [f"data.layout.split_file={args.child_split}", "data.val_subjects=0"]
    cfg = compose(overrides)
    configure_determinism(False, args.threads)
    seed_everything(0)
    imported = time.perf_counter()
    dm = build_datamodule(RunSpec.from_config(cfg))
    dm.prepare()
    prepared = time.perf_counter()
    model = build_model(RunSpec.from_config(cfg), dm.num_classes, dm.in_channels)
    trainer = Trainer(RunSpec.from_config(cfg), model, dm, None)
    built = time.perf_counter()
    trainer.train_epoch(0)
    done = time.perf_counter()
    sampler.__exit__()
    train = dm.subjects("train")
    data_bytes = sum(s.image.nbytes + (s.label.nbytes if s.label is not None else 0) for s in train)
    steps = max(trainer.steps_per_epoch, 1)
    print(
        json.dumps(
            {
                "config_s": imported - started,
                "prepare_s": prepared - imported,
                "build_s": built - prepared,
                "steps_s": done - built,
                "first_step_s": prepared - imported + built - prepared + (done - built) / steps,
                "train_subjects": len(train),
                "subjects_prepared": sum(len(dm.cases(s)) for s in ("train", "val", "test")),
                "train_data_mib": data_bytes / 2**20,
                "peak_rss_anon_mib": sampler.peak_kib / 1024,
                "vm_hwm_mib": (status_kib("VmHWM") or 0) / 1024,
                "steps": steps,
            }
        ),
        flush=True,
    )


def run_child(args: argparse.Namespace, cache: str, steps: int, split: str | None = None) -> dict[str, Any]:
    command = [
        sys.executable,
        str(REPO / "scripts" / "benchmark.py"),
        "--child-startup",
        f"--threads={args.threads}",
        f"--child-cache={cache}",
        f"--child-steps={steps}",
        *(["--child-split", split] if split else []),
        *(f"--malc-override={o}" for o in args.malc_override),
    ]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"start-up child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_startup(args: argparse.Namespace) -> Section:
    section = Section("startup", "Start-up on MALC: cold vs warm cache, and memory vs training subjects")
    root = malc_root()
    if root is None:
        section.skipped = "MALC not found (../shared/data/malc2012 or $SCSEG_MALC_ROOT)"
        return section
    split = json.loads((root / "split.json").read_text())
    counts = (1, 2) if args.quick else (5, 10, 15)
    memory_steps = 2 if args.quick else 10
    rounds = 1 if args.quick else 2
    section.sizes = (
        f"overrides {' '.join(malc_overrides(args.malc_override))}; "
        + ("quick: 2 training subjects only; " if args.quick else "the paper split (12 train + 3 val + 15 test); ")
        + f"memory: {memory_steps} steps on the first n training subjects (no validation or test subjects)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        quick_split = None
        if args.quick:
            quick_split = str(Path(tmp) / "split_quick.json")
            Path(quick_split).write_text(json.dumps({"train": split["train"][:2], "test": []}))
        times: dict[str, list[dict]] = {"cold": [], "warm": []}
        for round_ in range(rounds):
            cache = str(Path(tmp) / f"cache{round_}")
            times["cold"].append(run_child(args, cache, 1, quick_split))
            times["warm"].append(run_child(args, cache, 1, quick_split))
        cold = median(r["first_step_s"] for r in times["cold"])
        warm = median(r["first_step_s"] for r in times["warm"])
        start_table = Table(
            "Time to the first training step (after imports; prepare = read + preprocess or load from the cache)",
            [
                ("state", "cache", "s"),
                ("subjects", "subjects prepared", "d"),
                ("prepare_s", "prepare s", ".2f"),
                ("build_s", "model + Trainer s", ".2f"),
                ("step_s", "first step s", ".2f"),
                ("first_step_s", "to first step s", ".2f"),
            ],
        )
        for state in ("cold", "warm"):
            runs = times[state]
            start_table.rows.append(
                {
                    "state": state,
                    "subjects": runs[0]["subjects_prepared"],
                    "prepare_s": median(r["prepare_s"] for r in runs),
                    "build_s": median(r["build_s"] for r in runs),
                    "step_s": median(r["steps_s"] for r in runs),
                    "first_step_s": median(r["first_step_s"] for r in runs),
                }
            )
        section.target("cold / warm time to first step", cold / warm, 5.0, True)
        prepare_ratio = median(r["prepare_s"] for r in times["cold"]) / median(r["prepare_s"] for r in times["warm"])
        section.notes.append(
            f"the cache alone: preparing the subjects is {prepare_ratio:.0f}x faster warm than cold; the first step "
            "itself (first batch, one-off kernel set-up, first-touch page faults) is the same work either way."
        )
        memory_table = Table(
            "Peak anonymous resident memory (RssAnon, sampled every 5 ms) vs training subjects",
            [
                ("subjects", "train subjects", "d"),
                ("data", "their cached data MiB", ".0f"),
                ("rss_anon", "peak RssAnon MiB", ".0f"),
                ("hwm", "peak RSS (VmHWM) MiB", ".0f"),
            ],
        )
        memory = []
        warm_cache = str(Path(tmp) / "cache0")
        for n in counts:
            split_file = Path(tmp) / f"split_{n}.json"
            split_file.write_text(json.dumps({"train": split["train"][:n], "test": []}))
            result = run_child(args, warm_cache, memory_steps, str(split_file))
            memory.append(result)
            memory_table.rows.append(
                {
                    "subjects": n,
                    "data": result["train_data_mib"],
                    "rss_anon": result["peak_rss_anon_mib"],
                    "hwm": result["vm_hwm_mib"],
                }
            )
    growth = memory[-1]["peak_rss_anon_mib"] - memory[0]["peak_rss_anon_mib"]
    data_growth = memory[-1]["train_data_mib"] - memory[0]["train_data_mib"]
    section.target(
        f"peak RssAnon growth / cached data growth, {counts[0]} -> {counts[-1]} subjects",
        growth / data_growth if data_growth else 0.0,
        1.0,
        False,
    )
    section.tables += [start_table, memory_table]
    section.raw = {"startup": times, "memory": memory}
    section.notes.append(
        "cold: an empty cache folder (NIfTI files in the OS page cache after the first round, so cold measures "
        "decompression and preprocessing, not the disk); warm: the same folder again, in a new process."
    )
    return section


# ---------------------------------------------------------------------------------------------- evaluation
