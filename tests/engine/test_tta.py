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


def test_lateral_pairs_are_found_by_name():
    from scseg.engine.inference import lateral_pairs

    names = ["background", "left_amygdala", "brain_stem", "right_amygdala", "Left-Hippocampus", "Right-Hippocampus"]
    assert lateral_pairs(names) == [0, 3, 2, 1, 5, 4]
    assert lateral_pairs(["background", "liver", "right_kidney", "left_kidney", "spleen"]) == [0, 1, 3, 2, 4]
    assert lateral_pairs(["background", "kidney_l", "kidney_r", "left_only"]) == [0, 2, 1, 3]  # no partner: itself


class _Names:
    class_names = ("background", "left_x", "right_x")


def test_a_left_right_flip_swaps_lateral_classes_back():
    """mirror_lr on coronal slices (canonical X = H): identity and the H flip, whose probabilities of left_x and
    right_x are exchanged after flipping back; a network that names sides by position then agrees with itself."""
    x = torch.randn(2, 1, 6, 8)

    class Sided(nn.Module):  # left_x in the low-H half, right_x in the high-H half, whatever the image
        def forward(self, image):
            n, _, h, w = image.shape
            low = (torch.arange(h) < h // 2).float().view(1, 1, h, 1).expand(n, 1, h, w)
            return torch.cat([torch.zeros_like(low), 4 * low, 4 * (1 - low)], dim=1) + 0 * image[:, :1]

    predictor = Predictor(Sided(), _Names(), 2, tta="mirror_lr")
    coronal = 1  # canonical Y: the slice spans X (H) and Z (W)
    assert predictor._flips(coronal) == [((), False), ((-2,), True)]
    assert predictor._flips(0) == [((), False)]  # sagittal slices contain no left-right axis
    assert predictor._flips(None) == [((), False)]
    plain = torch.softmax(Sided()(x), 1)
    torch.testing.assert_close(predictor._scores(x, coronal), plain)  # the swap undoes the flip's side change
    unswapped = Predictor(Sided(), None, 2, tta="mirror_lr")  # no class names: nothing to swap
    assert not torch.allclose(unswapped._scores(x, coronal), plain)
    mirror = Predictor(Sided(), _Names(), 2, tta="mirror")
    assert [swap for _, swap in mirror._flips(coronal)] == [False, False, True, True]
    assert [swap for _, swap in mirror._flips(2)] == [False, False, True, True]  # axial: X is H too


def test_mirror_lr_is_a_valid_setting():
    assert identity(compose_train_config(["eval.tta=mirror_lr"])) != identity(compose_train_config([]))
