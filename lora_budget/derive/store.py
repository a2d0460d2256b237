"""Writing derived records to the user cache: one JSON file per architecture, replaced atomically."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from lora_budget.core.derived import SCHEMA, cache_file, read_cache
from lora_budget.fsio import write_atomic

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")


def versions() -> dict[str, str]:
    """Installed releases of the libraries whose code decides what a step saves."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def _write(key: str, update: dict[str, Any]) -> None:
    path = cache_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(read_cache(key))) or {"schema": SCHEMA, "coefficients": {}}  # a copy
    for name, value in update.items():
        if name == "coefficients":
            data.setdefault("coefficients", {}).update(value)
        else:
            data[name] = value
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def save_architecture(record: dict[str, Any]) -> None:
    _write(record["key"], {"architecture": record})


def save_coefficients(key: str, settings_key: str, record: dict[str, Any]) -> None:
    _write(key, {"coefficients": {settings_key: record}})
