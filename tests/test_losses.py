"""Losses against hand computations on tiny tensors, and the three reference-code bugs made impossible."""

from __future__ import annotations

import math

import pytest
import torch

from scseg.losses import (
    CombinedLoss,
    SoftDiceLoss,
    WeightedCrossEntropy,
    boundary_map,
    create_loss,
    floor_class_weights,
)


def _nll(logits_pixel: list[float], label: int) -> float:
    """-log softmax(logits)[label] by hand."""
    return -(logits_pixel[label] - math.log(sum(math.exp(v) for v in logits_pixel)))


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    """1x3x2x2 logits and labels; pixels in row-major order."""
    pixels = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [-0.5, 0.3, 1.5], [1.0, 1.0, 1.0]]
    logits = torch.tensor(pixels).T.reshape(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [2, 1]]])
    return logits, labels


# --- boundary map -------------------------------------------------------------------------------------------


def test_boundary_map_marks_pixels_next_to_another_label_only():
    labels = torch.zeros(1, 4, 4, dtype=torch.int64)
    labels[:, :, 2:] = 1
    one = boundary_map(labels, width=1)
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[:, :, 1:3] = True
    assert torch.equal(one, expected)
    assert boundary_map(labels, width=2).all()


def test_boundary_map_uniform_label_and_image_border_are_not_boundaries():
    assert not boundary_map(torch.full((2, 5, 5), 3, dtype=torch.int64)).any()
    with pytest.raises(ValueError, match="boundary_width"):
        boundary_map(torch.zeros(1, 3, 3, dtype=torch.int64), width=0)


# --- weighted cross-entropy -----------------------------------------------------------------------------------


def test_unweighted_ce_equals_hand_computed_mean_nll():
    logits, labels = _tiny()
    pixels = logits[0].permute(1, 2, 0).reshape(4, 3).tolist()
    expected = sum(_nll(p, int(y)) for p, y in zip(pixels, labels.flatten())) / 4
    assert WeightedCrossEntropy()(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_class_weights_apply_per_pixel_before_the_mean():
    logits, labels = _tiny()
    weights = [0.5, 2.0, 3.0]
    pixels = logits[0].permute(1, 2, 0).reshape(4, 3).tolist()
    nll = [_nll(p, int(y)) for p, y in zip(pixels, labels.flatten())]
    w = [weights[int(y)] for y in labels.flatten()]
    per_pixel = sum(wi * li for wi, li in zip(w, nll)) / 4
    after_mean = (sum(w) / 4) * (sum(nll) / 4)  # the reference-code bug
    loss = WeightedCrossEntropy(torch.tensor(weights))(logits, labels)
    assert loss.item() == pytest.approx(per_pixel, rel=1e-6)
    assert abs(per_pixel - after_mean) > 1e-3  # the example distinguishes the two
    # plain mean of w * nll, not torch's division by the sum of weights
    assert abs(per_pixel - sum(wi * li for wi, li in zip(w, nll)) / sum(w)) > 1e-3


def test_boundary_weight_hand_computed():
    labels = torch.tensor([[[0, 0, 1, 1]]])  # boundary at columns 1 and 2
    logits = torch.zeros(1, 2, 1, 4)  # nll = log 2 everywhere
    loss = WeightedCrossEntropy([1.0, 2.0], boundary_weight=3.0)(logits, labels)
    # weights: [1, 1*(1+3), 2*(1+3), 2]
    assert loss.item() == pytest.approx((1 + 4 + 8 + 2) / 4 * math.log(2), rel=1e-6)
    wide = WeightedCrossEntropy([1.0, 2.0], boundary_weight=3.0, boundary_width=2)(logits, labels)
    assert wide.item() == pytest.approx((4 + 4 + 8 + 8) / 4 * math.log(2), rel=1e-6)


def test_integer_class_weights_are_refused():
    for bad in (torch.tensor([1, 2, 3]), [1, 2, 3]):
        with pytest.raises(TypeError, match="floating point"):
            WeightedCrossEntropy(bad)
    with pytest.raises(ValueError, match="non-negative"):
        WeightedCrossEntropy([1.0, -1.0])


def test_ce_rejects_bad_inputs_with_clear_messages():
    logits, labels = _tiny()
    with pytest.raises(ValueError, match="int64"):
        WeightedCrossEntropy()(logits, labels.int())
    with pytest.raises(ValueError, match=r"0\.\.2"):
        WeightedCrossEntropy()(logits, labels + 1)
    with pytest.raises(ValueError, match="does not match"):
        WeightedCrossEntropy()(logits, labels[:, :1])
    with pytest.raises(ValueError, match="3 class weights"):
        WeightedCrossEntropy([1.0, 1.0, 1.0])(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64))


