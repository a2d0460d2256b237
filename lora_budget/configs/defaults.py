"""Each tool's own defaults for keys a config leaves out, and the training code it runs.

Read from the tools' source at the versions named (a key's default is what the tool runs when
the file does not set it):

- TRL v1.9.0: ``trl/trainer/base_config.py`` (``gradient_checkpointing`` default True; ``bf16``
  default None, i.e. on unless ``fp16``), ``trl/trainer/sft_config.py`` (``max_length`` 1024; DPO,
  KTO and reward configs also 1024), ``trl/trainer/model_config.py`` (``use_peft`` False: full
  fine-tuning; ``dtype`` "float32"; ``lora_r`` 16, ``lora_alpha`` 32, ``lora_dropout`` 0.05;
  ``lora_target_modules`` None: PEFT's per-model default, ``q_proj,v_proj`` for Llama, Mistral,
  Qwen and Gemma in peft 0.21 ``utils/constants.py``). ``SFTTrainer`` does not call peft's
  ``prepare_model_for_kbit_training`` (only the experimental BCO/CPO trainers do).
- transformers 5.24 ``training_args.py``: ``per_device_train_batch_size`` 8, checkpointing off.
- LLaMA-Factory v0.9.5 ``src/llamafactory/hparams/finetuning_args.py`` (``lora_rank`` 8,
  ``lora_alpha`` None -> 2 x rank, ``lora_dropout`` 0, ``lora_target`` "all"),
  ``hparams/data_args.py`` (``cutoff_len`` 2048), ``hparams/parser.py`` (compute dtype bf16 with
  ``bf16``/``pure_bf16``, fp16 with ``fp16``) and ``extras/misc.py`` ``infer_optim_dtype`` (else bf16
  where the GPU has it), ``model/adapter.py`` (trainable parameters upcast to fp32 unless
  ``pure_bf16``, or ZeRO-3 without quantization), ``model/model_utils/liger_kernel.py`` (fused
  linear cross-entropy for stages pt and sft only). It never calls ``prepare_model_for_kbit_training``.
- axolotl v0.18.0 ``src/axolotl/utils/config/__init__.py`` ``resolve_dtype`` (bf16 with ``bf16``,
  ``bf16: auto`` or ``bfloat16``; fp16 with ``load_in_8bit``, ``fp16`` or ``float16``; else fp32),
  ``loaders/model.py`` ``_prepare_model_for_quantization`` (``prepare_model_for_kbit_training`` for a
  4-/8-bit LoRA unless QLoRA with FSDP, ZeRO-3 or LoftQ), ``integrations/liger/args.py``
  (``liger_fused_linear_cross_entropy``) and ``cut_cross_entropy``.
- PEFT 0.21 ``LoraConfig``: ``r`` 8, ``lora_alpha`` 8, ``lora_dropout`` 0; ``target_modules`` None is
  the per-model mapping (``configs/targets.py`` PEFT_DEFAULT_TARGETS, applied once the model is known).
"""

from __future__ import annotations

from lora_budget.configs.objectives import objective
from lora_budget.configs.values import Reader

TRL = "TRL v1.9.0"
LF = "LLaMA-Factory v0.9.5"
AXOLOTL = "axolotl v0.18.0"

TRL_SCRIPT_KEYS = (
    "model_name_or_path",
    "use_peft",
    "max_length",
    "max_seq_length",
    "dataset_name",
    "packing",
    "dataset_text_field",
    "lora_r",
    "num_generations",
    "max_completion_length",
    "beta",
)
"""Keys of TRL's own configs (``SFTConfig`` and friends, ``ModelConfig``, ``ScriptArguments``), which plain
transformers ``TrainingArguments`` lack: with one of them, TRL's defaults apply."""


def default(r: Reader, param: str, value: object, key: str, source: str) -> None:
    """Set ``param`` to a tool default when the file did not set it and the user did not type it."""
    if param in r.values or param in r.typed:
        return
    r.set(param, value, f"{key} ({source} default)")


