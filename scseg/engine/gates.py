"""See inside the recalibration: find a network's SE blocks, capture their gates, summarise them per structure.

The models' forward stays untouched: :class:`GateCapture` puts a forward hook on every SE block that recomputes
the block's maps from the block's inputs (``maps(x)``, which every registered module has, ``maps(x, g)`` for a skip
module such as the attention gate; for scSE the two gates
its halves compute, which hooks on the inner modules would never see). That costs one extra gate computation per
block and only while the capture is open: the trainer opens it for the few validation slices it already predicts
for TensorBoard, ``scseg-gates`` for a whole split.

A block is a module ``create_se`` built (it carries its registry name, ``se_name``) or an instance of a registered
module's class; what its maps are (channel gate, spatial gate, other) comes from its registry spec, so a new module
needs no edit here. Block names are the sites the architecture declared (``scseg.models.blocks.se_site``): ``enc1``
.. ``encN`` (full resolution first), ``bottleneck``, ``decN_in`` (a decoder block's input) and ``decN`` .. ``dec1``
(``dec1`` works at full resolution again, like ``enc1``), ``skipN`` (the skip connection of level N, a skip
module's site). An architecture that declares no sites gets names from its attribute names (``encoders``,
``bottleneck``, ``decoders``), else the module path.

How a map is shown (:func:`map_views`; TensorBoard and ``scseg-gates`` read the same): a ``channel`` map as one
gate per channel (N, C), a ``spatial`` map as a heat map (N, h, w), an ``other`` map shaped like the input as its
mean over channels (Project & Excite's excitation), and the factors of one product (``MapSpec.factor_of``:
coordinate attention's ``a_h x a_w``) as that product, also averaged over channels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scseg.models.se import is_recalibration, outermost_blocks
from scseg.se_options import ModuleSpec, find_module, module_specs
from scseg.se_options.builtin import PAPER_MODULES
from scseg.se_options.registry import load

# Fallback for architectures that declare no SE sites: the first component of a block's module path -> position.
_POSITION_OF = {
    "encoders": "encoder",
    "down_se": "encoder",
    "bottleneck": "bottleneck",
    "bottleneck_se": "bottleneck",
    "decoders": "decoder",
    "up_se": "decoder",
}


def registered_classes() -> dict[type, str]:
    """The class of every registered module whose builder is a class, with its registry name."""
    classes: dict[type, str] = {}
    for spec in module_specs():
        if spec.builder is None:
            continue
        try:
            builder = load(spec.builder)
        except (ImportError, AttributeError):  # an implementation not importable here builds no block either
            continue
        if isinstance(builder, type):
            classes.setdefault(builder, spec.name)
    return classes


def spec_of(module: nn.Module) -> ModuleSpec | None:
    """The registry spec of an SE block (by the name ``create_se`` recorded, else by its class)."""
    name = getattr(module, "se_name", None)
    if name is None:
        name = registered_classes().get(type(module))
    return None if name is None else find_module(name)


@dataclass(frozen=True)
class SEBlock:
    """One recalibration block of a network: readable name, position, module path and the module itself."""

    name: str
    position: str  # encoder | bottleneck | decoder_input | decoder | other
    path: str
    module: nn.Module

    @property
    def spec(self) -> ModuleSpec | None:
        return spec_of(self.module)

    def _has(self, kind: str) -> bool:
        spec = self.spec
        return spec is not None and kind in spec.map_kinds().values()

    @property
    def has_channel_gate(self) -> bool:
        return self._has("channel")

    @property
    def has_spatial_gate(self) -> bool:
        return self._has("spatial")


@dataclass
class Gates:
    """The gates one block applied to one batch: ``channel`` ``(N, C)`` and ``spatial`` ``(N, h, w)``, float32 on
    the model's device (None where the block has no such gate); ``other``: the block's maps of any other kind, by
    name, as the module returned them."""

    channel: torch.Tensor | None
    spatial: torch.Tensor | None
    other: dict[str, torch.Tensor] = field(default_factory=dict)


def _block_name(path: str, model: nn.Module, module: nn.Module) -> tuple[str, str]:
    """(readable name, position): the site the architecture declared, else one read from the module path."""
    site, position = getattr(module, "se_site", None), getattr(module, "se_position", None)
    if isinstance(site, str) and isinstance(position, str):
        return site, position
    head, _, rest = path.partition(".")
    position = _POSITION_OF.get(head)
    if position is None:
        return path, "other"
    if position == "bottleneck":
        return "bottleneck", position
    index = re.match(r"\d+", rest)
    if index is None:
        return path, position
    i = int(index.group())
    if position == "encoder":
        return f"enc{i + 1}", position
    return f"dec{len(model.get_submodule(head)) - i}", position  # decoders run from the deepest level up


def find_se_blocks(model: nn.Module) -> list[SEBlock]:
    """Every SE block of ``model`` in network order (modules inside a block, such as scSE's cSE and sSE halves,
    are part of it, not blocks of their own)."""
    classes = registered_classes()
    blocks = outermost_blocks(model, lambda m: is_recalibration(m) or type(m) in classes)
    paths = {id(m): p for p, m in model.named_modules()}
    out = []
    for module in blocks:
        name, position = _block_name(paths[id(module)], model, module)
        out.append(SEBlock(name, position, paths[id(module)], module))
    return out


@torch.no_grad()
def compute_gates(module: nn.Module, *inputs: torch.Tensor) -> Gates:
    """The maps SE block ``module`` applies to its input ``x`` (N, C, *spatial) (a skip module: to ``x`` with the
    gating signal ``g``), sorted by the kinds its registry spec declares: the channel gate as (N, C), the spatial
    gate as (N, *spatial)."""
    spec = spec_of(module)
    kinds = spec.map_kinds() if spec is not None else {}
    channel = spatial = None
    other: dict[str, torch.Tensor] = {}
    for name, value in module.maps(*inputs).items():
        kind = kinds.get(name, "other")
        if kind == "channel" and channel is None:
            channel = value.flatten(2).squeeze(2).float()
        elif kind == "spatial" and spatial is None:
            spatial = value[:, 0].float()
        else:
            other[name] = value.float()
    return Gates(channel, spatial, other)


class GateCapture:
    """Context manager: while open, every forward through an SE block of ``model`` records that block's gates.

    By default the gates are kept (moved to the CPU) in :attr:`gates` per block name, batches in order; pass
    ``on_gates(block, gates)`` instead to consume each batch's gates on the fly (a whole split would not fit).
    """

    def __init__(self, model: nn.Module, on_gates: Callable[[SEBlock, Gates], None] | None = None) -> None:
        self.blocks = find_se_blocks(model)
        self.on_gates = on_gates
        self.gates: dict[str, list[Gates]] = {b.name: [] for b in self.blocks}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, block: SEBlock) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            gates = compute_gates(module, *args)
            if self.on_gates is not None:
                self.on_gates(block, gates)
            else:
                self.gates[block.name].append(
                    Gates(
                        *(None if g is None else g.detach().cpu() for g in (gates.channel, gates.spatial)),
                        {k: v.detach().cpu() for k, v in gates.other.items()},
                    )
                )

        return hook

    def __enter__(self) -> GateCapture:
        self._handles = [b.module.register_forward_hook(self._hook(b)) for b in self.blocks]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def collected(self) -> dict[str, Gates]:
        """Per block, the recorded batches concatenated (slices in the order they were predicted)."""
        out = {}
        for name, batches in self.gates.items():
            if not batches:
                continue
            channel = [b.channel for b in batches if b.channel is not None]
            spatial = [b.spatial for b in batches if b.spatial is not None]
            other = {k: torch.cat([b.other[k] for b in batches if k in b.other]) for k in batches[0].other}
            out[name] = Gates(torch.cat(channel) if channel else None, torch.cat(spatial) if spatial else None, other)
        return out


@dataclass(frozen=True)
class MapView:
    """One map of one block as it is shown: ``kind`` ``channel`` (values (N, C): bars, histogram) or ``spatial``
    (values (N, h, w): a heat map); ``tag`` its TensorBoard image tag, ``histogram_tag`` its histogram's (the
    paper's channel gates only)."""

    name: str
    kind: str
    values: torch.Tensor
    tag: str
    histogram_tag: str | None = None


