"""Keys inside a DeepSpeed JSON and an FSDP config block: read, no effect, not modelled, or unknown.

Like ``configs/keys.py`` for a file's top level: a key the readers (``configs/parallel.py``) do not
map gets a note when it changes memory and is on, and an unknown key is listed as unchecked
(``Reader.nested_unknown``), never dropped silently. Names and defaults as DeepSpeed documents
them (``deepspeed/runtime/config.py``, ``runtime/zero/config.py``, ``runtime/zero/offload_config.py``)
and as transformers 5.24 ``training_args.py`` / accelerate ``utils/dataclasses.py``
(``FullyShardedDataParallelPlugin``) take ``fsdp_config``.
"""

from __future__ import annotations

from typing import Any

from lora_budget.configs.values import Reader

DS_READ = ("zero_optimization", "bf16", "fp16", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
DS_NO_EFFECT = (
    "train_batch_size",  # micro-batch x accumulation x GPUs
    "gradient_clipping",
    "steps_per_print",
    "wall_clock_breakdown",
    "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer",
    "scheduler",
    "prescale_gradients",
    "gradient_predivide_factor",
    "dump_state",
    "flops_profiler",
    "tensorboard",
    "wandb",
    "csv_monitor",
    "comms_logger",
    "checkpoint",
    "comms_config",  # communication logging
    "monitor_config",  # DeepSpeed's monitor (tensorboard / csv / wandb)
    "_comment",
)
DS_NOT_MODELLED = {
    "tensor_parallel": "DeepSpeed AutoTP splits the linear weights across GPUs (autotp_size): planned unsplit",
    "optimizer": "DeepSpeed's own optimizer (its state per type): planned as the configured optimizer",
    "activation_checkpointing": "DeepSpeed activation checkpointing (partition_activations, cpu_checkpointing): "
    "planned as the configured checkpointing",
    "compile": "DeepSpeed's torch.compile: planned eager",
    "fp8": "fp8 training: planned in the base dtype",
    "amp": "apex AMP: planned as the configured dtype",
    "pipeline": "pipeline parallelism: single-stage plan",
    "data_efficiency": "curriculum / random-LTD token dropping: planned at the full sequence",
    "sparse_attention": "sparse attention: planned dense",
    "communication_data_type": "the gradient all-reduce dtype: planned in the gradient dtype",
}
ZERO_READ = (
    "stage",
    "offload_optimizer",
    "offload_param",
    "cpu_offload",
    "cpu_offload_param",
    "reduce_bucket_size",
    "allgather_bucket_size",
    "stage3_prefetch_bucket_size",
    "prefetch_bucket_size",
    "stage3_param_persistence_threshold",
    "param_persistence_threshold",
    "stage3_max_live_parameters",
    "max_live_parameters",
    "stage3_max_reuse_distance",
    "max_reuse_distance",
    "sub_group_size",
)
ZERO_NO_EFFECT = (
    "contiguous_gradients",
    "allgather_partitions",
    "reduce_scatter",
    "round_robin_gradients",
    "stage3_gather_16bit_weights_on_model_save",
    "gather_16bit_weights_on_model_save",
    "load_from_fp32_weights",
    "elastic_checkpoint",
    "ignore_unused_parameters",
    "legacy_stage1",
    "use_multi_rank_bucket_allreduce",
    "memory_efficient_linear",
    "cpu_offload_use_pin_memory",
    "log_trace_cache_warnings",
)
ZERO_NOT_MODELLED = {
    "overlap_comm": "overlapped communication keeps extra buckets (the transformers DeepSpeed guide: 4.5 x "
    "allgather_bucket_size and reduce_bucket_size): not counted",
    "zero_quantized_weights": "ZeRO++ quantized weight all-gather: planned in the weight dtype",
    "zero_quantized_gradients": "ZeRO++ quantized gradients: planned in the gradient dtype",
    "zero_hpz_partition_size": "ZeRO++ hierarchical partitions keep a secondary weight copy per node: not counted",
    "mics_shard_size": "MiCS sharding groups: planned as one ZeRO-3 group over --gpus",
    "zeropp_loco_param": "ZeRO++ LoCo: planned without it",
}
OFFLOAD_NO_EFFECT = ("device", "pin_memory", "nvme_path", "buffer_count", "buffer_size", "max_in_cpu", "fast_init")
"""Inside offload_optimizer / offload_param: CPU- or NVMe-side settings (``device`` is read)."""

FSDP_READ = ("sharding_strategy", "reshard_after_forward", "offload_params", "cpu_offload", "activation_checkpointing")
FSDP_NO_EFFECT = (
    "version",
    "auto_wrap_policy",
    "transformer_layer_cls_to_wrap",
    "min_num_params",
    "state_dict_type",
    "sync_module_states",
    "use_orig_params",
    "limit_all_gathers",
    "backward_prefetch",
    "forward_prefetch",
    "cpu_ram_efficient_loading",
    "xla",
    "xla_fsdp_grad_ckpt",
    "xla_fsdp_settings",
)
FSDP_NOT_MODELLED = {
    "activation_cpu_offload": "activations offloaded to CPU memory: planned on the GPU (an over-estimate)",
    "activation_checkpointing_offload": "checkpointed layer inputs offloaded to CPU memory: planned on the GPU",
    "mixed_precision_policy": "FSDP's own parameter / reduce dtypes: planned in the configured dtype",
    "cpu_offload_pin_memory": "host-side pinning (no GPU effect)",
}


def _off(value: Any) -> bool:
    return value in (None, False, "", 0, {}, []) or (isinstance(value, str) and value.lower() in ("false", "none"))


def _check(r: Reader, where: str, block: dict[str, Any], read, no_effect, not_modelled) -> None:
    gaps, unknown = [], []
    for key, value in block.items():
        if key in read or key in no_effect:
            continue
        if key in not_modelled:
            if not _off(value) and not (isinstance(value, dict) and value.get("disable") is True):
                gaps.append(f"{where}{key} not modelled: {not_modelled[key]}")
        else:
            unknown.append(key)
    r.notes.extend(gaps)
    r.nested_unknown.extend(f"{where}{key}" for key in unknown)


def check_deepspeed(r: Reader, data: dict[str, Any], where: str) -> None:
    """Notes for the DeepSpeed dict ``data`` (``where``: the file it came from, as a prefix)."""
    _check(r, where, data, DS_READ, DS_NO_EFFECT, DS_NOT_MODELLED)
    zero = data.get("zero_optimization")
    if isinstance(zero, dict):
        _check(r, f"{where}zero_optimization.", zero, ZERO_READ, ZERO_NO_EFFECT, ZERO_NOT_MODELLED)
        for name in ("offload_optimizer", "offload_param"):
            if isinstance(block := zero.get(name), dict):
                _check(r, f"{where}zero_optimization.{name}.", block, ("device",), OFFLOAD_NO_EFFECT, {})
    for name in ("bf16", "fp16"):
        if isinstance(block := data.get(name), dict):  # enabled is read; the loss-scale knobs change no memory
            extra = [k for k in block if k not in ("enabled", "auto_cast", "immediate_grad_update")]
            extra = [k for k in extra if "scale" not in k and k not in ("hysteresis", "consecutive_hysteresis")]
            r.nested_unknown.extend(f"{where}{name}.{k}" for k in extra)


def check_fsdp(r: Reader, cfg: dict[str, Any], where: str = "fsdp_config.") -> None:
    """Notes for an ``fsdp_config`` block whose ``fsdp_`` prefixes are already stripped."""
    _check(r, where, cfg, FSDP_READ, FSDP_NO_EFFECT, FSDP_NOT_MODELLED)
