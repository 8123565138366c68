"""Skip modules on the skip connections: the attention gate (Oktay et al. 2018) gates every skip of every
architecture with the decoder's coarser map before the concatenation, from the same seeded path as every SE block
(the backbone stays that of ``none``), and reaches the parameter formula, the summary, capacity control, the config
check and the gate capture."""

from __future__ import annotations

import pytest
import torch

from scseg.config import compose_train_config
from scseg.config.check import validate_config
from scseg.engine.gates import capture_gates, find_se_blocks, map_views
from scseg.engine.run import build_model, identity
from scseg.engine.spec import RunSpec
from scseg.models import architecture_positions, count_parameters, create_model
from scseg.models.attention import AttentionGate
from scseg.models.se import PassSkip, create_se
from scseg.models.summary import count_multiply_adds, summary_rows
from scseg.se_options import module_spec

SMALL = {
    "unet": dict(filters=4, depth=2),
    "sdnet": dict(filters=4, depth=2),
    "quicknat": dict(num_filters=4, depth=2),
    "fcdensenet": dict(first_filters=4, growth_rate=4, down_layers=[1, 2], up_layers=[2, 1], bottleneck_layers=1),
}
# (skip channels, gating channels) of skip2 and skip1: FC-DenseNet's skips are the down blocks' full outputs
# (4 + 1*4, 8 + 2*4) and its gating signal the up path's new maps (bottleneck 1*4, up block 2*4)
CHANNELS = {
    "unet": [(4, 4), (4, 4)],
    "sdnet": [(4, 4), (4, 4)],
    "quicknat": [(4, 4), (4, 4)],
    "fcdensenet": [(16, 4), (8, 8)],
}


def _build(arch: str, se: str = "none", seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(arch, 3, se=se, **SMALL[arch], **kwargs)


@pytest.mark.parametrize("arch", list(SMALL))
def test_every_skip_is_gated_by_the_coarser_decoder_map_before_the_concatenation(arch):
    assert "skip" in architecture_positions(arch)
    model = _build(arch, "attention_gate").eval()
    blocks = find_se_blocks(model)
    assert [(b.name, b.position) for b in blocks] == [("skip2", "skip"), ("skip1", "skip")]
    assert [(b.module.channels, b.module.gating_channels) for b in blocks] == CHANNELS[arch]
    seen = {}

    def keep(name):
        def hook(module, args, output) -> None:
            seen[name] = (args[0].shape, args[1].shape, output)

        return hook

    hooks = [b.module.register_forward_hook(keep(b.name)) for b in blocks]
    out = model(torch.randn(2, 1, 16, 16))
    for hook in hooks:
        hook.remove()
    assert out.shape == (2, 3, 16, 16)
    # skip2 at half resolution gated from the 4x4 bottleneck level, skip1 at full resolution from the 8x8 decoder
    assert seen["skip2"][0][-2:] == (8, 8) and seen["skip2"][1][-2:] == (4, 4)
    assert seen["skip1"][0][-2:] == (16, 16) and seen["skip1"][1][-2:] == (8, 8)


@pytest.mark.parametrize("arch", list(SMALL))
def test_backbone_is_that_of_none_and_gate_weights_follow_the_seed(arch):
    plain = _build(arch).state_dict()
    gated = _build(arch, "attention_gate").state_dict()
    assert set(plain) < set(gated) and all(k.startswith("skip_gates.") for k in set(gated) - set(plain))
    for key, value in plain.items():
        torch.testing.assert_close(gated[key], value, rtol=0, atol=0)
    again, other = _build(arch, "attention_gate"), _build(arch, "attention_gate", seed=1)
    weights = [m.w_x[0].weight for m in again.modules() if isinstance(m, AttentionGate)]
    assert all(torch.equal(a, b) for a, b in zip(weights, [gated[k] for k in gated if k.endswith("w_x.0.weight")]))
    assert not torch.equal(weights[0], next(m for m in other.modules() if isinstance(m, AttentionGate)).w_x[0].weight)
    assert not torch.equal(weights[0], weights[1])


def test_networks_without_skip_modules_pass_the_skip_on():
    model = _build("unet", "scse")
    assert all(isinstance(m, PassSkip) for m in model.skip_gates)
    assert not [k for k in model.state_dict() if k.startswith("skip_gates")]
    x, g = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 2, 2)
    assert create_se("none", 2, gating_channels=3)(x, g) is x


