"""Key mappings of each tool's config onto lora-budget's spec options (CLI parameter names).

Key names and defaults are those each tool documents:

- axolotl: ``base_model``, ``adapter: lora|qlora``, ``load_in_4bit``/``load_in_8bit``, ``lora_r``,
  ``lora_alpha``, ``lora_target_modules``/``lora_target_linear``, ``sequence_len``,
  ``micro_batch_size``, ``gradient_accumulation_steps``, ``optimizer``, ``bf16``/``fp16``,
  ``gradient_checkpointing``, ``flash_attention``/``sdp_attention``, ``num_epochs``. No ``adapter``
  means full fine-tuning.
- LLaMA-Factory: ``model_name_or_path``, ``finetuning_type`` (default lora), ``lora_rank``,
  ``lora_alpha``, ``lora_target`` (``all`` or a comma list), ``quantization_bit`` (4/8),
  ``quantization_type``, ``double_quantization`` (default true), ``cutoff_len``,
  ``per_device_train_batch_size``, ``optim``, ``flash_attn`` (auto/disabled/sdpa/fa2),
  ``disable_gradient_checkpointing`` (default false: LLaMA-Factory checkpoints by default).
- TRL (``SFTConfig`` = transformers ``TrainingArguments`` + SFT keys, and ``ModelConfig``):
  ``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``max_length`` (older:
  ``max_seq_length``), ``gradient_checkpointing``, ``bf16``/``fp16``, ``optim``,
  ``num_train_epochs``; ``model_name_or_path``, ``use_peft``, ``lora_r``, ``lora_alpha``,
  ``lora_target_modules``, ``load_in_4bit``/``load_in_8bit``, ``bnb_4bit_quant_type``,
  ``use_bnb_nested_quant`` (default false), ``attn_implementation``, ``dtype``/``torch_dtype``.
- PEFT ``adapter_config.json``: ``peft_type: LORA``, ``r``, ``lora_alpha``, ``target_modules``,
  ``base_model_name_or_path``.
- ``config.json`` of a model: the model itself (``--model`` = the file).
- Multi-GPU (axolotl, LLaMA-Factory, TRL; ``configs/parallel.py``): ``deepspeed`` (a DeepSpeed JSON
  path or dict: ``zero_optimization.stage``, ``offload_optimizer`` / ``offload_param`` as DeepSpeed's
  ``DeepSpeedZeroConfig`` documents them; the example files LLaMA-Factory and axolotl ship are
  known by name), ``fsdp`` / ``fsdp_config`` (transformers ``FSDPOption`` tokens and
  ``_apply_legacy_fsdp_to_config``, transformers 5.23 ``training_args.py``; axolotl
  docs/multi-gpu.qmd and ``utils/schemas/fsdp.py``; accelerate's ``FSDP_SHARDING_STRATEGY``) ->
  ``--strategy`` / ``--offload``, applied once ``--gpus N`` says the world size.
"""

from __future__ import annotations

from lora_budget.configs import accelerate, axolotl, defaults, llamafactory_v1
from lora_budget.configs.common import (
    DTYPE_NAMES,
    activation_offloading,
    attn_implementation,
    grad_ckpt,
    grad_ckpt_kwargs,
    precision,
    quant_type,
    rank_alpha_dropout,
    trainer_eval,
)
from lora_budget.configs.parallel import deepspeed_file, read_parallel
from lora_budget.configs.values import Reader


def llamafactory(r: Reader) -> None:
    r.model("model_name_or_path")
    r.text("stage")  # the objective: configs/objectives.py
    if not r.typed_over("method", "finetuning_type", "quantization_bit", "quantization_method"):
        _llamafactory_method(r)
    _llamafactory_rest(r)


