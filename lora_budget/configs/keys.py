"""Every key a training config may carry that the readers do not map: no effect, not modelled, or unknown.

A key the format's reader maps is *read*. Any other key is one of:

- **no effect**: it changes nothing in one training step's memory or speed (logging, datasets,
  learning-rate schedule, saving, evaluation cadence, tokenizer, hub), each group with why;
- **not modelled**: it changes memory or speed in a way the planner does not model yet; the plan's
  notes name it and what it would change (``objectives.UNMODELLED_KEYS`` and ``NOT_MODELLED`` here);
- **objective**: a setting of a preference, RL or reward objective, covered by the objective's note
  (``configs/objectives.py``);
- **unknown**: a key none of these lists names; the notes list it as unchecked, never as "no effect".

A not-modelled key whose value is off (false, null, 0, empty, ``none``) has no effect.
Entries ending in ``*`` are prefixes. Key names are the tools' own, read off their config schemas:
axolotl v0.18.0 ``src/axolotl/utils/schemas/*.py``, LLaMA-Factory v0.9.5 ``src/llamafactory/hparams/*.py``,
TRL v1.9.0 ``trl/trainer/*_config.py`` and ``trl/scripts/utils.py``, transformers 5.24 ``training_args.py``,
PEFT 0.21 ``tuners/lora/config.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from lora_budget.configs.objectives import unmodelled_why

Kind = Literal["not-modelled", "no-effect", "objective", "unknown"]

_LOGGING = "logging and experiment tracking"
_DATA = "dataset choice and preprocessing (the plan takes the sequence length and batch it is given)"
_SCHEDULE = "learning rate, its schedule and optimizer hyper-parameters (not the optimizer's state size)"
_SAVING = "checkpoint saving, resuming and output paths"
_EVAL = "evaluation cadence and metrics (evaluation runs outside the training step)"
_TOKENS = "tokenizer, chat template and special tokens"
_HUB = "Hugging Face Hub and model-loading options (where weights come from, not their size in training)"
_RUN = "run control (steps, seed, launcher, timeouts, workers)"
_PACKING = "packing and padding: the plan holds every row at the full sequence length, which packing fills"
_GENERATION = "generation settings for prediction or sample logging, not the training step"

NO_EFFECT: dict[str, str] = {
    **dict.fromkeys(
        (
            "wandb_*",
            "swanlab_*",
            "trackio_*",
            "otel_*",
            "use_otel_metrics",
            "use_wandb",
            "use_swanlab",
            "use_tensorboard",
            "use_mlflow",
            "mlflow_*",
            "comet_*",
            "logging_*",
            "log_level",
            "log_completions",
            "num_completions_to_print",
            "report_to",
            "run_name",
            "plot_loss",
            "debug",
            "loss_watchdog_*",
            "callbacks",
        ),
        _LOGGING,
    ),
    **dict.fromkeys(
        (
            "datasets",
            "dataset",
            "dataset_*",
            "test_datasets",
            "pretraining_dataset",
            "train_dataset",
            "eval_dataset",
            "val_set_size",
            "val_size",
            "max_samples",
            "shuffle_merged_datasets",
            "skip_prepare_dataset",
            "push_dataset_to_hub",
            "streaming",
            "streaming_multipack_buffer_size",
            "preprocessing_num_workers",
            "overwrite_cache",
            "train_on_inputs",
            "min_sample_len",
            "curriculum_sampling",
            "group_by_length",
            "remove_unused_columns",
            "assistant_only_loss",
            "completion_only_loss",
            "output_dataset_name",
            "system_prompt",
            "batching_strategy",
            "mix_strategy",
        ),
        _DATA,
    ),
    **dict.fromkeys(
        (
            "learning_rate",
            "lr_scheduler",
            "lr_scheduler_type",
            "lr_scheduler_kwargs",
            "lr_quadratic_warmup",
            "warmup_ratio",
            "warmup_steps",
            "cosine_min_lr_ratio",
            "cosine_constant_lr_ratio",
            "jagged_restart_*",
            "eta_min",
            "weight_decay",
            "adam_beta1",
            "adam_beta2",
            "adam_eps",
            "adam_epsilon",
            "max_grad_norm",
            "loraplus_lr_ratio",
            "loraplus_lr_embedding",
            "early_stopping_patience",
            "average_tokens_across_devices",
        ),
        _SCHEDULE,
    ),
    **dict.fromkeys(
        (
            "output_dir",
            "overwrite_output_dir",
            "save_*",
            "saves_per_epoch",
            "resume_from_checkpoint",
            "auto_resume_from_checkpoints",
            "dataset_prepared_path",
        ),
        _SAVING,
    ),
    **dict.fromkeys(
        (
            "eval_steps",
            "eval_strategy",
            "evaluation_strategy",
            "evals_per_epoch",
            "eval_table_size",
            "eval_max_new_tokens",
            "eval_causal_lm_metrics",
            "do_causal_lm_eval",
            "eval_sample_packing",
            "do_eval",
            "do_train",
            "do_predict",
            "benchmarks",
        ),
        _EVAL,
    ),
    **dict.fromkeys(
        (
            "chat_template",
            "chat_template_*",
            "special_tokens",
            "tokens",
            "eot_tokens",
            "eos_token",
            "template",
            "tokenizer_*",
            "processor_type",
        ),
        _TOKENS,
    ),
    **dict.fromkeys(
        (
            "hub_*",
            "push_to_hub",
            "hf_use_auth_token",
            "model_revision",
            "revision_of_model",
            "base_model_ignore_patterns",
            "trust_remote_code",
            "device_map",
            "low_cpu_mem_usage",
            "experimental_skip_move_to_device",
            "torchdistx_path",
            "model_type",
            "model_class",
            "init_config",
            "lora_model_dir",
            "adapter_name_or_path",
            "strict",
        ),
        _HUB,
    ),
    **dict.fromkeys(
        (
            "max_steps",
            "seed",
            "local_rank",
            "ddp_timeout",
            "ddp_find_unused_parameters",
            "ddp",
            "dataloader_num_workers",
            "dataset_num_proc",
            "ray_num_workers",
            "use_ray",
            "total_num_tokens",
            "sample_packing_eff_est",
            "test_value",
            "accelerator_config",
        ),
        _RUN,
    ),
    **dict.fromkeys(
        (
            "sample_packing",
            "sample_packing_sequentially",
            "sample_packing_seq_len_multiplier",
            "pretrain_multipack_attn",
            "max_packed_sequence_len",
            "pad_to_sequence_len",
            "packing",
            "packing_strategy",
            "padding_free",
        ),
        _PACKING,
    ),
    **dict.fromkeys(("max_new_tokens", "top_k", "do_sample", "sample_backend"), _GENERATION),
    "tf32": "TF32 matmuls change fp32 speed only; memory is unchanged (the plan's speed is for bf16/fp16)",
    "lora_fan_in_fan_out": "the layout of the base weight (GPT-2 Conv1D): same adapter sizes",
    "fan_in_fan_out": "the layout of the base weight (GPT-2 Conv1D): same adapter sizes",
    "peft_use_rslora": "rsLoRA rescales the adapter output (alpha / sqrt(r)): same memory",
    "use_rslora": "rsLoRA rescales the adapter output (alpha / sqrt(r)): same memory",
    "init_lora_weights": "how the adapters start (gaussian, zeros): same memory",
    "inference_mode": "a saved adapter's flag, not a training setting",
    "peft_version": "the PEFT release that saved the adapter",
    "auto_mapping": "a saved adapter's loader class",
    "revision": "the base model's revision",
    "task_type": "the PEFT task (CAUSAL_LM): the causal LM the plan models",
    "bias": "PEFT bias none (the default) trains no bias; other values are refused by the reader",
    "reinit_weights": "random instead of pretrained initial weights: same memory",
    "resize_token_embeddings_to_32x": "pads the vocabulary to a multiple of 32 (under 0.1 % of the embeddings)",
    "fsdp_transformer_layer_cls_to_wrap": "which layers FSDP wraps (planned per decoder layer)",
    "model_name_or_path": "the model (read as --model)",
    "pissa_convert": "a setting of pissa_init (reported when on)",
    "pissa_iter": "a setting of pissa_init (reported when on)",
    "freeze_trainable_layers": "a setting of finetuning_type: freeze (refused)",
    "freeze_trainable_modules": "a setting of finetuning_type: freeze (refused)",
    "freeze_extra_modules": "a setting of finetuning_type: freeze (refused)",
    "oft_*": "settings of finetuning_type: oft (refused)",
    "galore_*": "settings of use_galore (reported when on)",
    "apollo_*": "settings of use_apollo (reported when on)",
    "badam_*": "settings of use_badam (reported when on)",
    "lisa_step_interval": "a setting of LISA (lisa_n_layers, reported when on)",
    "lisa_layers_attribute": "a setting of LISA (lisa_n_layers, reported when on)",
    "gptq_*": "settings of gptq (reported when on)",
    "fp8_backend": "a setting of fp8 (reported when on)",
    "torch_compile_*": "settings of torch_compile (reported when on)",
    "flex_attn_compile_kwargs": "compile options of flex_attention (reported with attn_implementation)",
    "relora_*": "settings of relora (reported when on)",
    "global_batch_size": "the global batch: micro-batch x accumulation x GPUs (the micro-batch is read)",
    "megatron_core": "the Megatron module name, used only with megatron_config (reported when set)",
    "full_finetune": "axolotl's legacy flag; no adapter key already means full fine-tuning",
}
"""Keys with no effect on one step's memory or speed, each with why."""

