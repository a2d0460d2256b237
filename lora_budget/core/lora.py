"""Which linear layers LoRA adapts, and how many adapter parameters that makes."""

from __future__ import annotations

from functools import lru_cache

from lora_budget.catalog.shape import ModelShape
from lora_budget.core.params import ParamTensor, inventory, linear_names
from lora_budget.errors import LoraBudgetError


def resolve_targets(shape: ModelShape, targets: str, rank: int) -> tuple[str, ...]:
    """Module names LoRA wraps, validated against the architecture (cached; a refusal is not).

    Presets: ``all-linear`` (peft's preset: every linear in the decoder layers, never lm_head),
    ``attn`` (the attention projections), ``mlp`` (the MLP projections). MoE expert weights are
    3-D parameters in transformers 5, not ``nn.Linear``, so no preset adapts them.
    """
    if not isinstance(targets, str):
        raise LoraBudgetError(f"LoRA targets must be all-linear, attn, mlp or a comma list (a str), got {targets!r}")
    return _resolve_targets(shape, targets, rank)


@lru_cache(maxsize=4096)
def _resolve_targets(shape: ModelShape, targets: str, rank: int) -> tuple[str, ...]:
    names = linear_names(shape)
    by_group: dict[str, list[str]] = {"attn": [], "mlp": [], "other": []}  # other: a derived model's conv/mixer
    for t in inventory(shape):
        if t.role == "linear" and t.name not in by_group[t.group]:
            by_group[t.group].append(t.name)
    spec = targets.strip()
    if spec == "all-linear":
        chosen = names
    elif spec in ("attn", "mlp"):
        chosen = tuple(by_group[spec])
        if not chosen:
            raise LoraBudgetError(f"{shape.model_type} has no {spec} linear layers LoRA can adapt")
    else:
        chosen = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
        if not chosen:
            raise LoraBudgetError("LoRA targets are empty; use all-linear, attn, mlp or a comma list")
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise LoraBudgetError(
                f"target module {unknown[0]!r} does not exist in {shape.model_type} "
                f"(its linear layers: {', '.join(names)})"
            )
    for t in adapted(shape, chosen):
        limit = min(t.in_features, t.out_features)
        if rank > limit:
            raise LoraBudgetError(
                f"LoRA rank {rank} is larger than {t.name} ({t.in_features} -> {t.out_features}); "
                f"use a rank of at most {limit}"
            )
    return chosen


def adapted(shape: ModelShape, chosen: tuple[str, ...]) -> list[ParamTensor]:
    """The linear weights that get an adapter."""
    return list(_adapted(shape, tuple(chosen)))


@lru_cache(maxsize=1024)
def _adapted(shape: ModelShape, chosen: tuple[str, ...]) -> tuple[ParamTensor, ...]:
    return tuple(t for t in inventory(shape) if t.role == "linear" and t.name in chosen)


def adapter_tensors(shape: ModelShape, chosen: tuple[str, ...], rank: int) -> list[tuple[int, int, tuple[int, int]]]:
    """(numel, count, shape) of every LoRA A (r x in) and B (out x r) tensor."""
    return list(_adapter_tensors(shape, tuple(chosen), rank))


@lru_cache(maxsize=4096)
def _adapter_tensors(
    shape: ModelShape, chosen: tuple[str, ...], rank: int
) -> tuple[tuple[int, int, tuple[int, int]], ...]:
    out = []
    for t in adapted(shape, chosen):
        out.append((rank * t.in_features, t.count, (rank, t.in_features)))
        out.append((t.out_features * rank, t.count, (t.out_features, rank)))
    return tuple(out)
