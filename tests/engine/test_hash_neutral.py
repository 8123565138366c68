"""New config keys at their defaults leave the config hash, and so every existing run folder's name, unchanged."""

from __future__ import annotations

from omegaconf import OmegaConf

from scseg.run_identity import HASH_NEUTRAL_DEFAULTS, HASH_PINNED, comparable_settings, config_hash


def test_keys_at_their_neutral_defaults_do_not_change_the_hash():
    # every group a neutral key lives in exists in a real config (only the key itself is new)
    before = {
        "seed": 0,
        "data": {"name": "x", "slices": {"axis": "axial"}},
        "se": {"name": "scse"},
        "model": {},
        "loss": {"name": "ce_dice"},
        "trainer": {"max_epochs": 1},
    }
    after = OmegaConf.create(before)
    for dotted, default in HASH_NEUTRAL_DEFAULTS.items():
        OmegaConf.update(after, dotted, default, force_add=True)
    assert config_hash(OmegaConf.create(before)) == config_hash(after)
    OmegaConf.update(after, "data.slices.fallback_axis", "coronal")
    assert config_hash(OmegaConf.create(before)) != config_hash(after)
    OmegaConf.update(after, "data.slices.fallback_axis", "axial")
    OmegaConf.update(after, "se.positions", ["encoder"], merge=False)
    assert config_hash(OmegaConf.create(before)) != config_hash(after)
    OmegaConf.update(after, "se.positions", ["encoder", "decoder"], merge=False)
    assert config_hash(OmegaConf.create(before)) == config_hash(after)
    OmegaConf.update(after, "trainer.eval_resample", "linear")  # the new default: other numbers, another folder
    assert config_hash(OmegaConf.create(before)) != config_hash(after)


def test_pinned_execution_settings_hash_at_their_old_value_whatever_they_are_set_to():
    # runs written with channels_last: false keep their folder names when the CPU preset turns it on
    old = {"seed": 0, "model": {"arch": "unet"}, "trainer": {"max_epochs": 1, "channels_last": False}}
    for dotted, value in HASH_PINNED.items():
        assert OmegaConf.select(OmegaConf.create(old), dotted) == value
    new = OmegaConf.create(old)
    OmegaConf.update(new, "trainer.channels_last", True)
    assert config_hash(OmegaConf.create(old)) == config_hash(new)
    assert comparable_settings(old) == comparable_settings(OmegaConf.to_container(new))
    # a setting next to it still counts
    OmegaConf.update(new, "trainer.max_epochs", 2)
    assert config_hash(OmegaConf.create(old)) != config_hash(new)
