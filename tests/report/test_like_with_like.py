"""The report compares like with like (issue 11): a cell whose runs differ from the `none` run of their
architecture in more than the SE settings and the seed is marked †, the difference is named, and every cell
shows its parameter count."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from scseg.cli.compare import main


def _edit_summary(folder: Path, **changes) -> None:
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(changes)
    path.write_text(json.dumps(summary))


def _overall_rows(root: Path) -> dict[str, dict[str, str]]:
    with (root / "comparison.csv").open(newline="") as fh:
        return {r["variant"]: r for r in csv.DictReader(fh) if r["table"] == "overall"}


def _main_table(markdown: str) -> str:
    return markdown.split("## Main table")[1].split("## Parameters")[0]


def test_cell_with_another_comparison_hash_is_marked_and_named(make_sweep, run_folder_name, capsys):
    root, _ = make_sweep(archs=("unet",))
    for folder in root.iterdir():
        _edit_summary(folder, comparison_hash="a" * 64)
    odd = root / run_folder_name("unet", "sse", None, 1)
    _edit_summary(odd, comparison_hash="b" * 64)
    assert main([str(root), "--no-figures"]) == 0
    table = _main_table((root / "comparison.md").read_text())
    (sse_line,) = [line for line in table.splitlines() if line.startswith("| U-Net")]
    cells = sse_line.split("|")[2:-1]  # none, cSE, sSE, scSE
    assert ["†" in c for c in cells] == [False, False, True, False]
    assert "† U-Net / sSE: not like with like" in table and odd.name in table and "comparison hash bbbbbbbb" in table
    rows = _overall_rows(root)
    assert [rows[v]["like_none"] for v in ("none", "cse", "sse", "scse-add")] == ["yes", "yes", "no", "yes"]
    assert odd.name in capsys.readouterr().out  # the message names the run on the terminal too


def test_hydra_configs_name_the_differing_keys_when_summaries_lack_the_hash(make_sweep, run_folder_name):
    root, _ = make_sweep(archs=("unet",), seeds=(0, 1))
    for folder in root.iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        config = {
            "experiment_name": f"exp{summary['seed']}",  # may differ, as may seed and the se group
            "seed": summary["seed"],
            "se": {"name": summary["se"], "aggregation": summary["aggregation"] or "add", "reduction": 2},
            "model": {"arch": "unet", "filters": 64},
            "optimizer": {"lr": 0.001},
        }
        if folder.name == run_folder_name("unet", "cse", None, 0):
            config["optimizer"]["lr"] = 0.01
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([str(root), "--no-figures"]) == 0
    markdown = (root / "comparison.md").read_text()
    assert "† U-Net / cSE" in markdown and "optimizer.lr: 0.01 vs 0.001" in markdown
    assert [r["like_none"] for r in _overall_rows(root).values()] == ["yes", "no", "yes", "yes"]
    assert "not checked" not in markdown


def test_runs_without_hash_or_config_are_counted_as_unchecked_not_marked(make_sweep):
    root, _ = make_sweep(archs=("unet",), seeds=(0,))
    assert main([str(root), "--no-figures"]) == 0
    markdown = (root / "comparison.md").read_text()
    assert "†" not in markdown
    assert "like with like: 3 run pair(s) not checked" in markdown
    rows = _overall_rows(root)
    assert [rows[v]["like_none"] for v in ("none", "cse", "sse", "scse-add")] == ["yes", *["unknown"] * 3]


def test_every_cell_shows_its_parameter_count(make_sweep, run_folder_name):
    root, _ = make_sweep(archs=("unet", "sdnet"), seeds=(0,))
    _edit_summary(root / run_folder_name("unet", "scse", "add", 0), n_params=1015)
    _edit_summary(root / run_folder_name("sdnet", "cse", None, 0), n_params=None)
    assert main([str(root), "--no-figures"]) == 0
    params = (root / "comparison.md").read_text().split("## Parameters")[1].split("## Difference")[0]
    lines = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in params.splitlines() if line.startswith("| ")}
    assert [c.strip() for c in lines["U-Net"]] == ["1,000", "1,000", "1,000", "1,015 (+1.5%)"]
    assert [c.strip() for c in lines["SD-Net"]] == ["1,000", "?", "1,000", "1,000"]
    rows = _overall_rows(root)
    assert rows["scse-add"]["n_params"] in ("1015", "1000")  # one row per arch; both present in the CSV
