"""Layer types: decoder layers that differ (sliding and full attention, linear and full attention,
convolution and attention, dense and MoE MLPs) grouped into types, each alike within itself.

A layer's type is a hash of its ``arch.signature`` (every submodule's class, parameter shapes and
scalar settings, its index left out) and of its entries in the config's per-layer lists and strings
(``layer_types``, Nemotron-H's ``hybrid_override_pattern``): two layers of one type are built alike
and are told apart by nothing the modelling code reads. The **pattern** is the type of every layer,
in order, at one depth. Same-type layers are identical, so the parameters of an L-layer model are
the rest of the model plus, for each type t, n_t times one layer of type t (``core/derived.py``),
and a truncated copy holding every type stands for the whole depth (``derive/hybrid.py``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def per_layer_values(raw: dict[str, Any], depth: int) -> dict[str, Any]:
    """The config's per-layer lists, and pattern strings (a key ending in ``pattern``: Nemotron-H's
    ``hybrid_override_pattern``), of length ``depth`` (> 1): one entry per layer. Other strings are
    names, whatever their length (``"silu"`` at depth 4)."""
    return {
        k: v
        for k, v in raw.items()
        if (isinstance(v, list) or (isinstance(v, str) and k.endswith("pattern"))) and len(v) == depth and depth > 1
    }


def pattern(stack: Any, raw: dict[str, Any]) -> list[str]:
    """The type (12 hex digits) of every layer of ``stack`` built from config values ``raw``."""
    from lora_budget.derive.arch import signature

    lists = per_layer_values(raw, len(stack))
    out = []
    for i, layer in enumerate(stack):
        entries = sorted((k, v[i]) for k, v in lists.items())
        text = json.dumps([repr(signature(layer)), entries], default=repr)
        out.append(hashlib.sha256(text.encode()).hexdigest()[:12])
    return out


def type_name(stack: Any, index: int, raw: dict[str, Any], firsts: list[int]) -> str:
    """A readable name for the type of layer ``index``: the submodule classes only its type has
    (``Qwen3_5GatedDeltaNet``, ``DeepseekV3MoE``), else its ``layer_types`` entry, else its index."""
    classes = [{type(m).__name__ for m in stack[i].modules()} for i in firsts]
    mine = {type(m).__name__ for m in stack[index].modules()}
    own = sorted(mine - set.intersection(*classes)) if len(classes) > 1 else []
    if own:
        return "+".join(own[:2])
    kinds = raw.get("layer_types")
    if isinstance(kinds, list) and len(kinds) == len(stack):
        return str(kinds[index])
    return f"type of layer {index}"


def prefix_depth(types: list[str]) -> int:
    """The fewest leading layers (at least 2) among which every type occurs at an index >= 1: the
    truncated copy's depth. Layer 0 is kept as it is (its input may need no gradient), so each type
    with a layer above 0 needs one instance above it, whose saved bytes are the ones every other
    layer of the type keeps; a type only layer 0 has is measured on layer 0."""
    need = set(types[1:])  # a type only layer 0 has is measured there
    seen: set[str] = set()
    for i, t in enumerate(types[1:], start=1):
        seen.add(t)
        if seen >= need:
            return max(i + 1, 2)
    return max(len(types), 1)


def rows_of_types(model: Any, path: str, stack: Any, types: list[str], raw: dict[str, Any]) -> dict[str, Any]:
    """``{type: {"name", "index", "layer": inventory rows, "buffers": bytes of one layer}}`` read from
    the first layer of each type."""
    from lora_budget.core.static import alloc
    from lora_budget.derive.arch import _rows

    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    firsts = [types.index(t) for t in dict.fromkeys(types)]
    out = {}
    for i in firsts:
        prefix = f"{path}.{i}."
        buffers = sum(alloc(b.numel() * b.element_size()) for n, b in model.named_buffers() if n.startswith(prefix))
        out[types[i]] = {
            "name": type_name(stack, i, raw, firsts),
            "index": i,
            "layer": _rows(model, f"{path}.{i}", head, embedding),
            "buffers": buffers,
        }
    return out


def rest_rows(everything: list[list[Any]], types: dict[str, Any], counts: dict[str, int]) -> list[list[Any]]:
    """Inventory rows of everything outside the decoder layers: all rows less each type's rows times
    its layer count (rows keyed on name, shape, role, group and widths)."""

    def key(row: list[Any]) -> tuple[str, ...]:
        return tuple(map(str, row[:2] + row[3:]))

    in_layers: dict[tuple[str, ...], int] = {}
    for t, record in types.items():
        for row in record["layer"]:
            in_layers[key(row)] = in_layers.get(key(row), 0) + row[2] * counts[t]
    other = []
    for row in everything:
        rest = row[2] - in_layers.get(key(row), 0)
        if rest:
            other.append([*row[:2], rest, *row[3:]])
    return other
