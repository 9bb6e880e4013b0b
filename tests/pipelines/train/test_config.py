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


@pytest.mark.parametrize("env", ["gpu", "fit", "published", "gpu-multi", "click"])
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


def test_gpu_multi_keeps_the_papers_rows_per_step_and_stores_4bit_weights_in_the_model_dtype():
    """conf/gpu-multi: 4 ranks × 8 rows × 4 accumulation = conf/gpu's 8 × 16 rows per optimizer step;
    QLoRA + FSDP needs bnb_4bit_quant_storage = the model dtype (bf16), which the quantization
    settings pass to BitsAndBytesConfig (a conf without quant_storage keeps bitsandbytes' uint8)."""
    from kaggle_qa.modeling import quantization_config, torch_dtype
    from kaggle_qa.pipelines.train.nodes import merge_params

    base = yaml.safe_load((CONF / "base" / "parameters_train.yml").read_text())["train"]
    read = lambda env: TrainConfig.from_dict(merge_params(base, yaml.safe_load((CONF / env / "parameters_train.yml").read_text())["train"]))  # noqa: E731
    multi, single = read("gpu-multi"), read("gpu")
    assert multi.distributed.num_processes > 1 and multi.distributed.backend == "nccl"
    assert (multi.distributed.num_processes * multi.batch_size * multi.gradient_accumulation_steps
            == single.batch_size * single.gradient_accumulation_steps)
    bnb = quantization_config({**multi.quantization, "compute_dtype": multi.compute_dtype})
    assert bnb.bnb_4bit_quant_storage == torch_dtype(multi.compute_dtype) == __import__("torch").bfloat16
    assert quantization_config(single.quantization).bnb_4bit_quant_storage == __import__("torch").uint8
    assert TrainConfig.from_dict(merge_params(base, {"distributed": {"strategy": "fsdp"}})).distributed.strategy == "fsdp"
