"""axolotl YAML (axolotl v0.18.0): ``base_model``, ``adapter``, ``load_in_4bit``/``8bit``, LoRA keys, ``sequence_len``,
``micro_batch_size``, ``optimizer``, precision, checkpointing, attention, Liger / cut cross-entropy plugins."""

from __future__ import annotations

from lora_budget.configs import defaults
from lora_budget.configs.common import (
    activation_offloading,
    attn_implementation,
    grad_ckpt,
    grad_ckpt_kwargs,
    rank_alpha_dropout,
)
from lora_budget.configs.defaults import AXOLOTL
from lora_budget.configs.objectives import objective
from lora_budget.configs.parallel import read_parallel
from lora_budget.configs.values import Reader


def read(r: Reader) -> None:
    r.model("base_model")
    if not r.typed_over("method", "adapter", "load_in_4bit", "load_in_8bit"):
        _axolotl_method(r)
    _axolotl_rest(r)


def _axolotl_dtype(r: Reader) -> None:
    """axolotl v0.18.0 ``resolve_dtype`` (utils/config/__init__.py): bf16 with bf16 (true, or auto on a
    bf16 GPU) or bfloat16; else fp16 with load_in_8bit, fp16 or float16; else fp32."""
    keys = ("bf16", "fp16", "bfloat16", "float16")
    if r.typed_over("dtype", *keys):
        return
    b, f, bb, ff = (r.flag(k) for k in keys)
    if b and f:
        raise r.fail("bf16", "bf16 and fp16 are both true; choose one")
    if b or bb:
        r.set("dtype", "bf16", "bf16" if b else "bfloat16")
    elif f or ff or r.flag("load_in_8bit"):
        r.set("dtype", "fp16", "fp16" if f else "float16" if ff else "load_in_8bit (axolotl loads 8-bit in fp16)")
    # none of them: fp32, unless a DeepSpeed JSON enables bf16/fp16 (defaults.axolotl, after read_parallel)
    if r.has("torch_dtype"):  # resolve_dtype overwrites cfg.torch_dtype from the keys above
        r.used.add("torch_dtype")
        r.notes.append(f"torch_dtype: {r.data['torch_dtype']} is replaced by axolotl's resolve_dtype (bf16/fp16 keys)")


def _axolotl_method(r: Reader) -> None:
    adapter = r.text("adapter")
    four, eight = r.flag("load_in_4bit"), r.flag("load_in_8bit")
    if four and eight:
        raise r.fail("load_in_4bit", "load_in_4bit and load_in_8bit are both true; choose one")
    if adapter is None:
        if four or eight:
            raise r.fail("load_in_4bit" if four else "load_in_8bit", "a quantized base needs adapter: lora or qlora")
        r.set("method", "full", "adapter")
    elif adapter.lower() == "qlora" or (adapter.lower() == "lora" and four):
        r.set("method", "qlora", "adapter")
    elif adapter.lower() == "lora":
        r.set("method", "lora8bit" if eight else "lora", "adapter")
    else:
        raise r.fail("adapter", f"{adapter!r} is not modelled; use lora or qlora")


