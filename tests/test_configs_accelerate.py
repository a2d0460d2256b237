"""accelerate config YAMLs and DeepSpeed JSONs as --config: GPUs, sharding and offload; never a model.

Each file is written here with the keys accelerate 1.15 (commands/config/config_args.py, launch.py) and
DeepSpeed document; expected values are those keys.
"""

import json

from click.testing import CliRunner

from lora_budget.cli import main
from lora_budget.configs import load_config

ZERO2 = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 2
  offload_optimizer_device: cpu
  offload_param_device: none
  zero3_init_flag: false
mixed_precision: bf16
num_machines: 1
num_processes: 4
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_accelerate_deepspeed_block(tmp_path):
    loaded = load_config(_write(tmp_path, "zero2.yaml", ZERO2))
    assert loaded.format == "accelerate"
    v = loaded.values
    assert (v["gpus"], v["strategy"], v["offload"]) == (4, "zero2", "optimizer")  # num_processes, zero_stage, cpu
    assert loaded.unknown == () and "mixed_precision" not in loaded.ignored  # noted, not called no effect


def test_accelerate_stage_defaults_to_zero2_and_fsdp_block_reads_its_keys(tmp_path):
    text = "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config: {}\nnum_processes: 2\n"
    assert load_config(_write(tmp_path, "a.yaml", text)).values["strategy"] == "zero2"  # DeepSpeedPlugin default
    fsdp = (
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 8\nfsdp_config:\n"
        "  fsdp_sharding_strategy: SHARD_GRAD_OP\n  fsdp_offload_params: false\n"
        "  fsdp_state_dict_type: FULL_STATE_DICT\n"
    )
    v = load_config(_write(tmp_path, "f.yaml", fsdp)).values
    assert (v["gpus"], v["strategy"]) == (8, "zero2")  # SHARD_GRAD_OP keeps whole parameters, like ZeRO-2


def test_accelerate_file_plans_sharded_on_its_gpus_and_needs_a_model(tmp_path):
    path = str(_write(tmp_path, "zero2.yaml", ZERO2))
    refused = CliRunner().invoke(main, ["plan", "--config", path])
    assert refused.exit_code == 2 and "names no model; pass --model" in refused.output
    r = CliRunner().invoke(main, ["plan", "--config", path, "-m", "8b", "--method", "full", "--json"])
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.output)["methods"]
    assert (m["spec"]["gpus"], m["spec"]["strategy"], m["spec"]["offload"]) == (4, "zero2", "optimizer")
    args = ["plan", "--config", path, "-m", "8b", "--method", "full", "--gpus", "2", "--json"]
    typed = CliRunner().invoke(main, args)
    (m,) = json.loads(typed.output)["methods"]
    assert m["spec"]["gpus"] == 2  # a typed --gpus wins over num_processes


def test_deepspeed_json_keys_inside_are_classified(tmp_path):
    ds = {
        "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True, "new_knob": 1},
        "tensor_parallel": {"autotp_size": 2},
        "gradient_clipping": "auto",
    }
    loaded = load_config(_write(tmp_path, "ds.json", json.dumps(ds)))
    notes = " ".join(loaded.notes)
    assert "tensor_parallel not modelled" in notes and "zero_optimization.overlap_comm not modelled" in notes
    assert loaded.unknown == ("deepspeed: ds.json: zero_optimization.new_knob",)  # listed as unchecked
    refused = CliRunner().invoke(main, ["plan", "--config", str(tmp_path / "ds.json")])
    assert refused.exit_code == 2 and "names no model" in refused.output
