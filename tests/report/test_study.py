"""The study pipeline: run folders -> tidy per-case CSV -> analysis -> page, and the committed fixture page."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from scseg.cli.study import main
from scseg.report.study import StudySettings, analyse
from scseg.report.tidy import COLUMNS, collect, read_csv, to_csv_text, variant_label

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "report" / "fixtures" / "study"


def _generator():
    spec = importlib.util.spec_from_file_location("regen_study", REPO / "scripts" / "regen_study_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_equals_the_committed_page_byte_for_byte(tmp_path):
    """Another folder, the same layout (the page links its CSV relatively): the same bytes."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(FIXTURE / "per_case.csv", folder / "per_case.csv")
    page = folder / "page.md"
    assert main(_generator().page_arguments(folder, page)) == 0
    assert page.read_text(encoding="utf-8") == (FIXTURE / "expected.md").read_text(encoding="utf-8")


def test_the_fixture_csv_is_what_the_generator_makes():
    assert to_csv_text(_generator().make_rows()) == (FIXTURE / "per_case.csv").read_text(encoding="utf-8")


def test_the_analysis_finds_the_planted_effects():
    rows = read_csv(FIXTURE / "per_case.csv")
    analysis = analyse(rows, StudySettings(small_structures=("tiny",), n_boot=2000))
    assert set(analysis.under_trained) == {"fcdensenet"}  # its validation Dice is 0.07 below U-Net's
    verdicts = {(a, e.a): e.verdict for a, e in analysis.vs_none}
    assert verdicts[("unet", "scse")] == "better" and verdicts[("unet", "cse")] == "worse"
    claims = {c.key: c for c in analysis.claims}
    assert claims["C4"].verdict == "reproduced" and claims["C4"].deciding == ("U-Net",)
    assert "FC-DenseNet" not in claims["C1"].deciding  # under-trained cells never decide a claim


