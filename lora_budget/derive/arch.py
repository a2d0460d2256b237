"""The architecture record: a model's parameter inventory, read from the model transformers builds.

The model is built from its config on the ``meta`` device (shapes and dtypes, no memory, nothing
downloaded) with two decoder layers; the tensors of layer 0 are the per-layer inventory (layer 1 must
hold the same ones, or the layers are not alike and truncation cannot stand for depth) and every
other parameter is counted once. Tied parameters are one tensor (``named_parameters`` lists a shared
tensor once), so a tied lm_head adds nothing, as in transformers' own count.

Roles, as the planner uses them (``core/params.py``):

- ``linear`` / ``linear_bias``: weight and bias of an ``nn.Linear`` or GPT-2 style ``Conv1D`` other
  than the output head: what peft's ``all-linear`` preset adapts and what transformers' bitsandbytes
  integration quantizes. Named by the module's last path component, as peft matches them; grouped
  ``attn`` / ``mlp`` by the words in their module path.
- ``embedding``: ``nn.Embedding`` weights (the input embedding is named ``embed_tokens``).
- ``lm_head``: the untied output head. ``norm``: every other parameter (norm weights and biases,
  learned scalars), which no method quantizes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from lora_budget.core.derived import SCHEMA, arch_key, canonical, config_at_depth
from lora_budget.derive.store import save_architecture
from lora_budget.errors import LoraBudgetError

PROBE_LAYERS = 2
"""Decoder layers in the truncated model: layer 0 (whose input may need no gradient) and one more."""

_ATTN_WORDS = ("attn", "attention")
_MLP_WORDS = ("mlp", "ffn", "feed_forward", "feedforward", "experts", "moe")


def build_meta(config_values: dict[str, Any], dtype: str = "bf16") -> Any:
    """The transformers model of ``config_values`` on the meta device, or a one-line error."""
    from lora_budget.runtime.build import import_stack, torch_dtype
    from lora_budget.runtime.text_tower import causal_lm_from_config

    torch, transformers, _, _ = import_stack()
    raw = dict(config_values)
    model_type = raw.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(model_type, **raw)
        with torch.device("meta"):
            return causal_lm_from_config(transformers, config, torch_dtype(dtype))
    except Exception as exc:  # transformers raises its own classes (config validators, unknown types)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first if len(first) <= 160 else first[:160] + "..."  # its list of every known type
        raise LoraBudgetError(f"transformers cannot build a {model_type!r} causal LM: {first}") from None


def decoder_layers(model: Any, layers: int) -> tuple[str, Any]:
    """(path, ModuleList) of the decoder layers: the ``nn.ModuleList`` of ``layers`` modules of one
    class, preferring the class transformers names in ``_no_split_modules``."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    no_split = set(getattr(base, "_no_split_modules", None) or ())
    found = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers:
            kinds = {type(m).__name__ for m in module}
            if len(kinds) == 1:
                found.append((next(iter(kinds)) in no_split, name, module))
    if not found:
        raise LoraBudgetError(f"{type(base).__name__}: no list of {layers} alike decoder layers found")
    found.sort(key=lambda f: not f[0])
    return found[0][1], found[0][2]


def _group(path: str) -> str:
    low = path.lower()
    if any(w in low for w in _ATTN_WORDS):
        return "attn"
    if any(w in low for w in _MLP_WORDS):
        return "mlp"
    return "other"


