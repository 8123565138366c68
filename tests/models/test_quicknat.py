"""QuickNAT: shapes on odd sizes, the paper's parameter count by hand, one SE module per block, the same backbone
for every SE variant, a few steps that learn, config composition; and the shared architecture tests run on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scseg.config.check import validate_config
from scseg.config.compose import compose_train_config
from scseg.engine.gates import find_se_blocks
from scseg.engine.run import build_model
from scseg.engine.spec import RunSpec
from scseg.models import ARCHITECTURES, SE_VARIANTS, count_parameters, create_model
from scseg.models.capacity import WIDTH_KNOBS, capacity_of
from scseg.models.quicknat import DenseBlock, QuickNAT
from scseg.models.se import ChannelSE, ConcurrentSE, SpatialSE
from scseg.se_options import module_spec
from tests.models import test_architectures, test_memory_layout, test_same_backbone, test_se_positions

# Documented in configs/model/quicknat.yaml and QuickNAT's docstring (1 input channel, 28 classes).
PAPER_NONE, PAPER_SCSE = 3_516_971, 3_551_027
CPU_NONE, CPU_SCSE = 882_987, 891_827
SE_TYPES = (ChannelSE, SpatialSE, ConcurrentSE)


def dense_block_params(cin: int, f: int, k: int) -> int:
    """BN (2 per channel) before each conv, convs with bias, one shared PReLU slope."""
    c1, c2 = cin + f, cin + 2 * f
    return 2 * cin + (cin * f * k * k + f) + 2 * c1 + (c1 * f * k * k + f) + 2 * c2 + (c2 * f + f) + 1


def test_registered_with_its_width_knob():
    assert ARCHITECTURES["quicknat"] is QuickNAT
    assert WIDTH_KNOBS["quicknat"] == ("num_filters",)


@pytest.mark.parametrize("se", SE_VARIANTS)
@pytest.mark.parametrize("batch", [1, 2])
def test_odd_size_logits(se, batch):
    torch.manual_seed(0)
    # 16 filters: CBAM's default r = 16 needs C >= 16; a skip module has no bottleneck position
    in_bottleneck = module_spec(se).placement == "block"
    model = create_model(
        "quicknat", num_classes=5, in_channels=2, se=se, num_filters=16, se_in_bottleneck=in_bottleneck
    )
    logits = model(torch.randn(batch, 2, 37, 53))
    assert logits.shape == (batch, 5, 37, 53)
    assert torch.isfinite(logits).all()


def test_paper_parameter_count_matches_the_hand_formula():
    f, k = 64, 5
    expected = (
        dense_block_params(1, f, k)  # first encoder block: norm + PReLU on the 1-channel image
        + 3 * dense_block_params(f, f, k)
        + dense_block_params(f, f, k)  # bottleneck
        + 4 * dense_block_params(2 * f, f, k)  # decoder: (skip, unpooled)
        + f * 28
        + 28  # bare 1x1 classifier
    )
    assert expected == PAPER_NONE
    assert count_parameters(create_model("quicknat", 28)) == PAPER_NONE
    assert count_parameters(DenseBlock(1, f, k, "batch")) == dense_block_params(1, f, k) == 114_439
    scse = 64 * 32 + 32 + 32 * 64 + 64 + 64 + 1  # cSE (r = 2) + sSE at C = 64
    assert scse == 4_257
    assert count_parameters(create_model("quicknat", 28, se="scse")) == PAPER_SCSE == PAPER_NONE + 8 * scse


def test_cpu_width_parameter_counts():
    assert count_parameters(create_model("quicknat", 28, num_filters=32)) == CPU_NONE
    assert count_parameters(create_model("quicknat", 28, se="scse", num_filters=32)) == CPU_SCSE


@pytest.mark.parametrize(
    ("positions", "counts"),
    [
        (["encoder", "decoder"], {"encoder": 4, "decoder": 4}),
        (["encoder", "bottleneck", "decoder"], {"encoder": 4, "bottleneck": 1, "decoder": 4}),
        (["bottleneck"], {"bottleneck": 1}),
    ],
)
def test_one_se_module_per_block(positions, counts):
    calls = []

    def factory(channels: int) -> torch.nn.Module:
        calls.append(channels)
        return ChannelSE(channels, reduction=2)

    model = QuickNAT(1, 3, se_factory=factory, num_filters=8, se_positions=positions)
    blocks = find_se_blocks(model)
    assert {p: sum(b.position == p for b in blocks) for p in counts} == counts
    assert len(blocks) == len(calls) == sum(counts.values()) and set(calls) == {8}
    assert len({id(b.module) for b in blocks}) == len(blocks)  # no shared instance
    assert len({b.module.fc1.weight.data_ptr() for b in blocks}) == len(blocks)
    # after the dense block, before the pooling: the block's second module
    assert all(b.path.endswith(".1") for b in blocks)


def test_same_backbone_for_none_and_scse_at_a_seed():
    def backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        se = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, SE_TYPES))
        return {k: v for k, v in model.state_dict().items() if not k.startswith(se)}

    built = {}
    for se in ("none", "scse"):
        torch.manual_seed(3)
        built[se] = create_model("quicknat", 4, se=se, num_filters=8, depth=2)
    a, b = backbone(built["none"]), backbone(built["scse"])
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = create_model("quicknat", 3, se="scse", num_filters=8, depth=2, dropout=0.0)
    x = torch.randn(2, 1, 20, 24)
    y = (x[:, 0] > 0).long() + (x[:, 0] > 1).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_deterministic_forward_backward():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            torch.manual_seed(0)
            model = create_model("quicknat", 3, se="scse", num_filters=4, depth=2)
            out = model(torch.randn(1, 1, 19, 23))
            out.sum().backward()
            results.append((out.detach(), model.classifier.weight.grad.clone()))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    finally:
        torch.use_deterministic_algorithms(previous)


def test_bad_settings_fail_with_message():
    with pytest.raises(ValueError, match="odd"):
        create_model("quicknat", 3, kernel_size=4, num_filters=4)
    with pytest.raises(ValueError, match="depth"):
        create_model("quicknat", 3, depth=0, num_filters=4)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        create_model("quicknat", 3, num_filters=4)(torch.zeros(1, 1, 8, 40))


@pytest.mark.parametrize(("width", "expected"), [([], PAPER_NONE), (["width=cpu"], CPU_NONE), (["width=small"], None)])
def test_config_composes_and_builds(width, expected):
    cfg = compose_train_config(["model=quicknat", *width])
    validate_config(cfg)
    assert cfg.model.arch == "quicknat"
    if expected is None:  # build the small one only (the others are counted on the meta device)
        model = build_model(RunSpec.from_config(cfg), 28, 1)
        assert isinstance(model, QuickNAT) and model(torch.zeros(1, 1, 16, 20)).shape == (1, 28, 16, 20)
        return
    with torch.device("meta"):
        model = build_model(RunSpec.from_config(cfg), 28, 1)
    assert isinstance(model, QuickNAT) and count_parameters(model) == expected


def test_capacity_match_at_cpu_width():
    overrides = ["model=quicknat", "width=cpu", "experiment_name=t"]
    spec = RunSpec.from_config(compose_train_config([*overrides, "model.capacity_match=scse"]))
    with torch.device("meta"):
        matched = build_model(spec, 28, 1)
    record = capacity_of(matched)
    assert record["target_params"] == CPU_SCSE and abs(record["params"] / CPU_SCSE - 1) <= 0.02
    assert set(record["widened"]) == {"num_filters"}


# The shared architecture tests list their architectures in module-level SMALL dicts: run them on QuickNAT too.
SHARED = {
    test_architectures: dict(num_filters=8),
    test_memory_layout: dict(num_filters=8),
    test_same_backbone: dict(num_filters=8, depth=2),
    test_se_positions: dict(num_filters=8, depth=3),
}


@pytest.fixture
def shared_tests_know_quicknat(monkeypatch):
    for module, kwargs in SHARED.items():
        monkeypatch.setitem(module.SMALL, "quicknat", kwargs)


@pytest.mark.usefixtures("shared_tests_know_quicknat")
@pytest.mark.parametrize("se", SE_VARIANTS)
def test_shared_odd_size_and_gradient_test(se):
    test_architectures.test_odd_size_shape_gradients_finite("quicknat", se)


@pytest.mark.usefixtures("shared_tests_know_quicknat")
@pytest.mark.parametrize("se", ["none", "scse"])
def test_shared_memory_layout_test(se):
    test_memory_layout.test_networks_compute_the_same_function_in_either_layout("quicknat", se)


@pytest.mark.usefixtures("shared_tests_know_quicknat")
def test_shared_se_count_and_backbone_tests():
    test_architectures.test_none_adds_zero_parameters_and_se_instances_are_distinct("quicknat")
    for se, aggregation in test_same_backbone.VARIANTS:
        test_same_backbone.test_non_se_weights_equal_those_of_none("quicknat", se, aggregation)
    test_same_backbone.test_reduction_and_positions_leave_the_backbone_alone("quicknat")


@pytest.mark.usefixtures("shared_tests_know_quicknat")
def test_shared_se_position_tests():
    for positions in test_se_positions.SUBSETS:
        test_se_positions.test_se_blocks_exactly_at_the_chosen_positions("quicknat", positions)
    test_se_positions.test_default_is_encoder_and_decoder_and_in_bottleneck_is_an_alias("quicknat")
    for reduction in (1, 2, 4):
        test_se_positions.test_every_architecture_honours_the_reduction("quicknat", reduction)


def test_se_sites_are_named_by_the_architecture():
    positions = ["encoder", "bottleneck", "decoder_input", "decoder"]
    model = create_model("quicknat", 3, se="cse", se_positions=positions, num_filters=4, depth=2)
    blocks = find_se_blocks(model)
    assert [b.name for b in blocks] == ["enc1", "enc2", "bottleneck", "dec2_in", "dec1_in", "dec2", "dec1"]
    assert {b.name: b.module.fc1.in_features for b in blocks if b.position == "decoder_input"} == {
        "dec2_in": 8,
        "dec1_in": 8,
    }  # the concatenation (skip, unpooled): 2F channels
    assert all(b.module.se_site == b.name for b in blocks)
