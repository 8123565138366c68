"""The schema of the run config's own groups as dataclasses, registered in Hydra's ConfigStore (group ``schema``).

Hydra composes whatever YAML it is given; the YAML files stay the single place of every default, and these
dataclasses say which keys each group has and of which type. A composed group is validated by merging it into its
structured config (``OmegaConf.structured``): an unknown key, a missing key or a value that cannot be converted
fails there, and the error is re-raised as :class:`ConfigError` naming the full key. Because OmegaConf converts
leniently (``"yes"`` to ``True``, ``3`` to ``"3"``), scalar values are then held to their declared type exactly,
so ``trainer.compile=yes`` is refused instead of silently read as true.

The schemas in the ConfigStore let a user's own config reuse them (``defaults: [/schema/trainer@trainer]`` gives a
typed ``trainer`` group whose overrides Hydra checks at composition). Groups whose keys depend on another choice
(``model``: the architecture's constructor; ``se``: the module's registry options; ``data``, ``loss``) are checked
against those sources in :mod:`scseg.config.check`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """A config key is unknown, missing or of the wrong type; the message names the key."""


@dataclass
class SESchema:
    """The keys of the ``se`` group; a module's own options (its registry spec) come on top of them. The shared
    options (reduction, aggregation, gate_scale) may be left out by a module that has none of them
    (:data:`SE_SHARED_DEFAULTS`)."""

    name: str
    reduction: int | None  # null: the architecture's model.se_reduction, else 2 (scseg.se_options)
    aggregation: str
    positions: Any  # a list, any subset of SE_POSITIONS: checked by _check_se
    in_bottleneck: bool
    gate_scale: float


@dataclass
class TrainerSchema:
    device: str
    max_epochs: int
    iters_per_epoch: int | None
    val_every: int
    early_stopping_patience: int | None
    grad_clip_norm: float | None
    amp: Any  # true | false | auto: checked against AMP settings below
    amp_dtype: str
    compile: bool
    channels_last: bool
    deterministic: bool
    num_threads: int | None
    tune_malloc: bool
    se_kernels: str
    se_kernels_build_timeout_s: float
    progress_bar: Any
    eval_batch_size: int
    eval_resample: str
    checkpoint_every_n_steps: int | None
    checkpoint_every_minutes: float | None
    distributed: bool
    backend: str


@dataclass
class EvalSchema:
    surface_metrics: bool
    nsd_tolerance_mm: Any  # a number (mm) or {structure name: mm, default: mm}: checked by _check_eval
    tta: str


@dataclass
class LoggerSchema:
    enabled: bool
    image_slices: int
    log_every_n_steps: int
    gate_maps: bool


@dataclass
class RootSchema:
    experiment_name: str
    seed: int
    resume: str
    test_split: str


# group name -> schema (the root's own keys under "")
SCHEMAS: dict[str, type] = {
    "": RootSchema,
    "se": SESchema,
    "trainer": TrainerSchema,
    "logger": LoggerSchema,
    "eval": EvalSchema,
}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as ``schema/<group>`` (``schema/root`` for the root keys)."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group="schema", name=group or "root", node=schema)


def check_node(prefix: str, node: dict, schema: type) -> None:
    """Raise :class:`ConfigError` naming ``<prefix><key>`` for an unknown, missing or mistyped key of ``node``."""
    names = [f.name for f in fields(schema)]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except ConfigKeyError as exc:
        raise ConfigError(f"unknown config key '{prefix}{exc.key}'; valid keys: {', '.join(sorted(names))}") from None
    except OmegaConfBaseException as exc:
        value = node.get(exc.key) if isinstance(node, dict) and exc.key is not None else None
        hint = get_type_hints(schema).get(str(exc.key), "?")
        expected = getattr(hint, "__name__", str(hint))
        if value is None:
            raise ConfigError(f"config key '{prefix}{exc.key}' must not be null (expected {expected})") from None
        raise ConfigError(
            f"config key '{prefix}{exc.key}' has {type(value).__name__} value {value!r}; expected {expected}"
        ) from None
    missing = [name for name in names if name in OmegaConf.missing_keys(merged)]
    if missing:
        raise ConfigError(f"missing config key '{prefix}{missing[0]}'")
    hints = get_type_hints(schema)
    for name in names:
        _check_exact_type(prefix + name, node[name], hints[name])


def _check_exact_type(key: str, value: Any, annotation: Any) -> None:
    """Scalars exactly of their declared type (an int is a valid float; a bool is never a number)."""
    text = str(annotation)
    if value is None:
        if "None" not in text and annotation is not Any:
            raise ConfigError(f"config key '{key}' must not be null (expected {text})")
        return
    if annotation is Any:
        return
    expected = [t for t in (bool, int, float, str) if t.__name__ in text.replace("NoneType", "")]
    ok = any(
        isinstance(value, t) and not (t in (int, float) and isinstance(value, bool) and bool not in expected)
        for t in expected
    )
    if float in expected and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"config key '{key}' has {type(value).__name__} value {value!r}; expected {text}")


register_schemas()

__all__ = [
    "SCHEMAS",
    "ConfigError",
    "EvalSchema",
    "LoggerSchema",
    "RootSchema",
    "SESchema",
    "TrainerSchema",
    "check_node",
    "register_schemas",
]