def _run_folder(root: Path, name: str, se: str, seed: int, dice: float, **summary_extra) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "done"}))
    summary = {
        "arch": "unet",
        "se": se,
        "aggregation": "add" if se == "scse" else None,
        "seed": seed,
        "n_params": 1000,
        "comparison_hash": "h",
        "git_commit": "abcdef0123456789",
        "git_dirty": False,
        "cpu_model": "test cpu",
        "se_kernels": "aten",
        "best_val_dice": 0.8,
        **summary_extra,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    with (folder / "per_case.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "class_id", "class_name", "tp", "fp", "fn", "n_ref", "n_pred", "dice"])
        for subject in ("a", "b"):
            writer.writerow([subject, 0, "background", 1, 1, 1, 10, 10, 0.9])
            writer.writerow([subject, 1, "liver", 1, 1, 1, 100, 100, dice])
            writer.writerow([subject, 2, "kidney", 0, 0, 0, 0, 0, ""])


def test_collect_round_trips_through_the_csv(tmp_path):
    root = tmp_path / "runs"
    _run_folder(root, "unet-none-seed0-aaaaaaaa", "none", 0, 0.8)
    _run_folder(root, "unet-scse-add-seed0-bbbbbbbb", "scse", 0, 0.85, se_gate_scale=1.0)
    _run_folder(root, "unet-none-seed0-cccccccc", "none", 0, 0.82, capacity_match={"variant": "scse", "ratio": 1.0})
    (root / "unet-cse-seed0-dddddddd").mkdir()  # unfinished: left out with a note
    (root / "unet-sse-seed0-eeeeeeee").mkdir()
    (root / "unet-sse-seed0-eeeeeeee" / "status.json").write_text("{cut short")  # unreadable: a note, no crash
    rows, notes = collect(root)
    assert {r.variant for r in rows} == {"none", "scse", "none-wide-scse"}
    assert all(r.class_id != 0 for r in rows)  # background is not a structure
    assert any("unet-cse-seed0-dddddddd" in n for n in notes)
    assert any("unet-sse-seed0-eeeeeeee" in n and "unreadable status.json" in n for n in notes)
    out = tmp_path / "per_case.csv"
    assert main(["collect", str(root), "--csv", str(out)]) == 0
    again = read_csv(out)
    packed = tmp_path / "per_case.csv.gz"  # compressed: the same rows, the same bytes every time
    assert main(["collect", str(root), "--csv", str(packed)]) == 0
    first = packed.read_bytes()
    assert main(["collect", str(root), "--csv", str(packed)]) == 0
    assert packed.read_bytes() == first and read_csv(packed) == again
    assert again == sorted(again, key=lambda r: (r.arch, r.variant, r.seed, r.fold or -1, r.subject, r.class_id))
    assert {(r.run, r.subject, r.structure): r.dice for r in again} == {
        (r.run, r.subject, r.structure): r.dice for r in rows
    } or all(r.dice != r.dice for r in again if r.structure == "kidney")
    assert tuple(out.read_text().splitlines()[0].split(",")) == COLUMNS


def test_collect_merge_adds_runs_to_the_committed_csv(tmp_path):
    """Runs finished in an earlier session (folders gone) stay in the CSV; a run collected again is replaced."""
    first, second = tmp_path / "first", tmp_path / "second"
    _run_folder(first, "unet-none-seed0-aaaaaaaa", "none", 0, 0.8)
    _run_folder(first, "unet-scse-add-seed0-bbbbbbbb", "scse", 0, 0.85)
    _run_folder(second, "unet-scse-add-seed0-bbbbbbbb", "scse", 0, 0.9)  # the same run, evaluated again
    _run_folder(second, "unet-none-seed1-cccccccc", "none", 1, 0.7)
    out = tmp_path / "per_case.csv.gz"
    assert main(["collect", str(first), "--csv", str(out)]) == 0
    assert main(["collect", str(second), "--csv", str(out), "--merge"]) == 0
    merged = read_csv(out)
    liver = {r.run: r.dice for r in merged if r.structure == "liver"}
    assert liver == {
        "unet-none-seed0-aaaaaaaa": 0.8,
        "unet-scse-add-seed0-bbbbbbbb": 0.9,
        "unet-none-seed1-cccccccc": 0.7,
    }
    assert len(merged) == 3 * 2 * 2  # runs x subjects x structures: no duplicate rows
    assert main(["collect", str(second), "--csv", str(out)]) == 0  # without --merge: the folder's runs only
    assert {r.run for r in read_csv(out)} == {"unet-scse-add-seed0-bbbbbbbb", "unet-none-seed1-cccccccc"}


def test_variant_labels():
    assert variant_label("scse", "add") == "scse"
    assert variant_label("scse", "max") == "scse-max"
    assert variant_label("cse", None, 2.0) == "cse-g2"
    assert variant_label("none", None, 1.0, "scse") == "none-wide-scse"
    assert variant_label("none", None, precision="bf16") == "none-bf16"
    assert variant_label("scse", "max", precision="fp32") == "scse-max"


def test_precision_is_its_own_cell_and_a_control_against_fp32(tmp_path):
    """bf16 runs never pool with fp32 runs of the same config; old CSVs without the column read as fp32."""
    root = tmp_path / "runs"
    for seed in range(3):
        _run_folder(root, f"unet-none-seed{seed}-a{seed}", "none", seed, 0.80 + 0.01 * seed)
        _run_folder(root, f"unet-none-seed{seed}-b{seed}", "none", seed, 0.80 + 0.01 * seed, precision="bf16")
    rows, _ = collect(root)
    assert {(r.variant, r.precision) for r in rows} == {("none", "fp32"), ("none-bf16", "bf16")}
    analysis = analyse(rows, StudySettings(n_boot=200))
    assert [(a, e.a, e.b) for a, e, _ in analysis.controls] == [("unet", "none-bf16", "none")]
    assert analysis.controls[0][1].estimate == pytest.approx(0.0)
    page = render_page(analysis, rows)
    assert "None is tested here" in page and "| Claim |" not in page and "none, bf16 - none" in page
    text = to_csv_text(rows).splitlines()
    column = text[0].split(",").index("precision")
    old = tmp_path / "old.csv"  # as written before the column existed
    old.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != column) for line in text))
    assert {r.precision for r in read_csv(old)} == {"fp32"}


def test_bad_input_is_one_line_naming_it(tmp_path, capsys):
    assert main(["page", "--csv", str(tmp_path / "nope.csv"), "--page", str(tmp_path / "p.md")]) == 2
    assert "nope.csv" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,variant\nunet,none\n")
    assert main(["page", "--csv", str(bad), "--page", str(tmp_path / "p.md")]) == 2
    assert "missing column" in capsys.readouterr().err
    args = ["page", "--csv", str(FIXTURE / "per_case.csv"), "--page", str(tmp_path / "p.md"), "--set", "margin=1"]
    assert main(args) == 2
    assert "unknown report setting(s) margin" in capsys.readouterr().err