def _rows(model: Any, prefix: str, head: Any, input_embedding: Any) -> list[list[Any]]:
    """Inventory rows ``[name, shape, count, role, group, in_features, out_features]`` of one module
    subtree, tensors of the same (name, shape, role, group) merged."""
    import torch
    from transformers.pytorch_utils import Conv1D

    owner = {}
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            owner.setdefault(id(p), (mod_name, module, p_name))
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for full, p in model.named_parameters():
        if prefix and not full.startswith(prefix + "."):
            continue
        mod_name, module, p_name = owner[id(p)]
        leaf = mod_name.rsplit(".", 1)[-1]
        fan_in = fan_out = 0
        if module is head:
            role, name = "lm_head", "lm_head"
        elif isinstance(module, torch.nn.Embedding):
            role, name = "embedding", "embed_tokens" if module is input_embedding else leaf
        elif isinstance(module, (torch.nn.Linear, Conv1D)):
            name = leaf if p_name == "weight" else f"{leaf}.{p_name}"
            role = "linear" if p_name == "weight" else "linear_bias"
            if role == "linear":
                if isinstance(module, Conv1D):  # stores (in, out)
                    fan_in, fan_out = p.shape
                else:
                    fan_in, fan_out = module.in_features, module.out_features
        elif p.dim() == 3 and _group(mod_name) == "mlp":
            role, name = "experts", f"{leaf}.{p_name}"  # transformers 5 stores experts as 3-D parameters
        else:
            role, name = "norm", f"{leaf}.{p_name}" if leaf else p_name
        key = (name, tuple(p.shape), role, _group(mod_name), fan_in, fan_out)
        row = merged.setdefault(key, [name, list(p.shape), 0, role, _group(mod_name), fan_in, fan_out])
        row[2] += 1
    return list(merged.values())


_INDEX_ATTRS = frozenset(
    {
        "layer_idx", "layer_id", "layer_number", "layer_index", "idx", "block_idx",
        # Gemma 4: the last sliding and the last full layer before the KV-sharing layers put their
        # k and v in a dict for the sharing layers to read (``Gemma4TextAttention.forward``): without
        # checkpointing a reference to tensors the attention keeps anyway, so no byte changes; with
        # it the dict keeps them past the layer, and the identical-bytes check of a type refuses
        # (derive/hybrid.py): a truncated copy moves these layers to its own last ones
        "store_full_length_kv",
    }
)  # fmt: skip
"""Attributes that tell layers apart without changing what a training step allocates."""


def signature(module: Any) -> list[Any]:
    """What makes two decoder layers alike: every submodule's class, parameter shapes and scalar
    settings (``sliding_window``, ``is_causal``, ``layer_type``, ...), its own index left out."""
    out = []
    for name, sub in module.named_modules():
        scalars = sorted(
            (k, v)
            for k, v in vars(sub).items()
            if not k.startswith("_") and k not in _INDEX_ATTRS and isinstance(v, (bool, int, float, str, type(None)))
        )
        shapes = [(k, tuple(p.shape), str(p.dtype)) for k, p in sub.named_parameters(recurse=False)]
        out.append((name, type(sub).__name__, scalars, shapes))
    return out


def check_alike(model: Any, layers: int) -> None:
    """Refuse a model whose decoder layers differ (dense layers before MoE ones, sliding and full
    attention, layers without rotary): a truncated copy would not stand for its depth."""
    _, stack = decoder_layers(model, layers)
    first = signature(stack[0])
    for i, layer in enumerate(stack):
        if i and signature(layer) != first:
            raise LoraBudgetError(
                f"{type(model).__name__}: decoder layer {i} differs from layer 0; a truncated copy cannot stand "
                "for the model's depth (layers of several types are not derivable yet)"
            )


