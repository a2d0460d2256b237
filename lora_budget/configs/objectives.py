"""Training objectives a config names (preference, RL, reward), and memory keys planned without their effect.

The planner models one supervised (SFT) step. A file that trains another objective is planned as that
step, with a note naming the objective and what its real step holds beyond it; the keys are read off
each tool's source:

- axolotl v0.18.0 ``utils/schemas/enums.py`` ``RLType`` (``rl: dpo|ipo|kto|orpo|simpo|grpo|gdpo|ebft``)
  and ``reward_model`` / ``process_reward_model`` (``utils/schemas/config.py``).
- LLaMA-Factory v0.9.5 ``hparams/finetuning_args.py``: ``stage: rm|ppo|dpo|kto``, ``pref_loss``
  (``orpo`` and ``simpo`` need no reference model).
- TRL v1.9.0 ``trainer/dpo_config.py`` (``beta``, ``precompute_ref_log_probs``, ``max_prompt_length``),
  ``grpo_config.py`` (``num_generations`` default 8, ``max_completion_length`` default 256, ``use_vllm``),
  ``kto_config.py`` (``desirable_weight``), ``reward_config.py`` (``center_rewards_coefficient``).
"""

from __future__ import annotations

from typing import Any

DIFFERS = {
    "dpo": "a frozen reference model (unless precompute_ref_log_probs, or a LoRA base used as the reference) "
    "and a chosen + a rejected sequence per example (2x the tokens per step)",
    "ipo": "a frozen reference model and a chosen + a rejected sequence per example (2x the tokens per step)",
    "kto": "a frozen reference model and a KL batch of mismatched completions next to each batch",
    "orpo": "a chosen + a rejected sequence per example (2x the tokens per step); no reference model",
    "simpo": "a chosen + a rejected sequence per example (2x the tokens per step); no reference model",
    "grpo": "generation of several completions per prompt (num_generations, TRL default 8; in vLLM when use_vllm), "
    "a reference model when beta > 0, and prompt + completion tokens per sequence",
    "ppo": "a reward model, a value head or critic, a reference model and generation",
    "reward": "a scalar head instead of the vocabulary logits (their memory is over-planned), pairs of sequences",
}
"""What a real step of each objective holds that the planned SFT step does not."""

_TRL_KEYS = {
    "grpo": ("num_generations", "max_completion_length", "use_vllm", "vllm_mode", "generation_batch_size"),
    "kto": ("desirable_weight", "undesirable_weight"),
    "dpo": ("precompute_ref_log_probs", "max_prompt_length", "rpo_alpha", "ref_model_init_kwargs", "beta"),
    "reward": ("center_rewards_coefficient",),
}


def objective(fmt: str, data: dict[str, Any]) -> tuple[str, str]:
    """(objective, the key that says so); ``("sft", "")`` for supervised training."""
    if fmt == "axolotl":
        rl = data.get("rl")
        if isinstance(rl, str) and rl.strip():
            return rl.strip().lower(), "rl"
        if data.get("reward_model") or data.get("process_reward_model"):
            return "reward", "reward_model" if data.get("reward_model") else "process_reward_model"
    elif fmt == "llamafactory":
        stage = str(data.get("stage") or "sft").lower()
        if stage == "dpo":
            loss = str(data.get("pref_loss") or "sigmoid").lower()
            return ("orpo" if loss == "orpo" else "simpo" if loss == "simpo" else "ipo" if loss == "ipo" else "dpo"), (
                "stage"
            )
        if stage in ("rm", "ppo", "kto"):
            return ("reward" if stage == "rm" else stage), "stage"
    elif fmt == "trl":
        for name, keys in _TRL_KEYS.items():
            for key in keys:
                if key in data and data[key] is not None:
                    return name, key
    return "sft", ""


MODELLED = frozenset({"dpo", "ipo", "orpo", "simpo", "grpo", "reward"})
"""Objectives the spec models (``TrainSpec.objective``); the others are planned as SFT with a note."""


def objective_note(name: str, key: str) -> str:
    """The plan's note for a non-SFT objective."""
    if name in MODELLED:
        return f"{key}: objective {name}, planned as TRL v1.9.0 runs it (see the Goal line)"
    differs = DIFFERS.get(name, "its own models and sequences, which are not modelled")
    return f"{key}: objective {name} planned as one SFT step (not modelled yet): its step also holds {differs}"


def _trl_value(data: dict[str, Any], key: str) -> Any:
    """A TRL argument at the top level or in axolotl's ``trl:`` section."""
    if data.get(key) is not None:
        return data[key]
    nested = data.get("trl")
    return nested.get(key) if isinstance(nested, dict) else None


