"""The study's controls: ``se.gate_scale`` (the gate-range control) and ``model.capacity_match`` (a network without
SE widened to an SE variant's parameter count)."""

from __future__ import annotations

import pytest
import torch

from scseg.config.check import ConfigError, validate_config
from scseg.config.compose import compose_train_config
from scseg.engine.run import build_model, identity
from scseg.engine.spec import RunSpec
from scseg.models import count_parameters, create_model, create_se
from scseg.models.capacity import capacity_of


@pytest.mark.parametrize(("name", "aggregation"), [("cse", "add"), ("sse", "add"), ("scse", "add"), ("scse", "max")])
def test_gate_scale_multiplies_the_gates(name, aggregation):
    x = torch.randn(2, 6, 5, 7)
    blocks = []
    for scale in (1.0, 2.0):
        torch.manual_seed(0)
        blocks.append(create_se(name, 6, aggregation=aggregation, gate_scale=scale))
    plain, scaled = blocks
    # every gate twice as large, and since each aggregation is linear in a common factor of both gates, the output too
    for attr in ("cse", "sse") if name == "scse" else (None,):
        a = getattr(plain, attr) if attr else plain
        b = getattr(scaled, attr) if attr else scaled
        torch.testing.assert_close(b.gate(x), 2 * a.gate(x))
    torch.testing.assert_close(scaled(x), 2 * plain(x))
    # the sigmoid gates start near 0.5: at 2 cSE and sSE start near identity, like scSE add
    if name in ("cse", "sse"):
        gate = scaled.gate(x)
        assert 0.6 < float(gate.detach().mean()) < 1.4


def test_gate_scale_one_is_bit_identical_and_hash_neutral():
    torch.manual_seed(0)
    block = create_se("scse", 6)
    x = torch.randn(2, 6, 5, 7)
    torch.manual_seed(0)
    assert torch.equal(create_se("scse", 6, gate_scale=1.0)(x), block(x))
    base = compose_train_config(["se=cse"])
    assert identity(compose_train_config(["se=cse", "se.gate_scale=1.0"])) == identity(base)
    assert identity(compose_train_config(["se=cse", "se.gate_scale=2.0"])) != identity(base)
    # a network without SE has no gate to scale: one folder whatever the value
    assert identity(compose_train_config(["se.gate_scale=2.0"])) == identity(compose_train_config([]))
    with pytest.raises(ValueError, match="gate_scale"):
        create_se("cse", 6, gate_scale=0.0)


@pytest.mark.parametrize(
    ("arch", "width"),
    [("unet", ["width=cpu"]), ("sdnet", ["width=cpu"]), ("fcdensenet", ["width=cpu"]), ("fcdensenet", [])],
)
def test_capacity_match_lands_within_two_percent_of_the_se_network(arch, width):
    """At r = 2 SE adds ~1.5 % to U-Net and SD-Net (their configured width already matches) and ~17 % to
    FC-DenseNet (widened); every matched backbone lands within +-2 % of the scSE network's parameter count. A match
    that is the plain network warns: that run repeats se=none and its control measures nothing (the zoo trained
    U-Net's three times before this said so)."""
    import warnings

    overrides = [f"model={arch}", *width, "experiment_name=t"]
    target = count_parameters(build_model(spec_of([*overrides, "se=scse"]), 28, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        matched = build_model(spec_of([*overrides, "model.capacity_match=scse"]), 28, 1)
    warned = any("this run is the plain network" in str(w.message) for w in caught)
    n = count_parameters(matched)
    assert abs(n / target - 1) <= 0.02, (arch, n, target)
    record = capacity_of(matched)
    assert record["target_params"] == target and record["params"] == n and record["variant"] == "scse"
    plain = count_parameters(build_model(spec_of(overrides), 28, 1))
    assert warned == (n == plain), (arch, n, plain)
    if arch == "unet":
        assert warned
    if target / plain - 1 > 0.05:  # a real widening, not the configured width
        assert n > plain and any(v for v in record["widened"].values())


def test_capacity_match_is_validated_and_hash_neutral():
    base = compose_train_config([])
    assert identity(compose_train_config(["model.capacity_match=null"])) == identity(base)
    assert identity(compose_train_config(["model.capacity_match=scse"])) != identity(base)
    with pytest.raises(ConfigError, match="model.capacity_match"):
        validate_config(compose_train_config(["model.capacity_match=big"]))
    with pytest.raises(ValueError, match="se=none"):
        create_model("unet", 3, filters=8, se="cse", capacity_match="scse")


def test_settings_a_network_without_se_ignores_share_its_folder():
    """A `none` run builds no SE block: its reduction, positions and gate scale cannot change it."""
    base = identity(compose_train_config([]))
    for extra in (["se.reduction=8"], ["se.positions=[encoder]"], ["se.in_bottleneck=true"], ["se.gate_scale=3"]):
        assert identity(compose_train_config(extra)) == base, extra
    assert identity(compose_train_config(["se=cse", "se.reduction=8"])) != identity(compose_train_config(["se=cse"]))


def spec_of(overrides):
    return RunSpec.from_config(compose_train_config(overrides))