def _llamafactory_method(r: Reader) -> None:
    given = r.text("finetuning_type")
    kind = (given or "lora").lower()
    bits = r.positive_int("quantization_bit")
    if bits not in (None, 4, 8):
        raise r.fail("quantization_bit", f"must be 4 or 8, got {bits}")
    qmethod = (r.text("quantization_method") or "bnb").lower()
    if bits and qmethod not in ("bnb", "bitsandbytes"):
        raise r.fail("quantization_method", f"{qmethod!r} is not modelled; only bitsandbytes (bnb)")
    if kind == "full":
        if bits:
            raise r.fail("quantization_bit", "full fine-tuning of a quantized model is not possible")
        r.set("method", "full", "finetuning_type")
    elif kind == "lora":
        r.set(
            "method", {None: "lora", 4: "qlora", 8: "lora8bit"}[bits], "quantization_bit" if bits else "finetuning_type"
        )
    else:
        raise r.fail(
            "finetuning_type", f"{kind!r} is not modelled; use full or lora (or pass --method full for an upper bound)"
        )


def _llamafactory_rest(r: Reader) -> None:
    rank_alpha_dropout(r, "lora_rank")
    r.targets("lora_target")
    quant_type(r, "quantization_type")
    if (dq := r.flag("double_quantization")) is not None:
        r.set("double_quant", dq, "double_quantization")
    if not r.typed_over("seq_len", "cutoff_len") and (seq := r.positive_int("cutoff_len")) is not None:
        r.set("seq_len", seq, "cutoff_len")
    _trainer_args(r, both_off=None)  # LLaMA-Factory infers bf16 where the GPU has it (defaults.py)
    if not r.typed_over("dtype", "pure_bf16") and r.flag("pure_bf16"):
        r.set("dtype", "bf16", "pure_bf16")
    key = "disable_gradient_checkpointing"
    if not r.typed_over("grad_ckpt", key):
        disabled = r.flag(key)
        r.set("grad_ckpt", not disabled, key if disabled is not None else f"{key} (default false)")
    if not r.typed_over("attn", "flash_attn") and (attn := r.text("flash_attn")) is not None:
        mapped = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash", "fa3": "flash"}.get(
            attn.lower(), "?"
        )
        if mapped == "?":
            raise r.fail("flash_attn", f"must be auto, disabled, sdpa or fa2, got {attn!r}")
        if mapped:
            r.set("attn", mapped, "flash_attn")
    r.parallel = read_parallel(r)
    defaults.llamafactory(r, str(r.data.get("stage") or "sft").lower())


def _trainer_args(r: Reader, both_off: str | None = "fp32") -> None:
    """transformers TrainingArguments keys shared by LLaMA-Factory and TRL."""
    if (
        not r.typed_over("batch_size", "per_device_train_batch_size")
        and (b := r.positive_int("per_device_train_batch_size")) is not None
    ):
        r.set("batch_size", str(b), "per_device_train_batch_size")
    if (acc := r.positive_int("gradient_accumulation_steps")) is not None:
        r.set("grad_accum", acc, "gradient_accumulation_steps")
    r.optimizer("optim")
    precision(r, both_off=both_off)
    grad_ckpt(r, "gradient_checkpointing")
    grad_ckpt_kwargs(r)
    trainer_eval(r)
    if (epochs := r.positive_number("num_train_epochs")) is not None:
        r.set("epochs", epochs, "num_train_epochs")


def trl(r: Reader) -> None:
    r.model("model_name_or_path")
    _trainer_args(r)
    for key in ("max_length", "max_seq_length"):
        if not r.typed_over("seq_len", key) and (seq := r.positive_int(key)) is not None:
            r.set("seq_len", seq, key)
    peft = r.flag("use_peft")
    four, eight = r.flag("load_in_4bit"), r.flag("load_in_8bit")
    if four and eight:
        raise r.fail("load_in_4bit", "load_in_4bit and load_in_8bit are both true; choose one")
    if peft is False and (four or eight):
        raise r.fail("use_peft", "a 4-/8-bit base model needs use_peft: true (adapters)")
    if r.typed_over("method", "use_peft"):
        pass
    elif peft or four or eight:
        r.set(
            "method",
            "qlora" if four else "lora8bit" if eight else "lora",
            "use_peft" if peft else "load_in_4bit" if four else "load_in_8bit",
        )
    elif peft is False:
        r.set("method", "full", "use_peft")
    else:
        r.notes.append("no use_peft key: the file does not say full or LoRA, so --method decides")
    rank_alpha_dropout(r, "lora_r")
    r.targets("lora_target_modules")
    quant_type(r, "bnb_4bit_quant_type")
    nested = r.flag("use_bnb_nested_quant")
    if four:
        r.set("double_quant", bool(nested), "use_bnb_nested_quant")  # TRL's default is false
    for key in ("dtype", "torch_dtype"):
        if not r.typed_over("dtype", key) and (name := r.text(key)) is not None and name != "auto":
            if name not in DTYPE_NAMES:
                raise r.fail(key, f"must be bfloat16, float16, float32 or auto, got {name!r}")
            r.set("dtype", DTYPE_NAMES[name], key)
    attn_implementation(r)
    activation_offloading(r)
    _model_init_kwargs(r)
    r.parallel = read_parallel(r)
    defaults.trl(r)


