"""The config schema as Hydra structured configs: registered in the ConfigStore, and the check that names a bad key."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from scseg.config import compose_train_config
from scseg.config.check import validate_config
from scseg.config.schema import SCHEMAS, ConfigError, TrainerSchema, check_node


def test_every_schema_is_in_the_config_store():
    repo = ConfigStore.instance().repo["schema"]
    assert {f"{group or 'root'}.yaml" for group in SCHEMAS} <= set(repo)
    node = repo["trainer.yaml"].node
    assert OmegaConf.get_type(node) is TrainerSchema


@pytest.mark.parametrize(
    "override, message",
    [
        ("+trainer.max_epoch=5", "unknown config key 'trainer.max_epoch'"),
        ("trainer.max_epochs=five", "config key 'trainer.max_epochs' has str value 'five'"),
        ("trainer.compile=yes", "config key 'trainer.compile' has str value 'yes'"),  # OmegaConf alone reads True
        ("trainer.device=3", "config key 'trainer.device' has int value 3"),  # OmegaConf alone reads '3'
        ("logger.image_slices=1.5", "config key 'logger.image_slices'"),
        ("eval.surface_metrics=null", "config key 'eval.surface_metrics' must not be null"),
    ],
)
def test_a_bad_key_fails_naming_it(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(compose_train_config(["experiment=demo", override]))


def test_a_missing_key_is_named():
    node = OmegaConf.to_container(compose_train_config(["experiment=demo"]).trainer)
    del node["val_every"]
    with pytest.raises(ConfigError, match="missing config key 'trainer.val_every'"):
        check_node("trainer.", node, TrainerSchema)


def test_a_user_config_can_type_its_trainer_group_with_the_schema():
    """``defaults: [/schema/trainer@trainer]``: Hydra then refuses a mistyped override at composition."""
    from hydra import compose, initialize_config_dir

    store = ConfigStore.instance()
    store.store(name="typed_user_config", node={"defaults": ["/schema/trainer@trainer", "_self_"]})
    with initialize_config_dir(config_dir=str(__import__("scseg.config").config.CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="typed_user_config", overrides=["trainer.max_epochs=3"])
        assert cfg.trainer.max_epochs == 3
        with pytest.raises(Exception, match="max_epochs"):
            compose(config_name="typed_user_config", overrides=["trainer.max_epochs=abc"])