def test_the_task_settings_files_load():
    from scseg.cli.study import load_settings

    for task in ("malc", "chaos"):
        settings, title = load_settings(REPO / "configs" / "report" / f"{task}.yaml", [])
        assert title and settings.equivalence_margin == pytest.approx(0.01) and settings.small_structures


def _committed_csvs() -> list[Path]:
    return sorted((REPO / "docs" / "results").glob("*/per_case.csv*"))


@pytest.mark.parametrize("csv_path", _committed_csvs(), ids=lambda p: p.parent.name)
def test_each_committed_page_regenerates_from_its_committed_csv(csv_path, tmp_path):
    """What `make results` does for one task, into another folder: the same bytes as the committed page."""
    page = csv_path.parent.with_suffix(".md")
    task = page.stem.split("_cpu")[0]  # malc_cpu, malc_cpu_study -> malc; zoo_malc_cpu -> zoo_malc
    (tmp_path / page.stem).mkdir()
    copy = tmp_path / page.stem / csv_path.name
    shutil.copy(csv_path, copy)
    out = tmp_path / page.name
    args = ["page", "--csv", str(copy), "--page", str(out), "--no-figures"]
    command = re.search(r"by `([^`]+)`", page.read_text(encoding="utf-8")).group(1)  # what made it (make results...)
    named = re.search(r"--settings (\S+)", command)  # the settings the command names, else the task's
    settings = REPO / named.group(1) if named else REPO / "configs" / "report" / f"{task}.yaml"
    args += ["--settings", str(settings), "--command", command]
    effects = re.search(r"--effects-csv (\S+)", command)  # the page's numbers as a CSV, committed beside it
    if effects:
        args += ["--effects-csv", str(tmp_path / "effects.csv")]
    assert main(args) == 0
    committed = page.read_text(encoding="utf-8").replace(f"![effects vs none]({page.stem}_effects.png)\n\n", "")
    assert out.read_text(encoding="utf-8") == committed
    if effects:
        assert (tmp_path / "effects.csv").read_bytes() == (REPO / effects.group(1)).read_bytes()


def test_boundary_metrics_are_compared_with_lower_hd95_as_better():
    """HD95 2 mm smaller for scSE on every run and subject -> better (a positive reduction); NSD unchanged within a
    tight spread -> equivalent; runs without boundary metrics (NaN) are left out, not counted as zero."""
    import dataclasses as dc

    rng = np.random.default_rng(0)
    base = read_csv(FIXTURE / "per_case.csv")
    rows = []
    for row in base:
        if row.arch != "unet" or row.variant not in ("none", "scse"):
            continue
        shift = -2.0 if row.variant == "scse" else 0.0
        hd95 = 6.0 + shift + rng.normal(0, 0.2)
        rows.append(dc.replace(row, hd95=hd95, nsd=0.9 + rng.normal(0, 0.001)))
    analysis = analyse(rows, StudySettings(n_boot=2000))
    effects = {m: e for m, _, e in analysis.boundary}
    assert effects["hd95"].verdict == "better" and effects["hd95"].estimate == pytest.approx(2.0, abs=0.1)
    assert effects["hd95"].relative == pytest.approx(2.0 / 6.0, abs=0.02)  # relative to none's distance
    assert effects["nsd"].verdict == "equivalent"
    page = render_page(analysis, rows)
    assert "## Boundary metrics" in page and "HD95 reduction" in page

    no_boundary = [dc.replace(r, hd95=float("nan"), nsd=float("nan")) for r in rows]
    assert analyse(no_boundary, StudySettings(n_boot=200)).boundary == []
    assert "## Boundary metrics" not in render_page(analyse(no_boundary, StudySettings(n_boot=200)), no_boundary)


def render_page(analysis, rows) -> str:
    from scseg.report.study_page import render

    return render(analysis, rows, task="t", command="c", csv_name="per_case.csv", figure_name=None)


