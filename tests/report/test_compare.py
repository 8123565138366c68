"""scseg-compare end to end on hand-written run folders: numbers, listed problems, files, optional extras."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from scseg.cli.compare import main
from scseg.report.runs import load_sweep
from scseg.report.tables import build_tables

N_STRUCTURES = 3  # the synthetic sweep's foreground structures


def _subject_means(truth: dict, arch: str, se: str, aggregation: str | None) -> dict[str, float]:
    """Hand computation: each subject's fg Dice averaged over the seeds of one cell."""
    per_seed = [fg for (a, s, g, _), (fg, _) in truth.items() if (a, s, g) == (arch, se, aggregation)]
    return {subj: float(np.mean([fg[subj] for fg in per_seed])) for subj in per_seed[0]}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _overall(rows: list[dict[str, str]], arch: str, variant: str) -> dict[str, str]:
    (row,) = [r for r in rows if r["table"] == "overall" and r["arch"] == arch and r["variant"] == variant]
    return row


def test_main_table_equals_hand_computed_seed_averaged_means(make_sweep, capsys):
    root, truth = make_sweep()
    assert main([str(root), "--no-figures"]) == 0
    rows = _read_csv(root / "comparison.csv")
    markdown = (root / "comparison.md").read_text()
    assert "Blind to training variance" in markdown and "scseg-study" in markdown  # the p-values say what they miss
    for arch in ("unet", "sdnet"):
        for se, aggregation in (("none", None), ("cse", None), ("sse", None), ("scse", "add")):
            values = np.array(list(_subject_means(truth, arch, se, aggregation).values()))
            key = se if aggregation is None else f"{se}-{aggregation}"
            row = _overall(rows, arch, key)
            assert float(row["mean"]) == pytest.approx(values.mean(), abs=1e-12)
            assert float(row["std"]) == pytest.approx(values.std(ddof=1), abs=1e-12)
            assert (row["n_subjects"], row["n_seeds"]) == ("8", "2")
            assert f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" in markdown
    # seed averaging happens before the std: pooling all 16 run-subject values gives a different std
    pooled = [v for (a, s, _, _), (fg, _) in truth.items() if (a, s) == ("unet", "none") for v in fg.values()]
    assert float(_overall(rows, "unet", "none")["std"]) != pytest.approx(np.std(pooled, ddof=1), abs=1e-6)
    assert "2 seed(s) per cell, 8 test subject(s) per cell." in markdown
    out = capsys.readouterr().out
    assert "| U-Net |" in out and "| SD-Net |" in out and "scSE" in out


def test_diff_to_none_and_wilcoxon_p_equal_scipy(make_sweep):
    scipy_stats = pytest.importorskip("scipy.stats")
    root, truth = make_sweep()
    assert main([str(root), "--no-figures"]) == 0
    rows = _read_csv(root / "comparison.csv")
    base = _subject_means(truth, "sdnet", "none", None)
    variant = _subject_means(truth, "sdnet", "sse", None)
    subjects = sorted(base)
    x = np.array([variant[s] for s in subjects])
    y = np.array([base[s] for s in subjects])
    row = _overall(rows, "sdnet", "sse")
    assert float(row["diff_vs_none"]) == pytest.approx(np.mean(x - y), abs=1e-12)
    assert float(row["p_value"]) == pytest.approx(scipy_stats.wilcoxon(x, y).pvalue, rel=1e-12)
    assert row["n_pairs"] == "8"
    assert _overall(rows, "sdnet", "none")["diff_vs_none"] == ""
    markdown = (root / "comparison.md").read_text()
    assert float(row["diff_std"]) == pytest.approx(np.std(x - y, ddof=1), abs=1e-12)
    assert f"{np.mean(x - y):+.3f}" in markdown
    assert f"{scipy_stats.wilcoxon(x, y).pvalue:.4g}" in markdown


def test_five_subjects_give_n_too_small(make_sweep):
    root, _ = make_sweep(n_subjects=5)
    assert main([str(root), "--no-figures"]) == 0
    rows = _read_csv(root / "comparison.csv")
    row = _overall(rows, "unet", "scse-add")
    assert row["p_value"] == "" and "n too small" in row["p_note"]
    assert "n too small" in (root / "comparison.md").read_text()