def _tag(block: SEBlock, module: str, name: str, kind: str) -> tuple[str, str | None]:
    """``gates/<module>/<map>/<site>``; the paper's modules keep their established tags."""
    if module in PAPER_MODULES:
        if kind == "spatial":
            return f"gates/sse/{block.name}", None
        return f"gates/cse_bars/{block.name}", f"gates/cse/{block.name}"
    return f"gates/{module}/{name}/{block.name}", None


def map_views(block: SEBlock, gates: Gates) -> list[MapView]:
    """Every map of ``block`` that can be shown, in the order its spec declares them: the channel gate (N, C), the
    spatial gate (N, h, w), and each ``other`` map (or product of ``factor_of`` factors) shaped like a 2D input,
    averaged over channels (N, h, w). Maps of any other shape (3D, or not reducible) are left out."""
    spec = block.spec
    module = spec.name if spec is not None else "unknown"
    declared = spec.maps if spec is not None else ()
    first = {
        kind: next((m.name for m in declared if m.kind == kind), f"{kind}_gate") for kind in ("channel", "spatial")
    }
    views: list[tuple[str, str, torch.Tensor]] = []
    if gates.channel is not None:
        views.append((first["channel"], "channel", gates.channel))
    if gates.spatial is not None:
        views.append((first["spatial"], "spatial", gates.spatial))
    factor_of = {m.name: m.factor_of for m in declared}
    products: dict[str, torch.Tensor] = {}
    for name, value in gates.other.items():
        key = factor_of.get(name) or name
        products[key] = value if key not in products else products[key] * value
    for name, value in products.items():
        if value.ndim == 4:  # (N, C, h, w), possibly broadcast from its factors
            views.append((name, "spatial", value.mean(dim=1)))
    out = []
    for name, kind, values in views:
        tag, histogram = _tag(block, module, name, kind)
        out.append(MapView(name, kind, values, tag, histogram))
    return out