def test_a_library_preset_is_its_own_cell_and_other_modules_get_their_own_family(tmp_path):
    """se=smp_scse (scSE by addition at its library's positions and reduction) must not merge with scSE at the
    paper's settings: the collector names the cell by the preset the run was launched with. Modules outside the
    paper's variants are compared with none in their own table and decide no claim."""
    import dataclasses as dc

    root = tmp_path / "runs"
    _run_folder(root, "unet-scse-add-seed0-aaaaaaaa", "scse", 0, 0.85)
    _run_folder(root, "unet-scse-add-seed0-bbbbbbbb", "scse", 0, 0.84)
    hydra = root / "unet-scse-add-seed0-bbbbbbbb" / ".hydra"
    hydra.mkdir()
    (hydra / "overrides.yaml").write_text("- experiment=zoo_malc_cpu\n- se=smp_scse\n- seed=0\n")
    rows, _ = collect(root)
    assert {r.run: r.variant for r in rows} == {
        "unet-scse-add-seed0-aaaaaaaa": "scse",
        "unet-scse-add-seed0-bbbbbbbb": "smp_scse",
    }
    assert variant_label("scse", "max", preset="authors_scse") == "authors_scse"
    assert variant_label("cse", None, preset="cse") == "cse"

    base = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant in ("none", "cse")]
    cbam = [dc.replace(r, variant="cbam", se="cbam", dice=r.dice + 0.03) for r in base if r.variant == "none"]
    analysis = analyse(base + cbam, StudySettings(n_boot=2000))
    (arch, effect), *_ = analysis.others_vs_none
    assert (arch, effect.a, effect.verdict) == ("unet", "cbam", "better")
    assert all(e.a != "cbam" for c in analysis.claims for e in c.effects)
    page = render_page(analysis, base + cbam)
    assert "## Other modules and library presets vs none" in page and "| U-Net | CBAM |" in page


def test_comparison_families_pair_every_cell_or_each_against_a_reference_each_in_its_own_table():
    """The zoo asks which library's SE to pick (every preset against every other, a - b in the settings' order) and
    whether the paper's scSE beats the attention modules (each module minus it): each family is its own table and
    Bonferroni family, skips cells without runs, and reaches the page and the effects CSV under its key."""
    import csv as csv_module
    import dataclasses as dc
    import io

    from scseg.report.effects_table import effects_csv_text
    from scseg.report.study import ComparisonFamily

    none = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant == "none"]
    shift = {"authors_scse": 0.03, "smp_scse": 0.0, "monai_cse": 0.03, "cbam": 0.0, "eca": 0.03}
    rows = none + [dc.replace(r, variant=v, se=v, dice=r.dice + d) for v, d in shift.items() for r in none]
    settings = StudySettings.from_mapping(
        {
            "n_boot": 2000,
            "families": [
                # nnunet_cse and coord were not trained: skipped
                {
                    "key": "presets",
                    "title": "Library presets",
                    "cells": ["authors_scse", "smp_scse", "monai_cse", "nnunet_cse"],
                },
                {
                    "key": "vs_scse",
                    "title": "Modules vs scSE",
                    "cells": ["cbam", "eca", "coord"],
                    "reference": "authors_scse",
                },
            ],
        }
    )
    analysis = analyse(rows, settings)
    got = {f.key: [(a, e.a, e.b, e.verdict) for a, e in effects] for f, effects in analysis.families}
    assert got == {
        "presets": [
            ("unet", "authors_scse", "smp_scse", "better"),
            ("unet", "authors_scse", "monai_cse", "equivalent"),
            ("unet", "smp_scse", "monai_cse", "worse"),
        ],
        "vs_scse": [("unet", "cbam", "authors_scse", "worse"), ("unet", "eca", "authors_scse", "equivalent")],
    }
    levels = {f.key: {round(e.level, 6) for _, e in effects} for f, effects in analysis.families}
    assert levels == {"presets": {round(1 - 0.05 / 3, 6)}, "vs_scse": {round(1 - 0.05 / 2, 6)}}
    page = render_page(analysis, rows)
    assert "## Library presets" in page and "| U-Net | scSE (authors' code) - scSE (SMP) |" in page
    assert "## Modules vs scSE" in page and "Each minus scSE (authors' code)" in page
    tables = [row["table"] for row in csv_module.DictReader(io.StringIO(effects_csv_text(analysis)))]
    assert (tables.count("presets"), tables.count("vs_scse")) == (3, 2)
    # a name without runs (not trained yet, or misspelt) is said, not dropped silently
    assert analysis.family_absent == {"presets": ("nnunet_cse",), "vs_scse": ("coord",)}
    assert "without runs in this study (left out): `coord`." in page
    # without families: no such tables; a family with a misspelt field is one clear error
    assert "## Library presets" not in render_page(analyse(rows, StudySettings(n_boot=200)), rows)
    with pytest.raises(ValueError, match="unknown referenc.*key, title, cells"):
        ComparisonFamily.from_mapping({"key": "k", "title": "t", "cells": ["a"], "referenc": "b"})


