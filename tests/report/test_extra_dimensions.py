"""scseg-compare with extra swept dimensions (cSE reduction, SE positions): one table row each, never merged."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from scseg.cli.compare import main
from scseg.report.runs import load_sweep, read_extras

SUBJECTS = [f"sub{i}" for i in range(6)]


def _write_run(
    root: Path, se: str, seed: int, reduction: int, positions: list[str], dice: float, via: str, tag: str
) -> Path:
    """A finished run folder; its reduction / positions are stated in summary.json (via="summary") or only in
    .hydra/config.yaml (via="config", as runs written before summary.json had them)."""
    middle = "scse-add" if se == "scse" else se
    folder = root / f"unet-{middle}-seed{seed}-{tag}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "done", "config_hash": tag}))
    fg = {s: dice + 0.01 * i for i, s in enumerate(SUBJECTS)}
    summary = {"arch": "unet", "se": se, "aggregation": "add" if se == "scse" else None, "seed": seed}
    summary |= {"fg_dice_per_subject": fg, "split": "test", "n_params": 1000}
    if via == "summary":
        summary |= {"se_reduction": reduction, "se_positions": positions}
    (folder / "summary.json").write_text(json.dumps(summary))
    config = {"model": {"arch": "unet"}, "se": {"name": se, "reduction": reduction, "in_bottleneck": False}}
    if positions != ["encoder", "decoder"]:  # older configs have no se.positions at all
        config["se"]["positions"] = positions
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with (folder / "per_case.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "class_id", "class_name", "dice"])
        writer.writerows([s, 1, "alpha", fg[s]] for s in SUBJECTS)
    return folder


@pytest.fixture
def ablation(tmp_path: Path) -> Path:
    root = tmp_path / "ablation_se"
    root.mkdir()
    for seed in (0, 1):
        _write_run(root, "none", seed, 2, ["encoder", "decoder"], 0.50, "config", f"n{seed}")
        _write_run(root, "scse", seed, 2, ["encoder", "decoder"], 0.60, "summary", f"a{seed}")
        _write_run(root, "scse", seed, 8, ["encoder", "decoder"], 0.70, "config", f"b{seed}")
        _write_run(root, "scse", seed, 2, ["encoder"], 0.80, "summary", f"c{seed}")
        _write_run(root, "scse", seed, 8, ["encoder", "bottleneck", "decoder"], 0.90, "config", f"d{seed}")
    return root


def test_extras_read_from_summary_else_config(ablation):
    (old,) = ablation.glob("unet-scse-add-seed0-b0")
    assert read_extras(old, json.loads((old / "summary.json").read_text()), "scse") == (
        ("se_reduction", "8"),
        ("se_positions", "encoder+decoder"),
        ("se_gate_scale", "1"),  # a run from before se.gate_scale existed: the default
    )
    (none,) = ablation.glob("unet-none-seed0-n0")
    assert read_extras(none, None, "none") == (
        ("se_reduction", "n/a"),
        ("se_positions", "n/a"),
        ("se_gate_scale", "n/a"),
    )


def test_each_reduction_and_position_set_is_its_own_row(ablation, capsys):
    sweep = load_sweep(ablation)
    assert sweep.extra_dimensions == ("se_reduction", "se_positions")
    assert not [p for p in sweep.problems if "superseded" in p.reason or "missing" in p.reason]
    assert main([str(ablation), "--no-figures"]) == 0
    with (ablation / "comparison.csv").open(newline="") as fh:
        overall = [r for r in csv.DictReader(fh) if r["table"] == "overall"]
    cells = {(r["se_reduction"], r["se_positions"], r["variant"]): r for r in overall}
    expected = {
        ("n/a", "n/a", "none"): 0.50,
        ("2", "encoder+decoder", "scse-add"): 0.60,
        ("8", "encoder+decoder", "scse-add"): 0.70,
        ("2", "encoder", "scse-add"): 0.80,
        ("8", "encoder+bottleneck+decoder", "scse-add"): 0.90,
    }
    assert set(cells) == set(expected)
    for key, dice in expected.items():
        row = cells[key]
        assert row["arch"] == "unet" and row["n_seeds"] == "2"
        assert float(row["mean"]) == pytest.approx(dice + 0.01 * np.mean(range(len(SUBJECTS))))
        if key[2] == "scse-add":  # each row is compared with the architecture's `none` runs
            assert float(row["diff_vs_none"]) == pytest.approx(dice - 0.50)
    table = capsys.readouterr().out
    assert "| U-Net (r=8, SE at encoder+bottleneck+decoder) |" in table
    assert "| U-Net (r=2, SE at encoder) |" in table
    lines = [line for line in table.splitlines() if line.startswith("| U-Net")]
    assert lines[0].startswith("| U-Net |")  # the none baseline first, then by reduction, then positions
    assert len(lines) == 5


def test_constant_settings_stay_out_of_the_rows_and_are_stated(ablation):
    for folder in ablation.iterdir():
        if folder.name[-2] in "bcd":  # keep only none and scSE r=2 at encoder+decoder
            shutil.rmtree(folder)
    assert main([str(ablation), "--no-figures"]) == 0
    markdown = (ablation / "comparison.md").read_text()
    assert "| U-Net |" in markdown and "r=2" not in markdown
    assert "se_reduction: 2 (every run it applies to)" in markdown
    assert "se_positions: encoder+decoder (every run it applies to)" in markdown


def test_one_figure_per_row_with_a_safe_file_name(ablation):
    pytest.importorskip("matplotlib")
    assert main([str(ablation)]) == 0
    png = ablation / "comparison_unet_se_reduction_8_se_positions_encoder_decoder.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"]({png.name})" in (ablation / "comparison.md").read_text()
