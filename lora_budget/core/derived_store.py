"""Reading the trace-derived records: the user cache (one JSON file per architecture) and the
shipped ``catalog/coefficients.json``, with the shipped file's refusals. Plain JSON, no torch;
``derive/store.py`` writes the cache."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from lora_budget.catalog.shape import ModelShape
from lora_budget.core.derived_keys import arch_key

SCHEMA = 1
"""Version of the two record layouts; a record of another schema is ignored (derived again)."""

ENV_DIR = "LORA_BUDGET_COEFFICIENTS"
"""Environment variable naming the coefficient cache folder (tests point it at a temporary one)."""

SHIPPED = Path(__file__).resolve().parent.parent / "catalog" / "coefficients.json"


def cache_dir() -> Path:
    """Where derived records are cached: ``$LORA_BUDGET_COEFFICIENTS``, else the XDG cache dir."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lora-budget" / "coefficients"


@lru_cache(maxsize=1)
def shipped() -> dict[str, Any]:
    """The shipped records: ``{"architectures": {key: record}, "coefficients": {key: {settings: record}}}``."""
    if not SHIPPED.is_file():
        return {"architectures": {}, "coefficients": {}}
    data = json.loads(SHIPPED.read_text())
    return data if data.get("schema") == SCHEMA else {"architectures": {}, "coefficients": {}}


def cache_file(key: str) -> Path:
    return cache_dir() / f"{key}.json"


def read_cache(key: str) -> dict[str, Any]:
    """The cached records of one architecture (``{"architecture": ..., "coefficients": {...}}``)."""
    path = cache_file(key)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    return _read(str(path), stamp)


@lru_cache(maxsize=64)
def _read(path: str, stamp: int) -> dict[str, Any]:
    """One cache file's content, read once per modification time (a plan reads it per method)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else {}


def architecture_record(shape: ModelShape) -> dict[str, Any] | None:
    key = arch_key(shape.arch_config)
    return read_cache(key).get("architecture") or shipped()["architectures"].get(key)


def refusal(shape: ModelShape) -> str:
    """Why the shipped file could not derive this architecture at this depth ('' if it did not try)."""
    key = arch_key(shape.arch_config)
    for row in shipped().get("refused", {}).values():
        if isinstance(row, dict) and row.get("key") == key and row.get("depth") == shape.layers:
            return str(row["reason"])
    return ""


def setting_refusal(shape: ModelShape, skey: str) -> str:
    """Why the shipped file could not derive these settings for this architecture ('' if it did not try)."""
    key = arch_key(shape.arch_config)
    values = dict(part.split("=", 1) for part in skey.split(","))
    for row in shipped().get("refused_settings", {}).values():
        if not isinstance(row, dict) or row.get("key") != key or row.get("depth") != shape.layers:
            continue
        for tried, reason in row.get("settings", {}).items():
            if all(values.get(k) == v for k, v in (p.split("=", 1) for p in tried.split(","))):
                return str(reason)
    return ""