def objective_values(name: str, data: dict[str, Any], method: str) -> tuple[dict[str, Any], set[str]]:
    """Spec values of a modelled objective from TRL's arguments, and the keys read.

    TRL v1.9.0 names (``precompute_ref_log_probs``, ``beta``, ``num_generations``,
    ``max_completion_length``, ``use_vllm``), at the top level or in axolotl's ``trl:`` section.
    GRPO's reference exists only when ``beta`` > 0 (default 0.0): then the adapter-disabled policy
    under PEFT, a frozen copy for full fine-tuning. A GRPO sequence is the prompt plus the
    completion: ``max_prompt_length`` (older TRL releases, which open-r1's recipes were written for)
    + ``max_completion_length`` (default 256) gives ``seq_len``. Bad values are refused by the spec
    with the option's name.
    """
    if name not in MODELLED:
        return {}, set()
    out: dict[str, Any] = {"objective": name}
    keys = {"precompute_ref_log_probs", "beta", "num_generations", "max_completion_length", "use_vllm"}
    if name in ("dpo", "ipo") and _trl_value(data, "precompute_ref_log_probs") is True:
        out["reference"] = "precomputed"
    if name == "grpo":
        keys.add("max_prompt_length")
        beta = _trl_value(data, "beta")
        if isinstance(beta, int | float) and not isinstance(beta, bool) and beta > 0:
            out["reference"] = "copy" if method == "full" else "adapter"
        for key, param in (("num_generations", "generations"), ("max_completion_length", "completion_len")):
            value = _trl_value(data, key)
            if value is not None:
                out[param] = value
        if _trl_value(data, "use_vllm") is not None:
            out["vllm"] = bool(_trl_value(data, "use_vllm"))
        prompt = _trl_value(data, "max_prompt_length")
        completion = out.get("completion_len", 256)
        if isinstance(prompt, int) and isinstance(completion, int) and not isinstance(prompt, bool) and prompt > 0:
            out["seq_len"] = prompt + completion
    return out, {k for k in keys if k in data}


# Keys that change memory or speed, not modelled yet: what each would change. Prefix entries end in "*".
UNMODELLED_KEYS = {
    "liger_*": "Liger kernels: the fused linear cross-entropy never materializes the tokens x vocab logits, "
    "which the plan counts (over-estimate)",
    "use_liger_kernel": "Liger kernels: the fused cross-entropy never materializes the logits, which the plan counts",
    "enable_liger_kernel": "Liger kernels: the fused cross-entropy never materializes the logits, which the plan "
    "counts",
    "cut_cross_entropy": "cut cross-entropy never materializes the logits, which the plan counts (over-estimate)",
    "torch_compile": "torch.compile fuses kernels and can free some activations earlier (planned eager)",
    "fp8": "fp8 matmuls (weights and activations in 8 bits) planned in the base dtype",
    "fp8_enable_fsdp_float8_all_gather": "fp8 all-gather planned in the base dtype",
    "qat": "quantization-aware training's fake-quantized copies are not counted",
    "context_parallel_size": "context parallelism splits each sequence across GPUs (planned whole on one GPU)",
    "sequence_parallel_degree": "sequence parallelism splits each sequence across GPUs (planned whole on one GPU)",
    "dp_shard_size": "FSDP sharding degree (planned with --gpus N and --strategy)",
    "tensor_parallel_size": "tensor parallelism splits weights and activations across GPUs (single-GPU plan)",
    "lisa_*": "LISA trains a few layers at a time (planned as full fine-tuning of every layer)",
    "gptq": "a GPTQ-quantized base (planned as the unquantized base)",
    "layers_to_transform": "LoRA on these layers only (planned on every layer: adapters and their state over-planned)",
    "layers_pattern": "LoRA on some layers only (planned on every layer)",
    "rank_pattern": "per-module LoRA ranks (planned at r for every module)",
    "use_dora": "DoRA adds a magnitude vector and a weight-norm pass per module (planned as plain LoRA)",
    "modules_to_save": "trained full copies of these modules (not counted)",
    "use_unsloth": "Unsloth kernels (planned as the transformers path)",
    "unsloth_lora_mlp": "Unsloth kernels (planned as the transformers path)",
    "unsloth_lora_qkv": "Unsloth kernels (planned as the transformers path)",
    "unsloth_lora_o": "Unsloth kernels (planned as the transformers path)",
    "use_unsloth_gc": "Unsloth's offloaded checkpointing (planned as checkpoints kept on the GPU)",
    "plugins": "axolotl plugins (e.g. Liger, cut cross-entropy: planned as the transformers path)",
    "gradient_checkpointing_kwargs": "gradient checkpointing options (planned as the non-reentrant default)",
    "use_reentrant_gc": "reentrant checkpointing (planned as non-reentrant)",
    "use_galore": "GaLore's projected optimizer state (planned as the full optimizer state)",
    "use_badam": "BAdam trains one block at a time (planned as every block)",
    "use_apollo": "APOLLO's low-rank optimizer state (planned as the full optimizer state)",
    "pissa_init": "PiSSA initialization (memory as LoRA; its SVD at start is not counted)",
    "upcast_layernorm": "norm weights upcast to fp32 (a few MiB, not counted)",
}


def unmodelled_why(key: str) -> str | None:
    """Why ``key`` is not modelled, or None when it is not such a key."""
    if key in UNMODELLED_KEYS:
        return UNMODELLED_KEYS[key]
    for pattern, why in UNMODELLED_KEYS.items():
        if pattern.endswith("*") and key.startswith(pattern[:-1]):
            return why
    return None
