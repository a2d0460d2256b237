"""Keys of the trace-derived records: the depth-free architecture config and the step settings.

An architecture record is keyed on the model's config.json without its depth and without the keys
that change no tensor (token ids, initialisation, bookkeeping), so every depth of one architecture
shares it; per-layer lists whose entries are all equal (``layer_types``) are stored once. A
coefficients record is keyed on what the traced activations depend on besides batch and sequence.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lora_budget.errors import LoraBudgetError

DEPTH_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
"""config.json keys that hold the decoder depth, in the order transformers' config classes name them."""

IGNORED_KEYS = frozenset(
    {
        "architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "auto_map",
        "quantization_config", "use_cache", "bos_token_id", "eos_token_id", "pad_token_id",
        "initializer_range", "id2label", "label2id", "task_specific_params", "_attn_implementation_autoset",
        "output_attentions", "output_hidden_states", "return_dict", "model_name", "tokenizer_class",
    }
)  # fmt: skip
"""Keys that change no tensor a training step allocates (token ids, initialisation, bookkeeping)."""

PER_LAYER = "__per_layer__"
"""Marks a per-layer list whose entries are all equal (``layer_types``): stored once, depth-free."""


def depth_key(raw: dict[str, Any]) -> str:
    for key in DEPTH_KEYS:
        if isinstance(raw.get(key), int):
            return key
    raise LoraBudgetError(f"config of {raw.get('model_type')!r} has no layer count ({' or '.join(DEPTH_KEYS)})")


def arch_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The architecture config without its depth: what the records are keyed on.

    Per-layer lists (``layer_types``, length L) whose entries are all equal are stored as one value;
    lists whose entries differ stay, so layers of different types never share a record.
    """
    key = depth_key(raw)
    depth = raw[key]
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in IGNORED_KEYS or name == key:
            continue
        if isinstance(value, list) and len(value) == depth and depth > 1:
            if all(v == value[0] for v in value):
                value = {PER_LAYER: value[0]}
            else:
                out["__heterogeneous__"] = name
                out["__depth__"] = depth
        out[name] = value
    out["__depth_key__"] = key
    return out


def canonical(arch: dict[str, Any]) -> str:
    return json.dumps(arch, sort_keys=True, separators=(",", ":"))


def arch_key(arch_json: str) -> str:
    """16 hex digits of the SHA-256 of the canonical architecture config."""
    return hashlib.sha256(arch_json.encode()).hexdigest()[:16]


def config_at_depth(arch: dict[str, Any], layers: int) -> dict[str, Any]:
    """The config.json values of the architecture with ``layers`` decoder layers."""
    out = {k: v for k, v in arch.items() if not k.startswith("__")}
    for name, value in out.items():
        if isinstance(value, dict) and set(value) == {PER_LAYER}:
            out[name] = [value[PER_LAYER]] * layers
    out[arch["__depth_key__"]] = layers
    return out


def heterogeneous(arch: dict[str, Any]) -> str:
    """The name of a per-layer list whose entries differ ('' when every layer is alike)."""
    return str(arch.get("__heterogeneous__", ""))


def settings(spec: Any) -> dict[str, Any]:
    """What the traced activations depend on, besides batch and sequence: the coefficient key.

    Attention ``flash`` is traced as SDPA's flash kernel (what FlashAttention-2 keeps, see
    ``runtime/build.py``), so it shares sdpa's record.
    """
    out: dict[str, Any] = {
        "method": spec.method,
        "dtype": spec.dtype,
        "attn": "sdpa" if spec.attn == "flash" else spec.attn,
        "grad_ckpt": spec.grad_ckpt,
        "autocast": spec.autocast_on,
        "loss": spec.loss_kernel,
    }
    if spec.method != "full":
        out.update(
            adapter_dtype=spec.adapter_dtype,
            rank=spec.rank,
            targets=spec.targets,
            lora_dropout=spec.lora_dropout > 0,
            kbit_prep=spec.kbit_prepared,
        )
    objective = getattr(spec, "objective", "sft")
    if objective != "sft":
        out["objective"] = objective
    return out


def settings_key(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def describe(values: dict[str, Any]) -> str:
    """One short phrase for messages: ``lora, sdpa, grad-ckpt``."""
    parts = [values["method"], values["attn"], values["dtype"]]
    if values["grad_ckpt"]:
        parts.append("grad-ckpt")
    return ", ".join(parts)