NOT_MODELLED: dict[str, str] = {
    "unfrozen_parameters": "only the matching parameters train (full fine-tuning), or they train beside the "
    "adapters (LoRA): planned as the method's own trainable set",
    "lora_modules_to_save": "fully trained copies of these modules (their gradients and optimizer state are not "
    "counted)",
    "lora_target_parameters": "LoRA on these parameters (e.g. MoE expert tensors) as well: their adapters are "
    "not counted",
    "target_parameters": "LoRA on these parameters (e.g. MoE expert tensors) as well: their adapters are not counted",
    "lora_mlp_kernel": "axolotl's fused LoRA MLP autograd saves fewer tensors (planned with peft's layers)",
    "lora_qkv_kernel": "axolotl's fused LoRA QKV autograd saves fewer tensors (planned with peft's layers)",
    "lora_o_kernel": "axolotl's fused LoRA output-projection autograd saves fewer tensors (planned with peft's layers)",
    "model_quantization_config": "a quantized base model (e.g. MXFP4) planned in the base dtype",
    "model_quantization_config_kwargs": "options of model_quantization_config (planned in the base dtype)",
    "quantize_moe_experts": "4-bit MoE expert weights (planned in the bnb layout of the dense layers only)",
    "llmcompressor": "sparse or quantized training with llm-compressor (planned dense)",
    "use_onebitllms": "1-bit (BitNet) linear layers (planned dense)",
    "nvfp4_merge_aware": "NVFP4 quantized base (planned in the base dtype)",
    "dsv4_fp4_grouped_mode": "DeepSeek-V4 fp4 experts (planned in the base dtype)",
    "tiled_mlp": "the MLP runs in sequence tiles, lowering its saved activations (planned untiled)",
    "flash_attn_cross_entropy": "flash-attn's cross-entropy kernel does not keep the fp32 logits copy",
    "flash_attn_fuse_mlp": "flash-attn's fused MLP saves fewer tensors",
    "flash_attn_rms_norm": "flash-attn's RMSNorm kernel saves fewer tensors",
    "flash_optimum": "BetterTransformer attention (planned as the transformers kernels)",
    "fused_attn_kernel": "a fused attention kernel (planned as the transformers kernels)",
    "use_kernels": "Hugging Face kernels hub layers (planned as the transformers kernels)",
    "use_scattermoe": "ScatterMoE expert kernels (planned as the transformers MoE path)",
    "use_sonicmoe": "SonicMoE expert kernels (planned as the transformers MoE path)",
    "experts_implementation": "the MoE expert kernel (planned as the transformers MoE path)",
    "llama4_linearized_experts": "Llama 4 experts as separate linears (planned as the transformers MoE path)",
    "use_dsv4_kernels": "DeepSeek-V4 kernels (planned as the transformers path)",
    "use_glm_dsa_kernels": "GLM sparse-attention kernels (planned as the transformers path)",
    "use_v1_kernels": "LLaMA-Factory's kernel plugins (planned as the transformers kernels)",
    "gemma4_hybrid_attn_impl": "flash attention on sliding-window layers and sdpa on global ones (planned with "
    "one kernel for all)",
    "expert_parallel_size": "expert parallelism splits the MoE experts across GPUs (single-GPU plan)",
    "expert_parallel_*": "expert-parallel options (single-GPU plan)",
    "dp_replicate_size": "replicated data-parallel groups (HSDP): planned with --gpus N as one sharding group",
    "relora": "ReLoRA merges the adapters into the base every few steps (planned as LoRA; the merge's "
    "temporaries are not counted)",
    "relora_cpu_offload": "ReLoRA's CPU offload of the merge (planned as LoRA)",
    "freeze_mm_modules": "frozen multimodal modules (the vision tower is not planned)",
    "freeze_vision_tower": "the vision tower (not planned: text decoder only)",
    "freeze_multi_modal_projector": "the multimodal projector (not planned: text decoder only)",
    "freeze_language_model": "a frozen language model: only the vision modules train (planned as the text "
    "decoder training)",
    "image_max_pixels": "image inputs: the vision tower's activations are not planned",
    "video_max_pixels": "video inputs: the vision tower's activations are not planned",
    "visual_inputs": "image inputs: the vision tower's activations are not planned",
    "model_config": "model config overrides (e.g. output_router_logits keeps the router logits for the "
    "auxiliary loss: layers x tokens x experts, not counted)",
    "peft": "axolotl's peft block (e.g. loftq_config: LoftQ initialization of a quantized base), planned as plain LoRA",
    "loftq_config": "LoftQ initialization of a quantized base (planned as plain LoRA)",
    "use_kt": "KTransformers runs MoE experts on the CPU (planned on the GPU)",
    "use_adam_mini": "Adam-mini keeps one second moment per block (planned as AdamW's full state)",
    "use_muon": "Muon keeps one momentum per matrix (planned as AdamW's two moments)",
    "use_llama_pro": "LLaMA Pro trains added blocks only (planned as the configured method)",
    "mixture_of_depths": "mixture of depths skips tokens per layer (planned as every token in every layer)",
    "use_dft_loss": "a reweighted cross-entropy (same memory as CE but for one more tokens x vocab buffer)",
    "use_eaft_loss": "a reweighted cross-entropy (same memory as CE but for one more tokens x vocab buffer)",
    "use_eaft": "a reweighted cross-entropy (same memory as CE but for one more tokens x vocab buffer)",
    "eaft_*": "settings of use_eaft (reported when on)",
    "use_asft_loss": "anchored SFT adds a KL term to a reference model (its weights and logits are not counted)",
    "asft_alpha": "a setting of use_asft_loss (reported when on)",
    "diffusion": "diffusion-LM training (masked denoising, planned as causal LM SFT)",
    "tensor_model_parallel_size": "Megatron-Core tensor parallelism (single-GPU plan)",
    "pipeline_model_parallel_size": "Megatron-Core pipeline parallelism (single-GPU plan)",
    "expert_model_parallel_size": "Megatron-Core expert parallelism (single-GPU plan)",
    "sequence_parallel": "Megatron-Core sequence parallelism splits activations across GPUs (single-GPU plan)",
    "recompute_granularity": "Megatron-Core recomputation (planned as the configured checkpointing)",
    "use_distributed_optimizer": "Megatron-Core's sharded optimizer (planned unsharded)",
    "overlap_grad_reduce": "Megatron-Core gradient-reduce buffers (not counted)",
    "overlap_param_gather": "Megatron-Core parameter-gather buffers (not counted)",
    "moe_grouped_gemm": "Megatron-Core grouped-GEMM experts (planned as the transformers MoE path)",
    "moe_token_dispatcher_type": "Megatron-Core token dispatcher buffers (not counted)",
    "apply_rope_fusion": "Megatron-Core fused RoPE saves fewer tensors",
    "bias_activation_fusion": "Megatron-Core fused bias-activation saves fewer tensors",
    "context_parapllel_size": "context parallelism (axolotl's misspelled key, which axolotl ignores: planned on one "
    "GPU)",
    "alpha_pattern": "per-module LoRA alphas (no memory effect) beside rank_pattern",
    "exclude_modules": "modules left without adapters (planned with adapters on every target)",
    "layer_replication": "duplicated layers sharing weights (planned without them)",
    "lora_bias": "a trained bias on each LoRA B (planned without it)",
    "megatron_config": "Megatron parallel linear layers (planned as plain linears)",
    "eva_config": "EVA initialization (an SVD pass at start, not counted)",
    "corda_config": "CorDA initialization (a covariance pass at start, not counted)",
    "kasa_config": "KaSA adapters (planned as plain LoRA)",
    "use_bdlora": "block-diagonal LoRA (planned as plain LoRA)",
    "use_qalora": "QA-LoRA pooled adapters (planned as plain LoRA)",
    "qalora_group_size": "QA-LoRA pooled adapters (planned as plain LoRA)",
    "trainable_token_indices": "trained rows of the embedding (not counted)",
    "runtime_offload_base_weight": "the base weights offloaded at run time (planned on the GPU)",
    "lora_ga_config": "LoRA-GA initialization (a gradient pass at start, not counted)",
    "target_svd_config": "SVD-based initialization (not counted)",
    "arrow_config": "Arrow routing over several adapters (planned as one)",
    "alora_invocation_tokens": "activated LoRA (planned as plain LoRA)",
    "ensure_weight_tying": "adapters shared between tied embeddings (planned untied)",
    "use_reentrant": "reentrant checkpointing (planned as non-reentrant)",
}
"""Keys that change memory or speed in ways not modelled yet (beside ``objectives.UNMODELLED_KEYS``)."""

