"""Calibrated overhead per GPU, read from calibration.json (written by ``lora-budget calibrate``).

Pure Python and cheap: ``plan`` asks ``calibrated_overhead(card_name)`` and gets None when no
profile of that card has been calibrated, in which case the plan is exactly the uncalibrated one.
"""

from __future__ import annotations

import os
from functools import lru_cache

from lora_budget.errors import LoraBudgetError
from lora_budget.loads import read_json
from lora_budget.records import dataclass

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calibration.json")
SCHEMA_VERSION = 1


def __getattr__(name: str) -> Path:
    """``PATH``, the shipped calibration file as a ``Path``, made on first use (PEP 562): a plan reads
    the file by its string path and does not import pathlib."""
    if name == "PATH":
        from pathlib import Path

        return Path(_FILE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibratedOverhead:
    overhead_bytes: int
    """Bytes to add to the planned peak (CUDA context, allocator reserve, what the plan misses)."""
    error_bytes: int
    """Largest absolute residual of the calibration fit: the plan's error bar on this card."""
    rows: int
    """Profiled configurations the fit used."""
    label: str
    """GPU, torch and CUDA versions the profiles were measured with."""


def read(path: str | Path = _FILE) -> dict[str, Any]:
    """The calibration file; an empty one when it does not exist."""
    if not os.path.exists(path):
        return {"schema_version": SCHEMA_VERSION, "entries": []}
    data = read_json(path, f"calibration file {path}", finite=True)
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise LoraBudgetError(f"{path}: not a calibration file of schema version {SCHEMA_VERSION}")
    if not isinstance(data.get("entries"), list):
        raise LoraBudgetError(f"{path}: 'entries' must be a list")
    return data


@lru_cache(maxsize=1)
def _shipped() -> tuple[dict[str, Any], ...]:
    return tuple(read()["entries"])


def calibrated_overhead(gpu_name: str, entries: tuple[dict[str, Any], ...] | None = None) -> CalibratedOverhead | None:
    """The calibration for a catalog card (or a device name as CUDA reports it), or None.

    Several software versions of one card: the entry fitted on the most configurations wins.
    """
    rows = _shipped() if entries is None else entries
    matches = [e for e in rows if gpu_name in (e.get("catalog_gpu"), e.get("gpu_name"))]
    if not matches:
        return None
    best = max(matches, key=lambda e: (e["rows"], e.get("torch") or ""))
    return CalibratedOverhead(
        overhead_bytes=max(0, int(best["overhead_bytes"])),  # a plan above the measurement adds nothing
        error_bytes=int(best["error_bytes"]),
        rows=int(best["rows"]),
        label=f"{best['gpu_name']}, torch {best.get('torch')}, CUDA {best.get('cuda')}",
    )