def inventory_rows(model: Any, layers: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """(per-layer rows from layer 0, rows of everything outside the decoder layers)."""
    path, stack = decoder_layers(model, layers)
    check_alike(model, layers)
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    per_layer = [_rows(model, f"{path}.{i}", head, embedding) for i in range(layers)]
    everything = _rows(model, "", head, embedding)
    layer_keys = {}
    for row in per_layer[0]:
        layer_keys[tuple(map(str, row[:2] + row[3:]))] = row[2] * layers
    other = []
    for row in everything:
        k = tuple(map(str, row[:2] + row[3:]))
        rest = row[2] - layer_keys.get(k, 0)
        if rest:
            other.append([*row[:2], rest, *row[3:]])
    return per_layer[0], other


def buffer_bytes(model: Any, layers: int) -> dict[str, int]:
    """Allocator-rounded bytes of the registered buffers (rotary frequencies, a causal-mask table):
    ``layer`` per decoder layer, ``other`` once. The trace counts them as weights; they are not
    parameters, so the inventory leaves them out."""
    from lora_budget.core.static import alloc

    path, _ = decoder_layers(model, layers)
    per_layer = other = 0
    for name, b in model.named_buffers():
        size = alloc(b.numel() * b.element_size())
        if name.startswith(f"{path}.0."):
            per_layer += size
        elif not name.startswith(f"{path}."):
            other += size
    return {"layer": per_layer, "other": other}


def shape_values(config: Any) -> dict[str, Any]:
    """The widths the rest of the planner reads, from transformers' config object (its ``attribute_map``
    resolves each model type's own key names)."""

    def get(name: str) -> Any:
        try:  # a per-layer attribute (Gemma 4's kv heads) raises on global access: None
            return getattr(config, name, None)
        except Exception:
            return None

    hidden = int(config.hidden_size)
    heads = int(get("num_attention_heads") or 1)
    kv = get("num_key_value_heads") or heads
    if get("multi_query") is True:
        kv = 1
    head_dim = get("head_dim") or hidden // heads
    intermediate = get("intermediate_size") or get("n_inner") or 4 * hidden
    return dict(
        hidden=hidden,
        heads=heads,
        kv_heads=int(kv),
        head_dim=int(head_dim),
        intermediate=int(intermediate),
        vocab=int(config.vocab_size),
        max_positions=int(get("max_position_embeddings") or get("n_positions") or 2048),
        tied_embeddings=bool(get("tie_word_embeddings")),
    )


def derive_architecture(arch: dict[str, Any], depth: int, save: bool = True) -> dict[str, Any]:
    """The architecture record of ``arch`` (``core.derived.arch_config``), checked at ``depth`` layers:
    built on meta at that depth and its layers grouped into types (``derive/layers.py``). One type:
    the inventory of layer 0 and of the rest. Several: ``types`` (the rows of one layer of each type)
    and ``patterns`` (each depth's type per layer), ``layer`` left empty. Depths already checked
    are kept in the record (``depths``). Cached unless ``save`` is off."""
    from lora_budget.core.derived import read_cache
    from lora_budget.derive import layers as kinds

    started = time.perf_counter()
    config = config_at_depth(arch, depth)
    model = build_meta(config)
    path, stack = decoder_layers(model, depth)
    pattern = kinds.pattern(stack, config)
    old = read_cache(arch_key(canonical(arch))).get("architecture") or {}
    tied = model.get_output_embeddings() is None or (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    values = shape_values(model.config)
    values["tied_embeddings"] = bool(tied)
    from lora_budget.derive.store import versions

    record = {
        "schema": SCHEMA,
        "key": arch_key(canonical(arch)),
        "model_type": arch["model_type"],
        "model_class": type(model).__name__,
        "shape": values,
        "depths": sorted({depth, *old.get("depths", ())}),
        "moe": False,
        "versions": versions(),
    }
    if len(set(pattern)) == 1 and not old.get("types"):
        layer, other = inventory_rows(model, depth)
        record.update(layer=layer, other=other, buffers=buffer_bytes(model, depth))
        record["moe"] = any(row[3] == "experts" for row in layer)
    else:
        types = {**old.get("types", {}), **kinds.rows_of_types(model, path, stack, pattern, config)}
        counts = {t: pattern.count(t) for t in types}
        everything = _rows(model, "", model.get_output_embeddings(), model.get_input_embeddings())
        in_layers = sum(types[t]["buffers"] * n for t, n in counts.items())
        other_buffers = sum(alloc_bytes(b) for _, b in model.named_buffers()) - in_layers
        record.update(
            layer=[],
            other=kinds.rest_rows(everything, types, counts),
            buffers={"layer": 0, "other": other_buffers},
            types=types,
            patterns={**old.get("patterns", {}), str(depth): pattern},
        )
        record["depths"] = sorted(int(d) for d in record["patterns"])
        record["moe"] = any(row[3] == "experts" for t in types.values() for row in t["layer"])
    record["wall_s"] = round(time.perf_counter() - started, 3)
    json.dumps(record)  # every value is plain JSON
    if save:
        save_architecture(record)
    return record


def alloc_bytes(tensor: Any) -> int:
    from lora_budget.core.static import alloc

    return alloc(tensor.numel() * tensor.element_size())
