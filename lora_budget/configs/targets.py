"""LoRA targets given as a regular expression or as module paths, as PEFT matches them, onto module names.

PEFT 0.21 ``tuners/tuners_utils.py`` ``check_target_module_exists``: a string ``target_modules`` is
a regular expression that must ``re.fullmatch`` a module's full name (``model.layers.0.self_attn.q_proj``);
a list entry matches a module whose name equals it or ends with ``"." + entry``. The planner
names adapted modules by their last component (``q_proj``) on every decoder layer, so:

- a regular expression is tried on the full names of the decoder-layer linears of the layouts
  transformers uses (``model.layers.N.self_attn.q_proj``, ``model.language_model.layers.N...`` for
  vision-language models, ``transformer.h.N.attn.c_attn``, ...), at a sample of layer indices; the
  last components it matches are the targets, and a component it matches on some layers only is
  reported (planned on every layer, an over-estimate of the adapters);
  The names kept are those the model has (``fit_to_model``, once the model is known);
- a module path (``self_attn.q_proj``) is planned by its last component; a path into a vision tower or
  projector is dropped with a note (only the text decoder is planned).
"""

from __future__ import annotations

import re

PREFIXES = (
    "model.layers.{i}",
    "model.language_model.layers.{i}",
    "model.language_model.model.layers.{i}",
    "language_model.model.layers.{i}",
    "model.text_model.layers.{i}",
    "model.model.layers.{i}",
    "transformer.h.{i}",
    "transformer.blocks.{i}",
    "model.decoder.layers.{i}",
    "gpt_neox.layers.{i}",
)
"""Where transformers 5 puts the decoder layers (Llama-like, VLM text towers, GPT-2/Falcon, MPT, OPT, NeoX)."""

PARENTS = (
    "self_attn",
    "mlp",
    "cross_attn",
    "attn",
    "self_attention",
    "attention",
    "mixer",
    "feed_forward",
    "mlp.shared_experts",
    "mlp.shared_expert",
    "block_sparse_moe",
    "_checkpoint_wrapped_module.self_attn",
    "_checkpoint_wrapped_module.mlp",
)
"""The blocks inside a decoder layer that hold linears (``_checkpoint_wrapped_module``: FSDP checkpointing)."""

LEAVES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "gate_up_proj",
    "qkv_proj",
    "query_key_value",
    "dense",
    "dense_h_to_4h",
    "dense_4h_to_h",
    "c_attn",
    "c_proj",
    "c_fc",
    "Wqkv",
    "out_proj",
    "in_proj",
    "x_proj",
    "fc1",
    "fc2",
    "w1",
    "w2",
    "w3",
    "q_a_proj",
    "q_b_proj",
    "kv_a_proj_with_mqa",
    "kv_b_proj",
)
"""Linear-layer names of the decoder families transformers 5 builds (the catalog's families and more)."""

LAYERS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 15, 16, 23, 31, 47, 63)
"""Layer indices each pattern is tried at: a match at some but not all of them restricts layers."""

VISION = ("vision", "visual", "image", "projector", "multi_modal", "mm_projector", "audio")


def regex_targets(pattern: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names the pattern adapts on some decoder layer, those of them it adapts on some layers only).

    Raises ``re.error`` for an invalid pattern; empty names when it matches no decoder-layer linear.
    """
    rx = re.compile(pattern)
    names, partial = [], []
    for leaf in LEAVES:
        hits = {
            i
            for i in LAYERS
            if any(rx.fullmatch(f"{p.format(i=i)}.{parent}.{leaf}") for p in PREFIXES for parent in PARENTS)
        }
        if hits:
            names.append(leaf)
            if len(hits) < len(LAYERS):
                partial.append(leaf)
    return tuple(names), tuple(partial)


def path_targets(entries: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(last components of the entries, entries dropped because they name vision or projector modules)."""
    names, dropped = [], []
    for entry in entries:
        if "." in entry and any(word in entry.lower() for word in VISION):
            dropped.append(entry)
        elif (leaf := entry.rsplit(".", 1)[-1]) not in names:
            names.append(leaf)
    return tuple(names), tuple(dropped)


def fit_to_model(targets: str, model: str) -> str:
    """The pattern's targets that exist in ``model``: PEFT adapts only the modules a pattern matches.

    Raises LoraBudgetError naming the model's linears when none of them is among the targets.
    """
    from lora_budget.catalog.models import resolve_model
    from lora_budget.core.params import linear_names
    from lora_budget.errors import LoraBudgetError

    try:
        shape = resolve_model(model).shape
    except LoraBudgetError:
        return targets  # the plan reports the unknown model itself
    names = linear_names(shape)
    kept = [n for n in targets.split(",") if n in names]
    if not kept:
        raise LoraBudgetError(
            f"the target pattern matches none of {model}'s linear layers ({', '.join(names)}); use --targets"
        )
    return ",".join(kept)


PEFT_DEFAULT_TARGETS: dict[str, str] = {
    **dict.fromkeys(
        ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"), "q_proj,v_proj"
    ),
    "phi": "q_proj,v_proj,fc1,fc2",
    "falcon": "query_key_value",
    "gpt_neox": "query_key_value",
    "gpt2": "c_attn",
}
"""peft 0.21.2 ``utils/constants.py`` TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: the modules LoRA
adapts when ``target_modules`` is None, for the model types it lists (others, e.g. phi3, olmo2,
qwen3_moe, gemma3: PEFT refuses a config without target_modules)."""


def peft_default(targets: str, model: str) -> str:
    """PEFT's default targets for ``model``'s type (the reader wrote the Llama-like ones)."""
    from lora_budget.catalog.models import resolve_model
    from lora_budget.errors import LoraBudgetError

    try:
        model_type = resolve_model(model).shape.model_type
    except LoraBudgetError:
        return targets  # the plan reports the unknown model itself
    if model_type not in PEFT_DEFAULT_TARGETS:
        raise LoraBudgetError(
            f"no target modules: PEFT has no default LoRA targets for {model_type} (it refuses the config too); "
            "pass --targets"
        )
    return PEFT_DEFAULT_TARGETS[model_type]