@pytest.mark.parametrize("options", [{}, {"inter_channels": 3}])
@pytest.mark.parametrize(("channels", "gating"), [(8, 8), (16, 4)])
def test_parameter_formula_takes_the_gating_channels(channels, gating, options):
    module = create_se("attention_gate", channels, options=options, gating_channels=gating)
    spec = module_spec("attention_gate")
    assert count_parameters(module) == spec.count_parameters(channels, gating_channels=gating, **options)
    with pytest.raises(ValueError, match="gating_channels"):
        spec.count_parameters(channels, **options)
    with pytest.raises(ValueError, match="gating_channels"):
        module_spec("cse").count_parameters(channels, gating_channels=gating)


@pytest.mark.parametrize("arch", ["unet", "fcdensenet"])
def test_parameters_and_multiply_adds_add_up_to_the_formulas(arch):
    gated, plain = _build(arch, "attention_gate"), _build(arch)
    spec = module_spec("attention_gate")
    sizes = {"skip2": (8, 8), "skip1": (16, 16)}
    blocks = find_se_blocks(gated)
    params = sum(spec.count_parameters(b.module.channels, gating_channels=b.module.gating_channels) for b in blocks)
    assert count_parameters(gated) - count_parameters(plain) == params
    macs = sum(
        spec.count_multiply_adds(b.module.channels, sizes[b.name], gating_channels=b.module.gating_channels)
        for b in blocks
    )
    shape = (2, 1, 16, 16)
    assert count_multiply_adds(gated, shape) - count_multiply_adds(plain, shape) == 2 * macs


def test_summary_and_capacity_control_include_the_attention_gate():
    rows = {r["se"]: r for r in summary_rows(["unet"], size=16)}
    assert rows["attention_gate"]["params"] > rows["none"]["params"]
    assert rows["attention_gate"]["mac_overhead_pct"] > 0
    matched = create_model("unet", 3, capacity_match="attention_gate", se_positions=["encoder"], filters=16, depth=2)
    assert matched.capacity["variant"] == "attention_gate"
    gated = create_model("unet", 3, se="attention_gate", filters=16, depth=2)
    assert matched.capacity["target_params"] == count_parameters(gated)  # counted on every skip


@pytest.mark.parametrize("model", list(SMALL))
def test_config_composes_validates_builds_and_names_the_run(model):
    cfg = compose_train_config(["se=attention_gate", f"model={model}", "width=small"])
    validate_config(cfg)
    assert list(cfg.se.positions) == ["skip"]
    net = build_model(RunSpec.from_config(cfg), num_classes=3, in_channels=1)
    assert {b.position for b in find_se_blocks(net)} == {"skip"}
    assert identity(cfg)[1].startswith(f"{model}-attention_gate-seed0-")
    capacity = compose_train_config(["se=none", "model.capacity_match=attention_gate", f"model={model}"])
    validate_config(capacity)  # none's positions are not the gate's: a skip module is counted on every skip


def test_capture_records_alpha_at_the_skip_resolution_and_reproduces_the_output():
    model = _build("unet", "attention_gate").eval()
    x = torch.randn(2, 1, 16, 20)
    plain = model(x)
    seen = {}
    block = find_se_blocks(model)[1]
    handle = block.module.register_forward_hook(lambda m, args, out: seen.update(io=(args[0], out)))
    with capture_gates(model) as capture:
        hooked = model(x)
    handle.remove()
    torch.testing.assert_close(hooked, plain, rtol=0, atol=0)
    gates = capture.collected()
    assert gates["skip2"].spatial.shape == (2, 8, 10) and gates["skip1"].spatial.shape == (2, 16, 20)
    skip, out = seen["io"]
    torch.testing.assert_close(skip * gates["skip1"].spatial[:, None], out)
    views = map_views(block, gates["skip1"])
    assert [(v.name, v.kind, v.tag) for v in views] == [
        ("attention", "spatial", "gates/attention_gate/attention/skip1")
    ]
