"""Training losses: pixel-weighted cross-entropy (class and boundary weights), soft Dice, and their sum.

The paper trains with weighted cross-entropy plus soft Dice. Every loss here takes raw logits ``(N, K, H, W)``
and integer labels ``(N, H, W)`` (int64, values ``0..K-1``) and applies the softmax itself, exactly once. The
authors' reference code had three bugs that this module makes impossible:

- integer class weights (integer division zeroed most of them): class weights must be floating point;
- the pixel weight map multiplied *after* the mean (no per-pixel effect): weights multiply each pixel's NLL
  before any reduction;
- a double softmax in the Dice loss: the Dice loss takes logits and normalises them once, internally.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_NAMES = ("ce", "dice", "ce_dice")
ABSENT_CLASS_RULES = ("exclude", "include")
BOUNDARY_MODES = ("multiplicative", "additive")


def _check_inputs(logits: Tensor, labels: Tensor, loss_name: str) -> int:
    """Validate the loss contract and return the class count K; errors name the loss and what was expected."""
    if logits.ndim != 4:
        raise ValueError(f"{loss_name}: logits must have shape (N, K, H, W); got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{loss_name}: logits must be floating point; got dtype {logits.dtype}")
    if labels.ndim != 3:
        raise ValueError(f"{loss_name}: labels must have shape (N, H, W); got shape {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{loss_name}: labels must be int64 class indices; got dtype {labels.dtype}")
    n, k, h, w = logits.shape
    if tuple(labels.shape) != (n, h, w):
        raise ValueError(
            f"{loss_name}: labels shape {tuple(labels.shape)} does not match logits shape {tuple(logits.shape)}; "
            f"expected labels of shape {(n, h, w)}"
        )
    if k < 2:
        raise ValueError(f"{loss_name}: logits need at least 2 classes for a softmax; got K={k}")
    if labels.numel():
        low, high = torch.aminmax(labels)
        if int(low) < 0 or int(high) >= k:
            raise ValueError(
                f"{loss_name}: label values must lie in 0..{k - 1} (K={k} classes); "
                f"got values in {int(low)}..{int(high)}"
            )
    return k


def _as_class_weights(class_weights: Tensor | Sequence[float] | None, owner: str) -> Tensor | None:
    """Class weights as a 1-D float tensor; integer weights are refused (the reference-code integer-division bug)."""
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights if isinstance(class_weights, Tensor) else list(class_weights))
    if not weights.is_floating_point():
        raise TypeError(
            f"{owner}: class_weights must be floating point (integer weights are how the reference code "
            f"zeroed them by integer division); got dtype {weights.dtype}"
        )
    if weights.ndim != 1 or weights.numel() < 2:
        raise ValueError(
            f"{owner}: class_weights must be a 1-D tensor of K >= 2 values; got shape {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{owner}: class_weights must be finite and non-negative; got {weights.tolist()}")
    return weights.detach().clone().float()


def floor_class_weights(weights: Tensor, min_ratio: float) -> Tensor:
    """Raise every positive class weight to at least ``min_ratio`` x the median of the positive weights.

    Why: median-frequency weights give a class that fills most of the image (background) a weight hundreds of
    times below a small structure's (MALC: 0.0049 vs 1.27), so labelling background as that structure costs
    the cross-entropy almost nothing and a network may flood empty regions with it. For
    median-frequency weights the median weight is about 1, so ``min_ratio`` is about the smallest weight
    allowed. Classes with weight 0 (absent from the training labels) stay 0; ``min_ratio=0`` changes nothing.
    """
    if min_ratio < 0:
        raise ValueError(f"min_class_weight_ratio must be >= 0; got {min_ratio}")
    positive = weights > 0
    if min_ratio == 0 or not bool(positive.any()):
        return weights
    floor = min_ratio * weights[positive].quantile(0.5)
    return torch.where(positive, weights.clamp_min(floor), weights)


def boundary_map(labels: Tensor, width: int = 1) -> Tensor:
    """Pixels whose ``(2*width+1)``-square neighbourhood holds another label: a bool map ``(N, H, W)``.

    Computed on the fly from the (augmented) integer label map with max-pooling: a pixel is on a boundary when
    the maximum and the minimum label in its window differ. The image border is not a boundary (pooling pads
    with -inf, which neither the max nor the min of the window can pick up).
    """
    if width < 1:
        raise ValueError(f"boundary_width must be >= 1 pixel; got {width}")
    if labels.ndim != 3:
        raise ValueError(f"boundary_map: labels must have shape (N, H, W); got shape {tuple(labels.shape)}")
    as_float = labels.unsqueeze(1).float()
    kernel = 2 * width + 1
    window_max = F.max_pool2d(as_float, kernel_size=kernel, stride=1, padding=width)
    window_min = -F.max_pool2d(-as_float, kernel_size=kernel, stride=1, padding=width)
    return (window_max != window_min).squeeze(1)


class WeightedCrossEntropy(nn.Module):
    """Pixel-wise weighted cross-entropy (the paper's weighted CE term).

    Per-pixel weight, with ``w_c = class_weights[label(x)]`` (``class_weights=None`` means all 1) and
    ``edge(x)`` from :func:`boundary_map` with ``boundary_width``:

    - ``boundary_mode="multiplicative"`` (default; this project's original form):
      ``w(x) = w_c * (1 + boundary_weight * edge(x))``. An edge pixel of a low-weight class (background)
      stays low-weight.
    - ``boundary_mode="additive"`` (the paper's and QuickNAT's form, Roy et al.):
      ``w(x) = w_c + boundary_weight * w0 * edge(x)`` with ``w0 = 2 * max_c w_c``, which for median-frequency
      weights ``w_c = median(f) / f_c`` is the paper's ``w0 = 2 * median(f) / min(f)`` (``boundary_weight=1``
      gives exactly the paper's map). Every edge pixel, of whichever class, gets the same extra weight.

    ``min_class_weight_ratio`` floors the class weights first (see :func:`floor_class_weights`).

    Normalisation: the loss is the plain mean over all pixels of ``w(x) * nll(x)``, as in the paper's
    formulation. (torch's ``F.cross_entropy(weight=...)`` instead divides by the sum of weights, which cancels
    a global rescaling of the weights; here rescaling the weights rescales the loss.)
    """

    def __init__(
        self,
        class_weights: Tensor | Sequence[float] | None = None,
        boundary_weight: float = 0.0,
        boundary_width: int = 1,
        boundary_mode: str = "multiplicative",
        min_class_weight_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if boundary_weight < 0:
            raise ValueError(f"WeightedCrossEntropy: boundary_weight must be >= 0; got {boundary_weight}")
        if boundary_width < 1:
            raise ValueError(f"WeightedCrossEntropy: boundary_width must be >= 1 pixel; got {boundary_width}")
        if boundary_mode not in BOUNDARY_MODES:
            raise ValueError(
                f"WeightedCrossEntropy: unknown boundary_mode {boundary_mode!r}; choices: {', '.join(BOUNDARY_MODES)}"
            )
        if min_class_weight_ratio < 0:
            raise ValueError(f"WeightedCrossEntropy: min_class_weight_ratio must be >= 0; got {min_class_weight_ratio}")
        self.boundary_weight = float(boundary_weight)
        self.boundary_width = int(boundary_width)
        self.boundary_mode = boundary_mode
        self.min_class_weight_ratio = float(min_class_weight_ratio)
        weights = _as_class_weights(class_weights, "WeightedCrossEntropy")
        if weights is not None:
            weights = floor_class_weights(weights, self.min_class_weight_ratio)
        self.register_buffer("class_weights", weights)

    @property
    def boundary_w0(self) -> float:
        """The additive mode's edge weight ``w0 = 2 * max_c w_c`` (2 without class weights)."""
        return 2.0 * (float(self.class_weights.max()) if self.class_weights is not None else 1.0)

    def pixel_weights(self, labels: Tensor) -> Tensor:
        """The per-pixel weight map ``(N, H, W)`` float32 for these labels."""
        if self.class_weights is not None:
            weights = self.class_weights.to(labels.device)[labels]
        else:
            weights = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
        if self.boundary_weight > 0:
            edge = boundary_map(labels, self.boundary_width).float()
            if self.boundary_mode == "additive":
                weights = weights + (self.boundary_weight * self.boundary_w0) * edge
            else:
                weights = weights * (1.0 + self.boundary_weight * edge)
        return weights

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        k = _check_inputs(logits, labels, "WeightedCrossEntropy")
        if self.class_weights is not None and self.class_weights.numel() != k:
            raise ValueError(
                f"WeightedCrossEntropy: {self.class_weights.numel()} class weights for logits with K={k} classes"
            )
        nll = F.cross_entropy(logits.float(), labels, reduction="none")
        return (self.pixel_weights(labels) * nll).mean()


class SoftDiceLoss(nn.Module):
    """Multi-class soft Dice loss on softmax probabilities, computed from logits (softmax applied once, inside).

    For each class k, over the whole batch (sums over N, H, W) with probabilities p and one-hot reference g:
    ``dice_k = (2 * sum(p*g) + smooth) / (sum(p) + sum(g) + smooth)``; the loss is ``1 - mean_k dice_k``.
    Do not pass probabilities: the loss would softmax them a second time (the reference code's bug).

    Classes absent from the batch reference (``absent_classes``):

    - ``"exclude"`` (default): a class with no reference pixel in the batch is left out of the mean. Its
      predicted mass is still penalised by the cross-entropy term and, through the softmax, by the lower
      overlap of the classes that are present. If no class is left (e.g. an all-background batch with
      ``include_background=False``) the loss is 0 (with a zero gradient).
    - ``"include"``: every class enters the mean; an absent class scores ``smooth / (sum(p) + smooth)``,
      i.e. loss 0 when it is also not predicted and close to 1 when predicted mass is large.

    ``include_background=False`` (default) leaves class 0 out of the mean; it dominates the pixel count.
    """

    def __init__(self, smooth: float = 1.0, include_background: bool = False, absent_classes: str = "exclude") -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"SoftDiceLoss: smooth must be >= 0; got {smooth}")
        if absent_classes not in ABSENT_CLASS_RULES:
            raise ValueError(
                f"SoftDiceLoss: unknown absent_classes rule {absent_classes!r}; "
                f"choices: {', '.join(ABSENT_CLASS_RULES)}"
            )
        self.smooth = float(smooth)
        self.include_background = bool(include_background)
        self.absent_classes = absent_classes

    def per_class_dice(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Soft Dice per class ``(K,)`` and the bool mask ``(K,)`` of classes present in the batch reference."""
        k = _check_inputs(logits, labels, "SoftDiceLoss")
        probs = torch.softmax(logits.float(), dim=1)
        one_hot = F.one_hot(labels, k).permute(0, 3, 1, 2).to(probs.dtype)
        intersection = (probs * one_hot).sum(dim=(0, 2, 3))
        pred_mass = probs.sum(dim=(0, 2, 3))
        ref_mass = one_hot.sum(dim=(0, 2, 3))
        denominator = pred_mass + ref_mass + self.smooth
        # smooth == 0 and a class absent from both: define its Dice as 1 (nothing to get wrong).
        ratio = (2 * intersection + self.smooth) / denominator.clamp_min(1e-12)
        dice = torch.where(denominator > 0, ratio, torch.ones_like(denominator))
        return dice, ref_mass > 0

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        dice, present = self.per_class_dice(logits, labels)
        keep = torch.ones_like(present)
        if not self.include_background:
            keep[0] = False
        if self.absent_classes == "exclude":
            keep = keep & present
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return 1.0 - dice[keep].mean()


class CombinedLoss(nn.Module):
    """The paper's loss: ``ce_weight * WeightedCrossEntropy + dice_weight * SoftDiceLoss``.

    ``components(logits, labels)`` returns the weighted total and both unweighted terms for logging.
    """

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        class_weights: Tensor | Sequence[float] | None = None,
        boundary_weight: float = 0.0,
        boundary_width: int = 1,
        smooth: float = 1.0,
        include_background: bool = False,
        absent_classes: str = "exclude",
        boundary_mode: str = "multiplicative",
        min_class_weight_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError(
                f"CombinedLoss: ce_weight and dice_weight must be >= 0 and not both 0; got {ce_weight}, {dice_weight}"
            )
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.ce = WeightedCrossEntropy(
            class_weights, boundary_weight, boundary_width, boundary_mode, min_class_weight_ratio
        )
        self.dice = SoftDiceLoss(smooth, include_background, absent_classes)

    def components(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``{"loss": weighted total, "ce": CE term, "dice": Dice term}`` (terms unweighted)."""
        ce = self.ce(logits, labels)
        dice = self.dice(logits, labels)
        return {"loss": self.ce_weight * ce + self.dice_weight * dice, "ce": ce, "dice": dice}

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.components(logits, labels)["loss"]


def create_loss(name: str, class_weights: Tensor | Sequence[float] | None = None, **kwargs) -> nn.Module:
    """Build a loss by config name: ``"ce"`` (weighted CE), ``"dice"`` (soft Dice) or ``"ce_dice"`` (combined).

    ``kwargs`` are the chosen class's constructor arguments; unknown ones raise a ValueError listing the
    accepted ones. Class weights belong to the CE term, so ``"dice"`` refuses them.
    """
    classes: dict[str, type[nn.Module]] = {"ce": WeightedCrossEntropy, "dice": SoftDiceLoss, "ce_dice": CombinedLoss}
    if name not in classes:
        raise ValueError(f"unknown loss {name!r}; choices: {', '.join(LOSS_NAMES)}")
    cls = classes[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "class_weights")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} does not accept {', '.join(unknown)}; accepted arguments: {', '.join(accepted)}"
        )
    if name == "dice":
        if class_weights is not None:
            raise ValueError("loss 'dice' does not use class_weights (they weight the cross-entropy term); pass None")
        return cls(**kwargs)
    return cls(class_weights=class_weights, **kwargs)


