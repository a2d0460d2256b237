"""Each tool's defaults for absent keys, training objectives, and memory keys reported as not modelled.

Expected values are the defaults read in each tool's source (cited in lora_budget/configs/defaults.py
and objectives.py): TRL v1.9.0, transformers 5.24, LLaMA-Factory v0.9.5, axolotl v0.18.0, PEFT 0.21.
"""

import json

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.configs import load_config


def _load(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def test_trl_script_defaults(tmp_path):
    loaded = _load(tmp_path, "sft.json", json.dumps({"model_name_or_path": "7b", "dataset_name": "d"}))
    v = loaded.values
    assert v["method"] == "full"  # ModelConfig.use_peft default False
    assert v["grad_ckpt"] is True  # base_config.py gradient_checkpointing default True
    assert v["seq_len"] == 1024  # sft_config.py max_length default 1024
    assert v["batch_size"] == "8"  # transformers per_device_train_batch_size default 8
    assert v["dtype"] == "fp32"  # ModelConfig.dtype default "float32"
    assert v["framework"] == "hf-trainer"


def test_trl_peft_defaults(tmp_path):
    loaded = _load(
        tmp_path, "sft.json", json.dumps({"model_name_or_path": "7b", "use_peft": True, "load_in_4bit": True})
    )
    v = loaded.values
    assert v["method"] == "qlora"
    assert v["targets"] == "q_proj,v_proj"  # lora_target_modules None: peft's mapping for llama
    assert v["lora_dropout"] == 0.05  # ModelConfig.lora_dropout default
    assert v["kbit_prep"] is False  # SFTTrainer does not call prepare_model_for_kbit_training
    assert v["double_quant"] is False  # use_bnb_nested_quant default False
    assert "dtype" not in v and any("compute dtype is float32" in n for n in loaded.notes)


def test_plain_training_arguments_keep_transformers_defaults(tmp_path):
    loaded = _load(tmp_path, "args.json", json.dumps({"output_dir": "o", "optim": "adamw_torch"}))
    assert loaded.values["batch_size"] == "8"  # transformers default
    assert "grad_ckpt" not in loaded.values and "seq_len" not in loaded.values  # not TRL: no TRL defaults


def test_llamafactory_defaults(tmp_path):
    v = _load(tmp_path, "lf.yaml", "model_name_or_path: 7b\nfinetuning_type: lora\n").values
    assert (v["rank"], v["alpha"]) == (8, 16)  # lora_rank 8, lora_alpha None -> 2 x rank
    assert v["targets"] == "all-linear"  # lora_target "all"
    assert v["seq_len"] == 2048  # data_args cutoff_len 2048
    assert v["batch_size"] == "8" and v["grad_ckpt"] is True
    assert "dtype" not in v  # no bf16/fp16: compute dtype inferred (bf16 where the GPU has it)


@pytest.mark.parametrize(
    ("extra", "dtype"),
    [("", "fp32"), ("pure_bf16: true\n", "bf16")],  # adapter.py: trainable params upcast unless pure_bf16
)
def test_llamafactory_full_tuning_dtype(tmp_path, extra, dtype):
    v = _load(tmp_path, "lf.yaml", f"model_name_or_path: 7b\nfinetuning_type: full\nbf16: true\n{extra}").values
    assert v["dtype"] == dtype


def test_llamafactory_both_precisions_off_is_inferred_not_fp32(tmp_path):
    v = _load(tmp_path, "lf.yaml", "model_name_or_path: 7b\nfinetuning_type: lora\nbf16: false\nfp16: false\n").values
    assert "dtype" not in v  # infer_optim_dtype, not fp32


@pytest.mark.parametrize(
    ("keys", "dtype"),
    [
        ("float16: true\n", "fp16"),
        ("bfloat16: true\n", "bf16"),
        ("bf16: auto\n", "bf16"),
        ("fp16: true\n", "fp16"),
        ("", "fp32"),  # resolve_dtype: none of them -> float32
        ("load_in_8bit: true\n", "fp16"),  # resolve_dtype: load_in_8bit -> float16
    ],
)
def test_axolotl_dtype_resolution(tmp_path, keys, dtype):
    assert _load(tmp_path, "a.yml", f"base_model: 7b\nadapter: lora\n{keys}").values["dtype"] == dtype


@pytest.mark.parametrize("key", ["liger_fused_linear_cross_entropy", "cut_cross_entropy"])
def test_axolotl_fused_losses(tmp_path, key):
    assert _load(tmp_path, "a.yml", f"base_model: 7b\nadapter: lora\n{key}: true\n").values["loss"] == "fused-ce"


def test_peft_adapter_defaults(tmp_path):
    v = _load(tmp_path, "adapter_config.json", '{"peft_type": "LORA", "base_model_name_or_path": "7b"}').values
    assert (v["rank"], v["alpha"]) == (8, 8)  # LoraConfig r 8, lora_alpha 8


@pytest.mark.parametrize(
    ("name", "text", "objective", "says"),
    [
        ("a.yml", "base_model: 7b\nadapter: lora\nrl: dpo\n", "dpo", "frozen reference model"),
        ("a.yml", "base_model: 7b\nadapter: lora\nrl: orpo\n", "orpo", "no reference model"),
        ("a.yml", "base_model: 7b\nreward_model: true\n", "reward", "scalar head"),
        ("lf.yaml", "model_name_or_path: 7b\nstage: rm\nfinetuning_type: lora\n", "reward", "scalar head"),
        ("lf.yaml", "model_name_or_path: 7b\nstage: dpo\nfinetuning_type: lora\n", "dpo", "chosen + a rejected"),
        ("grpo.json", '{"model_name_or_path": "7b", "num_generations": 8, "use_vllm": true}', "grpo", "completions"),
        ("dpo.json", '{"model_name_or_path": "7b", "beta": 0.1, "use_peft": true}', "dpo", "reference model"),
    ],
)
def test_objectives_are_recorded_and_noted_in_the_plan(tmp_path, name, text, objective, says):
    path = tmp_path / name
    path.write_text(text)
    assert load_config(path).objective == objective
    r = CliRunner().invoke(main, ["plan", "--config", str(path), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    # the objective is modelled (core/objectives.py): the spec carries it and a note names the key
    assert {m["spec"]["objective"] for m in out["methods"]} == {objective}
    assert [n for n in out["notes"] if f"objective {objective}, planned as TRL v1.9.0 runs it" in n], out["notes"]
    # what the step holds beyond SFT, as the objective's own description says it
    from lora_budget.configs.objectives import DIFFERS

    assert says in DIFFERS[objective]


@pytest.mark.parametrize(
    "key",
    ["torch_compile", "liger_rope", "fp8", "context_parallel_size", "lisa_step_interval", "layers_to_transform"],
)
def test_memory_keys_are_not_modelled_not_no_effect(tmp_path, key):
    loaded = _load(tmp_path, "a.yml", f"base_model: 7b\nadapter: lora\n{key}: 2\n")
    assert any(u.startswith(f"{key} (") for u in loaded.unmodelled) and key not in loaded.ignored


def test_torchao_8bit_adamw_is_planned_as_8bit_adam(tmp_path):
    # optimizer: adamw_torch_8bit is torchao's AdamW8bit: 1-byte states plus an fp32 scale per 256 (as bnb's)
    loaded = _load(tmp_path, "a.yml", "base_model: 7b\nadapter: lora\noptimizer: adamw_torch_8bit\n")
    assert loaded.values["optimizer"] == "adamw8bit"
