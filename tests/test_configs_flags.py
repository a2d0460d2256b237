"""plan --config: typed flags replace file values before they are validated; a file must name its model.

Each file below is written in the test; expected values are the flags typed or the keys written.
"""

import json

import pytest
from click.testing import CliRunner

from lora_budget.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "name", "refused", "flag", "field", "value"),
    [
        # axolotl lora_target_modules as a regex: refused alone, its message says --targets
        (
            "base_model: 7b\nadapter: lora\nlora_target_modules: '.*(q|v_proj'\n",
            "axo.yml",
            "not a valid regular expression",
            ["--targets", "q_proj,v_proj"],
            "targets",
            "q_proj,v_proj",
        ),
        # TRL optim names lora-budget does not model
        (
            '{"model_name_or_path": "7b", "use_peft": true, "optim": "rmsprop"}',
            "trl.json",
            "optimizer 'rmsprop' is not modelled",
            ["--optimizer", "adamw8bit"],
            "optimizer",
            "adamw8bit",
        ),
        (
            "model_name_or_path: 7b\nfinetuning_type: lora\noptim: muon\n",
            "lf.yaml",
            "optimizer 'muon' is not modelled",
            ["--optimizer", "adamw"],
            "optimizer",
            "adamw",
        ),
        (
            "base_model: 7b\nadapter: lora\noptimizer: rmsprop\n",
            "axo.yml",
            "optimizer 'rmsprop' is not modelled",
            ["--optimizer", "sgd"],
            "optimizer",
            "sgd",
        ),
        # a bad attention value and a bad sequence length are replaced the same way
        (
            "model_name_or_path: 7b\nfinetuning_type: lora\nflash_attn: fa9\n",
            "lf.yaml",
            "flash_attn: must be auto",
            ["--attn", "eager"],
            "attn",
            "eager",
        ),
        (
            "base_model: 7b\nadapter: lora\nsequence_len: long\n",
            "axo.yml",
            "sequence_len: must be a positive integer",
            ["--seq-len", "512"],
            "seq_len",
            512,
        ),
        # a method lora-budget does not model, replaced by --method
        (
            "base_model: 7b\nadapter: ia3\n",
            "axo.yml",
            "adapter: 'ia3' is not modelled",
            ["--method", "lora"],
            "method",
            "lora",
        ),
        (
            "model_name_or_path: 7b\nfinetuning_type: freeze\n",
            "lf.yaml",
            "finetuning_type: 'freeze' is not modelled",
            ["--method", "qlora"],
            "method",
            "qlora",
        ),
    ],
)
def test_a_typed_flag_rescues_a_refused_file_value(tmp_path, text, name, refused, flag, field, value):
    path = _write(tmp_path / name, text)
    r = run("plan", "--config", path)
    assert r.exit_code == 2 and refused in r.output
    r = run("plan", "--config", path, *flag, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    (m,) = data["methods"]  # the file (or --method) says one method
    assert (m if field == "method" else m["spec"])[field] == value
    assert any("the command line overrode" in n and flag[0] in n for n in data["notes"]), data["notes"]


def test_axolotl_offloaded_checkpointing_is_planned_as_offloaded_checkpoints(tmp_path):
    """axolotl's ``gradient_checkpointing: offload`` moves each layer's checkpoint to CPU memory:
    ``--grad-ckpt --ckpt-offload``; a typed ``--no-grad-ckpt`` replaces both."""
    path = _write(tmp_path / "axo.yml", "base_model: 7b\nadapter: lora\ngradient_checkpointing: offload\n")
    spec = json.loads(run("plan", "--config", path, "--json").output)["methods"][0]["spec"]
    assert spec["grad_ckpt"] is True and spec["ckpt_offload"] is True
    r = run("plan", "--config", path, "--no-grad-ckpt", "--json")
    spec = json.loads(r.output)["methods"][0]["spec"]
    assert spec["grad_ckpt"] is False and not spec.get("ckpt_offload")


@pytest.mark.parametrize(
    ("head", "value", "on", "note"),
    [
        ("model_name_or_path: 7b\nuse_peft: true\n", "true", True, None),  # TRL SFTConfig
        ("base_model: 7b\nadapter: lora\n", "true", True, None),  # axolotl
        ("base_model: 7b\nadapter: lora\n", "disk", True, None),
        ("base_model: 7b\nadapter: lora\n", "legacy", True, "legacy (synchronous"),
        ("base_model: 7b\nadapter: lora\n", "hidden_states", False, "hidden_states not modelled"),
        ("base_model: 7b\nadapter: lora\n", "false", False, None),
    ],
)
def test_activation_offloading_key_sets_the_option(tmp_path, head, value, on, note):
    """TRL's and axolotl's ``activation_offloading`` (axolotl runs TRL's OffloadActivations) is
    ``--activation-offload``; axolotl's modes either keep TRL's rules or get a note."""
    path = _write(tmp_path / "cfg.yml", f"{head}gradient_checkpointing: true\nactivation_offloading: {value}\n")
    data = json.loads(run("plan", "--config", path, "--json").output)
    assert bool(data["methods"][0]["spec"].get("activation_offload")) is on
    if note:
        assert any(note in n for n in data["notes"]), data["notes"]
    else:
        assert not any("activation_offloading" in n and "not modelled" in n for n in data["notes"])
    r = run("plan", "--config", path, "--no-activation-offload", "--json")
    assert not json.loads(r.output)["methods"][0]["spec"].get("activation_offload")


@pytest.mark.parametrize(
    ("text", "name", "key"),
    [
        ("adapter: lora\nsequence_len: 1024\nmicro_batch_size: 2\n", "axo.yml", "base_model"),
        ("finetuning_type: lora\ncutoff_len: 512\n", "lf.yaml", "model_name_or_path"),
        ('{"per_device_train_batch_size": 2, "use_peft": true}', "trl.json", "model_name_or_path"),
        (
            '{"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}',
            "adapter_config.json",
            "base_model_name_or_path",
        ),
    ],
)
def test_a_file_without_a_model_is_refused_unless_model_is_given(tmp_path, text, name, key):
    path = _write(tmp_path / name, text)
    r = run("plan", "--config", path)
    assert r.exit_code == 2
    assert f"{path}: no {key}: the file names no model; add {key}: <model> or pass --model" in r.output
    r = run("plan", "--config", path, "--model", "1b", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["model"]["name"] == "Llama-3.2-1B"  # --model 1b


def _profile_kw(monkeypatch):
    """profile --config up to the measurement: the settings it would profile, without running a step."""
    from lora_budget.cli import profile_cmd

    seen = {}
    monkeypatch.setattr(profile_cmd, "_profile", lambda model, as_json, **kw: seen.update(model=model, **kw))
    return seen


def test_profile_config_typed_flag_rescues_a_refused_file_value(tmp_path, monkeypatch):
    seen = _profile_kw(monkeypatch)
    path = _write(tmp_path / "axo.yml", "base_model: 7b\nadapter: lora\noptimizer: muon\n")
    refused = CliRunner().invoke(main, ["profile", "--config", path, "--device", "cpu"])
    assert refused.exit_code != 0 and "optimizer 'muon' is not modelled" in refused.output
    assert len([ln for ln in refused.output.splitlines() if ln.startswith("Error")]) == 1
    r = run("profile", "--config", path, "--device", "cpu", "--optimizer", "adamw")
    assert r.exit_code == 0, r.output
    assert seen["optimizer"] == "adamw" and seen["methods"] == "lora"  # --optimizer typed; adapter: lora


def test_profile_config_without_a_model_is_refused_unless_model_is_given(tmp_path, monkeypatch):
    seen = _profile_kw(monkeypatch)
    path = _write(tmp_path / "adapter_config.json", json.dumps({"peft_type": "LORA", "r": 8}))
    refused = CliRunner().invoke(main, ["profile", "--config", path, "--device", "cpu"])
    assert refused.exit_code != 0 and "no base_model_name_or_path" in refused.output and "--model" in refused.output
    r = run("profile", "--config", path, "--device", "cpu", "-m", "7b")
    assert r.exit_code == 0, r.output
    assert seen["model"] == "7b"


def test_profile_config_targets_follow_the_model(tmp_path, monkeypatch):
    """PEFT's per-model default (peft 0.21 utils/constants.py: gpt2 -> c_attn) and a pattern kept to the model's
    linears (Llama-2 has no qkv_proj), as plan applies them."""
    seen = _profile_kw(monkeypatch)
    path = _write(tmp_path / "adapter_config.json", json.dumps({"peft_type": "LORA", "r": 8}))
    assert run("profile", "--config", path, "--device", "cpu", "-m", "gpt2").exit_code == 0
    assert seen["targets"] == "c_attn"
    path = _write(tmp_path / "axo.yml", "base_model: 7b\nadapter: lora\nlora_target_modules: '.*(qkv|q|v)_proj'\n")
    assert run("profile", "--config", path, "--device", "cpu").exit_code == 0
    assert seen["targets"] == "q_proj,v_proj"