def _axolotl_rest(r: Reader) -> None:
    rank_alpha_dropout(r, "lora_r")
    if r.typed_over("targets", "lora_target_linear", "lora_target_modules"):
        pass
    elif r.flag("lora_target_linear"):
        r.set("targets", "all-linear", "lora_target_linear")
        r.used.add("lora_target_modules")
    else:
        r.targets("lora_target_modules")
    if not r.typed_over("seq_len", "sequence_len") and (seq := r.positive_int("sequence_len")) is not None:
        r.set("seq_len", seq, "sequence_len")
    if not r.typed_over("batch_size", "micro_batch_size") and (b := r.positive_int("micro_batch_size")) is not None:
        r.set("batch_size", str(b), "micro_batch_size")
    if (acc := r.positive_int("gradient_accumulation_steps")) is not None:
        r.set("grad_accum", acc, "gradient_accumulation_steps")
    elif (total := r.positive_int("batch_size")) is not None and (micro := r.values.get("batch_size")):
        # normalize_config (utils/config/__init__.py): gradient_accumulation_steps = batch_size // micro_batch_size
        r.set("grad_accum", max(1, total // int(micro)), "batch_size // micro_batch_size")
    r.used.add("batch_size")
    r.optimizer("optimizer")
    _axolotl_dtype(r)
    grad_ckpt(r, "gradient_checkpointing")
    grad_ckpt_kwargs(r)
    activation_offloading(r)
    _bnb_kwargs(r)
    _attention(r)
    _plugins(r)
    _eval(r)
    if (epochs := r.positive_number("num_epochs")) is not None:
        r.set("epochs", epochs, "num_epochs")
    r.parallel = read_parallel(r)
    defaults.axolotl(r)


LEGACY_ATTN = {
    "xformers_attention": "xformers",
    "sage_attention": "sage",
    "flex_attention": "flex_attention",
    "flash_attention": "flash_attention_2",
    "sdp_attention": "sdpa",
    "eager_attention": "eager",
}
"""axolotl v0.18.0 ``LEGACY_ATTN_FLAG_TO_IMPL`` (utils/schemas/enums.py), in its priority order."""


def _attention(r: Reader) -> None:
    """``attn_implementation``, or the first legacy flag set (``normalize_attn_implementation``,
    utils/schemas/config.py, refuses both together); none: transformers' default, sdpa."""
    if r.typed_over("attn", "attn_implementation", *LEGACY_ATTN):
        return
    flags = [key for key in LEGACY_ATTN if r.flag(key)]
    if r.has("attn_implementation") and flags:
        raise r.fail("attn_implementation", f"cannot be combined with the legacy flag {flags[0]} (axolotl refuses it)")
    if r.has("attn_implementation"):
        attn_implementation(r)
    elif flags:
        attn_implementation(r, flags[0], LEGACY_ATTN[flags[0]])
    else:
        r.used.add("attn_implementation")


def _bnb_kwargs(r: Reader) -> None:
    """``bnb_config_kwargs`` update axolotl's 4-bit BitsAndBytesConfig (nf4, double quant: loaders/model.py)."""
    r.used.add("bnb_config_kwargs")
    kwargs = r.data.get("bnb_config_kwargs")
    if not isinstance(kwargs, dict):
        return
    for name, value in kwargs.items():
        if name == "bnb_4bit_use_double_quant" and isinstance(value, bool) and "double_quant" not in r.typed:
            r.set("double_quant", value, "bnb_config_kwargs.bnb_4bit_use_double_quant")
        elif name == "bnb_4bit_quant_type" and str(value).lower() in ("nf4", "fp4") and "quant" not in r.typed:
            r.set("quant", str(value).lower(), "bnb_config_kwargs.bnb_4bit_quant_type")
        elif name != "bnb_4bit_compute_dtype":
            r.notes.append(f"bnb_config_kwargs.{name}: not modelled (planned with axolotl's 4-bit defaults)")


PLUGINS = {
    "axolotl.integrations.liger.LigerPlugin": "its liger_* keys are read or reported",
    "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin": "cut_cross_entropy (default true with it)",
    "axolotl.integrations.swanlab.SwanLabPlugin": "logging only",
    "axolotl.integrations.kernels.KernelsPlugin": "its use_kernels / use_scattermoe / use_sonicmoe keys are reported",
    "axolotl.integrations.expert_parallel.ExpertParallelPlugin": "its expert_parallel_size key is reported",
    "axolotl.integrations.diffusion.DiffusionPlugin": "its diffusion key is reported",
    "axolotl.integrations.llm_compressor.LLMCompressorPlugin": "its llmcompressor key is reported",
}
"""axolotl plugins whose memory effect goes through keys that are read or reported themselves."""


def _plugins(r: Reader) -> None:
    r.used.add("plugins")
    plugins = r.data.get("plugins") or []
    if not isinstance(plugins, list):
        raise r.fail("plugins", f"must be a list of plugin classes, got {plugins!r}")
    other = [str(p) for p in plugins if str(p) not in PLUGINS]
    if other:
        r.notes.append(f"plugins: {', '.join(other)} not modelled (planned as the transformers path)")


def _eval(r: Reader) -> None:
    """axolotl evaluates during training with ``val_set_size`` > 0 or ``test_datasets``, at ``eval_batch_size``
    (default micro_batch_size: utils/config/__init__.py normalize_config, v0.18.0). Planned for SFT."""
    keys = ("val_set_size", "test_datasets", "eval_batch_size")
    if r.typed_over("eval_batch_size", *keys):
        return
    val, tests = r.raw("val_set_size"), r.raw("test_datasets")
    r.used.update(keys)
    has_val = isinstance(val, (int, float)) and not isinstance(val, bool) and val > 0
    if not has_val and not tests:
        return
    key = "val_set_size" if has_val else "test_datasets"
    if objective("axolotl", r.data)[0] != "sft":
        r.notes.append(f"{key}: evaluation is planned for SFT only; not planned for this objective")
        return
    if (b := r.positive_int("eval_batch_size")) is not None:
        r.set("eval_batch_size", b, "eval_batch_size")
    elif "batch_size" in r.values:
        r.set("eval_batch_size", int(r.values["batch_size"]), f"eval_batch_size ({AXOLOTL} default micro_batch_size)")
