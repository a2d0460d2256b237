"""Reading a training config file and telling which tool wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lora_budget.errors import LoraBudgetError
from lora_budget.loads import parse_json, parse_yaml

FORMATS = ("axolotl", "llamafactory", "llamafactory_v1", "trl", "peft", "hf_config", "deepspeed", "accelerate")
FORMAT_NAMES = {
    "axolotl": "axolotl YAML",
    "llamafactory": "LLaMA-Factory YAML",
    "llamafactory_v1": "LLaMA-Factory v1 YAML",
    "trl": "TRL / transformers training arguments",
    "peft": "PEFT adapter_config.json",
    "hf_config": "Hugging Face config.json",
    "deepspeed": "DeepSpeed JSON",
    "accelerate": "accelerate config YAML",
}

# keys only one tool uses, checked in this order
_LLAMAFACTORY_V1_KEYS = ("peft_config", "quant_config", "dist_config", "kernel_config", "model_class", "optim_config")
_LLAMAFACTORY_KEYS = ("finetuning_type", "cutoff_len", "lora_target", "quantization_bit", "template", "stage")
_AXOLOTL_KEYS = ("base_model", "micro_batch_size", "sequence_len", "adapter", "lora_target_linear", "num_epochs")
_TRL_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "max_seq_length",
    "optim",
    "output_dir",
    "use_peft",
    "model_name_or_path",
)


def read_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """(the file's top-level mapping, its format). Raises a one-line LoraBudgetError otherwise."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise LoraBudgetError(f"{p}: no such config file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoraBudgetError(f"{p}: cannot read it ({exc})") from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        data = parse_json(text, str(p))  # one line naming the file: bad JSON, too deep, a huge integer
    elif suffix in (".yaml", ".yml"):
        data = parse_yaml(text, str(p))
    else:
        raise LoraBudgetError(
            f"{p}: unsupported config format {suffix or '(no extension)'}; give an axolotl or LLaMA-Factory "
            ".yaml, a TRL training-arguments .json/.yaml, a PEFT adapter_config.json or a config.json"
        )
    if not isinstance(data, dict):
        raise LoraBudgetError(f"{p}: expected a mapping of keys to values at the top level")
    if bad := [k for k in data if not isinstance(k, str)]:
        raise LoraBudgetError(f"{p}: the key {bad[0]!r} is not a name (keys are strings such as base_model)")
    return data, detect(data, p, yaml=suffix != ".json")


def detect(data: dict[str, Any], p: Path, yaml: bool) -> str:
    if not yaml:
        if "zero_optimization" in data and "per_device_train_batch_size" not in data:
            return "deepspeed"
        if "peft_type" in data:
            return "peft"
        if "model_type" in data and ("architectures" in data or "hidden_size" in data or "n_embd" in data):
            return "hf_config"
    if yaml and "distributed_type" in data and ("compute_environment" in data or "num_processes" in data):
        return "accelerate"
    if yaml and "model" in data and "base_model" not in data and any(k in data for k in _LLAMAFACTORY_V1_KEYS):
        return "llamafactory_v1"
    if any(k in data for k in _LLAMAFACTORY_KEYS) and "base_model" not in data:
        return "llamafactory"
    if yaml and any(k in data for k in _AXOLOTL_KEYS):
        return "axolotl"
    if any(k in data for k in _TRL_KEYS):
        return "trl"
    raise LoraBudgetError(
        f"{p}: unsupported config format: none of the keys of an axolotl or LLaMA-Factory YAML, TRL training "
        "arguments, a PEFT adapter_config.json (peft_type), a model config.json (model_type) or a DeepSpeed JSON "
        "(zero_optimization)"
    )