def _model_init_kwargs(r: Reader) -> None:
    """SFTConfig ``model_init_kwargs`` (TRL v1.9.0 trainer/sft_config.py): the kwargs of ``from_pretrained``
    when the trainer loads the model itself; their dtype and attention count where the top level is silent."""
    r.used.add("model_init_kwargs")
    kwargs = r.data.get("model_init_kwargs")
    if not isinstance(kwargs, dict):
        return
    if "model_name_or_path" in r.data:  # trl/scripts/sft.py (v1.9.0) replaces them with ModelConfig's
        r.notes.append("model_init_kwargs: replaced by the TRL script's own (ModelConfig dtype, attn_implementation)")
        return
    for key, value in kwargs.items():
        where = f"model_init_kwargs.{key}"
        if key in ("dtype", "torch_dtype") and "dtype" not in r.values and "dtype" not in r.typed:
            if value not in ("auto", None):
                if value not in DTYPE_NAMES:
                    raise r.fail(where, f"must be bfloat16, float16, float32 or auto, got {value!r}")
                r.set("dtype", DTYPE_NAMES[value], where)
        elif key == "attn_implementation" and "attn" not in r.values and isinstance(value, str):
            attn_implementation(r, where, value)
        elif key == "quantization_config" and value:
            r.notes.append(f"{where}: not modelled (use load_in_4bit / load_in_8bit, which are read)")
        elif key not in ("device_map", "trust_remote_code", "revision", "low_cpu_mem_usage", "use_cache"):
            r.nested_unknown.append(where)


def peft(r: Reader) -> None:
    kind = r.text("peft_type")
    if kind is None or kind.upper() != "LORA":
        raise r.fail(
            "peft_type",
            f"only LORA adapters are modelled, got {kind!r}; plan a LoRA of the base instead (--model M, no --config)",
        )
    r.model("base_model_name_or_path")
    rank_alpha_dropout(r, "r")
    r.targets("target_modules")
    r.set("method", "lora", "peft_type")
    defaults.peft(r)
    r.notes.append(
        "an adapter_config.json does not say whether the base was quantized: planned as LoRA "
        "(pass --method qlora for a 4-bit base)"
    )


def hf_config(r: Reader) -> None:
    r.set("model", str(r.path), "model_type")
    r.used.update(r.data)  # every key of a config.json describes the model itself
    quant = r.data.get("quantization_config")
    if isinstance(quant, dict) and (quant.get("load_in_4bit") or quant.get("load_in_8bit")):
        r.set("method", "qlora" if quant.get("load_in_4bit") else "lora8bit", "quantization_config")


def deepspeed(r: Reader) -> None:
    r.parallel = deepspeed_file(r)


MODEL_KEYS = {
    "axolotl": "base_model",
    "llamafactory": "model_name_or_path",
    "llamafactory_v1": "model",
    "trl": "model_name_or_path",
    "peft": "base_model_name_or_path",
}
"""The key each format names its base model with (a config.json is the model; a DeepSpeed JSON names none)."""

MAPPERS = {
    "axolotl": axolotl.read,
    "llamafactory": llamafactory,
    "llamafactory_v1": llamafactory_v1.read,
    "trl": trl,
    "peft": peft,
    "hf_config": hf_config,
    "deepspeed": deepspeed,
    "accelerate": accelerate.read,
}
