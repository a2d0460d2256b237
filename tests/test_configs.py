"""plan --config: each tool's keys land on the right spec option; flags win; bad files fail in one line.

Expected values are read off the example files in tests/data/configs/ by hand (see each file).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.configs import load_config
from lora_budget.errors import LoraBudgetError

DATA = Path(__file__).parent / "data" / "configs"


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        (
            "axolotl_qlora.yml",
            "axolotl",
            {
                "model": "NousResearch/Llama-2-7b-hf",
                "method": "qlora",  # adapter: qlora + load_in_4bit: true
                "rank": 32,
                "alpha": 16,
                "targets": "all-linear",  # lora_target_linear: true
                "seq_len": 4096,
                "batch_size": "1",
                "grad_accum": 4,
                "optimizer": "paged_adamw",  # paged_adamw_32bit
                "dtype": "bf16",  # bf16: auto
                "grad_ckpt": True,
                "attn": "flash",
                "epochs": 4.0,
                "lora_dropout": 0.05,  # lora_dropout: 0.05
                "framework": "hf-trainer",  # axolotl runs transformers' Trainer
                "kbit_prep": True,  # axolotl v0.18.0 loaders/model.py: 4-bit LoRA without FSDP/ZeRO-3
                "eval_batch_size": 1,  # val_set_size: 0.05 evaluates; eval_batch_size default micro_batch_size
            },
        ),
        (
            "llamafactory_lora_sft.yaml",
            "llamafactory",
            {
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "method": "lora",
                "rank": 8,
                "targets": "all-linear",  # lora_target: all
                "seq_len": 2048,
                "batch_size": "1",
                "grad_accum": 8,
                "dtype": "bf16",
                "grad_ckpt": True,  # LLaMA-Factory checkpoints unless disable_gradient_checkpointing
                "epochs": 3.0,
                "alpha": 16,  # no lora_alpha: LLaMA-Factory v0.9.5 uses 2 x lora_rank
                "framework": "hf-trainer",
            },
        ),
        (
            "llamafactory_qlora_ds.yaml",
            "llamafactory",
            {
                "model": "Qwen/Qwen2.5-7B-Instruct",
                "method": "qlora",  # quantization_bit: 4
                "rank": 16,
                "alpha": 32,
                "targets": "q_proj,v_proj",
                "seq_len": 1024,
                "batch_size": "2",
                "grad_accum": 4,
                "optimizer": "paged_adamw8bit",
                "attn": "flash",  # fa2
                "dtype": "bf16",
                "grad_ckpt": False,
                "epochs": 1.0,
                # deepspeed: examples/deepspeed/ds_z2_config.json is not in the repo; LLaMA-Factory ships
                # that name with zero_optimization.stage 2 and no offload, so the name is read
                "strategy": "zero2",
                "framework": "hf-trainer",
                "kbit_prep": False,  # LLaMA-Factory v0.9.5 never calls prepare_model_for_kbit_training
            },
        ),
        (
            "trl_sft_config.json",
            "trl",
            {
                "model": "Qwen/Qwen2.5-0.5B",
                "method": "lora",  # use_peft: true
                "rank": 32,
                "alpha": 16,
                "targets": "q_proj,k_proj,v_proj,o_proj",
                "seq_len": 1024,  # max_length
                "batch_size": "4",
                "grad_accum": 8,
                "optimizer": "adamw",  # adamw_torch_fused
                "dtype": "fp32",  # no dtype key: TRL v1.9.0 ModelConfig loads float32 (bf16: true is autocast)
                "grad_ckpt": True,
                "attn": "sdpa",
                "epochs": 1.0,
                "lora_dropout": 0.05,  # no lora_dropout: TRL v1.9.0 ModelConfig default
                "framework": "hf-trainer",
            },
        ),
        (
            "adapter_config.json",
            "peft",
            {
                "model": "meta-llama/Llama-3.1-8B",
                "method": "lora",
                "rank": 16,
                "alpha": 32,
                "targets": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                "lora_dropout": 0.0,  # "lora_dropout": 0.0
            },
        ),
        ("config.json", "hf_config", {"model": str(DATA / "config.json")}),
    ],
)
def test_examples_map_to_spec(name, fmt, expected):
    loaded = load_config(DATA / name)
    assert loaded.format == fmt
    assert loaded.values == expected


def _write(path, text):
    path.write_text(text)
    return path


def test_ignored_and_unmodelled_keys_are_reported(tmp_path):
    axo = load_config(DATA / "axolotl_qlora.yml")
    assert "learning_rate" in axo.ignored and "datasets" in axo.ignored
    assert axo.values["lora_dropout"] == 0.05 and "lora_dropout" not in axo.ignored  # lora_dropout: 0.05
    lf = load_config(DATA / "llamafactory_qlora_ds.yaml")
    assert lf.unmodelled == ()  # deepspeed is read now (tests/test_configs_parallel.py)
    r = run("plan", "--config", str(DATA / "llamafactory_qlora_ds.yaml"), "-g", "a100-80gb", "--json")
    assert r.exit_code == 0, r.output
    notes = json.loads(r.output)["notes"]
    assert any("ds_z2_config.json not found" in n and "taken from its name" in n for n in notes)
    assert any("ignored (no effect on memory or speed)" in n and "template" in n for n in notes)
    axo = load_config(DATA / "axolotl_qlora.yml")
    assert axo.unmodelled == ()
    dora = load_config(_write(tmp_path / "dora.yml", "base_model: 7b\nadapter: lora\nuse_dora: true\n"))
    assert [u.split()[0] for u in dora.unmodelled] == ["use_dora"]


def test_file_values_reach_the_plan():
    r = run("plan", "--config", str(DATA / "axolotl_qlora.yml"), "-g", "a100-80gb", "--json")
    data = json.loads(r.output)
    assert data["model"]["name"] == "Llama-2-7B"
    (m,) = data["methods"]
    spec = m["spec"]
    assert (m["method"], spec["seq_len"], spec["grad_accum"], spec["rank"], spec["optimizer"]) == (
        "qlora",
        4096,
        4,
        32,
        "paged_adamw",
    )
    assert spec["grad_ckpt"] is True and spec["attn"] == "flash"


def test_command_line_flags_win():
    r = run(
        "plan",
        "--config",
        str(DATA / "axolotl_qlora.yml"),
        "--seq-len",
        "1024",
        "--method",
        "lora",
        "--no-grad-ckpt",
        "--json",
    )
    data = json.loads(r.output)
    (m,) = data["methods"]
    assert m["method"] == "lora" and m["spec"]["seq_len"] == 1024 and m["spec"]["grad_ckpt"] is False
    assert m["spec"]["rank"] == 32  # still from the file
    assert any("overrode --method, --seq-len, --grad-ckpt" in n for n in data["notes"])


def test_config_epochs_feed_dataset_tokens():
    # num_train_epochs: 3.0 in the file; 20M tokens per epoch -> 60M tokens
    r = run("plan", "--config", str(DATA / "llamafactory_lora_sft.yaml"), "-g", "h100", "--dataset-tokens", "20M")
    assert r.exit_code == 0 and "60,000,000 tokens in" in r.output
    # with --tokens, the file's epochs are not an error
    r = run("plan", "--config", str(DATA / "llamafactory_lora_sft.yaml"), "-g", "h100", "--tokens", "1M")
    assert r.exit_code == 0 and "1,000,000 tokens in" in r.output


def test_model_override_skips_the_files_model(tmp_path):
    bad = tmp_path / "lf.yaml"
    bad.write_text("model_name_or_path: acme/no-such-model-8b\nfinetuning_type: lora\ncutoff_len: 512\n")
    r = run("plan", "--config", str(bad))
    assert r.exit_code == 2 and f"{bad}: model_name_or_path: unknown model" in r.output
    r = run("plan", "--config", str(bad), "--model", "8b", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["methods"][0]["spec"]["seq_len"] == 512


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("base_model: 7b\nadapter: lora\noptimizer: lion_8bit\n", ".yml", "optimizer: optimizer 'lion_8bit' is not"),
        ("base_model: 7b\nadapter: lora\nmicro_batch_size: 0\n", ".yml", "micro_batch_size: must be a positive"),
        ("base_model: 7b\nadapter: lora\nsequence_len: long\n", ".yml", "sequence_len: must be a positive integer"),
        ("base_model: 7b\nadapter: ia3\n", ".yml", "adapter: 'ia3' is not modelled"),
        ("base_model: 7b\nadapter: lora\nbf16: true\nfp16: true\n", ".yml", "bf16: bf16 and fp16 are both true"),
        ("base_model: 7b\nadapter: lora\nlora_target_modules: '.*(q_proj'\n", ".yml", "not a valid regular expression"),
        ("base_model: 7b\n1: x\n", ".yml", "the key 1 is not a name"),
        ("base_model: 7b\nadapter: lora\nlora_alpha: .inf\n", ".yml", "positive finite number"),
        ("model: 7b\npeft_config: {name: lora, lora_alpha: .nan}\n", ".yaml", "non-negative finite number"),
        ("model_name_or_path: 7b\nfinetuning_type: freeze\n", ".yaml", "finetuning_type: 'freeze' is not modelled"),
        ("model_name_or_path: 7b\nquantization_bit: 3\n", ".yaml", "quantization_bit: must be 4 or 8"),
        ('{"per_device_train_batch_size": 2, "optim": "galore_adamw"}', ".json", "optim: optimizer 'galore_adamw'"),
        ('{"peft_type": "IA3", "target_modules": ["k_proj"]}', ".json", "peft_type: only LORA"),
        ('{"hello": 1}', ".json", "unsupported config format"),
        ("[training]\nmicro_batch_size = 1\n", ".toml", "unsupported config format .toml"),
        ("base_model: [unclosed\n", ".yml", "not valid YAML"),
        ("- a\n- b\n", ".yml", "expected a mapping"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, text, suffix, message):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(text)
    with pytest.raises(LoraBudgetError, match="cfg"):
        load_config(path)
    r = run("plan", "--config", str(path))
    assert r.exit_code == 2
    error = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0] and str(path) in error[0]


def test_spec_error_names_the_file(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text('{"peft_type": "LORA", "r": 8, "target_modules": ["c_fc"], "base_model_name_or_path": "7b"}')
    r = run("plan", "--config", str(path))
    assert r.exit_code == 2 and "does not exist" in r.output and f"settings read from {path}" in r.output


def test_missing_file():
    r = run("plan", "--config", "nope.yml")
    assert r.exit_code == 2 and "nope.yml" in r.output


def test_config_keeps_plan_torch_free():
    code = (
        "import sys; from click.testing import CliRunner; from lora_budget.cli import main\n"
        f"r = CliRunner().invoke(main, ['plan', '--config', {str(DATA / 'axolotl_qlora.yml')!r}, '-g', 'h100'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print([m for m in ('torch', 'transformers', 'pandas', 'matplotlib', 'peft', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_trl_model_init_kwargs(tmp_path):
    """SFTConfig.model_init_kwargs (TRL v1.9.0 sft_config.py) set the dtype when the trainer loads the model;
    trl/scripts/sft.py replaces them with ModelConfig's when the file is a script config (model_name_or_path)."""
    kwargs = {"torch_dtype": "bfloat16", "attn_implementation": "flash_attention_2"}
    path = tmp_path / "sft.json"
    path.write_text(json.dumps({"per_device_train_batch_size": 2, "max_length": 512, "model_init_kwargs": kwargs}))
    v = load_config(path).values
    assert (v["dtype"], v["attn"]) == ("bf16", "flash")
    path.write_text(json.dumps({"model_name_or_path": "7b", "max_length": 512, "model_init_kwargs": kwargs}))
    loaded = load_config(path)
    assert loaded.values["dtype"] == "fp32"  # ModelConfig.dtype default float32
    assert any("replaced by the TRL script" in n for n in loaded.notes)