def test_two_cells_of_one_network_are_named_the_same_network_not_evidence_of_equivalence():
    """A capacity match that found no wider width nearer scSE's count than the plain one (U-Net at 32 filters: scSE
    adds 1.6 %, one filter 6 %) trains `none` again: its control reads +0.00 [+0.00, +0.00] "equivalent", which is
    no evidence about capacity. The page says the two cells are the same network."""
    import dataclasses as dc

    none = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant == "none"]
    wide = [dc.replace(r, variant="none-wide-scse", capacity_match="scse") for r in none]
    analysis = analyse(none + wide, StudySettings(n_boot=500))
    (arch, effect, _), *_ = analysis.controls
    assert (effect.a, effect.b, effect.estimate) == ("none-wide-scse", "none", 0.0)
    assert "the same network" in effect.note
    page = render_page(analysis, none + wide)
    assert "trained the same network" in page and "measures nothing here" in page
    # the forest plot marks it apart too, not as a blue "equivalent"
    from scseg.report.study_page import FOREST_SAME_NETWORK, forest_style

    assert effect.verdict == "equivalent" and forest_style(effect)[0] == FOREST_SAME_NETWORK
    # one case apart: an ordinary comparison again
    nudged = [dc.replace(r, dice=r.dice + 0.01) if i == 0 else r for i, r in enumerate(wide)]
    (_, effect, _), *_ = analyse(none + nudged, StudySettings(n_boot=500)).controls
    assert "the same network" not in effect.note
    assert forest_style(effect)[0] != FOREST_SAME_NETWORK


def test_an_architecture_with_part_of_the_grid_never_reproduces_an_every_claim():
    """QuickNAT trained with none and scSE only (the zoo): its scSE gain cannot show that every variant improves
    every architecture (C1) or that scSE beats both its parts (C3). Alone it leaves both not tested; beside complete
    architectures it keeps them from "reproduced"; a loss still contradicts."""
    import dataclasses as dc

    rows = read_csv(FIXTURE / "per_case.csv")
    unet = [r for r in rows if r.arch == "unet" and r.variant in ("none", "cse", "sse", "scse")]
    gain = [dc.replace(r, arch="quicknat", dice=r.dice + (0.05 if r.variant == "scse" else 0.0)) for r in unet]
    quicknat = [r for r in gain if r.variant in ("none", "scse")]
    alone = {c.key: c for c in analyse(quicknat, StudySettings(n_boot=500)).claims}
    assert dict(analyse(quicknat, StudySettings(n_boot=500)).vs_none)["quicknat"].verdict == "better"
    for key in ("C1", "C3"):
        assert alone[key].verdict == "not tested" and "QuickNAT" in alone[key].detail
    # beside a complete U-Net whose every variant gains (C1 reproduced on its own): no longer reproduced
    complete = [dc.replace(r, dice=r.dice + (0.05 if r.variant != "none" else 0.0)) for r in unet]
    c1 = {c.key: c for c in analyse(complete, StudySettings(n_boot=500)).claims}["C1"]
    assert c1.verdict == "reproduced" and not c1.detail
    both = {c.key: c for c in analyse(complete + quicknat, StudySettings(n_boot=500)).claims}
    assert both["C1"].verdict == "inconclusive" and "whole set" in both["C1"].detail
    # a loss on the partial architecture contradicts C1 whatever else is missing
    loss = [dc.replace(r, dice=r.dice - 0.10 if r.variant == "scse" else r.dice) for r in quicknat]
    lost = {c.key: c for c in analyse(loss, StudySettings(n_boot=500)).claims}
    assert lost["C1"].verdict == "contradicted" and lost["C1"].deciding == ("QuickNAT",)


