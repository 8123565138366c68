"""scripts/bench_allocator.py --scseg-train: the runs it starts are configs scseg accepts, and the trainer's epoch
lines are read correctly. Budget: a few seconds (config composition only); the end-to-end smoke run is slow
(about 20 s on 2 busy cores: the phantom at 64 x 64, 2 x 2 batches, one repeat of each variant)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scseg.config import compose_train_config
from scseg.config.check import validate_config
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_allocator.py"


bench = load_script("bench_allocator")


def test_epoch_lines_are_parsed_and_the_first_epoch_is_left_out():
    output = "\n".join(
        [
            "allocator: glibc-tuned",
            "epoch 1/3 loss 1.2345 lr 3.00e-03 9.8 slices/s 40.2s",
            "some other line with 5.0 slices/s",
            "epoch 2/3 loss 0.9876 lr 2.25e-03 17.1 slices/s 33.0s",
            "epoch 3/3 loss 0.7312 val_dice 0.4120 lr 7.50e-04 19.5 slices/s 35.4s",
            "done: /tmp/x test foreground Dice 0.4000 +- 0.0000",
        ]
    )
    epochs = bench.parse_epoch_lines(output)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["slices_per_s"] for e in epochs] == [9.8, 17.1, 19.5]
    assert epochs[2]["epoch_time_s"] == 35.4
    assert bench.measured_speed(epochs) == pytest.approx((17.1 + 19.5) / 2)
    assert bench.measured_speed(epochs[:1]) == 9.8  # one epoch: that one
    with pytest.raises(ValueError):
        bench.measured_speed([])


@pytest.mark.parametrize("data", ["phantom", "chaos"])
def test_the_measured_run_is_a_valid_scseg_config(data, tmp_path):
    root = tmp_path / "chaos_t2"  # composing and validating does not read the data
    overrides = bench.train_overrides(
        data, tmp_path / "runs", tmp_path / "cache", iters=7, epochs=3, size=256, batch=8, threads=2, root=root
    )
    cfg = compose_train_config(overrides)
    validate_config(cfg)
    assert cfg.model.arch == "unet" and cfg.model.filters == 16  # width=small
    assert cfg.se.name == "scse"
    assert cfg.data.name == data
    assert list(cfg.data.preprocess.pad_size) == [256, 256]
    assert cfg.data.preprocess.target_spacing is None  # the native in-plane grid
    assert cfg.data.loader.batch_size == 8 and cfg.data.val_subjects == 1
    assert cfg.trainer.max_epochs == 3 and cfg.trainer.iters_per_epoch == 7 and cfg.trainer.val_every == 3
    assert cfg.trainer.num_threads == 2 and cfg.trainer.tune_malloc is True  # the variants differ by env only
    assert cfg.resume == "never" and cfg.test_split == "val" and cfg.logger.enabled is False
    assert cfg.paths.runs_dir == str(tmp_path / "runs") and cfg.data.cache_dir == str(tmp_path / "cache")
    if data == "chaos":
        assert cfg.data.layout.root == str(root)
    else:
        assert list(cfg.data.layout.size) == [256, 256, bench.PHANTOM_DEPTH]
    command = bench.train_command(overrides)
    assert command[:3] == [sys.executable, "-m", "scseg.train"]
    assert cfg.trainer.channels_last is True
    issue_baseline = compose_train_config(overrides + bench.TRAIN_OVERRIDES["glibc-nchw"])
    validate_config(issue_baseline)
    assert issue_baseline.trainer.channels_last is False  # and nothing else differs but the environment
    assert bench.variant_env("glibc-nchw")["SCSEG_TUNE_MALLOC"] == "0"


def test_the_glibc_variant_turns_the_tuning_off_and_the_table_pairs_repeats(monkeypatch):
    monkeypatch.delenv("SCSEG_TUNE_MALLOC", raising=False)
    # an earlier test in the same process may have tuned the allocator, which exports MALLOC_* for children
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "LD_PRELOAD"]:
        monkeypatch.delenv(key)
    assert bench.variant_env("glibc")["SCSEG_TUNE_MALLOC"] == "0"
    assert bench.env_prefix(bench.variant_env("glibc")) == "SCSEG_TUNE_MALLOC=0 "
    assert "SCSEG_TUNE_MALLOC" not in bench.env_prefix(bench.variant_env("tuned"))

    def run(speed: float, allocator: str) -> dict:
        return {
            "slices_per_s": speed,
            "allocator": allocator,
            "user_s": 10.0,
            "sys_s": 2.0,
            "minor_faults": 1e6,
            "wall_s": 9.0,
        }

    table = bench.results_table(
        {
            "tuned": [run(20.0, "glibc-tuned"), run(18.0, "glibc-tuned"), run(30.0, "glibc-tuned")],
            "glibc": [run(10.0, "disabled"), run(6.0, "disabled"), run(20.0, "disabled")],
        }
    )
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "| 20.00 | 2.00 |" in rows["tuned"]  # median speed 20, ratios 2.0, 3.0, 1.5 -> 2.0
    assert "| 10.00 | 1.00 |" in rows["glibc"]


@pytest.mark.slow
def test_smoke_run_on_a_tiny_phantom():
    """About 20 s: both variants train, the table comes out, the temporary runs folder is gone."""
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--scseg-train",
            "--data=phantom",
            "--size=64",
            "--iters=2",
            "--epochs=2",
            "--repeats=1",
            "--threads=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    out = result.stdout
    assert "SCSEG_TUNE_MALLOC=0 " in out and "-m scseg.train experiment=quickstart" in out
    assert "(allocator: glibc-tuned)" in out and "(allocator: disabled)" in out
    assert "trainer.channels_last=false" in out  # the glibc-nchw variant: scseg-train as issue 10 found it
    table = [line for line in out.splitlines() if line.startswith("| tuned") or line.startswith("| glibc")]
    assert len(table) == 3
    tmp = next(line for line in out.splitlines() if "is deleted afterwards" in line).split("; ")[1].split()[0]
    assert not Path(tmp).exists()