OBJECTIVE: tuple[str, ...] = (
    "rl",
    "rl_beta",
    "trl",
    "vllm",
    "vllm_*",
    "use_vllm",
    "beta",
    "loss_type",
    "num_generations",
    "max_completion_length",
    "max_prompt_length",
    "reward_funcs",
    "reward_weights",
    "scale_rewards",
    "temperature",
    "top_p",
    "mask_truncated_completions",
    "code_*",
    "e2b_router_url",
    "pass_rate_*",
    "orpo_alpha",
    "kto_desirable_weight",
    "kto_undesirable_weight",
    "center_rewards_coefficient",
    "reward_model",
    "process_reward_model",
    "cls_model_config",
    "num_labels",
    "ebft",
    "pref_*",
    "stage",
)
"""Settings of a training objective (``configs/objectives.py``); the objective's note reports what its step holds."""

_OFF = (None, False, "", [], {}, 0, "none", "None")


def _lookup(table: dict[str, str] | tuple[str, ...], key: str) -> str | None:
    names = table if isinstance(table, tuple) else tuple(table)
    if key in names:
        return table[key] if isinstance(table, dict) else key
    for name in names:
        if name.endswith("*") and key.startswith(name[:-1]):
            return table[name] if isinstance(table, dict) else name
    return None


def classify(key: str, value: Any) -> tuple[Kind, str]:
    """(kind, why) for a key the reader did not map. A not-modelled key that is off has no effect."""
    why = unmodelled_why(key) or _lookup(NOT_MODELLED, key)
    if why is not None:
        if isinstance(value, str) and value.strip().lower() in ("false", "none", ""):
            return "no-effect", "off"
        if value in _OFF:
            return "no-effect", "off"
        return "not-modelled", why
    if (why := _lookup(NO_EFFECT, key)) is not None:
        return "no-effect", why
    if _lookup(OBJECTIVE, key) is not None:
        return "objective", "a setting of the training objective (configs/objectives.py)"
    return "unknown", ""
