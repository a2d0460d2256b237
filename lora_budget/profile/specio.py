"""A TrainSpec as plain JSON values and back (profiles store the full spec and the model config)."""

from __future__ import annotations

from typing import Any

from lora_budget import records
from lora_budget.catalog.shape import shape_from_config
from lora_budget.errors import LoraBudgetError
from lora_budget.spec import ModelRef, TrainSpec

SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in records.fields(TrainSpec) if f.name not in ("model", "warnings"))


def model_to_dict(ref: ModelRef) -> dict[str, Any]:
    return {"name": ref.name, "hf_id": ref.hf_id, "source": ref.source, "config": dict(ref.config)}


def model_from_dict(data: dict[str, Any]) -> ModelRef:
    config = data.get("config")
    if not isinstance(config, dict) or not config:
        raise LoraBudgetError("the model has no config values to rebuild it from")
    return ModelRef(
        name=str(data["name"]),
        hf_id=str(data.get("hf_id", "")),
        source=str(data.get("source", "")),
        shape=shape_from_config(config, where=str(data["name"])),
        config=config,
    )


def spec_to_dict(spec: TrainSpec) -> dict[str, Any]:
    """Every TrainSpec field but the model (stored once per profile) and the warnings."""
    return {name: getattr(spec, name) for name in SPEC_FIELDS}


def spec_from_dict(data: dict[str, Any], model: ModelRef) -> TrainSpec:
    unknown = set(data) - set(SPEC_FIELDS)
    if unknown:
        raise LoraBudgetError(f"unknown spec fields {sorted(unknown)}")
    return TrainSpec(model=model, **data)