@pytest.mark.parametrize(
    ("pattern", "targets", "partial"),
    [
        # axolotl examples/llama-3-vision: a VLM's text-tower path; Llama-2-7B has all seven modules
        (
            r"model.language_model.layers.[\d]+.(mlp|cross_attn|self_attn).(up|down|gate|q|k|v|o)_proj",
            "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
            False,
        ),
        # PEFT full-matches: ".*(qkv|q|v)_proj" also names qkv_proj, which Llama-2-7B lacks (kept out)
        (r".*(qkv|q|v)_proj", "q_proj,v_proj", False),
        # axolotl examples (layer-restricted attention, every MLP): planned on every layer, with a note
        (r".*\.layers\.(3|7|11)\.self_attn\.(q|v)_proj|.*\.mlp\.down_proj", "q_proj,v_proj,down_proj", True),
    ],
)
def test_target_pattern_is_read_as_peft_matches_it(tmp_path, pattern, targets, partial):
    path = tmp_path / "axo.yml"
    path.write_text(f"base_model: 7b\nadapter: lora\nlora_target_modules: '{pattern}'\n")
    r = run("plan", "--config", str(path), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["methods"][0]["spec"]["targets"] == targets
    assert any("on some layers only" in n for n in data["notes"]) is partial


@pytest.mark.parametrize(
    ("extra", "prepared"),
    [
        ("adapter: qlora\nload_in_4bit: true\n", True),  # single GPU: prepared
        ("adapter: qlora\nload_in_4bit: true\nfsdp_config:\n  reshard_after_forward: true\n", False),  # qlora + FSDP
        # is_qlora_and_fsdp_enabled checks the literal adapter name: a 4-bit "lora" under FSDP is prepared
        ("adapter: lora\nload_in_4bit: true\nfsdp_config:\n  reshard_after_forward: true\n", True),
        (
            "adapter: lora\nload_in_8bit: true\nfsdp_config:\n  reshard_after_forward: true\n"
            "  cpu_ram_efficient_loading: true\n",
            False,
        ),  # FSDP with cpu_ram_efficient_loading
        ("adapter: qlora\nload_in_4bit: true\nquantize_moe_experts: true\n", False),  # quantized experts
    ],
)
def test_axolotl_kbit_preparation_follows_its_loader(tmp_path, extra, prepared):
    """axolotl v0.18.0 loaders/model.py _prepare_model_for_quantization, condition by condition."""
    path = tmp_path / "axo.yml"
    path.write_text("base_model: 7b\nbf16: true\n" + extra)
    assert load_config(path).values["kbit_prep"] is prepared
