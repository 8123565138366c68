"""The three architectures: shapes on odd sizes, gradients, parameter counts, determinism, registry errors."""

from __future__ import annotations

import pytest
import torch

from scseg.models import ARCHITECTURES, SE_VARIANTS, count_parameters, create_model
from scseg.models.blocks import max_unpool2d_deterministic
from scseg.models.se import ConcurrentSE
from scseg.se_options import module_spec

SMALL = {"unet": dict(filters=8), "sdnet": dict(filters=8), "fcdensenet": dict(growth_rate=4, first_filters=8)}


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("se", SE_VARIANTS)
def test_odd_size_shape_gradients_finite(arch, se):
    torch.manual_seed(0)
    # r = 2 for every module with a reduction (CBAM's default 16 needs C >= 16); a skip module has no bottleneck
    in_bottleneck = module_spec(se).placement == "block"
    model = create_model(
        arch, num_classes=5, in_channels=3, se=se, se_reduction=2, se_in_bottleneck=in_bottleneck, **SMALL[arch]
    )
    x = torch.randn(2, 3, 97, 131)
    logits = model(x)
    assert logits.shape == (2, 5, 97, 131)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("arch", list(SMALL))
def test_none_adds_zero_parameters_and_se_instances_are_distinct(arch):
    base = count_parameters(create_model(arch, 4, **SMALL[arch]))
    plain = count_parameters(create_model(arch, 4, se="none", **SMALL[arch]))
    assert base == plain
    model = create_model(arch, 4, se="scse", se_in_bottleneck=True, **SMALL[arch])
    blocks = [m for m in model.modules() if isinstance(m, ConcurrentSE)]
    assert len(blocks) == 9 if arch != "fcdensenet" else len(blocks) == 2 * 4 + 1
    assert len({id(b) for b in blocks}) == len(blocks)
    weights = [b.cse.fc1.weight for b in blocks]
    assert len({w.data_ptr() for w in weights}) == len(weights)


def test_unet_paper_parameter_counts():
    # Derived by hand: encoders 104,384 + 3 x 205,184, bottleneck 205,184, decoders 4 x 307,584, classifier 1,820.
    assert count_parameters(create_model("unet", 28)) == 2_157_276
    assert count_parameters(create_model("unet", 28, se="scse")) == 2_157_276 + 8 * 4_257
    assert count_parameters(create_model("unet", 28, se="scse", se_in_bottleneck=True)) == 2_157_276 + 9 * 4_257


def test_sdnet_parameter_count():
    # 7x7 convs with bias + BN: encoder 1: 3,328; encoders 2-4 and bottleneck: 200,896 each;
    # decoders (128 -> 64): 401,600 each; classifier 64*28+28.
    expected = 3_328 + 4 * 200_896 + 4 * 401_600 + 1_820
    assert expected == 2_415_132
    assert count_parameters(create_model("sdnet", 28)) == expected
    assert count_parameters(create_model("sdnet", 28, se="scse")) == expected + 8 * 4_257


@pytest.mark.parametrize(
    "preset, reference", [("fcdensenet56", 1_376_795), ("fcdensenet67", 3_463_243), ("fcdensenet103", 9_322_091)]
)
def test_fcdensenet_presets_match_reference_counts(preset, reference):
    n = count_parameters(create_model(preset, num_classes=11, in_channels=3))
    assert abs(n - reference) / reference < 0.01
    assert n == reference  # exact with biases on every convolution


def test_preset_kwargs_can_be_overridden():
    a = create_model("fcdensenet56", 11, in_channels=3, growth_rate=8)
    assert count_parameters(a) < 1_376_795


def test_sdnet_deterministic_forward_backward():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        results = []
        for _ in range(2):
            torch.manual_seed(0)
            model = create_model("sdnet", 3, se="scse", filters=4)
            x = torch.randn(1, 1, 37, 45)
            out = model(x)
            out.sum().backward()
            results.append((out.detach(), model.classifier.weight.grad.clone()))
        torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
        torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_deterministic_unpool_matches_torch_bit_for_bit_and_keeps_the_layout(memory_format):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11).contiguous(memory_format=memory_format)
    grads = []
    for unpool in (
        lambda p, i: max_unpool2d_deterministic(p, i, (9, 11)),
        lambda p, i: torch.nn.functional.max_unpool2d(p, i, 2, output_size=(9, 11)),
    ):
        leaf = x.clone().requires_grad_(True)
        pooled, idx = torch.nn.functional.max_pool2d(leaf, 2, return_indices=True)
        out = unpool(pooled, idx)
        (out * torch.arange(out.numel()).reshape(out.shape)).sum().backward()
        grads.append((out.detach(), leaf.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=0)
    assert grads[0][0].is_contiguous(memory_format=memory_format)  # a channels-last network stays channels-last


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_deterministic_unpool_is_exact_in_half_precision(dtype):
    """The window mask is built in the input's dtype (no float64: MPS has none), so it must stay exact there, also
    for frames whose flat indices a half-precision float could not hold (here 64 x 70 > 2048)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 70)
    pooled, idx = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    expected = torch.nn.functional.max_unpool2d(pooled, idx, 2, output_size=(64, 70)).to(dtype)
    out = max_unpool2d_deterministic(pooled.to(dtype), idx, (64, 70))
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_too_small_input_names_the_minimum():
    model = create_model("unet", 2, filters=4)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        model(torch.zeros(1, 1, 8, 40))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(arch="vnet"), "registered: " + ", ".join(ARCHITECTURES)),
        (dict(arch="unet", se="sce"), "none, cse, sse, scse"),
        (dict(arch="unet", se_aggregation="avg"), "add, max, mul, concat"),
        (dict(arch="unet", upsampling="pixelshuffle"), "nearest, bilinear, transposed"),
        (dict(arch="unet", norm="layer"), "batch, instance, group, none"),
    ],
)
def test_bad_names_fail_with_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model(num_classes=3, **kwargs)


@pytest.mark.parametrize("upsampling", ["bilinear", "transposed"])
def test_unet_upsampling_options(upsampling):
    model = create_model("unet", 3, filters=4, upsampling=upsampling)
    assert model(torch.zeros(1, 1, 33, 47)).shape == (1, 3, 33, 47)


def test_summary_table_prints(capsys):
    from scseg.models.summary import main

    main(["--archs", "unet", "--size", "64"])
    out = capsys.readouterr().out
    assert "2,157,276" in out and "scse" in out
