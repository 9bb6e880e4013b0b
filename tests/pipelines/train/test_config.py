"""The typed train config: its defaults are conf/base/parameters_train.yml's, unknown keys fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaggle_qa.pipelines.train.config import TrainConfig

CONF = Path(__file__).resolve().parents[3] / "conf"


def test_the_code_defaults_are_the_confs_values():
    conf = yaml.safe_load((CONF / "base" / "parameters_train.yml").read_text())["train"]
    assert TrainConfig().to_dict() == conf
    assert TrainConfig.from_dict(conf) == TrainConfig()
    # the three that contradicted the conf before the typed config
    defaults = TrainConfig()
    assert (defaults.label_token_weight, defaults.pad_to_multiple_of, defaults.max_validation_share) == (4.0, 32, 0.2)


@pytest.mark.parametrize("env", ["gpu", "fit", "published"])
def test_every_conf_environment_builds_a_config(env):
    from kaggle_qa.pipelines.train.nodes import merge_params

    base = yaml.safe_load((CONF / "base" / "parameters_train.yml").read_text())["train"]
    override = yaml.safe_load((CONF / env / "parameters_train.yml").read_text())["train"]
    config = TrainConfig.from_dict(merge_params(base, override))
    assert config.seed == base["seed"]


def test_unknown_or_invalid_keys_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"train\.lora\.rank"):
        TrainConfig.from_dict({"lora": {"rank": 8}})
    with pytest.raises(ValueError, match=r"train\.learnig_rate"):
        TrainConfig.from_dict({"learnig_rate": 1e-4})
    with pytest.raises(ValueError, match="batch_grouping"):
        TrainConfig.from_dict({"batch_grouping": "random"})
    with pytest.raises(ValueError, match="num_processes"):
        TrainConfig.from_dict({"distributed": {"num_processes": 0}})
    assert TrainConfig.from_dict({"lora": {"r": 8}}).lora.alpha == 128  # nested defaults kept