def trl(r: Reader) -> None:
    """TRL's (or plain transformers') defaults for what a TRL / TrainingArguments file leaves out."""
    r.set("framework", "hf-trainer", "(TRL / transformers Trainer)")
    default(r, "batch_size", "8", "per_device_train_batch_size", "transformers")
    if not any(k in r.data for k in TRL_SCRIPT_KEYS):
        return
    default(r, "grad_ckpt", True, "gradient_checkpointing", TRL)
    if not any(k in r.data for k in ("num_generations", "max_completion_length")):
        default(r, "seq_len", 1024, "max_length", TRL)
    if "method" not in r.values and "method" not in r.typed:
        r.set("method", "full", f"use_peft ({TRL} default false)")
        if any(k.startswith("lora_") for k in r.data):
            r.notes.append("lora_* keys without use_peft: true are not used by TRL: planned as full fine-tuning")
    no_dtype = "model_name_or_path" in r.data and not r.has("dtype") and not r.has("torch_dtype")
    no_dtype = no_dtype and not r.has("deepspeed")  # the DeepSpeed engine casts the model to its dtype
    if no_dtype and r.values.get("method") in ("full", "lora") and "dtype" not in r.typed:
        # ModelConfig loads the weights in float32 and the Trainer autocasts to bf16 (or fp16).
        r.set("dtype", "fp32", f"dtype ({TRL} ModelConfig default float32)")
        r.notes.append(
            "dtype: TRL loads the weights in float32 without a dtype key; its bf16/fp16 autocast is not "
            "modelled (activations planned in fp32, an over-estimate)"
        )
    elif no_dtype and "dtype" not in r.typed:
        r.notes.append("dtype: without a dtype key TRL's 4-/8-bit compute dtype is float32; planned with bf16 compute")
    if r.values.get("method") in ("lora", "qlora", "lora8bit"):
        if "targets" not in r.values and "targets" not in r.typed:
            r.default_targets = "lora_target_modules"
        default(r, "targets", "q_proj,v_proj", "lora_target_modules", f"{TRL}: PEFT 0.21's per-model")
        default(r, "lora_dropout", 0.05, "lora_dropout", TRL)
        if r.values.get("method") != "lora":
            default(r, "kbit_prep", False, "(SFTTrainer)", f"{TRL}: no prepare_model_for_kbit_training")
    if r.flag("use_liger_kernel"):
        goal, _ = objective("trl", r.data)
        if goal == "sft":
            default(r, "loss", "fused-ce", "use_liger_kernel", "Liger: fused linear cross-entropy")
        else:  # TRL's preference / RL trainers use Liger's fused losses of their own objective
            r.notes.append(
                f"use_liger_kernel: Liger's fused {goal} loss never materializes the logits; not modelled "
                "(planned with the logits)"
            )


def llamafactory(r: Reader, stage: str) -> None:
    r.set("framework", "hf-trainer", "(LLaMA-Factory)")
    default(r, "batch_size", "8", "per_device_train_batch_size", "transformers")
    default(r, "seq_len", 2048, "cutoff_len", LF)
    method = r.values.get("method")
    if method in ("lora", "qlora", "lora8bit"):
        default(r, "rank", 8, "lora_rank", LF)
        if "alpha" not in r.values and "rank" in r.values:
            default(r, "alpha", 2 * r.values["rank"], "lora_alpha", f"{LF}: 2 x lora_rank")
        default(r, "targets", "all-linear", "lora_target", f"{LF} 'all'")
        if method != "lora":
            default(r, "kbit_prep", False, "(LLaMA-Factory)", f"{LF}: no prepare_model_for_kbit_training")
    elif method == "full" and not r.flag("pure_bf16") and "dtype" not in r.typed:
        zero3 = r.values.get("strategy") == "zero3"
        if not zero3:
            r.set("dtype", "fp32", f"pure_bf16 ({LF} default false: trainable parameters upcast to fp32)")
            r.notes.append(
                "full fine-tuning without pure_bf16: LLaMA-Factory keeps the weights in fp32 under bf16/fp16 "
                "autocast, which is not modelled (activations planned in fp32, an over-estimate)"
            )
    if r.flag("enable_liger_kernel"):
        loss = "fused-ce" if stage in ("pt", "sft") else "full-ce"
        default(r, "loss", loss, "enable_liger_kernel", f"{LF} liger_kernel.py, stage {stage}")


