"""se.positions and se.reduction reach every architecture: SE blocks exactly where asked, cSE as narrow as asked."""

from __future__ import annotations

import itertools

import pytest
import torch

from scseg.engine.gates import find_se_blocks
from scseg.models import count_parameters, create_model
from scseg.models.se import ChannelSE
from scseg.se_options import SE_POSITIONS, resolve_positions

SMALL = {
    "unet": dict(filters=8, depth=3),
    "sdnet": dict(filters=8, depth=3),
    "fcdensenet": dict(growth_rate=4, first_filters=8, down_layers=[2, 2, 2], up_layers=[2, 2, 2], bottleneck_layers=2),
}
SUBSETS = [list(c) for k in range(len(SE_POSITIONS) + 1) for c in itertools.combinations(SE_POSITIONS, k)]


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("positions", SUBSETS, ids=lambda p: "+".join(p) or "nowhere")
def test_se_blocks_exactly_at_the_chosen_positions(arch, positions):
    model = create_model(arch, 3, se="scse", se_positions=positions, **SMALL[arch])
    blocks = find_se_blocks(model)
    expected = {"encoder": 3, "bottleneck": 1, "decoder": 3}
    assert {b.position: sum(x.position == b.position for x in blocks) for b in blocks} == {
        p: expected[p] for p in positions
    }


@pytest.mark.parametrize("arch", list(SMALL))
def test_default_is_encoder_and_decoder_and_in_bottleneck_is_an_alias(arch):
    torch.manual_seed(0)
    default = create_model(arch, 3, se="scse", **SMALL[arch])
    torch.manual_seed(0)
    explicit = create_model(arch, 3, se="scse", se_positions=["decoder", "encoder"], **SMALL[arch])
    assert {b.position for b in find_se_blocks(default)} == {"encoder", "decoder"}
    for a, b in zip(default.state_dict().values(), explicit.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    alias = create_model(arch, 3, se="scse", se_in_bottleneck=True, **SMALL[arch])
    full = create_model(arch, 3, se="scse", se_positions=list(SE_POSITIONS), **SMALL[arch])
    assert count_parameters(alias) == count_parameters(full) > count_parameters(default)


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize("reduction", [1, 2, 4])
def test_every_architecture_honours_the_reduction(arch, reduction):
    model = create_model(arch, 3, se="cse", se_reduction=reduction, se_positions=list(SE_POSITIONS), **SMALL[arch])
    gates = [m for m in model.modules() if isinstance(m, ChannelSE)]
    assert len(gates) == 7
    for gate in gates:
        assert gate.fc1.out_features == gate.fc1.in_features // reduction


def test_unknown_position_is_named():
    with pytest.raises(ValueError, match="any subset of encoder, bottleneck, decoder"):
        create_model("unet", 3, se="scse", se_positions=["middle"], filters=4)
    assert resolve_positions("decoder", in_bottleneck=True) == ("bottleneck", "decoder")
