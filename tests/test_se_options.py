"""se.positions / se.reduction at the config level: validated, built, and hashed so no run folder is renamed."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from scseg.config import compose_train_config
from scseg.config.check import ConfigError, validate_config
from scseg.engine.gates import find_se_blocks
from scseg.engine.precision import resolve_amp
from scseg.engine.run import build_model, identity
from scseg.engine.spec import RunSpec
from scseg.models.se import ChannelSE
from scseg.run_identity import HASH_EXCLUDE, config_hash
from scseg.se_options import se_settings


@pytest.mark.parametrize("model", ["unet", "fcdensenet103"])
@pytest.mark.parametrize("extra", [[], ["se.in_bottleneck=true"], ["se.reduction=4"]])
def test_defaults_hash_exactly_as_configs_from_before_the_new_keys(model, extra):
    cfg = compose_train_config([f"model={model}", "se=scse", *extra])
    old = cfg.copy()
    with open_dict(old):
        del old.se["positions"]
        old.model.pop("se_reduction", None)
        old.trainer.amp = False  # configs from before trainer.amp=auto said false (auto is fp32 on such a CPU)
    if resolve_amp("auto", "cpu"):
        pytest.skip("this CPU has AMX: auto resolves to bf16, which earlier configs never ran")
    assert identity(cfg)[0] == config_hash(old, exclude=HASH_EXCLUDE)


def test_equal_networks_share_one_identity():
    def ident(*overrides: str) -> str:
        return identity(compose_train_config(["se=scse", *overrides]))[0]

    assert ident("se.in_bottleneck=true") == ident("se.positions=[decoder,bottleneck,encoder]")
    assert ident("se.positions=[encoder]") != ident()
    assert ident("se.reduction=null") == ident()  # U-Net has no architecture default: the paper's 2
    assert ident("model=fcdensenet", "se.reduction=null") == ident("model=fcdensenet", "se.reduction=8")
    assert ident("model=fcdensenet", "se.reduction=null") != ident("model=fcdensenet")


def test_null_reduction_takes_the_architecture_default():
    cfg = compose_train_config(["model=fcdensenet", "se=cse", "se.reduction=null"])
    validate_config(cfg)
    assert se_settings(cfg) == {"se_reduction": 8, "se_positions": ["encoder", "decoder"], "se_gate_scale": 1.0}
    assert compose_train_config(["model=fcdensenet103"]).model.se_reduction == 16
    net = build_model(RunSpec.from_config(cfg), num_classes=3, in_channels=1)
    for gate in (m for m in net.modules() if isinstance(m, ChannelSE)):
        assert gate.fc1.out_features == gate.fc1.in_features // 8


def test_positions_reach_the_built_network():
    cfg = compose_train_config(["model=sdnet", "se=scse", "se.positions=[bottleneck,decoder]"])
    validate_config(cfg)
    net = build_model(RunSpec.from_config(cfg), num_classes=3, in_channels=1)
    assert {b.position for b in find_se_blocks(net)} == {"bottleneck", "decoder"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("se.positions=[encoder,middle]", "se.positions"),
        ("se.positions=encoder", "se.positions"),
        ("se.reduction=0", "se.reduction"),
        ("model.se_reduction=-1", "model.se_reduction"),
    ],
)
def test_bad_se_settings_are_named(override, message):
    overrides = ["model=fcdensenet", override]
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_train_config(overrides))


def test_ablation_experiment_sweeps_positions_and_reduction():
    cfg = compose_train_config(["experiment=ablation_se", "se.positions=[encoder]", "se.reduction=8"])
    validate_config(cfg)
    assert (cfg.model.arch, cfg.se.name, cfg.data.name) == ("unet", "scse", "phantom")
    assert se_settings(cfg) == {"se_reduction": 8, "se_positions": ["encoder"], "se_gate_scale": 1.0}


def test_the_se_vocabulary_has_one_home():
    """Variant and aggregation names live in scseg.se_options (torch-free: the report and the config check read
    them); the networks' registry re-exports them and the SE blocks agree."""
    from scseg import models, se_options
    from scseg.models import se as se_blocks

    assert models.SE_VARIANTS is se_options.SE_VARIANTS and models.AGGREGATIONS is se_options.AGGREGATIONS
    assert tuple(se_blocks.SE_VARIANTS) == se_options.SE_VARIANTS
    assert tuple(se_blocks.AGGREGATIONS) == se_options.AGGREGATIONS
