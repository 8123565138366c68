"""The recalibration-module registry: every module is declared once and every reader (networks, gates, model summary,
config check, run identity, capacity control) follows it; the library presets compose, build and say what they are."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from omegaconf import open_dict
from torch import nn

from scseg.config import CONFIG_DIR, compose_train_config
from scseg.config.check import ConfigError, validate_config
from scseg.engine.gates import capture_gates, find_se_blocks
from scseg.engine.run import build_model, identity
from scseg.engine.spec import RunSpec
from scseg.models import count_parameters, create_model
from scseg.models.se import create_se
from scseg.models.summary import count_multiply_adds, summary_rows
from scseg.run_identity import parse_run_name, read_run_name, run_name
from scseg.se_options import (
    SE_VARIANTS,
    ModuleSpec,
    OptionSpec,
    module_names,
    module_spec,
    register_module,
    unregister_module,
)
from scseg.se_options.builtin import SPATIAL_GATE

BLOCK_MODULES = [n for n in module_names(placement="block") if n != "none"]
TINY = dict(filters=4, depth=2)


def test_registry_lists_every_module_and_each_has_a_config():
    names = module_names()
    assert names[:4] == ("none", "cse", "sse", "scse") and SE_VARIANTS == names
    assert {"cbam", "eca", "coord", "project_excite", "attention_gate"} <= set(names)
    assert module_names(placement="skip") == ("attention_gate",)
    for name in module_names():
        assert (CONFIG_DIR / "se" / f"{name}.yaml").is_file(), name


def test_the_registry_is_torch_free():
    code = "import sys, scseg.se_options, scseg.run_identity; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("channels", [16, 64])
@pytest.mark.parametrize(
    "name, options",
    [
        ("cse", {}),
        ("cse", {"reduction": 4}),
        ("sse", {}),
        ("scse", {}),
        ("scse", {"aggregation": "concat"}),
        ("cbam", {}),
        ("cbam", {"reduction": 4, "spatial_kernel": 3}),
        ("eca", {}),
        ("eca", {"kernel_size": 5}),
        ("coord", {}),
        ("project_excite", {}),
    ],
)
def test_parameter_counts_match_the_formulas(name, options, channels):
    module = create_se(name, channels, options=options)
    assert count_parameters(module) == module_spec(name).count_parameters(channels, **options)


def test_cse_and_scse_formulas_are_the_papers():
    # Roy et al.: cSE adds about C^2 / r weights per block; the U-Net docstring's 4,257 for scSE at C = 64, r = 2
    assert module_spec("cse").count_parameters(64) == 2 * 64 * 32 + 32 + 64
    assert module_spec("scse").count_parameters(64) == 4257
    assert module_spec("sse").count_parameters(64) == 65


@pytest.mark.parametrize("name", ["cse", "sse", "scse"])
def test_multiply_add_formula_is_what_the_summary_counts(name):
    positions = ["encoder", "bottleneck", "decoder"]
    with_se = create_model("unet", 3, se=name, se_positions=positions, **TINY)
    without = create_model("unet", 3, se="none", **TINY)
    extra = count_multiply_adds(with_se, (2, 1, 16, 16)) - count_multiply_adds(without, (2, 1, 16, 16))
    # blocks at 16x16 (enc1, dec1), 8x8 (enc2, dec2), 4x4 (bottleneck), all with 4 channels
    spec = module_spec(name)
    expected = 2 * sum(2 * spec.count_multiply_adds(4, (s, s)) for s in (16, 8)) + 2 * spec.count_multiply_adds(
        4, (4, 4)
    )
    assert extra == expected


class _DummyGate(nn.Module):
    """A module written for this test only: a spatial gate scaled by its one option."""

    def __init__(self, channels: int, spatial_dims: int = 2, *, strength: float = 1.0) -> None:
        super().__init__()
        self.strength = strength
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"spatial_gate": self.strength * torch.sigmoid(self.conv(x))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.maps(x)["spatial_gate"]


@pytest.fixture
def dummy_module():
    spec = register_module(
        ModuleSpec(
            "dummy",
            "Dummy",
            _DummyGate,
            options=(OptionSpec("strength", 1.0, float, positive=True),),
            maps=(SPATIAL_GATE,),
            parameter_count=lambda channels, spatial_dims=2, strength=1.0: channels + 1,
            multiply_adds=lambda channels, spatial, strength=1.0: 2 * channels * math.prod(spatial),
        )
    )
    yield spec
    unregister_module("dummy")


def test_a_module_registered_elsewhere_reaches_every_reader(dummy_module):
    torch.manual_seed(0)
    model = create_model("unet", 3, se="dummy", se_options={"strength": 2.0}, **TINY).eval()
    torch.manual_seed(0)
    plain = create_model("unet", 3, se="none", **TINY)
    weights = model.state_dict()
    for key, value in plain.state_dict().items():  # same seeded path: the backbone is that of se=none
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)
    blocks = find_se_blocks(model)
    assert [b.name for b in blocks] == ["enc1", "enc2", "dec2", "dec1"]
    assert all(b.has_spatial_gate and not b.has_channel_gate for b in blocks)
    with capture_gates(model) as capture:
        model(torch.randn(2, 1, 16, 16))
    gates = capture.collected()
    assert gates["enc1"].spatial.shape == (2, 16, 16) and gates["enc1"].channel is None
    assert all(b.module.strength == 2.0 and b.module.se_options == {"strength": 2.0} for b in blocks)
    extra = count_multiply_adds(model, (1, 1, 16, 16)) - count_multiply_adds(plain, (1, 1, 16, 16))
    assert extra == 2 * (2 * 4 * 16 * 16 + 2 * 4 * 8 * 8)
    assert "dummy" in {r["se"] for r in summary_rows(["unet"], size=16)}
    assert create_model("unet", 3, capacity_match="dummy", **TINY).capacity["variant"] == "dummy"

    cfg = compose_train_config(["se=scse"])
    with open_dict(cfg):
        cfg.se.name = "dummy"
        cfg.se.strength = 2.0
    validate_config(cfg)
    assert RunSpec.from_config(cfg).model.options == {"strength": 2.0}
    assert identity(cfg)[1].startswith("unet-dummy-seed")
    cfg.se.strength = -1.0
    with pytest.raises(ConfigError, match=r"se\.strength.*> 0"):
        validate_config(cfg)
    cse = compose_train_config(["se=cse"])
    with open_dict(cse):
        cse.se.strength = 2.0
    with pytest.raises(ConfigError, match=r"'se\.strength' is an option of dummy, not of se.name='cse'"):
        validate_config(cse)


def test_skip_modules_take_only_the_skip_position():
    with pytest.raises(ValueError, match=r"se\.positions is \[encoder\].*only position is \[skip\]"):
        create_model("unet", 3, se="attention_gate", se_positions=["encoder"], **TINY)
    with pytest.raises(ValueError, match=r"se\.positions holds 'skip'.*'cse' sits after blocks"):
        create_model("unet", 3, se="cse", se_positions=["skip"], **TINY)
    with pytest.raises(ValueError, match="gating_channels"):
        create_se("attention_gate", 8)
    with pytest.raises(ValueError, match="takes no gating signal"):
        create_se("cse", 8, gating_channels=8)
    cfg = compose_train_config(["se=scse"])
    cfg.se.name = "attention_gate"  # scse's positions [encoder, decoder]
    with pytest.raises(ConfigError, match=r"'se\.positions' is invalid.*skip connections"):
        validate_config(cfg)


@pytest.mark.parametrize("name", [*BLOCK_MODULES, "attention_gate"])
def test_capacity_match_accepts_every_module(name):
    model = create_model("unet", 3, capacity_match=name, filters=16, depth=2)
    assert model.capacity["variant"] == name


def test_run_names_follow_the_modules_run_name_option():
    assert run_name("unet", "cbam", None, 0, "abcdef12") == "unet-cbam-seed0-abcdef12"
    assert parse_run_name("unet-cbam-seed0-abcdef12")["se"] == "cbam"
    assert read_run_name("unet-cbam-max-seed0-abcdef12") is None  # cbam has no run-name option
    assert parse_run_name("unet-scse-max-seed0-abcdef12")["aggregation"] == "max"


def test_positions_an_architecture_lacks_are_refused(monkeypatch):
    from scseg.models.quicknat import QuickNAT
    from scseg.se_options import SE_POSITIONS

    monkeypatch.setattr(QuickNAT, "SE_POSITIONS", SE_POSITIONS)  # an architecture without decoder_input or skip
    with pytest.raises(ValueError, match="decoder_input.*quicknat"):
        create_model("quicknat", 3, se="cse", se_positions=["decoder_input"])
    with pytest.raises(ValueError, match="'skip'.*quicknat"):
        create_model("quicknat", 3, se="attention_gate")


@pytest.mark.parametrize("arch", ["unet", "sdnet", "fcdensenet", "quicknat"])
def test_decoder_input_sits_on_the_concatenation(arch):
    small = {
        "fcdensenet": dict(first_filters=8, growth_rate=4, down_layers=[2, 2], up_layers=[2, 2]),
        "quicknat": dict(num_filters=4, depth=2),
    }
    model = create_model(arch, 3, se="cse", se_positions=["decoder_input"], **small.get(arch, TINY)).eval()
    blocks = find_se_blocks(model)
    assert [b.name for b in blocks] == ["dec2_in", "dec1_in"] and {b.position for b in blocks} == {"decoder_input"}
    seen = {}

    def keep(name):
        def hook(module, args, output) -> None:
            seen[name] = args[0].shape

        return hook

    hooks = [b.module.register_forward_hook(keep(b.name)) for b in blocks]
    model(torch.randn(1, 1, 16, 16))
    for hook in hooks:
        hook.remove()
    for block in blocks:  # the block sees the concatenated map: its gate is as wide as that input
        assert block.module.fc1.in_features == seen[block.name][1]


PRESETS = {
    # preset: (the se group it equals or None, positions)
    "authors_scse": (["se=scse", "se.aggregation=max"], {"encoder", "decoder"}),
    "monai_cse": (["se=cse"], {"encoder", "decoder"}),
    "smp_scse": (None, {"decoder_input", "decoder"}),
    "nnunet_cse": (None, {"encoder", "bottleneck"}),
}


@pytest.mark.parametrize("model", ["unet", "sdnet", "fcdensenet"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_library_presets_compose_build_and_cite_their_source(preset, model):
    text = (CONFIG_DIR / "se" / f"{preset}.yaml").read_text()
    assert "Source:" in text and "pproximation" in text
    cfg = compose_train_config([f"se={preset}", f"model={model}", "width=small"])
    validate_config(cfg)
    net = build_model(RunSpec.from_config(cfg), num_classes=3, in_channels=1)
    equals, positions = PRESETS[preset]
    assert {b.position for b in find_se_blocks(net)} == positions
    if equals is not None:  # an exact preset is the same network, so it shares the run folder
        assert identity(cfg) == identity(compose_train_config([*equals, f"model={model}", "width=small"]))


def test_preset_reductions_are_the_libraries():
    smp = create_model("unet", 3, **_preset_args("smp_scse"), filters=64, depth=2)
    widths = {b.name: b.module.cse.fc1.out_features for b in find_se_blocks(smp)}
    assert widths == {"dec2_in": 8, "dec2": 4, "dec1_in": 8, "dec1": 4}  # 128 // 16 and 64 // 16
    nnunet = create_model("unet", 3, **_preset_args("nnunet_cse"), filters=64, depth=2)
    assert {b.module.fc1.out_features for b in find_se_blocks(nnunet)} == {8}  # make_divisible(64 / 16, 8)


def _preset_args(preset: str) -> dict:
    se = RunSpec.from_config(compose_train_config([f"se={preset}"])).model
    return dict(se=se.se, se_reduction=se.reduction, se_aggregation=se.aggregation, se_positions=se.positions)


@pytest.mark.parametrize("name", [*BLOCK_MODULES, "attention_gate"])
def test_every_module_config_composes_validates_and_builds(name):
    cfg = compose_train_config([f"se={name}", "width=small"])
    validate_config(cfg)
    net = build_model(RunSpec.from_config(cfg), num_classes=3, in_channels=1)
    blocks = find_se_blocks(net)
    assert blocks and all(b.module.se_name == name for b in blocks)
    spec = module_spec(name)
    assert all(b.module.se_options == spec.resolve_options(dict(cfg.se)) for b in blocks)