def axolotl(r: Reader) -> None:
    r.set("framework", "hf-trainer", "(axolotl)")
    if r.values.get("method") in ("qlora", "lora8bit") and "dtype" not in r.values:
        r.notes.append("dtype: axolotl loads fp32 without bf16/fp16 keys; a 4-/8-bit base is planned with bf16 compute")
    else:
        default(r, "dtype", "fp32", "bf16", f"{AXOLOTL} resolve_dtype: no bf16/fp16/bfloat16/float16 key loads fp32;")
    if r.values.get("method") in ("qlora", "lora8bit"):
        default(r, "kbit_prep", not _axolotl_skips_kbit_prep(r), "(axolotl)", f"{AXOLOTL} loaders/model.py")
    cce_plugin = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin" in (r.data.get("plugins") or [])
    cce = r.flag("cut_cross_entropy")
    if r.flag("liger_fused_linear_cross_entropy"):
        default(r, "loss", "fused-ce", "liger_fused_linear_cross_entropy", AXOLOTL)
    elif cce:
        default(r, "loss", "fused-ce", "cut_cross_entropy", AXOLOTL)
    elif cce is None and cce_plugin:
        default(r, "loss", "fused-ce", "cut_cross_entropy", f"{AXOLOTL} CutCrossEntropyPlugin (args.py)")


def _axolotl_skips_kbit_prep(r: Reader) -> bool:
    """axolotl v0.18.0 ``loaders/model.py`` ``_prepare_model_for_quantization``: no
    ``prepare_model_for_kbit_training`` with FSDP (``fsdp`` or ``fsdp_config`` set) and ``adapter: qlora``
    (the literal name: ``adapter: lora`` with ``load_in_4bit`` is prepared), with FSDP and
    ``cpu_ram_efficient_loading``, under DeepSpeed ZeRO-3, with LoftQ bits on a LoRA adapter, or with
    quantized MoE experts (``quantize_moe_experts``)."""
    fsdp_on = r.data.get("fsdp_config") is not None or r.data.get("fsdp") is not None
    cfg = r.data.get("fsdp_config") if isinstance(r.data.get("fsdp_config"), dict) else {}
    cpu_ram = bool(cfg.get("cpu_ram_efficient_loading") or cfg.get("fsdp_cpu_ram_efficient_loading"))
    adapter = str(r.data.get("adapter") or "").lower()
    peft_block = r.data.get("peft") if isinstance(r.data.get("peft"), dict) else {}
    loftq = isinstance(peft_block.get("loftq_config"), dict) and bool(peft_block["loftq_config"].get("loftq_bits"))
    zero3 = r.values.get("strategy") == "zero3" and r.parallel.startswith("deepspeed")
    moe = r.data.get("quantize_moe_experts") is True
    return (fsdp_on and (adapter == "qlora" or cpu_ram)) or zero3 or (adapter == "lora" and loftq) or moe


def peft(r: Reader) -> None:
    default(r, "rank", 8, "r", "PEFT 0.21 LoraConfig")
    default(r, "alpha", 8, "lora_alpha", "PEFT 0.21 LoraConfig")
    if "targets" not in r.values and "targets" not in r.typed:
        r.default_targets = "target_modules"
    default(r, "targets", "q_proj,v_proj", "target_modules", "PEFT 0.21's per-model")