def test_failed_running_and_missing_runs_are_listed(make_sweep, run_folder_name, capsys):
    root, _ = make_sweep(skip={("sdnet", "cse", None, 1), ("unet", "sse", None, 1), ("unet", "none", None, 0)})
    failed = root / run_folder_name("sdnet", "cse", None, 1)
    failed.mkdir()
    (failed / "status.json").write_text(
        json.dumps(
            {"state": "failed", "config_hash": "x", "traceback": "Traceback...\nRuntimeError: CUDA out of memory"}
        )
    )
    running = root / run_folder_name("unet", "none", None, 0)
    running.mkdir()
    (running / "status.json").write_text(json.dumps({"state": "running", "config_hash": "x"}))
    (root / "not-a-run").mkdir()  # unrelated folder: ignored, not a problem
    assert main([str(root), "--no-figures"]) == 0
    markdown = (root / "comparison.md").read_text()
    problems = markdown.split("## Runs not used")[1]
    assert failed.name in problems and "RuntimeError: CUDA out of memory" in problems
    assert running.name in problems and "still running" in problems
    assert "unet-sse-seed1" in problems and "missing" in problems
    assert "not-a-run" not in problems
    assert "(3)" in markdown.split("## Runs not used")[1].splitlines()[0]
    # cells with fewer seeds state their own counts
    assert "(s=1, n=8)" in markdown and "(s=2, n=8)" in markdown
    rows = _read_csv(root / "comparison.csv")
    assert _overall(rows, "sdnet", "cse")["n_seeds"] == "1"
    assert "3 run(s) not used" in capsys.readouterr().out


def test_csv_parses_with_overall_and_structure_rows(make_sweep):
    root, truth = make_sweep()
    out = root / "report"
    assert main([str(root), "--out", str(out), "--no-figures"]) == 0
    assert not (root / "comparison.csv").exists()
    rows = _read_csv(out / "comparison.csv")
    assert sum(r["table"] == "overall" for r in rows) == 2 * 4
    structure_rows = [r for r in rows if r["table"] == "structure"]
    assert len(structure_rows) == 2 * 4 * N_STRUCTURES
    assert "background" not in {r["structure"] for r in structure_rows}
    # per structure: per subject averaged over seeds, then mean over subjects ignoring NaN
    (gamma,) = [r for r in structure_rows if (r["arch"], r["variant"], r["structure"]) == ("unet", "cse", "gamma")]
    per_seed = [pc for (a, s, _, _), (_, pc) in truth.items() if (a, s) == ("unet", "cse")]
    subjects = sorted({subj for subj, _ in per_seed[0]})
    by_subject = [
        np.nanmean([pc[subj, 3] for pc in per_seed])
        if not all(math.isnan(pc[subj, 3]) for pc in per_seed)
        else math.nan
        for subj in subjects
    ]
    assert float(gamma["mean"]) == pytest.approx(np.nanmean(by_subject), abs=1e-12)
    assert gamma["n_subjects"] == "7"  # sub00 is NaN in every seed
    md = (out / "comparison.md").read_text()
    assert md.count("| Structure |") == 2


def test_png_figures_written(make_sweep):
    pytest.importorskip("matplotlib")
    root, _ = make_sweep(archs=("unet",), seeds=(0,), n_subjects=3)
    assert main([str(root)]) == 0
    png = root / "comparison_unet.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](comparison_unet.png)" in (root / "comparison.md").read_text()


