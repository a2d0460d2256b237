"""Trace-derived models: the planner's inputs for an architecture the analytical walk does not know.

For a ``model_type`` outside ``SUPPORTED_TYPES`` nothing here is hand-derived. Two records, both
measured on the model transformers builds (``lora_budget/derive``), stand in for the walk:

- the **architecture** record (one per architecture config, depth left out): every parameter tensor
  of one decoder layer and of the rest of the model, from the model built on the meta device, with
  its role (``nn.Linear`` / ``Conv1D`` weights are LoRA targets and what bitsandbytes quantizes),
  plus the config values the rest of the planner reads (width, heads, vocabulary). The inventory of
  an L-layer model is the rest plus L times the layer, exact because same-type layers are identical.
  Layers of several types (``derive/layers.py``): one layer's tensors per type (``types``) and each
  checked depth's type per layer (``patterns``); the inventory is the rest plus each type's tensors
  times its layer count.
- the **coefficients** record (one per architecture and step settings): the per-token ``lin + quad s``
  terms of an ``ActivationModel``, traced on a 2-layer copy at real width (``derive/measure.py``
  says how each one is measured), and the measured constants of the backward moment; for layers of
  several types, those terms per type from a copy holding every type (``derive/hybrid.py``),
  composed over the model's pattern by ``core/derived_types.py``.

This module only reads them (plain JSON, no torch; ``core/derived_store.py``): from the user cache first
(``$LORA_BUDGET_COEFFICIENTS``, else ``$XDG_CACHE_HOME/lora-budget/coefficients``), then from the
shipped ``catalog/coefficients.json``. When a record is missing and torch and transformers are
installed it is derived on the spot (a logged note gives the time and the cache folder); without
them a one-line error says how to get it.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from lora_budget.catalog.shape import ModelShape
from lora_budget.core.activations import ZERO, ActivationModel, Coeff
from lora_budget.core.derived_keys import (  # noqa: F401  (the keys are part of this module's interface)
    PER_LAYER,
    arch_config,
    arch_key,
    canonical,
    config_at_depth,
    depth_key,
    describe,
    heterogeneous,
    settings,
    settings_key,
)
from lora_budget.core.derived_store import (  # noqa: F401  (re-exported: the records' readers)
    ENV_DIR,
    SCHEMA,
    SHIPPED,
    architecture_record,
    cache_dir,
    cache_file,
    read_cache,
    refusal,
    setting_refusal,
    shipped,
)
from lora_budget.core.params import ParamTensor
from lora_budget.errors import LoraBudgetError
from lora_budget.records import replace

log = logging.getLogger(__name__)

# -- the shape and the inventory ---------------------------------------------------------------


def derived_shape(raw: dict[str, Any], where: str) -> ModelShape:
    """A :class:`ModelShape` for a non-analytical ``model_type``.

    The widths come from the architecture record (transformers' own config attributes) when one is
    stored, else from the usual config.json keys; the activation terms never read them, the time
    model (heads, head width) and the reports do.
    """
    arch = arch_config(raw)
    arch_json = canonical(arch)
    layers = int(raw[depth_key(raw)])
    key = arch_key(arch_json)
    record = read_cache(key).get("architecture") or shipped()["architectures"].get(key)
    if record is None:
        record = _early_architecture(arch, key, layers)
    values = dict(record["shape"]) if record else _shape_values(raw, where)
    return ModelShape(
        model_type=str(raw["model_type"]),
        layers=layers,
        gated_mlp=False,
        act="gelu",
        norm="layer",
        norm_scheme="pre",
        qk_norm="none",
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
        fused_qkv=False,
        fused_gate_up=False,
        parallel_block=False,
        learned_positions=0,
        experts=0,
        experts_per_token=0,
        attn_softcap=False,
        # transformers soft-caps the logits (tanh(x / cap) * cap: one more c V tensor per token) when set
        final_softcap=bool(raw.get("final_logit_softcapping")),
        dropout=0.0,
        checkpoint_dtype=str(raw.get("torch_dtype", raw.get("dtype", "unknown"))),
        arch_config=arch_json,
        notes=(
            f"{raw['model_type']} is not modelled analytically: planned from coefficients traced on a "
            "truncated copy of the model (lora-budget derive)",
            *_record_notes(record),
        ),
        **values,
    )


MOE_NOTE = (
    "MoE experts planned as transformers' default experts path runs them (grouped_mm: the T x top_k "
    "token-expert rows sorted by expert, or Llama 4's dense bmm over every expert): its tensors do not "
    "depend on how tokens are routed, so no balance is assumed; a CUDA grouped GEMM's own workspace is "
    "not counted"
)


def _record_notes(record: dict[str, Any] | None) -> tuple[str, ...]:
    """What the plan's output says about a derived architecture's layers: their types, MoE."""
    if not record:
        return ()
    out = []
    if record.get("types"):
        names = sorted({t["name"] for t in record["types"].values()})
        out.append(
            f"decoder layers of {len(names)} types ({', '.join(names)}): each type's coefficients traced on its own"
        )
    if record.get("moe"):
        out.append(MOE_NOTE)
    names = " ".join(t["name"] for t in (record.get("types") or {}).values())
    if any(mixer in names for mixer in FALLBACK_MIXERS):
        out.append(FALLBACK_NOTE)
    return tuple(out)


FALLBACK_MIXERS = ("GatedDeltaNet", "Mamba", "ShortConv")
"""Sequence mixers whose fast kernels transformers loads from the Hub or from optional packages
(``use_kernel_func_from_hub_with_fallback``: fla's ``chunk_gated_delta_rule``, causal-conv1d,
mamba_ssm); the trace, on CPU without them, runs transformers' pure-torch fallback."""
FALLBACK_NOTE = (
    "linear-attention / state-space layers traced through transformers' pure-torch fallback (the fla, "
    "causal-conv1d and mamba_ssm kernels a GPU run loads keep fewer tensors): those layers are planned high"
)


_STORED_ONLY: ContextVar[bool] = ContextVar("stored_only", default=False)
"""Set while a listing reads stored records only (``kind``, ``stored_param_count``): no derivation."""


@contextmanager
def _stored_only() -> Any:
    token = _STORED_ONLY.set(True)
    try:
        yield
    finally:
        _STORED_ONLY.reset(token)


def _early_architecture(arch: dict[str, Any], key: str, layers: int) -> dict[str, Any] | None:
    """The architecture record derived now, where torch is installed and the shipped file did not
    refuse it: the planner derives it moments later anyway (``inventory``), and the shape's widths
    and tied head must be transformers' own from the start (a config without
    ``tie_word_embeddings`` is tied by PretrainedConfig's default, untied by many model classes').
    None when it cannot be derived (the planner says why when it needs the inventory)."""
    refused = any(
        isinstance(row, dict) and row.get("key") == key and row.get("depth") == layers
        for row in shipped().get("refused", {}).values()
    )
    if refused or _STORED_ONLY.get() or (key, layers) in _FAILED or not _torch_available():
        return None
    from lora_budget.derive.arch import derive_architecture

    try:
        return derive_architecture(arch, layers)
    except LoraBudgetError as exc:
        _FAILED[(key, layers)] = str(exc)
        return None


def _first(raw: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool):
            return raw[key]
    return None


def _shape_values(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Widths from config.json under the names transformers' config classes map (``attribute_map``)."""
    hidden = _first(raw, "hidden_size", "n_embd", "d_model", "n_embed", "dim")
    heads = _first(raw, "num_attention_heads", "n_head", "n_heads", "num_heads")
    vocab = _first(raw, "vocab_size", "padded_vocab_size")
    if hidden is None or heads is None or vocab is None:
        raise LoraBudgetError(f"{where}: config has no hidden size, head count or vocabulary size")
    kv = _first(raw, "num_key_value_heads", "num_kv_heads", "n_head_kv") or heads
    if raw.get("multi_query") is True:
        kv = 1
    head_dim = _first(raw, "head_dim", "kv_channels") or hidden // heads
    return dict(
        hidden=hidden,
        heads=heads,
        kv_heads=kv,
        head_dim=head_dim,
        intermediate=_first(raw, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size") or 4 * hidden,
        vocab=vocab,
        max_positions=_first(raw, "max_position_embeddings", "n_positions", "max_seq_len") or 2048,
        tied_embeddings=bool(raw.get("tie_word_embeddings", True)),
    )


def _tensor(row: list[Any], count: int) -> ParamTensor:
    name, shape, per, role, group, fan_in, fan_out = row
    return ParamTensor(name, tuple(shape), per * count, role, group, fan_in, fan_out)


def inventory(shape: ModelShape) -> tuple[ParamTensor, ...]:
    """The parameter tensors of a derived model: the rest of the model plus ``layers`` decoder layers."""
    record = architecture_at(shape)
    rest = [_tensor(row, 1) for row in record["other"]]
    layer = [_tensor(row, shape.layers) for row in record["layer"]]
    if record.get("types"):  # layers of several types: each type's rows times its layer count
        counts: dict[tuple[Any, ...], list[Any]] = {}
        types = record["types"]
        for t in layer_pattern(record, shape.layers):
            for row in types[t]["layer"]:
                key = (row[0], tuple(row[1]), *row[3:])
                counts.setdefault(key, [*row[:2], 0, *row[3:]])[2] += row[2]
        layer = [_tensor(row, 1) for row in counts.values()]
    # the planner's convention: the embedding first, lm_head last
    head = [t for t in rest if t.role == "lm_head"]
    return tuple([t for t in rest if t.role != "lm_head"] + layer + head)


def architecture_at(shape: ModelShape) -> dict[str, Any]:
    """The architecture record checked at the shape's depth: stored, else derived (or a one-line error)."""
    record = architecture_record(shape)
    if record is None or shape.layers not in record.get("depths", ()):
        record = _derive_architecture(shape)
    return record


def layer_pattern(record: dict[str, Any], layers: int) -> list[str]:
    """The type of every decoder layer at depth ``layers`` (one type: ``["layer"] * layers``)."""
    if not record.get("types"):
        return ["layer"] * layers
    return list(record["patterns"][str(layers)])


def stored_param_count(raw: dict[str, Any], where: str) -> int | None:
    """The parameter count from a stored architecture record, without deriving one (torch-free);
    None when the config has none (an architecture transformers cannot build, or layers unlike)."""
    from lora_budget.catalog.shape import shape_from_config

    try:
        with _stored_only():
            shape = shape_from_config(raw, where=where)
    except LoraBudgetError:
        return None
    if not shape.derived:
        return sum(t.total_numel for t in _analytical_inventory(shape))
    record = architecture_record(shape)
    if record is None or shape.layers not in record.get("depths", ()):
        return None
    return sum(t.total_numel for t in inventory(shape))


def _analytical_inventory(shape: ModelShape) -> tuple[ParamTensor, ...]:
    from lora_budget.core.params import inventory as analytical

    return analytical(shape)


_FAILED: dict[tuple[str, int], str] = {}
"""Architectures this process failed to derive (key, depth) -> the one-line reason: asked again (a
plan's methods, a config corpus), the answer is the same and costs no second model build."""


def _derive_architecture(shape: ModelShape) -> dict[str, Any]:
    arch = json.loads(shape.arch_config)
    where = (arch_key(shape.arch_config), shape.layers)
    if where in _FAILED:
        raise LoraBudgetError(_FAILED[where])
    if not _torch_available():
        refused = refusal(shape)  # the shipped file tried it (its transformers' answer)
        if refused:
            raise LoraBudgetError(refused)
        raise LoraBudgetError(
            f"{shape.model_type} ({shape.layers} layers) is not modelled analytically and no derived parameter "
            "inventory is stored for it; install torch, transformers and peft (pip install 'lora-budget[torch]') "
            "and the planner reads it from the model itself (or run `lora-budget derive` where they are installed)"
        )
    from lora_budget.derive.arch import derive_architecture

    try:
        return derive_architecture(arch, shape.layers)
    except LoraBudgetError as exc:
        _FAILED[where] = str(exc)
        raise


def _torch_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "peft"))


# -- coefficients ------------------------------------------------------------------------------


def stored_coefficients(spec: Any) -> dict[str, Any] | None:
    """The coefficients record of ``spec`` from the user cache or the shipped file, or None.

    A cached record is per library versions: one derived under other releases of torch,
    transformers, peft or bitsandbytes than the installed ones is not used (derived again). The
    shipped records state the versions they were derived with and serve every installation.
    """
    key = arch_key(spec.model.shape.arch_config)
    skey = settings_key(settings(spec))
    cached = read_cache(key).get("coefficients", {}).get(skey)
    if cached is not None:  # (versions read only then: a shipped model's plan reads no package metadata)
        installed = installed_versions()
        if installed is None or cached.get("versions") == installed:
            return cached
    return shipped()["coefficients"].get(key, {}).get(skey)


@lru_cache(maxsize=1)
def installed_versions() -> dict[str, str] | None:
    """Releases of the libraries that decide what a step saves, from their metadata (no import);
    None without torch (then any cached record serves)."""
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out if out["torch"] else None


def coefficients_record(spec: Any) -> dict[str, Any]:
    """The stored coefficients of ``spec``'s architecture and settings; derived when missing."""
    record = stored_coefficients(spec)
    if record is not None and _covers(record, spec.model.shape):
        return record
    shape = spec.model.shape
    values = settings(spec)
    if not _torch_available():
        refused = refusal(shape) or setting_refusal(shape, settings_key(values))
        if refused:  # the shipped file tried: its reason, not an install hint that would not help
            raise LoraBudgetError(refused)
        raise LoraBudgetError(
            f"{spec.model.name} ({shape.model_type}) is planned from trace-derived coefficients, and none are "
            f"stored for {describe(values)}; install torch, transformers and peft (pip install "
            f"'lora-budget[torch]') and the planner derives them in about a minute, or run "
            f"`lora-budget derive -m {spec.model.hf_id or spec.model.name}` where they are installed"
        )
    from lora_budget.derive import derive_coefficients

    return derive_coefficients(spec)


def _covers(record: dict[str, Any], shape: ModelShape) -> bool:
    """The record has every layer type of the model at its depth (a record of several types may
    come from another depth of the same architecture, DeepSeek's dense-then-MoE at a shallow one)."""
    arch = architecture_at(shape)
    if not arch.get("types"):
        return not record.get("types")
    return set(layer_pattern(arch, shape.layers)) <= set(record.get("types", {}))


def _coeff(pair: list[float]) -> Coeff:
    return Coeff(float(pair[0]), float(pair[1]))


def derived_activations(spec: Any, static: Any) -> tuple[ActivationModel, Any]:
    """The ``ActivationModel`` and the static memory the peak model composes, from the record.

    The backward moment of a decoder layer is stored as its per-token line plus two measured
    constants: the gradients that layer has made by then (``layer_gradients_before_attention``,
    which the peak model adds in that phase) and other fixed bytes (a dequantized weight:
    ``dequant_attn_bytes``). The attention/MLP split of the analytical walk is not measured: the
    whole layer is one half (``layer_attention`` = ``layer``, tails zero), so each layer's backward
    has one moment.
    """
    r = coefficients_record(spec)
    arch = architecture_at(spec.model.shape)
    if r.get("types"):  # layers of several types (core/derived_types.py)
        from lora_budget.core.derived_types import compose

        pattern = layer_pattern(arch, spec.model.shape.layers)
        at = (spec.batch_size * spec.sequences_per_example, spec.seq_len)
        acts, static = compose(r, pattern, spec.grad_ckpt, static, at)
        buffers = arch.get("buffers", {}).get("other", 0) + sum(arch["types"][t]["buffers"] for t in pattern)
        return acts, replace(static, weights=static.weights + buffers)
    layer = _coeff(r["layer"])
    first = _coeff(r["first_layer"])
    backward = _coeff(r["backward_transient"])
    acts = ActivationModel(
        layer=layer,
        first_layer=first,
        once=_coeff(r["once"]),
        checkpoint=_coeff(r["checkpoint"]),
        head=_coeff(r["head"]),
        forward_transient=_coeff(r["forward_transient"]),
        forward_transient_kernel=ZERO,
        backward_transient=backward,
        layer_attention=layer,
        first_layer_attention=first,
        backward_transient_attention=backward,
        attention_tail=ZERO,
        first_attention_tail=ZERO,
        batched_extra=Coeff(float(r.get("batched_extra", 0.0))),
        backward_transient_dequant=ZERO,
        dequant_bytes=int(r["forward_fixed_bytes"]),
    )
    buffers = arch.get("buffers", {})
    static = replace(
        static,
        # registered buffers (rotary tables, a causal-mask table): not parameters, but resident
        weights=static.weights + buffers.get("other", 0) + buffers.get("layer", 0) * spec.model.shape.layers,
        layer_gradients_before_attention=int(r["backward_gradient_bytes"]),
        dequant_attn_bytes=int(r["backward_fixed_bytes"]),
    )
    return acts, static


def kind(raw: dict[str, Any], where: str = "config") -> str:
    """How the planner models a config (torch-free, from stored records only): ``analytical`` (the
    hand-written walk), ``trace-derived`` (coefficients stored), ``params only`` (an inventory but no
    coefficients: MoE routing the trace cannot follow) or ``not yet`` (no record: an architecture
    transformers does not build, or a config the planner cannot read)."""
    from lora_budget.catalog.shape import shape_from_config

    try:
        with _stored_only():
            shape = shape_from_config(raw, where=where)
    except LoraBudgetError:
        return "not yet"
    if not shape.derived:
        return "analytical"
    key = arch_key(shape.arch_config)
    if not refusal(shape) and (read_cache(key).get("coefficients") or shipped()["coefficients"].get(key)):
        return "trace-derived"
    record = architecture_record(shape)
    return "params only" if record and shape.layers in record.get("depths", ()) else "not yet"
