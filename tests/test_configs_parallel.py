"""--config: DeepSpeed and FSDP settings become --strategy / --offload, applied once --gpus N gives the world size.

Expected strategies are read off each file by hand with the rules in lora_budget/configs/parallel.py:
ZeRO stage 0/1/2/3 -> ddp/zero1/zero2/zero3; DeepSpeed offload_optimizer -> optimizer, plus
offload_param -> params; FSDP FULL_SHARD -> fsdp, SHARD_GRAD_OP -> zero2, NO_SHARD -> ddp, offload -> params.
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.configs import load_config
from lora_budget.errors import LoraBudgetError

DATA = Path(__file__).parent / "data" / "configs"


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def trl(tmp_path, **keys):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "7b", "use_peft": True, **keys}))
    return path


def error_line(r):
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    return lines[0]


# --- the example files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected", "parallel"),
    [
        # stage 3, offload_optimizer cpu + offload_param cpu, bf16.enabled true; micro-batch and accumulation "auto"
        ("ds_z3_offload.json", {"strategy": "zero3", "offload": "params", "dtype": "bf16"}, "ZeRO-3 with optimizer"),
        # fsdp_version 2, reshard_after_forward true, offload_params false, activation_checkpointing true
        ("axolotl_fsdp.yml", {"strategy": "fsdp", "grad_ckpt": True, "method": "full"}, "fsdp: FULL_SHARD read"),
        # fsdp "full_shard auto_wrap offload", use_peft false
        ("trl_fsdp.json", {"strategy": "fsdp", "offload": "params", "method": "full"}, "with parameter offload"),
        # deepspeed: ds_z3_offload.json, found next to the YAML; the YAML has no bf16 key, so the JSON's is used
        (
            "axolotl_lora_ds.yml",
            {"strategy": "zero3", "offload": "params", "dtype": "bf16", "batch_size": "4"},
            "ZeRO-3",
        ),
    ],
)
def test_example_files(name, expected, parallel):
    loaded = load_config(DATA / name)
    assert {k: loaded.values.get(k) for k in expected} == expected
    assert parallel in loaded.parallel
    assert not any(u.split()[0] in ("deepspeed", "fsdp", "fsdp_config") for u in loaded.unmodelled)
    if name != "axolotl_fsdp.yml":
        assert "offload" in loaded.values
    else:
        assert "offload" not in loaded.values  # offload_params: false leaves the default (none)


def test_ds_json_reports_auto_buckets():
    loaded = load_config(DATA / "ds_z3_offload.json")
    assert loaded.format == "deepspeed"
    (note,) = [n for n in loaded.notes if "planned with DeepSpeed's defaults" in n]
    assert "reduce_bucket_size, stage3_prefetch_bucket_size, stage3_param_persistence_threshold auto" in note
    assert "max_live" not in note  # 1e9 is DeepSpeed's default


# --- DeepSpeed ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zero", "strategy", "offload", "note"),
    [
        ({"stage": 0}, "ddp", None, None),
        ({"stage": 1}, "zero1", None, None),
        ({"stage": "2"}, "zero2", None, None),
        ({"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True}}, "zero2", "optimizer", None),
        ({"stage": 2, "offload_optimizer": {"device": "nvme"}}, "zero2", "optimizer", "nvme planned as CPU"),
        ({"stage": 2, "offload_optimizer": {"device": "none"}}, "zero2", None, None),
        ({"stage": 2, "cpu_offload": True}, "zero2", "optimizer", None),  # the deprecated spelling
        ({"stage": 2, "offload_param": {"device": "cpu"}}, "zero2", None, "applies to ZeRO-3 only"),
        ({"stage": 3, "offload_param": {"device": "cpu"}}, "zero3", None, "without offload_optimizer"),
        ({"stage": 3, "offload_optimizer": {"device": "cpu"}}, "zero3", "optimizer", None),
        (
            {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
            "zero3",
            "params",
            None,
        ),
        ({"stage": 0, "offload_optimizer": {"device": "cpu"}}, "ddp", None, "ignored at stage 0"),
    ],
)
def test_deepspeed_stage_and_offload(tmp_path, zero, strategy, offload, note):
    loaded = load_config(trl(tmp_path, deepspeed={"zero_optimization": zero}))  # transformers takes a dict too
    assert loaded.values["strategy"] == strategy
    assert loaded.values.get("offload") == offload
    assert loaded.sources["strategy"] == "deepspeed (the inline deepspeed dict)"
    if note:
        assert any(note in n for n in loaded.notes), loaded.notes


def test_no_zero_section_is_stage_0(tmp_path):
    assert load_config(trl(tmp_path, deepspeed={"bf16": {"enabled": True}})).values["strategy"] == "ddp"


def test_deepspeed_path_current_directory_first(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "cfg" / "ds.json").write_text('{"zero_optimization": {"stage": 3}}')
    (tmp_path / "run" / "ds.json").write_text('{"zero_optimization": {"stage": 1}}')
    cfg = tmp_path / "cfg" / "axo.yml"
    cfg.write_text("base_model: 7b\nadapter: lora\ndeepspeed: ds.json\n")
    monkeypatch.chdir(tmp_path / "run")
    assert load_config(cfg).values["strategy"] == "zero1"  # ./ds.json
    monkeypatch.chdir(tmp_path)
    assert load_config(cfg).values["strategy"] == "zero3"  # next to the config


@pytest.mark.parametrize(
    ("name", "strategy", "offload"),
    [
        ("ds_z3_offload_config.json", "zero3", "params"),  # LLaMA-Factory: optimizer and param offload to cpu
        ("ds_z2_offload_config.json", "zero2", "optimizer"),
        ("ds_z0_config.json", "ddp", None),
        ("zero2.json", "zero2", "optimizer"),  # axolotl's zero2.json offloads the optimizer
        ("zero3_bf16.json", "zero3", None),
        ("zero3_bf16_cpuoffload_all.json", "zero3", "params"),
    ],
)
def test_missing_shipped_file_is_read_from_its_name(tmp_path, monkeypatch, name, strategy, offload):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "axo.yml"
    cfg.write_text(f"base_model: 7b\nadapter: lora\ndeepspeed: deepspeed_configs/{name}\n")
    loaded = load_config(cfg)
    assert (loaded.values["strategy"], loaded.values.get("offload")) == (strategy, offload)
    assert any(f"deepspeed_configs/{name} not found" in n and "taken from its name" in n for n in loaded.notes)


def test_missing_file_with_another_name_is_a_note(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = trl(tmp_path, deepspeed="configs/my_ds.json")
    loaded = load_config(cfg)
    assert "strategy" not in loaded.values and loaded.parallel == ""
    assert any("could not be read and were ignored" in n for n in loaded.notes)
    r = run("plan", "--config", str(cfg), "--gpus", "4", "--json")
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.output)["methods"]
    assert (m["spec"]["gpus"], m["spec"]["strategy"]) == (4, "ddp")


def test_deepspeed_batch_and_precision(tmp_path):
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 8, "fp16": {"enabled": True}}
    loaded = load_config(trl(tmp_path, deepspeed=ds))
    assert (loaded.values["batch_size"], loaded.values["grad_accum"], loaded.values["dtype"]) == ("4", 8, "fp16")
    # the training arguments' own values win; a contradiction is a note (transformers would refuse it)
    loaded = load_config(trl(tmp_path, deepspeed=ds, per_device_train_batch_size=2, bf16=True))
    assert (loaded.values["batch_size"], loaded.values["dtype"]) == ("2", "bf16")
    assert any("train_micro_batch_size_per_gpu 4" in n and "planned with 2" in n for n in loaded.notes)
    assert any("enables fp16" in n and "planned with bf16" in n for n in loaded.notes)
    auto = {"train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": "auto"}}
    # "auto" leaves them to the training arguments, here TRL's defaults (configs/defaults.py)
    assert set(load_config(trl(tmp_path, deepspeed=auto)).values) - {"model", "method", "strategy"} == {
        "framework",
        "batch_size",  # per_device_train_batch_size: transformers' 8
        "grad_ckpt",  # TRL: on
        "seq_len",  # TRL SFT max_length 1024
        "targets",  # TRL lora_target_modules None: PEFT's q_proj,v_proj
        "lora_dropout",  # TRL 0.05
    }


def test_non_default_buckets_are_noted(tmp_path):
    zero = {"stage": 2, "reduce_bucket_size": 2e8, "allgather_bucket_size": 5e8, "stage3_max_live_parameters": 0}
    (note,) = [n for n in load_config(trl(tmp_path, deepspeed={"zero_optimization": zero})).notes if "bucket" in n]
    assert "reduce_bucket_size 2e+08 (default 5e+08)" in note
    assert "allgather" not in note and "max_live" not in note  # a default; a ZeRO-3 key at stage 2


# --- FSDP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "strategy", "offload", "note"),
    [
        ({"fsdp": "full_shard auto_wrap"}, "fsdp", None, None),
        ({"fsdp": "full_shard auto_wrap offload"}, "fsdp", "params", None),
        ({"fsdp": ["shard_grad_op", "auto_wrap"]}, "zero2", None, "SHARD_GRAD_OP keeps whole parameters"),
        ({"fsdp": "hybrid_shard"}, "fsdp", None, "set --gpus to the GPUs per node"),
        ({"fsdp": "no_shard"}, "ddp", None, None),
        ({"fsdp": "shard_grad_op offload"}, "zero2", None, "offload with SHARD_GRAD_OP is not modelled"),
        ({"fsdp": True, "fsdp_config": {"reshard_after_forward": False}}, "zero2", None, "like ZeRO-2"),
        ({"fsdp": True, "fsdp_config": {"version": 2, "cpu_offload": True}}, "fsdp", "params", None),
        ({"fsdp": "full_shard", "fsdp_config": {"fsdp_sharding_strategy": "SHARD_GRAD_OP"}}, "zero2", None, None),
        ({"fsdp": "full_shard", "fsdp_config": {"sharding_strategy": 3}}, "ddp", None, None),  # accelerate's NO_SHARD
        ({"fsdp": "full_shard", "fsdp_config": {"version": 1}}, "fsdp", None, "FSDP1"),
    ],
)
def test_transformers_fsdp(tmp_path, keys, strategy, offload, note):
    loaded = load_config(trl(tmp_path, **keys))
    assert (loaded.values["strategy"], loaded.values.get("offload")) == (strategy, offload)
    if note:
        assert any(note in n for n in loaded.notes), loaded.notes


def test_transformers_fsdp_config_file_and_no_fsdp(tmp_path):
    (tmp_path / "fsdp.json").write_text('{"fsdp_cpu_offload": true}')
    loaded = load_config(trl(tmp_path, fsdp="full_shard", fsdp_config=str(tmp_path / "fsdp.json")))
    assert (loaded.values["strategy"], loaded.values["offload"]) == ("fsdp", "params")
    loaded = load_config(trl(tmp_path, fsdp_config={"reshard_after_forward": True}))  # fsdp off
    assert "strategy" not in loaded.values
    assert any("fsdp_config without fsdp" in n for n in loaded.notes)


@pytest.mark.parametrize(
    ("text", "strategy", "offload"),
    [
        # FSDP1 style: fsdp list plus fsdp_-prefixed keys
        ("fsdp: [full_shard, auto_wrap]\nfsdp_config:\n  fsdp_offload_params: true\n", "fsdp", "params"),
        ("fsdp: [full_shard]\nfsdp_config:\n  fsdp_sharding_strategy: SHARD_GRAD_OP\n", "zero2", None),
        # FSDP2 style: fsdp_config alone, unprefixed keys
        ("fsdp_version: 2\nfsdp_config:\n  offload_params: true\n  reshard_after_forward: true\n", "fsdp", "params"),
        ("fsdp_version: 2\nfsdp_config:\n  reshard_after_forward: false\n", "zero2", None),
        ("fsdp_config:\n  fsdp_version: 2\n  state_dict_type: FULL_STATE_DICT\n", "fsdp", None),
    ],
)
def test_axolotl_fsdp(tmp_path, text, strategy, offload):
    path = tmp_path / "axo.yml"
    path.write_text("base_model: 7b\nadapter: lora\n" + text)
    loaded = load_config(path)
    assert (loaded.values["strategy"], loaded.values.get("offload")) == (strategy, offload)
    assert "fsdp_version" not in loaded.ignored


# --- bad input: one line, exit 2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ds_text", "message"),
    [
        ('{"zero_optimization": {"stage": 4}}', "zero_optimization.stage: must be 0, 1, 2 or 3, got 4"),
        ('{"zero_optimization": {"stage": 3,}}', "not valid JSON"),
        ('{"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}', "offload_optimizer.device"),
        ('{"bf16": {"enabled": true}, "fp16": {"enabled": true}}', "both true"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_deepspeed_file(tmp_path, ds_text, message):
    ds = tmp_path / "ds.json"
    ds.write_text(ds_text)
    cfg = trl(tmp_path, deepspeed=str(ds))
    with pytest.raises(LoraBudgetError, match="deepspeed"):
        load_config(cfg)
    line = error_line(run("plan", "--config", str(cfg), "--gpus", "8"))
    assert message in line and str(ds) in line and str(cfg) in line and "deepspeed" in line


def test_bad_deepspeed_json_as_config(tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 5}}')
    line = error_line(run("plan", "--config", str(ds)))
    assert f"{ds}: zero_optimization.stage: must be 0, 1, 2 or 3, got 5" in line


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"fsdp": "full_shard zero3"}, "fsdp: unknown option 'zero3'"),
        ({"fsdp": "full_shard", "fsdp_config": {"sharding_strategy": "HALF"}}, "fsdp_config: sharding_strategy"),
        ({"fsdp": "full_shard", "deepspeed": {"zero_optimization": {"stage": 2}}}, "deepspeed and fsdp are both"),
        ({"fsdp": "full_shard", "fsdp_config": {"cpu_offload": "maybe"}}, "fsdp_config: must be true or false"),
    ],
)
def test_bad_fsdp(tmp_path, keys, message):
    cfg = trl(tmp_path, **keys)
    line = error_line(run("plan", "--config", str(cfg)))
    assert message in line and str(cfg) in line


# --- the command line: --gpus decides -----------------------------------------------------------------------


def plan_json(*args):
    r = run("plan", "-g", "a100-80gb", "--json", *args)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    return data["methods"], data["notes"]


def test_without_gpus_the_strategy_is_a_note():
    for extra in ((), ("--gpus", "1")):
        methods, notes = plan_json("--config", str(DATA / "axolotl_lora_ds.yml"), *extra)
        (m,) = methods
        assert (m["spec"]["gpus"], m["spec"]["strategy"], m["spec"]["offload"]) == (1, "ddp", "none")
        (held,) = [n for n in notes if "add --gpus N" in n]
        assert "ZeRO-3 with optimizer and parameter offload read from ds_z3_offload.json" in held
        assert "planned on 1 GPU, unsharded" in held
        assert "--strategy" not in notes[0]  # the read line lists what was applied


def test_with_gpus_the_file_strategy_applies():
    methods, notes = plan_json("--config", str(DATA / "axolotl_lora_ds.yml"), "--gpus", "8")
    (m,) = methods
    assert (m["spec"]["gpus"], m["spec"]["strategy"], m["spec"]["offload"]) == (8, "zero3", "params")
    assert "deepspeed (ds_z3_offload.json) -> --strategy zero3" in notes[0]
    assert "deepspeed (ds_z3_offload.json) -> --offload params" in notes[0]
    assert not any("add --gpus N" in n for n in notes)


def test_typed_strategy_and_offload_win():
    cfg = str(DATA / "axolotl_lora_ds.yml")
    (m,), notes = plan_json("--config", cfg, "--gpus", "8", "--strategy", "zero2")
    assert (m["spec"]["strategy"], m["spec"]["offload"]) == ("zero2", "none")  # the file's offload went with it
    assert any("overrode --strategy, --offload" in n for n in notes)
    (m,), _ = plan_json("--config", cfg, "--gpus", "8", "--offload", "optimizer")
    assert (m["spec"]["strategy"], m["spec"]["offload"]) == ("zero3", "optimizer")
    (m,), _ = plan_json("--config", cfg, "--gpus", "8", "--strategy", "zero3")  # the same strategy keeps the offload
    assert (m["spec"]["strategy"], m["spec"]["offload"]) == ("zero3", "params")


def test_fsdp_files_with_gpus():
    (m,), _ = plan_json("--config", str(DATA / "trl_fsdp.json"), "--gpus", "8")
    assert (m["method"], m["spec"]["strategy"], m["spec"]["offload"], m["spec"]["grad_ckpt"]) == (
        "full",
        "fsdp",
        "params",
        True,
    )
    (m,), _ = plan_json("--config", str(DATA / "axolotl_fsdp.yml"), "--gpus", "4")
    assert (m["spec"]["gpus"], m["spec"]["strategy"], m["spec"]["offload"]) == (4, "fsdp", "none")


def test_spec_refusal_names_the_file(tmp_path):
    lf = tmp_path / "lf.yaml"
    ds = tmp_path / "ds_z3.json"
    ds.write_text('{"zero_optimization": {"stage": 3}}')
    lf.write_text(f"model_name_or_path: 7b\nfinetuning_type: lora\nquantization_bit: 8\ndeepspeed: {ds}\n")
    line = error_line(run("plan", "--config", str(lf), "--gpus", "4"))
    assert "--strategy zero3 cannot shard lora8bit" in line and f"(settings read from {lf})" in line
    # without --gpus the strategy is held back, so the same file plans (unsharded)
    assert run("plan", "--config", str(lf)).exit_code == 0
    # a bitsandbytes optimizer cannot step on the CPU
    axo = tmp_path / "axo.yml"
    axo.write_text(f"base_model: 7b\nadapter: lora\noptimizer: adamw_bnb_8bit\ndeepspeed: {DATA / 'zero2.json'}\n")
    line = error_line(run("plan", "--config", str(axo), "--gpus", "2"))
    assert "--offload optimizer runs the optimizer step on the CPU" in line and f"(settings read from {axo})" in line


def test_qlora_with_zero3_is_a_warning_not_an_error(tmp_path):
    # spec.py: DeepSpeed ZeRO-3 shards 4-bit weights only with bnb_4bit_quant_storage=bf16, a warning
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 3}}')
    cfg = trl(tmp_path, load_in_4bit=True, deepspeed=str(ds))
    r = run("plan", "--config", str(cfg), "--gpus", "2", "--json")
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.output)["methods"]
    assert m["spec"]["strategy"] == "zero3" and any("bnb_4bit_quant_storage" in w for w in m["warnings"])
