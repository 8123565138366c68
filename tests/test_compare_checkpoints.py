"""scripts/compare_checkpoints.py: the bit-for-bit check that lets a study pair runs made at different commits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from scseg.engine.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_checkpoints.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_identical_weights_pass_and_any_difference_is_named(tmp_path, capsys):
    script = _script()
    weights = {"conv.weight": torch.randn(4, 3), "bn.num_batches_tracked": torch.tensor(7)}
    save_checkpoint(tmp_path / "a.pt", {"model": weights})
    save_checkpoint(tmp_path / "b.pt", {"model": {f"_orig_mod.{k}": v.clone() for k, v in weights.items()}})
    assert script.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0  # torch.compile's prefix ignored
    assert "all 2 tensors equal" in capsys.readouterr().out

    nudged = {k: v.clone() for k, v in weights.items()}
    nudged["conv.weight"][1, 2] = torch.nextafter(nudged["conv.weight"][1, 2], torch.tensor(1e9))  # one ulp
    save_checkpoint(tmp_path / "c.pt", {"model": nudged})
    assert script.main([str(tmp_path / "a.pt"), str(tmp_path / "c.pt")]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 tensors (first: conv.weight)" in out


def test_unreadable_or_mismatched_checkpoints_are_one_line(tmp_path, capsys):
    script = _script()
    save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.zeros(2)}})
    save_checkpoint(tmp_path / "b.pt", {"model": {"w": torch.zeros(3)}})
    assert script.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 2
    assert "w: shape (2,) against (3,)" in capsys.readouterr().err
    assert script.main([str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
