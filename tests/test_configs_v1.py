"""LLaMA-Factory's v1 schema: the files below follow examples/v1/ at LLaMA-Factory v0.9.5; expected values
are the keys written (or the v1 defaults of v1/config/training_args.py where a key is absent)."""

import json

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.configs import load_config

QLORA = """model: Qwen/Qwen3-0.6B
model_class: llm
template: qwen3_nothink
peft_config:
  name: lora
  r: 16
  lora_alpha: 32
  lora_dropout: 0.05
  target_modules: all
dist_config:
  name: fsdp2
quant_config:
  name: bnb
  quantization_bit: 4
micro_batch_size: 2
cutoff_len: 4096
learning_rate: 1.0e-4
"""


def test_v1_lora_file(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(QLORA)
    loaded = load_config(path)
    assert loaded.format == "llamafactory_v1"
    assert loaded.values == {
        "model": "Qwen/Qwen3-0.6B",  # model
        "framework": "plain",  # v1 runs its own loop (v1/core/base_trainer.py), not transformers' Trainer
        "method": "qlora",  # peft_config.name lora + quant_config.quantization_bit 4
        "rank": 16,  # peft_config.r
        "alpha": 32,  # peft_config.lora_alpha
        "lora_dropout": 0.05,  # peft_config.lora_dropout
        "targets": "all-linear",  # target_modules: all
        "seq_len": 4096,  # cutoff_len
        "batch_size": "2",  # micro_batch_size
        "dtype": "bf16",  # bf16 absent: v1 default True
        "grad_ckpt": True,  # enable_activation_checkpointing absent: v1 default True
        "strategy": "fsdp",  # dist_config.name: fsdp2
    }
    assert "learning_rate" in loaded.ignored


def test_v1_full_defaults_and_context_parallel(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(
        "model: Qwen/Qwen3-0.6B\nmodel_class: llm\ndist_config:\n  name: fsdp2\n  cp_size: 2\nbf16: false\n"
    )
    loaded = load_config(path)
    v = loaded.values
    assert (v["method"], v["seq_len"], v["batch_size"], v["dtype"]) == ("full", 2048, "1", "fp32")  # v1 defaults
    assert any("cp_size: 2 not modelled" in n for n in loaded.notes)


def test_v1_freeze_is_refused_with_the_fix_and_rescued_by_method(tmp_path):
    path = tmp_path / "z.yaml"
    path.write_text("model: 1b\nmodel_class: llm\npeft_config:\n  name: freeze\n  freeze_trainable_layers: 2\n")
    r = CliRunner().invoke(main, ["plan", "--config", str(path)], catch_exceptions=False)
    assert r.exit_code == 2 and "peft_config.name: 'freeze' is not modelled; use lora, or pass --method" in r.output
    r = CliRunner().invoke(main, ["plan", "--config", str(path), "--method", "full", "--json"], catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.output)["methods"][0]["method"] == "full"


@pytest.mark.parametrize("name", ["liger_kernel"])
def test_v1_liger_kernel_is_the_fused_loss(tmp_path, name):
    path = tmp_path / "k.yaml"
    path.write_text(f"model: 1b\nkernel_config:\n  name: {name}\n")
    assert load_config(path).values["loss"] == "fused-ce"
