"""The registry of recalibration modules: one :class:`ModuleSpec` per module, torch-free.

Why one registry: the networks (which class to build), the config check (which names and options are valid), the run
identity (which option joins a run's name), the gate capture (which maps a block exposes), the model summary
(parameters and multiply-adds) and the reports (display names) all read the same declaration, so adding a module
touches no list or ``isinstance`` ladder elsewhere.

A spec names its implementation by import path (``"package.module:Class"``), never by object, so this module and the
config check, run identity and reports that read it stay free of torch. The torch side
(:func:`scseg.models.se.create_se`) imports the class when it builds one. An implementation class takes
``(channels, spatial_dims=2, **options)``, returns a tensor of its input's shape from ``forward(x)`` and its gates
from ``maps(x) -> dict[str, Tensor]`` (names and shapes declared in :attr:`ModuleSpec.maps`).

Options are flat keys of the ``se`` config group (``se.reduction``, ``se.spatial_kernel``...): an option named like
an existing key shares it. Placement says where a module sits: ``block`` (on a block's output, at the architecture's
``se.positions``) or ``skip`` (on every skip connection, position ``skip``: the additive attention gate). A skip
module takes ``(channels, gating_channels, spatial_dims=2, **options)``, ``forward(x, g)`` and ``maps(x, g)`` with
``x`` the skip tensor and ``g`` the decoder's coarser map, and its formulas receive ``gating_channels`` too.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Where a module sits: after a block (on one tensor) or on a skip connection (skip tensor x and gating signal g).
PLACEMENTS: tuple[str, ...] = ("block", "skip")
# What a map is: ``channel`` (N, C, 1, ..., 1), ``spatial`` (N, 1, *spatial), or ``other`` (any other shape, e.g.
# coordinate attention's (N, C, H, 1)); gate statistics and TensorBoard summarise the first two kinds.
MAP_KINDS: tuple[str, ...] = ("channel", "spatial", "other")

_OPTION_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class OptionSpec:
    """One option of a module: the ``se.<name>`` key, its default, its type and valid values.

    ``kind`` is ``int``, ``float``, ``str`` or ``bool``; ``choices`` (if any) lists every valid value; ``minimum`` is
    an inclusive lower bound (``positive`` an exclusive 0) for numbers; ``odd`` asks for an odd integer (kernel
    sizes that keep the spatial size); ``nullable``: ``null`` is valid too (the module then derives the value, e.g.
    ECA's kernel size from the channel count).
    """

    name: str
    default: Any
    kind: type
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    positive: bool = False
    odd: bool = False
    nullable: bool = False
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _OPTION_TYPES:
            raise TypeError(f"option {self.name!r}: kind must be one of bool, int, float, str, got {self.kind!r}")
        self.check(self.default, "<spec>")

    def valid_text(self) -> str:
        """What the option accepts, in words (used in every error message)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[self.kind]
        if self.odd:
            words = "an odd integer"
        if self.positive:
            words += " > 0"
        elif self.minimum is not None:
            words += f" >= {self.minimum:g}"
        return words + (" or null" if self.nullable else "")

    def check(self, value: Any, module: str) -> Any:
        """``value`` converted to the option's type; ``ValueError`` naming ``se.<name>`` and what is valid."""
        if value is None and self.nullable:
            return None
        ok = True
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
        else:
            ok = isinstance(value, str)
        if ok and self.kind in (int, float):
            number = float(value)
            ok = (
                (not self.positive or number > 0)
                and (self.minimum is None or number >= self.minimum)
                and (not self.odd or int(value) % 2 == 1)
            )
        if ok and self.choices is not None:
            ok = value in self.choices
        if not ok:
            raise ValueError(f"se.{self.name} of SE module {module!r} is {value!r}; valid: {self.valid_text()}")
        return self.kind(value)


@dataclass(frozen=True)
class MapSpec:
    """A map a module exposes through ``maps(x)``: its key, its kind (:data:`MAP_KINDS`) and shape in words.

    ``factor_of``: the map is one factor of a gate the module multiplies together (coordinate attention's
    ``a_h x a_w``); maps with the same ``factor_of`` are shown as that product, named ``factor_of``. An ``other``
    map shaped like the input (N, C, *spatial), alone or as such a product, is shown as its mean over channels.
    """

    name: str
    kind: str
    shape: str = ""
    factor_of: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise ValueError(f"map {self.name!r}: kind must be one of {', '.join(MAP_KINDS)}, got {self.kind!r}")


# A formula of channels and options: parameters (``spatial_dims`` a keyword) or multiply-adds per sample (``spatial``
# the input's spatial shape); a skip module's formulas also take ``gating_channels`` (a keyword). Either a callable
# or an import path "package.module:function" (imported when used).
Formula = Callable[..., int] | str


@dataclass(frozen=True)
class ModuleSpec:
    """Everything scseg needs to know about one recalibration module.

    - ``name``: the ``se.name`` value (letters, digits, ``_``: it is part of run-folder names); ``label``: for tables.
    - ``builder``: ``"package.module:Class"`` (or a class or factory, for tests), called as
      ``builder(channels, spatial_dims=..., **options)``; ``None`` for the identity (``none``).
    - ``options``: the module's :class:`OptionSpec` s, each the ``se.<name>`` key of the same name.
    - ``maps``: the maps ``maps(x)`` returns (:class:`MapSpec`).
    - ``parameter_count(channels, spatial_dims=2, **options)`` and ``multiply_adds(channels, spatial, **options)``
      (per sample, ``spatial`` the input's spatial shape; a skip module's both also get ``gating_channels=``, the
      gating signal's channels): the formulas of the module's paper. Multiply-adds count
      convolutions and linear layers (a multiply-add per weight use) and one multiply per element of every gating
      product, as :mod:`scseg.models.summary` counts the backbone; ``None``: the summary counts the module's own
      convolutions and linear layers.
    - ``placement``: ``block`` or ``skip`` (:data:`PLACEMENTS`).
    - ``run_name_option``: an option whose value joins the run-folder name (scSE's aggregation), else ``None``.
    - ``fused_kernels``: the builder takes ``kernels=`` (``trainer.se_kernels``: :mod:`scseg.models.se_fused`).
    - ``reference``: the paper or library the module follows.
    """

    name: str
    label: str
    builder: str | Callable[..., Any] | None
    options: tuple[OptionSpec, ...] = ()
    maps: tuple[MapSpec, ...] = ()
    parameter_count: Formula | None = None
    multiply_adds: Formula | None = None
    placement: str = "block"
    run_name_option: str | None = None
    fused_kernels: bool = False
    reference: str = ""
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch == "_" for ch in self.name):
            raise ValueError(f"SE module name {self.name!r} must be letters, digits and '_' (it names run folders)")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"SE module {self.name!r}: placement must be one of {', '.join(PLACEMENTS)}")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"SE module {self.name!r} declares an option twice: {names}")
        if self.run_name_option is not None and self.run_name_option not in names:
            raise ValueError(f"SE module {self.name!r}: run_name_option {self.run_name_option!r} is not an option")

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def option(self, name: str) -> OptionSpec | None:
        return next((o for o in self.options if o.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """This module's options from ``given`` (keys it does not declare are ignored), defaults for the rest,
        each checked (``ValueError`` naming ``se.<option>``)."""
        return {o.name: o.check(given[o.name], self.name) if o.name in given else o.default for o in self.options}

    def map_kinds(self) -> dict[str, str]:
        return {m.name: m.kind for m in self.maps}

    def _gating(self, gating_channels: int | None) -> dict[str, int]:
        """The extra keyword a skip module's formulas take; ``ValueError`` when it is missing or out of place."""
        if self.placement == "skip":
            if gating_channels is None:
                raise ValueError(f"SE module {self.name!r} sits on skip connections: its counts need gating_channels")
            return {"gating_channels": int(gating_channels)}
        if gating_channels is not None:
            raise ValueError(f"SE module {self.name!r} sits after blocks and has no gating signal (gating_channels)")
        return {}

    def count_parameters(
        self, channels: int, spatial_dims: int = 2, gating_channels: int | None = None, **options: Any
    ) -> int:
        """Parameters of one instance at ``channels`` (the paper's formula), options defaulted and checked; a skip
        module also needs its gating signal's channels."""
        if self.parameter_count is None:
            raise ValueError(f"SE module {self.name!r} declares no parameter_count formula")
        formula = load(self.parameter_count)
        gating = self._gating(gating_channels)
        return int(formula(channels, spatial_dims=spatial_dims, **gating, **self.resolve_options(options)))

    def count_multiply_adds(
        self, channels: int, spatial: tuple[int, ...], gating_channels: int | None = None, **options: Any
    ) -> int | None:
        """Multiply-adds of one instance on one sample of spatial shape ``spatial``; None without a formula. A skip
        module also needs its gating signal's channels."""
        if self.multiply_adds is None:
            return None
        gating = self._gating(gating_channels)
        return int(load(self.multiply_adds)(channels, tuple(spatial), **gating, **self.resolve_options(options)))


def load(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """The object an import path ``"package.module:attribute"`` names (a callable is returned as is)."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    if not attribute:
        raise ValueError(f"{ref!r} is no import path of the form 'package.module:attribute'")
    return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, ModuleSpec] = {}


def register_module(spec: ModuleSpec, replace: bool = False) -> ModuleSpec:
    """Add ``spec`` to the registry (``replace``: overwrite a module of the same name); returns it."""
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
        raise ValueError(f"an SE module named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_module(name: str) -> None:
    """Remove a module (tests that register a dummy one clean up with this)."""
    _REGISTRY.pop(name, None)


def module_names(placement: str | None = None) -> tuple[str, ...]:
    """Registered module names in registration order (``none`` first), optionally only those of one placement."""
    return tuple(n for n, s in _REGISTRY.items() if placement is None or s.placement == placement)


def module_spec(name: str) -> ModuleSpec:
    """The spec of ``name``; ``ValueError`` naming ``se.name`` and the registered names otherwise."""
    spec = _REGISTRY.get(str(name))
    if spec is None:
        raise ValueError(f"unknown SE module {name!r}; se.name is one of: {', '.join(_REGISTRY)}")
    return spec


def find_module(name: str) -> ModuleSpec | None:
    """The spec of ``name`` or None (readers of old run folders, which may name modules no longer registered)."""
    return _REGISTRY.get(str(name))


def module_specs() -> tuple[ModuleSpec, ...]:
    """Every registered recalibration module, in registration order."""
    return tuple(_REGISTRY.values())


def uses_option(name: str, option: str) -> bool:
    """Whether module ``name`` declares ``option`` (False for an unknown module)."""
    spec = _REGISTRY.get(str(name))
    return spec is not None and option in spec.option_names


def run_name_option(name: str) -> str | None:
    """The option whose value joins the run-folder name of module ``name`` (scSE: ``aggregation``), else None."""
    spec = _REGISTRY.get(str(name))
    return None if spec is None else spec.run_name_option


def module_label(name: str) -> str:
    """Display name for tables (``scSE``); the name itself for an unknown module."""
    spec = _REGISTRY.get(str(name))
    return name if spec is None else spec.label


__all__ = [
    "MAP_KINDS",
    "PLACEMENTS",
    "MapSpec",
    "ModuleSpec",
    "OptionSpec",
    "find_module",
    "load",
    "module_label",
    "module_names",
    "module_spec",
    "module_specs",
    "register_module",
    "run_name_option",
    "unregister_module",
    "uses_option",
]
