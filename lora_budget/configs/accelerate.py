"""An accelerate config YAML (``accelerate config``, ``accelerate launch --config_file``) as GPUs and sharding.

Keys as accelerate 1.15 ``commands/config/config_args.py`` (``ClusterConfig``) and
``commands/launch.py`` name them: ``distributed_type`` (NO, MULTI_GPU, DEEPSPEED, FSDP, MEGATRON_LM,
...), ``num_processes`` (the processes of all machines: the world size), ``mixed_precision``
(no, fp16, bf16, fp8), ``deepspeed_config`` (``zero_stage``, ``offload_optimizer_device``,
``offload_param_device`` none|cpu|nvme, or ``deepspeed_config_file``), ``fsdp_config`` (the keys
transformers' ``fsdp_config`` takes, ``fsdp_`` prefixed: ``configs/parallel.py``) and
``dynamo_config``. accelerate's DeepSpeedPlugin defaults ``zero_stage`` to 2 and both offload devices
to none (``utils/dataclasses.py``). The file names no model or method: ``--model`` and ``--method`` decide.
"""

from __future__ import annotations

from lora_budget.configs import parallel
from lora_budget.configs.values import Reader

NO_EFFECT = (
    "compute_environment",
    "debug",
    "machine_rank",
    "num_machines",
    "main_training_function",
    "main_process_ip",
    "main_process_port",
    "rdzv_backend",
    "same_network",
    "gpu_ids",
    "enable_cpu_affinity",
    "downcast_bf16",
    "tpu_env",
    "tpu_use_cluster",
    "tpu_use_sudo",
    "tpu_name",
    "tpu_zone",
    "command_file",
    "commands",
    "tpu_vm",
    "mpirun_config",
)
"""Launcher and TPU settings: where processes run, not what one GPU holds."""

DS_KEYS_NO_EFFECT = (
    "deepspeed_multinode_launcher",
    "deepspeed_hostfile",
    "deepspeed_exclusion_filter",
    "deepspeed_inclusion_filter",
    "zero3_init_flag",
    "zero3_save_16bit_model",
    "gradient_clipping",
    "offload_optimizer_nvme_path",
    "offload_param_nvme_path",
)


def read(r: Reader) -> None:
    r.used.update(NO_EFFECT)
    r.used.update(("distributed_type", "num_processes", "deepspeed_config", "fsdp_config", "use_cpu"))
    r.notes.append("an accelerate config names neither the model nor the method: --model and --method decide")
    kind = (r.text("distributed_type") or "NO").upper()
    if r.flag("use_cpu"):
        r.notes.append("use_cpu: true: a CPU run; the plan is for the GPU you give")
    _gpus(r, kind)
    if kind == "DEEPSPEED":
        r.parallel = _deepspeed(r)
    elif kind == "FSDP":
        r.parallel = parallel._fsdp(r)
    elif kind == "MULTI_GPU" and "strategy" not in r.typed:
        r.set("strategy", "ddp", "distributed_type: MULTI_GPU")
    elif kind not in ("NO", "MULTI_GPU"):
        r.notes.append(f"distributed_type: {kind} not modelled (planned as data parallel)")
    _precision(r)
    dynamo = r.raw("dynamo_config")
    if isinstance(dynamo, dict) and str(dynamo.get("dynamo_backend", "NO")).upper() != "NO":
        r.notes.append(
            f"dynamo_config: torch.compile ({dynamo['dynamo_backend']}) not modelled: planned eager (it can free "
            "some activations earlier)"
        )
    if isinstance(r.raw("parallelism_config"), dict) and r.data["parallelism_config"]:
        r.notes.append("parallelism_config: tensor / context parallelism not modelled (planned per data-parallel GPU)")
    kt = r.raw("kt_config")  # LLaMA-Factory's KTransformers launcher block
    if isinstance(kt, dict) and kt.get("enabled"):
        r.notes.append("kt_config: KTransformers runs the MoE experts on the CPU; not modelled (planned on the GPU)")
    if isinstance(r.raw("megatron_lm_config"), dict) and r.data["megatron_lm_config"]:
        r.notes.append("megatron_lm_config: Megatron-LM parallelism not modelled")


def _gpus(r: Reader, kind: str) -> None:
    """``num_processes`` is the world size (all machines); -1 (the default) leaves it to the launcher."""
    if "gpus" in r.typed or kind not in ("MULTI_GPU", "DEEPSPEED", "FSDP"):
        return
    n = r.raw("num_processes")
    if isinstance(n, bool) or not isinstance(n, int) or n == -1:
        return
    if n < 1:
        raise r.fail("num_processes", f"must be a positive integer, got {n!r}")
    r.set("gpus", n, "num_processes")


def _deepspeed(r: Reader) -> str:
    ds = r.data.get("deepspeed_config") or {}
    if not isinstance(ds, dict):
        raise r.fail("deepspeed_config", f"must be a mapping, got {ds!r}")
    if isinstance(path := ds.get("deepspeed_config_file"), str) and path.strip() and path.strip().lower() != "none":
        return parallel._deepspeed(r, path)
    stage = ds.get("zero_stage", 2)
    if isinstance(stage, bool) or stage not in parallel.STAGE_STRATEGY:
        raise r.fail("deepspeed_config.zero_stage", f"must be 0, 1, 2 or 3, got {stage!r}")
    devices = {}
    for key in ("offload_optimizer_device", "offload_param_device"):
        device = str(ds.get(key) or "none").lower()
        if device not in ("none", "cpu", "nvme"):
            raise r.fail(f"deepspeed_config.{key}", f"must be none, cpu or nvme, got {ds.get(key)!r}")
        devices[key] = device != "none"
    if (acc := ds.get("gradient_accumulation_steps")) not in (None, "auto") and "grad_accum" not in r.values:
        if isinstance(acc, bool) or not isinstance(acc, int) or acc < 1:
            raise r.fail("deepspeed_config.gradient_accumulation_steps", f"must be a positive integer, got {acc!r}")
        r.set("grad_accum", acc, "deepspeed_config.gradient_accumulation_steps")
    known = ("zero_stage", "offload_optimizer_device", "offload_param_device", "deepspeed_config_file")
    known += ("gradient_accumulation_steps", *DS_KEYS_NO_EFFECT)
    r.nested_unknown.extend(f"deepspeed_config.{k}" for k in ds if k not in known)
    if "strategy" in r.typed:
        return ""
    return parallel._set_zero(
        r,
        stage,
        devices["offload_optimizer_device"],
        devices["offload_param_device"],
        "deepspeed_config",
        "deepspeed_config.zero_stage",
    )


def _precision(r: Reader) -> None:
    """``mixed_precision`` autocasts the training script's model: its weights' dtype comes from the script."""
    mp = r.raw("mixed_precision")
    if mp in (None, "no"):
        return
    if str(mp).lower() == "fp8":
        r.notes.append("mixed_precision: fp8 not modelled: planned in the --dtype given")
    else:
        r.notes.append(f"mixed_precision: {mp} autocasts the script's model; its weights' dtype is --dtype's")