def test_one_run_per_cell_tests_no_claim_and_the_page_command_reruns_from_the_page_folder(tmp_path, monkeypatch):
    """`make study` with one seed: every effect is "too few runs", so C1-C3 are not tested (not "inconclusive", as
    if something had been weighed). The page lives outside the working directory: its command names the CSV
    relative to the page's folder, never a machine path."""
    rows = [r for r in read_csv(FIXTURE / "per_case.csv") if r.seed == 0]
    claims = {c.key: c.verdict for c in analyse(rows, StudySettings(n_boot=200)).claims}
    assert claims["C1"] == claims["C2"] == claims["C3"] == "not tested"
    out = tmp_path / "runs"
    (out / "study_study").mkdir(parents=True)
    shutil.copy(FIXTURE / "per_case.csv", out / "study_study" / "per_case.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    csv_arg, page_arg = str(out / "study_study" / "per_case.csv"), str(out / "study_study.md")
    assert main(["page", "--csv", csv_arg, "--page", page_arg, "--no-figures", "--set", "n_boot=200"]) == 0
    text = (out / "study_study.md").read_text(encoding="utf-8")
    assert "by `scseg-study page --csv study_study/per_case.csv --page study_study.md --set n_boot=200`" in text
    assert str(tmp_path) not in text


def test_a_capacity_matched_none_is_always_compared_and_a_control_without_its_partner_is_not_dropped():
    """The zoo trains U-Net `none` widened to scSE's parameters but no plain scSE (only library presets): the
    widened `none` still meets `none` (capacity alone, a control), and scSE max without scSE add or cSE/sSE still
    meets `none` (its own control row); nothing trained is left out of every table."""
    import dataclasses as dc

    rows = read_csv(FIXTURE / "per_case.csv")
    unet = [r for r in rows if r.arch == "unet" and r.variant in ("none", "scse-max")]
    wide = [
        dc.replace(r, variant="none-wide-scse", capacity_match="scse")
        for r in rows
        if r.arch == "unet" and r.variant == "none"
    ]
    smp = [dc.replace(r, variant="smp_scse") for r in rows if r.arch == "unet" and r.variant == "scse"]
    analysis = analyse(unet + wide + smp, StudySettings(n_boot=200))
    controls = {(e.a, e.b) for _, e, _ in analysis.controls}
    assert ("none-wide-scse", "none") in controls and ("scse-max", "none") in controls
    assert {e.a for _, e in analysis.others_vs_none} == {"smp_scse"}
    shown = controls | {(e.a, e.b) for _, e in analysis.others_vs_none} | {(e.a, e.b) for _, e in analysis.vs_none}
    assert {a for a, _ in shown} | {b for _, b in shown} == {"none", "scse-max", "none-wide-scse", "smp_scse"}


def test_per_structure_effects_find_the_structure_that_moved_and_order_by_volume():
    """scSE lifts one structure by 5 points in every run and subject and leaves the others as they were: only that
    structure reads better; rows run from the smallest structure to the largest; the section can be turned off."""
    import dataclasses as dc

    rows = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant in ("none", "scse")]
    none = [r for r in rows if r.variant == "none"]
    target = sorted({r.structure for r in none})[0]
    scse = [
        dc.replace(r, variant="scse", dice=min(r.dice + (0.05 if r.structure == target else 0.0), 1.0)) for r in none
    ]
    analysis = analyse(none + scse, StudySettings(n_boot=500))
    verdicts = {s: e.verdict for a, s, e in analysis.per_structure}
    assert verdicts[target] == "better"
    assert all(v in ("equivalent", "inconclusive") for s, v in verdicts.items() if s != target)
    volumes = list(analysis.structure_volumes.values())
    assert volumes == sorted(volumes) and set(analysis.structure_volumes) == set(verdicts)
    page = render_page(analysis, none + scse)
    assert "## Per structure: each SE variant or module vs none" in page and f"| {target} |" in page and "▲" in page
    off = analyse(none + scse, StudySettings(n_boot=500, per_structure=False))
    assert not off.per_structure and "## Per structure" not in render_page(off, none + scse)


def test_forest_plot_draws_other_modules_and_says_why_when_it_draws_nothing(tmp_path):
    """A zoo page has no paper variant beside `none`, only other modules: they are its picture. With nothing to
    plot, the reason says so (not "matplotlib is not installed")."""
    import dataclasses as dc

    pytest.importorskip("matplotlib")
    from scseg.report.study_page import write_forest_plot

    base = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant == "none"]
    cbam = [dc.replace(r, variant="cbam", se="cbam", dice=r.dice + 0.03) for r in base]
    analysis = analyse(base + cbam, StudySettings(n_boot=200))
    assert not analysis.vs_none and analysis.others_vs_none
    path, why_not = write_forest_plot(analysis, tmp_path / "zoo_effects.png", task="zoo")
    assert why_not is None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path, why_not = write_forest_plot(analyse(base, StudySettings(n_boot=200)), tmp_path / "none.png", task="t")
    assert path is None and "no effect to plot" in why_not and not (tmp_path / "none.png").exists()