CLASS_WEIGHTINGS = ("median_frequency", "none")


def create_loss_from_config(cfg: Mapping[str, Any], class_weights: Callable[[], Tensor] | None = None) -> nn.Module:
    """Build the loss from the ``loss`` config node: ``name``, ``class_weighting`` and the class's keyword arguments.

    ``class_weights`` is called only for ``class_weighting: median_frequency`` (it reads the cached training
    statistics); without it the CE term is unweighted, which is how the start-up config check dry-builds the loss.
    """
    params = dict(cfg)
    name = params.pop("name", None)
    weighting = params.pop("class_weighting", "none")
    if weighting not in CLASS_WEIGHTINGS:
        raise ValueError(
            f"config key 'loss.class_weighting' is {weighting!r}; valid choices: {', '.join(CLASS_WEIGHTINGS)}"
        )
    weights = class_weights() if weighting == "median_frequency" and class_weights is not None else None
    return create_loss(name, class_weights=weights, **params)


__all__ = [
    "CLASS_WEIGHTINGS",
    "create_loss_from_config",
    "ABSENT_CLASS_RULES",
    "BOUNDARY_MODES",
    "LOSS_NAMES",
    "CombinedLoss",
    "SoftDiceLoss",
    "WeightedCrossEntropy",
    "boundary_map",
    "create_loss",
    "floor_class_weights",
]
