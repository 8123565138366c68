"""Test-time mirroring (eval.tta=mirror): class probabilities averaged over the four in-plane flips, flipped back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scseg.config.compose import compose_train_config
from scseg.engine.inference import MIRRORS, Predictor
from scseg.engine.run import identity


class Ramp(nn.Module):
    """Logits that depend on where a pixel is (not flip-equivariant): class 1 grows along W, class 2 along H."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = torch.linspace(-1, 1, w).expand(n, 1, h, w)
        rows = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        return torch.cat([torch.zeros_like(cols), 3 * cols, 2 * rows + x[:, :1]], dim=1)


def test_mirroring_averages_the_flipped_probabilities():
    x = torch.randn(2, 1, 6, 8)
    model = Ramp()
    expected = (
        sum(
            torch.softmax(model(x.flip(d) if d else x), 1).flip(d) if d else torch.softmax(model(x), 1) for d in MIRRORS
        )
        / 4
    )
    got = Predictor(model, None, 2, tta="mirror").slice_probabilities(list(x))
    torch.testing.assert_close(torch.from_numpy(got), expected)
    plain = Predictor(model, None, 2).slice_probabilities(list(x))
    assert not torch.allclose(torch.from_numpy(plain), expected)  # this model is not flip-equivariant
    labels = Predictor(model, None, 2, tta="mirror").slice_labels(list(x))
    assert (torch.from_numpy(labels).long() == expected.argmax(1)).all()


def test_a_flip_equivariant_model_is_unchanged_by_mirroring():
    model = nn.Conv2d(1, 3, kernel_size=1)
    x = torch.randn(3, 1, 5, 7)
    a = Predictor(model, None, 4, tta="mirror").slice_probabilities(list(x))
    b = Predictor(model, None, 4).slice_probabilities(list(x))
    torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(b))


def test_mirroring_is_hashed_and_checked():
    assert identity(compose_train_config(["eval.tta=none"])) == identity(compose_train_config([]))
    assert identity(compose_train_config(["eval.tta=mirror"])) != identity(compose_train_config([]))
    with pytest.raises(ValueError, match="eval.tta='rotate'"):
        Predictor(nn.Identity(), None, 1, tta="rotate")


def test_a_run_validates_and_tests_with_mirroring(tiny_config):
    from scseg.engine.run import run_training

    result = run_training(tiny_config("unet", "eval.tta=mirror"))
    assert result.state == "done" and 0.0 <= result.summary["fg_mean"] <= 1.0