def test_see_also_lines_become_their_own_section_and_nothing_without_them():
    rows = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant in ("none", "cse")]
    plain = render_page(analyse(rows, StudySettings(n_boot=200)), rows)
    assert "## See also" not in plain
    settings = StudySettings.from_mapping({"n_boot": 200, "see_also": ["fusion: [page](x.md)", "mirroring"]})
    page = render_page(analyse(rows, settings), rows)
    section = page[page.index("## See also") : page.index("## Provenance")]
    assert "- fusion: [page](x.md)\n- mirroring\n" in section


def _control_effect(estimate: float, low: float, high: float, verdict: str, runs_to_decide=None, n_runs=5):
    from scseg.report.effects import Effect, VarianceComponents

    components = VarianceComponents(0.0, 0.0, 0.0)
    return Effect(
        "scse-max",
        "scse",
        estimate,
        estimate,
        low,
        high,
        0.99,
        0.0,
        n_runs,
        15,
        components,
        verdict,
        0.01,
        runs_to_decide,
    )


@pytest.mark.parametrize(
    ("effect", "says"),
    [
        (_control_effect(0.02, 0.005, 0.03, "better"), "scSE max scored higher than scSE, by at least 0.50 points."),
        (_control_effect(-0.02, -0.03, -0.004, "worse"), "scSE max scored lower than scSE, by at least 0.40 points."),
        (_control_effect(0.001, -0.005, 0.006, "equivalent"), "scSE max and scSE are equivalent within +-1 point(s)"),
        (_control_effect(0.003, -0.004, 0.010, "inconclusive", 12), "about 12 paired runs would decide it"),
        (_control_effect(0.003, -0.004, 0.010, "inconclusive"), "more than 100 paired runs would decide it"),
        (_control_effect(0.01, 0.002, 0.02, "too few runs", n_runs=2), "2 paired run(s), too few to see training"),
    ],
)
def test_each_control_gets_one_sentence_no_stronger_than_its_interval(effect, says):
    from scseg.report.study_page import control_sentence

    sentence = control_sentence("unet", effect, "what it isolates", 0.01)
    assert sentence.startswith("U-Net, scSE max - scSE (what it isolates): ") and says in sentence
    assert f"[{100 * effect.ci_low:+.2f}, {100 * effect.ci_high:+.2f}]" in sentence
    assert "\n" not in sentence and sentence.endswith(".")


def test_software_versions_travel_from_summary_to_the_page(tmp_path):
    """The versions summary.json records become the ``software`` column and a provenance line; a CSV from before
    the column reads as unknown."""
    root = tmp_path / "runs"
    versions = {"torch_version": "2.13.0+cpu", "numpy_version": "2.4.6", "python_version": "3.11.7"}
    for seed in range(3):
        _run_folder(root, f"unet-none-seed{seed}-a{seed}", "none", seed, 0.80, **versions)
        _run_folder(root, f"unet-scse-add-seed{seed}-b{seed}", "scse", seed, 0.81, **versions)
    rows, _ = collect(root)
    assert {r.software for r in rows} == {"torch 2.13.0+cpu, numpy 2.4.6, python 3.11.7"}  # no scipy: left out
    out = tmp_path / "per_case.csv"
    assert main(["collect", str(root), "--csv", str(out)]) == 0
    assert read_csv(out) == rows  # the commas inside the cell survive the CSV
    page = render_page(analyse(rows, StudySettings(n_boot=200)), rows)
    assert "- software (summary.json): torch 2.13.0+cpu, numpy 2.4.6, python 3.11.7 (6 runs)" in page
    with out.open(newline="") as fh:
        table = list(csv.reader(fh))
    column = table[0].index("software")
    old = tmp_path / "old.csv"
    with old.open("w", newline="") as fh:
        csv.writer(fh).writerows([c for i, c in enumerate(line) if i != column] for line in table)
    assert {r.software for r in read_csv(old)} == {""}


def test_a_cross_validated_study_says_how_to_read_its_spread(tmp_path):
    import dataclasses as dc

    root = tmp_path / "runs"
    for fold in range(3):
        _run_folder(root, f"unet-none-seed0-f{fold}", "none", 0, 0.80 + 0.02 * fold, fold=fold, folds=3)
        _run_folder(root, f"unet-scse-add-seed0-g{fold}", "scse", 0, 0.81 + 0.02 * fold, fold=fold, folds=3)
    rows, _ = collect(root)
    assert {r.run_key for r in rows} == {"seed0-fold0", "seed0-fold1", "seed0-fold2"}
    page = render_page(analyse(rows, StudySettings(n_boot=200)), rows)
    assert "- Cross-validation (3 folds here): each fold's network is a run" in page
    plain = [dc.replace(r, fold=None, seed=r.fold) for r in rows]  # the same numbers as three seeds
    assert "Cross-validation" not in render_page(analyse(plain, StudySettings(n_boot=200)), plain)
    assert "hold different runs" not in page  # every cell holds folds 0-2
    partial = [r for r in rows if not (r.se == "scse" and r.fold == 2)]  # a fold not finished for scSE
    page = render_page(analyse(partial, StudySettings(n_boot=200)), partial)
    assert "Cells of U-Net hold different runs (seeds or folds)" in page


