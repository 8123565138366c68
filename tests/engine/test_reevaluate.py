"""Re-evaluation keeps a run's identity: ``scseg-evaluate`` writes summary.json with the same builder
as training, so ``scseg-compare`` files a re-evaluated scSE-max run under max, not under the default add."""

from __future__ import annotations

import json

from scseg.cli import evaluate
from scseg.engine.run import run_training
from scseg.engine.summary import TRAINING_PROVENANCE
from scseg.report import build_report
from scseg.report.runs import Variant
from scseg.run_identity import comparison_hash

IDENTITY_KEYS = (
    "arch",
    "se",
    "aggregation",
    "se_reduction",
    "se_positions",
    "seed",
    "experiment",
    "config_hash",
    "comparison_hash",
    "n_params",
    "epoch",
    "best_epoch",
    "best_val_dice",
)


def test_reevaluated_scse_max_run_keeps_its_keys_and_column(tiny_config):
    base = run_training(tiny_config("unet"))
    result = run_training(tiny_config("unet", "se=scse", "se.aggregation=max"))
    before = json.loads((result.run_dir / "summary.json").read_text())
    assert before["aggregation"] == "max" and before["se_reduction"] == 2
    assert before["se_positions"] == ["encoder", "decoder"] and before["n_params"] > base.summary["n_params"]
    # none and scSE-max differ only in the SE settings: same comparison hash, different config hash
    assert before["comparison_hash"] == base.summary["comparison_hash"]
    assert before["config_hash"] != base.summary["config_hash"]

    # the run trained at another commit: re-evaluation keeps it (the weights' provenance) and adds its own
    trained = {**before, "git_commit": "0" * 40, "git_dirty": False, "wall_time_s": 1234.5, "cpu_model": "Trainer CPU"}
    (result.run_dir / "summary.json").write_text(json.dumps(trained))
    assert evaluate.main([str(result.run_dir), "--device", "cpu"]) == 0
    after = json.loads((result.run_dir / "summary.json").read_text())
    assert after["git_commit"] == "0" * 40 and after["git_dirty"] is False
    assert after["evaluated_git_commit"] == before["git_commit"]
    assert after["wall_time_s"] == 1234.5 and after["cpu_model"] == "Trainer CPU"  # training's, not this minute's
    assert after["evaluated_cpu_model"] == before["cpu_model"] and after["evaluated_wall_time_s"] > 0
    assert set(after) == set(before) | {f"evaluated_{k}" for k in TRAINING_PROVENANCE if k in before}
    assert {k: after[k] for k in IDENTITY_KEYS} == {k: before[k] for k in IDENTITY_KEYS}
    assert after["fg_dice_per_subject"] == before["fg_dice_per_subject"]

    report = build_report(result.run_dir.parent, figures=False)
    max_variant = Variant("scse", "max")
    assert ("unet", max_variant) in report.tables.overall
    assert ("unet", Variant("scse", "add")) not in report.tables.overall
    assert report.tables.likeness["unet", max_variant].verdict == "yes"  # compared like with like
    assert report.tables.n_params["unet", max_variant] == [before["n_params"]]


def test_comparison_hash_ignores_only_the_se_settings_and_seed(tiny_config):
    reference = comparison_hash(tiny_config("unet"))
    for same in (("se=scse", "se.aggregation=max", "se.reduction=4"), ("se=cse", "seed=3"), ("experiment_name=x",)):
        assert comparison_hash(tiny_config("unet", *same)) == reference, same
    for other in (("optimizer.lr=0.5",), ("model.filters=8",), ("loss.min_class_weight_ratio=0.25",)):
        assert comparison_hash(tiny_config("unet", *other)) != reference, other


def test_mirroring_another_protocol_goes_to_its_own_folder(tiny_config, tmp_path, capsys):
    """--tta mirror on a run trained with eval.tta=none needs --out: the run's own test results stay as trained."""
    result = run_training(tiny_config("unet"))
    per_case = (result.run_dir / "per_case.csv").read_bytes()
    assert evaluate.main([str(result.run_dir), "--tta", "mirror"]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    out = tmp_path / "mirrored"
    assert evaluate.main([str(result.run_dir), "--tta", "mirror", "--out", str(out)]) == 0
    mirrored = json.loads((out / "summary.json").read_text())
    assert mirrored["tta"] == "mirror" and (out / "per_case.csv").is_file()
    assert mirrored["config_hash"] == result.summary["config_hash"]  # the run it measured
    assert (result.run_dir / "per_case.csv").read_bytes() == per_case
    assert evaluate.main([str(result.run_dir), "--tta", "none"]) == 0  # the run's own protocol: in place
    capsys.readouterr()
