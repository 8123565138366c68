"""Every SE variant starts from the same backbone (issue 11): SE blocks draw nothing from the global RNG stream.

At a given seed ``none``, ``cse``, ``sse`` and ``scse`` (every aggregation, reduction and position set) must get
identical non-SE parameters and buffers, so a comparison measures the SE block and not a different draw of the
convolutions. The SE weights themselves stay a function of the seed.
"""

from __future__ import annotations

import pytest
import torch

from scseg.models import AGGREGATIONS, create_model, create_se, se_build_scope
from scseg.models.se import ChannelSE, ConcurrentSE, SpatialSE

SMALL = {
    "unet": dict(filters=8, depth=2),
    "sdnet": dict(filters=8, depth=2),
    "fcdensenet": dict(growth_rate=4, first_filters=8, down_layers=[2, 2], up_layers=[2, 2], bottleneck_layers=2),
}
SE_TYPES = (ChannelSE, SpatialSE, ConcurrentSE)
VARIANTS = [("cse", "add"), ("sse", "add")] + [("scse", a) for a in AGGREGATIONS]


def _build(arch: str, se: str = "none", seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(arch, 4, in_channels=1, se=se, **SMALL[arch], **kwargs)


def _backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers outside SE blocks, keyed by name with the SE module names left out."""
    se_prefixes = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, SE_TYPES))
    state = model.state_dict()
    return {k: v for k, v in state.items() if not k.startswith(se_prefixes)}


def _se_state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for m in model.modules() if isinstance(m, SE_TYPES) for p in m.parameters()]


@pytest.mark.parametrize("arch", list(SMALL))
@pytest.mark.parametrize(("se", "aggregation"), VARIANTS, ids=lambda v: str(v))
def test_non_se_weights_equal_those_of_none(arch, se, aggregation):
    base = _backbone(_build(arch))
    model = _build(arch, se, se_aggregation=aggregation)
    assert _se_state(model), "the variant built no SE block"
    other = _backbone(model)
    # the SE modules sit in the block Sequentials / ModuleLists: index names may shift, values and order may not
    assert len(other) == len(base)
    for (name, a), (_, b) in zip(base.items(), other.items()):
        assert a.shape == b.shape and torch.equal(a, b), f"{arch}/{se}-{aggregation}: {name} differs from none"


@pytest.mark.parametrize("arch", list(SMALL))
def test_reduction_and_positions_leave_the_backbone_alone(arch):
    base = _backbone(_build(arch))
    for kwargs in (dict(se_reduction=4), dict(se_positions=["encoder", "bottleneck", "decoder"])):
        other = _backbone(_build(arch, "scse", **kwargs))
        assert all(torch.equal(a, b) for a, b in zip(base.values(), other.values())), kwargs


def test_se_weights_follow_the_seed_and_differ_between_blocks():
    first, again, other_seed = (_se_state(_build("unet", "scse", seed=s)) for s in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other_seed))
    fc1 = [m.cse.fc1.weight for m in _build("unet", "scse").modules() if isinstance(m, ConcurrentSE)]
    assert len(fc1) == 4 and all(not torch.equal(fc1[0], w) for w in fc1[1:])


def test_blocks_built_back_to_back_in_one_network_differ():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with se_build_scope():
        a, b = create_se("cse", 8), create_se("cse", 8)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global stream
    assert not torch.equal(a.fc1.weight, b.fc1.weight)
    torch.manual_seed(0)
    with se_build_scope():
        c = create_se("cse", 8)
    assert torch.equal(a.fc1.weight, c.fc1.weight)