def test_runs_trained_unlike_are_named_on_the_page(tmp_path):
    """A run with another comparison hash (say another learning rate) in a cell, or a variant whose hash differs
    from none's, is named; a bf16 cell differs by design and is not."""
    import dataclasses as dc

    root = tmp_path / "runs"
    for seed in range(3):
        _run_folder(root, f"unet-none-seed{seed}-a{seed}", "none", seed, 0.80)
        _run_folder(root, f"unet-none-seed{seed}-c{seed}", "none", seed, 0.80, precision="bf16", comparison_hash="p")
        _run_folder(root, f"unet-scse-add-seed{seed}-b{seed}", "scse", seed, 0.81)
    rows, _ = collect(root)
    clean = render_page(analyse(rows, StudySettings(n_boot=200)), rows)
    assert "Unlike runs" not in clean
    odd = [dc.replace(r, comparison_hash="other") if r.variant == "scse" and r.seed == 2 else r for r in rows]
    analysis = analyse(odd, StudySettings(n_boot=200))
    assert any("U-Net scse: its runs have 2 comparison hashes" in line for line in analysis.unlike)
    assert any("differs from none's" in line for line in analysis.unlike)
    assert "**Unlike runs.**" in render_page(analysis, odd)


def _none_run(arch: str, fold: int | None, seed: int, val: float):
    from scseg.report.tidy import CaseRow

    return CaseRow(
        arch=arch, variant="none", se="none", aggregation="", gate_scale=1.0, capacity_match="", seed=seed,
        fold=fold, run=f"{arch}-{seed}-{fold}", n_params=1, comparison_hash="h", commit="c", dirty="", cpu="x",
        se_kernels="aten", val_dice=val, subject="s1", class_id=1, structure="liver", n_ref=1.0, dice=0.8,
    )  # fmt: skip


def test_under_trained_compares_architectures_on_the_folds_both_have():
    """A sweep that reached only the hard fold of FC-DenseNet is not held against all five folds of U-Net; a network
    that is worse on the same fold is flagged, and the reason names the folds; without folds, the mean over runs."""
    from scseg.report.study import under_trained

    unet = [_none_run("unet", f, 0, 0.66 if f == 0 else 0.88) for f in range(5)]
    assert under_trained([*unet, _none_run("fcdensenet", 0, 0, 0.65)], 0.03) == {}
    flagged = under_trained([*unet, _none_run("fcdensenet", 0, 0, 0.60), _none_run("fcdensenet", 0, 1, 0.62)], 0.03)
    assert set(flagged) == {"fcdensenet"} and "0.610 is 0.050 below" in flagged["fcdensenet"]
    assert flagged["fcdensenet"].endswith("(margin 0.03, on folds 0)")
    plain = [_none_run("unet", None, s, 0.85) for s in range(5)] + [_none_run("sdnet", None, 0, 0.80)]
    assert under_trained(plain, 0.03) == {"sdnet": "`none` validation Dice 0.800 is 0.050 below the best "
                                          "architecture's 0.850 (margin 0.03)"}  # fmt: skip


def test_claims_scope_is_printed_under_the_claims_and_nothing_without_it():
    rows = [r for r in read_csv(FIXTURE / "per_case.csv") if r.arch == "unet" and r.variant in ("none", "cse")]
    plain = render_page(analyse(rows, StudySettings(n_boot=200)), rows)
    assert "**Scope.**" not in plain
    settings = StudySettings.from_mapping({"n_boot": 200, "claims_scope": "Decided on QuickNAT alone.\n"})
    page = render_page(analyse(rows, settings), rows)
    claims = page[page.index("## The paper's claims") : page.index("## Reading this page")]
    assert "**Scope.** Decided on QuickNAT alone." in claims
    with pytest.raises(ValueError, match="claims_scope must be one Markdown string"):
        StudySettings.from_mapping({"claims_scope": ["a", "b"]})
