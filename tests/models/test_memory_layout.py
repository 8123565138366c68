"""Channels-last (trainer.channels_last, on for CPU): the networks compute the same function in either layout, and
the layout-keeping pieces (classifier, unpooling) are exact where they claim to be."""

from __future__ import annotations

import pytest
import torch

from scseg.models import create_model
from scseg.models.blocks import PointwiseConv2d, _Pointwise

SMALL = {"unet": dict(filters=8), "sdnet": dict(filters=8), "fcdensenet": dict(growth_rate=4, first_filters=8)}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pointwise_classifier_equals_a_1x1_convolution_in_both_layouts(memory_format):
    torch.manual_seed(0)
    ours = PointwiseConv2d(16, 28).double()
    conv = torch.nn.Conv2d(16, 28, kernel_size=1).double()
    conv.load_state_dict(ours.state_dict())  # same parameters and state-dict keys as a 1x1 convolution
    x = torch.randn(3, 16, 11, 13, dtype=torch.float64).contiguous(memory_format=memory_format)
    upstream = torch.randn(3, 28, 11, 13, dtype=torch.float64)
    leaves = [x.clone().requires_grad_(True), x.clone().requires_grad_(True)]
    outputs = [module(leaf) for module, leaf in zip((ours, conv), leaves)]
    for out in outputs:
        (out * upstream).sum().backward()
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaves[0].grad, leaves[1].grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.bias.grad, conv.bias.grad, rtol=1e-12, atol=1e-12)
    assert outputs[0].is_contiguous()  # NCHW logits: what the loss's softmax over classes reads fastest
    assert leaves[0].grad.is_contiguous(memory_format=memory_format)  # the gradient keeps the input's layout


def test_pointwise_gradients_numerically():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_Pointwise.apply, (x.requires_grad_(True), weight, bias))


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("se", ["none", "scse"])
def test_networks_compute_the_same_function_in_either_layout(arch, se):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=6, se=se, **SMALL[arch]).double().eval()
    x = torch.randn(2, 1, 40, 44, dtype=torch.float64)
    with torch.no_grad():
        reference = model(x)
        model.to(memory_format=torch.channels_last)
        channels_last = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, reference, rtol=1e-9, atol=1e-9)