def test_without_scipy_and_matplotlib_tables_still_written(make_sweep, monkeypatch, capsys):
    root, _ = make_sweep(archs=("unet",))
    for name in ("scipy", "scipy.stats", "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    assert main([str(root)]) == 0
    assert not list(root.glob("*.png"))
    markdown = (root / "comparison.md").read_text()
    assert "Figures skipped: matplotlib not installed" in markdown
    assert "scipy not installed" in markdown
    rows = _read_csv(root / "comparison.csv")
    assert _overall(rows, "unet", "cse")["p_value"] == ""
    assert "scipy not installed" in _overall(rows, "unet", "cse")["p_note"]
    assert _overall(rows, "unet", "cse")["diff_vs_none"] != ""
    assert "Figures skipped: matplotlib not installed" in capsys.readouterr().out


def test_non_default_aggregation_gets_its_own_column(make_sweep):
    root, _ = make_sweep(archs=("unet",), seeds=(0,), variants=(("none", None), ("scse", "add"), ("scse", "max")))
    tables = build_tables(load_sweep(root))
    labels = [tables.variant_label(v) for v in tables.variants]
    assert labels == ["none", "scSE", "scSE (max)"]
    tables = build_tables(load_sweep(root), variant_order=["scse-max", "none"])
    assert [tables.variant_label(v) for v in tables.variants] == ["scSE (max)", "none", "scSE"]


def test_exit_2_when_folder_missing_or_empty(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds no run folders" in err and len(err.strip().splitlines()) == 1


def test_exit_2_on_runs_root_hints_experiment(make_sweep, capsys):
    root, _ = make_sweep(archs=("unet",), seeds=(0,), n_subjects=2)
    assert main([str(root.parent)]) == 2
    assert "experiment" in capsys.readouterr().err


def test_bad_variant_order_is_rejected(make_sweep, capsys):
    root, _ = make_sweep(archs=("unet",), seeds=(0,), n_subjects=2)
    assert main([str(root), "--variant-order", "none,bogus"]) == 2
    assert "--variant-order" in capsys.readouterr().err


def test_malformed_summary_is_listed_not_fatal(make_sweep, run_folder_name):
    root, _ = make_sweep(archs=("unet",), seeds=(0,), n_subjects=2)
    bad = root / run_folder_name("unet", "cse", None, 0) / "summary.json"
    bad.write_text(json.dumps({"arch": "unet"}))
    assert main([str(root), "--no-figures"]) == 0
    problems = (root / "comparison.md").read_text().split("## Runs not used")[1]
    assert str(bad) in problems and "missing key(s)" in problems


def test_duplicate_run_uses_newest_and_lists_the_other(make_sweep, run_folder_name):
    root, _ = make_sweep(archs=("unet",), seeds=(0,), n_subjects=2, variants=(("none", None), ("cse", None)))
    old = root / run_folder_name("unet", "cse", None, 0)
    new = root / (old.name.rsplit("-", 1)[0] + "-ffffffff")  # same cell, another config hash
    new.mkdir()
    for name in ("status.json", "per_case.csv"):
        (new / name).write_bytes((old / name).read_bytes())
    summary = json.loads((old / "summary.json").read_text())
    summary["fg_dice_per_subject"] = {"sub00": 0.25, "sub01": 0.75}
    (new / "summary.json").write_text(json.dumps(summary))
    stamp = (old / "summary.json").stat().st_mtime
    os.utime(new / "summary.json", (stamp + 10, stamp + 10))
    assert main([str(root), "--no-figures"]) == 0
    row = _overall(_read_csv(root / "comparison.csv"), "unet", "cse")
    assert float(row["mean"]) == pytest.approx(0.5) and row["n_seeds"] == "1"
    problems = (root / "comparison.md").read_text().split("## Runs not used")[1]
    assert old.name in problems and "superseded" in problems


def test_null_subject_dice_is_read_as_nan_and_not_counted(make_sweep, run_folder_name):
    root, truth = make_sweep(archs=("unet",), seeds=(0,), n_subjects=3, variants=(("none", None),))
    path = root / run_folder_name("unet", "none", None, 0) / "summary.json"
    summary = json.loads(path.read_text())
    summary["fg_dice_per_subject"]["sub00"] = None  # how the trainer writes an undefined (NaN) Dice
    path.write_text(json.dumps(summary))
    assert main([str(root), "--no-figures"]) == 0
    row = _overall(_read_csv(root / "comparison.csv"), "unet", "none")
    fg = truth["unet", "none", None, 0][0]
    assert row["n_subjects"] == "2"
    assert float(row["mean"]) == pytest.approx((fg["sub01"] + fg["sub02"]) / 2)


def test_boundary_metrics_are_reported_where_the_runs_computed_them(make_sweep):
    """HD95 and NSD: each subject's mean over foreground structures, averaged over seeds, mean over subjects; cells
    whose runs have no boundary columns (older runs) are left out of that table, not shown as zero."""
    root, _ = make_sweep()
    expected = {}
    for folder in sorted(root.iterdir()):
        if not folder.name.startswith("unet-cse"):
            continue
        path = folder / "per_case.csv"
        rows = _read_csv(path)
        seed = int(folder.name.split("seed")[1].split("-")[0])
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*rows[0], "hd95", "nsd"])
            writer.writeheader()
            for row in rows:
                cid = int(row["class_id"])
                hd95 = 2.0 * cid + seed + (0.5 if row["subject"] == "sub01" else 0.0)
                writer.writerow({**row, "hd95": hd95, "nsd": 0.9 - 0.01 * cid})
                if cid > 0:
                    expected.setdefault(row["subject"], []).append(hd95)
    out = root / "report"
    assert main([str(root), "--out", str(out), "--no-figures"]) == 0
    rows = _read_csv(out / "comparison.csv")
    (hd95,) = [r for r in rows if r["table"] == "hd95"]
    assert (hd95["arch"], hd95["variant"], hd95["n_seeds"]) == ("unet", "cse", "2")
    # per subject: mean over structures (2, 4, 6 + seed) averaged over seeds 0 and 1 -> 4.5 (+0.5 for sub01)
    assert float(hd95["mean"]) == pytest.approx(np.mean([np.mean(v) for v in expected.values()]), abs=1e-12)
    (nsd,) = [r for r in rows if r["table"] == "nsd"]
    assert float(nsd["mean"]) == pytest.approx(0.88, abs=1e-12)
    md = (out / "comparison.md").read_text()
    assert "## Boundary metrics" in md and "HD95 4.56" in md


def test_no_boundary_section_without_boundary_metrics(make_sweep):
    root, _ = make_sweep()
    assert main([str(root), "--out", str(root / "r"), "--no-figures"]) == 0
    assert "## Boundary metrics" not in (root / "r" / "comparison.md").read_text()
