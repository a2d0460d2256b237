"""The GPU catalog (gpus.json) and ``--gpu`` resolution: a card name or a bare size."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lora_budget.errors import UnknownNameError
from lora_budget.units import looks_like_size, parse_size

_DATA = Path(__file__).with_name("gpus.json")


@dataclass(frozen=True, slots=True, kw_only=True)
class GPU:
    name: str
    memory_bytes: int
    """Total device memory in bytes."""
    bf16: bool
    """Native bf16 support (Ampere and newer, CDNA2+)."""
    peak_bf16_tflops: float | None
    """Peak dense bf16 tensor throughput, TFLOP/s (None where bf16 is unsupported)."""
    peak_fp16_tflops: float | None
    source: str
    memory_note: str = ""
    memory_bandwidth_bytes_per_s: int | None = None
    """Peak memory bandwidth in bytes/s from the datasheet (None where not recorded); times memory-bound work."""
    price_usd_per_hour: float | None = None
    """Default on-demand price in USD per GPU-hour, only where a dated public source is recorded."""
    price_source: str = ""
    from_size: bool = False
    """True when given as a bare size rather than a catalog card."""


@lru_cache(maxsize=1)
def _rows() -> tuple[dict, ...]:
    return tuple(json.loads(_DATA.read_text())["gpus"])


@lru_cache(maxsize=1)
def catalog() -> tuple[GPU, ...]:
    rows = _rows()
    return tuple(
        GPU(
            name=r["name"],
            memory_bytes=int(r["memory_bytes"]),
            bf16=bool(r["bf16"]),
            peak_bf16_tflops=r["peak_bf16_tflops"],
            peak_fp16_tflops=r["peak_fp16_tflops"],
            source=r["source"],
            memory_note=r["memory_note"],
            memory_bandwidth_bytes_per_s=(
                round(r["memory_bandwidth_gb_s"] * 10**9) if r.get("memory_bandwidth_gb_s") else None
            ),
            price_usd_per_hour=r.get("price_usd_per_hour"),
            price_source=r.get("price_source", ""),
        )
        for r in rows
    )


def _key(text: str) -> str:
    t = text.strip().lower().replace("nvidia", "").replace("geforce", "")
    return re.sub(r"[-_.\s]", "", t)


@lru_cache(maxsize=1)
def _index() -> dict[str, GPU]:
    rows = _rows()
    out: dict[str, GPU] = {}
    for row, gpu in zip(rows, catalog(), strict=True):
        for name in (row["name"], *row["aliases"]):
            out.setdefault(_key(name), gpu)
    return out


def resolve_gpu(text: str) -> GPU:
    """``24GB`` (24 * 10**9 bytes), ``80GiB`` (80 * 2**30 bytes), or a card: ``a100-80gb``, ``RTX 4090``.

    Card names win over sizes, so ``a100-80gb`` is the A100 80GB card, not 80 * 10**9 bytes.
    """
    key = _key(text)
    if key in _index():
        return _index()[key]
    if looks_like_size(text):
        nbytes = parse_size(text)
        return GPU(
            name=text.strip(),
            memory_bytes=nbytes,
            bf16=True,
            peak_bf16_tflops=None,
            peak_fp16_tflops=None,
            source="given as a size",
            from_size=True,
        )
    if re.match(r"^\s*[0-9.]+\s*[a-z]*\s*$", text, re.IGNORECASE):
        parse_size(text)  # raises the size error with the fix
    names = [g.name for g in catalog()]
    close = difflib.get_close_matches(key, [_key(n) for n in names], n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(n for n in names if _key(n) in close)}" if close else ""
    raise UnknownNameError(f"unknown GPU {text!r}{hint} (see `lora-budget gpus`, or give a size like 24GB)")


def smallest_fitting(nbytes: int) -> GPU | None:
    """The catalog card with the least memory that holds ``nbytes``."""
    fitting = [g for g in catalog() if g.memory_bytes >= nbytes]
    return min(fitting, key=lambda g: (g.memory_bytes, g.name)) if fitting else None