# --- soft Dice ----------------------------------------------------------------------------------------------------


def _dice_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Two pixels: probabilities [.5, .5] (label 0) and [.25, .75] (label 1)."""
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]]).T.reshape(1, 2, 1, 2)
    return logits, torch.tensor([[[0, 1]]])


def test_soft_dice_hand_computed():
    logits, labels = _dice_example()
    both = SoftDiceLoss(smooth=0.0, include_background=True)(logits, labels)
    assert both.item() == pytest.approx(1 - (1 / 1.75 + 1.5 / 2.25) / 2, rel=1e-6)
    fg = SoftDiceLoss(smooth=0.0)(logits, labels)
    assert fg.item() == pytest.approx(1 - 1.5 / 2.25, rel=1e-6)
    smoothed = SoftDiceLoss(smooth=1.0)(logits, labels)
    assert smoothed.item() == pytest.approx(1 - 2.5 / 3.25, rel=1e-6)


def test_soft_dice_takes_logits_and_applies_softmax_once():
    logits, labels = _dice_example()
    loss = SoftDiceLoss(smooth=0.0)
    double = loss(torch.softmax(logits, dim=1), labels)  # what a double softmax computes
    assert abs(loss(logits, labels).item() - double.item()) > 1e-3


def test_absent_class_rules():
    # 3 classes, class 2 absent from the reference; pixel probabilities hand-set via log-probabilities
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]])
    logits = probs.log().T.reshape(1, 3, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    dice1 = (2 * 0.6) / (0.85 + 1)  # smooth 0
    excluded = SoftDiceLoss(smooth=0.0, absent_classes="exclude")(logits, labels)
    assert excluded.item() == pytest.approx(1 - dice1, rel=1e-5)
    included = SoftDiceLoss(smooth=1.0, absent_classes="include")(logits, labels)
    d1, d2 = (1.2 + 1) / (0.85 + 1 + 1), 1 / (0.45 + 1)  # absent class: smooth / (mass + smooth)
    assert included.item() == pytest.approx(1 - (d1 + d2) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="absent_classes"):
        SoftDiceLoss(absent_classes="ignore")


def test_all_background_batch_gives_zero_dice_with_zero_finite_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.zeros(2, 4, 4, dtype=torch.int64)
    loss = SoftDiceLoss()(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and not logits.grad.any()


# --- combined and factory -----------------------------------------------------------------------------------------


def test_combined_is_the_weighted_sum_and_gradients_are_finite():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
    labels = torch.randint(0, 4, (2, 6, 6), generator=gen)
    combined = CombinedLoss(ce_weight=0.7, dice_weight=2.0, class_weights=[0.1, 1.0, 2.0, 3.0], boundary_weight=2.0)
    parts = combined.components(logits, labels)
    ce = WeightedCrossEntropy([0.1, 1.0, 2.0, 3.0], boundary_weight=2.0)(logits, labels)
    dice = SoftDiceLoss()(logits, labels)
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert parts["dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert combined(logits, labels).item() == pytest.approx(0.7 * ce.item() + 2.0 * dice.item(), rel=1e-6)
    parts["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_create_loss_names_and_errors():
    assert isinstance(create_loss("ce", class_weights=[1.0, 2.0]), WeightedCrossEntropy)
    assert isinstance(create_loss("dice", smooth=0.5), SoftDiceLoss)
    combined = create_loss("ce_dice", class_weights=[1.0, 2.0], dice_weight=0.5)
    assert isinstance(combined, CombinedLoss) and combined.dice_weight == 0.5
    with pytest.raises(ValueError, match="ce, dice, ce_dice"):
        create_loss("focal")
    with pytest.raises(ValueError, match="accepted arguments"):
        create_loss("ce", smooth=1.0)
    with pytest.raises(ValueError, match="class_weights"):
        create_loss("dice", class_weights=[1.0, 2.0])


# --- options against background flooding (issue 11) ---------------------------------------------------------------


def test_class_weight_floor_is_a_fraction_of_the_median_weight():
    weights = torch.tensor([0.005, 0.5, 1.0, 2.0, 0.0])  # positive median (0.5 + 1.0) / 2 = 0.75; class 4 absent
    floored = floor_class_weights(weights, 0.25)
    assert floored.tolist() == pytest.approx([0.1875, 0.5, 1.0, 2.0, 0.0])
    assert torch.equal(floor_class_weights(weights, 0.0), weights)
    ce = WeightedCrossEntropy(weights, min_class_weight_ratio=0.25)
    assert ce.class_weights.tolist() == pytest.approx(floored.tolist())
    with pytest.raises(ValueError, match="min_class_weight_ratio"):
        WeightedCrossEntropy(weights, min_class_weight_ratio=-0.1)


def test_additive_boundary_weight_is_the_papers_w0():
    labels = torch.tensor([[[0, 0, 1, 1]]])  # boundary at columns 1 and 2
    logits = torch.zeros(1, 2, 1, 4)  # nll = log 2 everywhere
    # frequencies f = (0.8, 0.2): median-frequency weights median(f)/f = (0.625, 2.5); w0 = 2 median(f)/min(f) = 5
    f = torch.tensor([0.8, 0.2])
    weights = (f.sum() / 2) / f  # the median of two values is their mean
    ce = WeightedCrossEntropy(weights, boundary_weight=1.0, boundary_mode="additive")
    w0 = 2 * (f.sum() / 2) / f.min()
    assert ce.boundary_w0 == pytest.approx(float(w0)) == pytest.approx(5.0)
    expected = [0.625, 0.625 + 5.0, 2.5 + 5.0, 2.5]
    assert ce.pixel_weights(labels)[0, 0].tolist() == pytest.approx(expected)
    assert ce(logits, labels).item() == pytest.approx(sum(expected) / 4 * math.log(2), rel=1e-6)
    # the default stays multiplicative: class_w * (1 + boundary_weight)
    mult = WeightedCrossEntropy(weights, boundary_weight=1.0).pixel_weights(labels)[0, 0].tolist()
    assert mult == pytest.approx([0.625, 1.25, 5.0, 2.5])
    assert WeightedCrossEntropy(boundary_mode="additive").boundary_w0 == 2.0  # unweighted: w0 = 2
    with pytest.raises(ValueError, match="boundary_mode"):
        WeightedCrossEntropy(boundary_mode="both")


def test_new_loss_keys_reach_the_loss_and_leave_the_run_hash_alone():
    from omegaconf import OmegaConf, open_dict

    from scseg.config import compose_train_config
    from scseg.engine.run import identity
    from scseg.losses import create_loss_from_config

    cfg = compose_train_config([])
    assert cfg.loss.boundary_mode == "multiplicative" and cfg.loss.min_class_weight_ratio == 0.0
    older = cfg.copy()  # the config as every run before these keys existed
    with open_dict(older):
        del older.loss["boundary_mode"], older.loss["min_class_weight_ratio"]
    assert identity(older) == identity(cfg)
    tuned = compose_train_config(["loss.min_class_weight_ratio=0.25", "loss.include_background=true"])
    assert identity(tuned) != identity(cfg)
    loss = create_loss_from_config(
        OmegaConf.to_container(tuned.loss, resolve=True), class_weights=lambda: torch.tensor([0.01, 1.0, 2.0])
    )
    assert loss.ce.class_weights.tolist() == pytest.approx([0.25, 1.0, 2.0]) and loss.dice.include_background