@contextmanager
def capture_gates(model: nn.Module, on_gates: Callable[[SEBlock, Gates], None] | None = None) -> Iterator[GateCapture]:
    """``with capture_gates(model) as capture: model(x)`` -> ``capture.collected()``."""
    with GateCapture(model, on_gates) as capture:
        yield capture


@dataclass
class _Moments:
    """Running count, sum, sum of squares (float64) for a mean and a standard deviation without keeping values."""

    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray

    @classmethod
    def zeros(cls, size: int) -> _Moments:
        return cls(np.zeros(size, np.int64), np.zeros(size), np.zeros(size))

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            mean = self.s / self.n
            std = np.sqrt(np.maximum(self.ss / self.n - mean**2, 0.0))
        return mean, std


@dataclass
class BlockGateStats:
    """What one block's gates did over a split: the sSE gate per class region, the cSE gates' distribution.

    For a module other than the paper's, "sSE gate" is its first spatial view and "cSE gates" its channel gate
    (:func:`map_views`: CBAM's spatial and channel gates, ECA's channel gate, the attention gate's alpha, Project &
    Excite's excitation and coordinate attention's ``a_h x a_w`` averaged over channels); ``spatial_map`` and
    ``channel_map`` name them.
    """

    block: SEBlock
    num_classes: int
    resolution: tuple[int, int] | None = None  # (h, w) of the sSE gate of the last batch
    channels: int | None = None
    spatial: _Moments | None = None  # per class id (label downsampled to the gate's size, nearest)
    channel: _Moments | None = None  # one entry: all channel gate values of all slices
    channel_abs_dev: float = 0.0  # sum of |c - 0.5|
    per_channel: _Moments | None = None  # per channel over slices: how selective the block is, channel by channel
    spatial_map: str = ""  # the map summarised as the spatial gate (its registry name)
    channel_map: str = ""  # the map summarised as the channel gate

    def add(self, gates: Gates, labels: torch.Tensor) -> None:
        """Accumulate one batch: ``labels`` (N, H, W) integer class ids at the input resolution."""
        views = map_views(self.block, gates)
        spatial = next((v for v in views if v.kind == "spatial"), None)
        channel = next((v for v in views if v.kind == "channel"), None)
        if spatial is not None:
            self.spatial_map = spatial.name
            size = tuple(spatial.values.shape[-2:])
            self.resolution = size
            small = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
            small = small.to(spatial.values.device).flatten()
            values = spatial.values.double().flatten()
            k = self.num_classes
            if self.spatial is None:
                self.spatial = _Moments.zeros(k)
            self.spatial.n += torch.bincount(small, minlength=k)[:k].cpu().numpy()
            self.spatial.s += torch.bincount(small, weights=values, minlength=k)[:k].cpu().numpy()
            self.spatial.ss += torch.bincount(small, weights=values * values, minlength=k)[:k].cpu().numpy()
        if channel is not None:
            self.channel_map = channel.name
            c = channel.values.double()
            self.channels = int(c.shape[1])
            if self.channel is None:
                self.channel, self.per_channel = _Moments.zeros(1), _Moments.zeros(self.channels)
            self.channel.n += c.numel()
            self.channel.s += float(c.sum())
            self.channel.ss += float((c * c).sum())
            self.channel_abs_dev += float((c - 0.5).abs().sum())
            self.per_channel.n += c.shape[0]
            self.per_channel.s += c.sum(0).cpu().numpy()
            self.per_channel.ss += (c * c).sum(0).cpu().numpy()

    def rows(self, class_names: list[str] | tuple[str, ...]) -> list[dict]:
        """CSV rows: one per class region for the sSE gate, one for the cSE gates (see ``GATE_COLUMNS``)."""
        base = {"block": self.block.name, "position": self.block.position}
        out = []
        if self.spatial is not None:
            mean, std = self.spatial.mean_std()
            h, w = self.resolution or (0, 0)
            for k, name in enumerate(class_names):
                out.append(
                    {
                        **base,
                        "gate": "sse",
                        "resolution": f"{h}x{w}",
                        "region": name,
                        "class_id": k,
                        "n": int(self.spatial.n[k]),
                        "mean": _num(mean[k]),
                        "std": _num(std[k]),
                        "mean_abs_dev_from_half": "",
                        "channel_std": "",
                        "map": self.spatial_map,
                    }
                )
        if self.channel is not None:
            mean, std = self.channel.mean_std()
            channel_means, _ = self.per_channel.mean_std()
            out.append(
                {
                    **base,
                    "gate": "cse",
                    "resolution": f"{self.channels} channels",
                    "region": "all",
                    "class_id": "",
                    "n": int(self.channel.n[0]),
                    "mean": _num(mean[0]),
                    "std": _num(std[0]),
                    "mean_abs_dev_from_half": _num(self.channel_abs_dev / max(int(self.channel.n[0]), 1)),
                    "channel_std": _num(float(np.std(channel_means))),
                    "map": self.channel_map,
                }
            )
        return out


# gate: sse | cse. region: a class name (sSE: the gate inside that class, background included) or "all" (cSE).
# std: spread over pixels (sSE) or over slices x channels (cSE); mean_abs_dev_from_half: mean |c - 0.5|, how far
# the channel gates are from "no recalibration"; channel_std: std over channels of each channel's mean gate. map: the
# module's map summarised (spatial_gate, channel_gate; attention for the attention gate's alpha and, averaged over
# channels, Project & Excite's excitation and coordinate attention's a_h x a_w): sse and cse stand for its kind.
GATE_COLUMNS = (
    "block",
    "position",
    "gate",
    "resolution",
    "region",
    "class_id",
    "n",
    "mean",
    "std",
    "mean_abs_dev_from_half",
    "channel_std",
    "map",
)


def _num(value: float) -> float | str:
    return "" if not np.isfinite(value) else round(float(value), 6)


__all__ = [
    "GATE_COLUMNS",
    "BlockGateStats",
    "GateCapture",
    "Gates",
    "MapView",
    "SEBlock",
    "capture_gates",
    "compute_gates",
    "find_se_blocks",
    "map_views",
    "registered_classes",
    "spec_of",
]
