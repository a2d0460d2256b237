"""The GPU catalog (gpus.json) and ``--gpu`` resolution: a card name or a bare size."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache

from lora_budget.errors import UnknownNameError
from lora_budget.records import dataclass
from lora_budget.units import looks_like_size, parse_size

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpus.json")
"""os.path, not pathlib, as in catalog/models.py: a plan does not import pathlib."""

PCIE_X16_BYTES_PER_S = {3: 16 * 10**9, 4: 32 * 10**9, 5: 64 * 10**9}
"""PCIe x16 bandwidth per direction by generation: NVIDIA's datasheets quote x16 links both directions
added as 32 (Gen3, T4 / V100), 64 (Gen4, A100 / L4 / L40S) and 128 GB/s (Gen5, H100 / H200). The line rate
after 128b/130b encoding is 15.75 / 31.5 / 63 GB/s per direction, 1.5 % below these figures."""


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
    nvlink_bytes_per_s: int | None = None
    """NVLink bandwidth per GPU and direction, bytes/s: half the datasheet's two-way figure (None: no NVLink)."""
    nvlink_gpus: int | None = None
    """GPUs one NVLink domain joins: 8 behind NVSwitch, 2 on a bridge, 1 without NVLink (None: not recorded)."""
    pcie_gen: int | None = None
    """Host PCIe generation of the card's x16 link (None: not recorded)."""
    interconnect_source: str = ""
    from_size: bool = False
    """True when given as a bare size rather than a catalog card."""

    @property
    def pcie_bytes_per_s(self) -> int | None:
        """Host PCIe x16 bandwidth per direction, bytes/s (None: generation not recorded)."""
        return PCIE_X16_BYTES_PER_S.get(self.pcie_gen) if self.pcie_gen else None


@lru_cache(maxsize=1)
def _rows() -> tuple[dict, ...]:
    with open(_DATA, encoding="utf-8") as f:
        return tuple(json.load(f)["gpus"])


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
            nvlink_bytes_per_s=round(r["nvlink_gb_s"] * 10**9 / 2) if r.get("nvlink_gb_s") else None,
            nvlink_gpus=r.get("nvlink_gpus"),
            pcie_gen=r.get("pcie_gen"),
            interconnect_source=r.get("interconnect_source", ""),
        )
        for r in map(_checked, rows)
    )


def _checked(row: dict) -> dict:
    """A catalog row whose interconnect fields are consistent (a broken gpus.json fails loudly, naming the card)."""
    name, nvlink, domain, gen = row["name"], row.get("nvlink_gb_s"), row.get("nvlink_gpus"), row.get("pcie_gen")
    if nvlink is not None and not nvlink > 0:
        raise ValueError(f"gpus.json: {name}: nvlink_gb_s must be positive or null, got {nvlink!r}")
    if domain is not None and (not isinstance(domain, int) or domain < 1 or (nvlink is None) != (domain == 1)):
        raise ValueError(f"gpus.json: {name}: nvlink_gpus must be 1 without NVLink, 2 or more with it, got {domain!r}")
    if gen is not None and gen not in PCIE_X16_BYTES_PER_S:
        raise ValueError(f"gpus.json: {name}: pcie_gen must be one of {sorted(PCIE_X16_BYTES_PER_S)}, got {gen!r}")
    if (nvlink, domain, gen) != (None, None, None) and not row.get("interconnect_source"):
        raise ValueError(f"gpus.json: {name}: interconnect figures need an interconnect_source")
    return row


_DROP = str.maketrans("", "", "-_.")


def _key(text: str) -> str:
    """Lower case, without "nvidia", "geforce", whitespace (``str.split``'s, re's ``\\s``) or ``-_.``."""
    t = text.strip().lower().replace("nvidia", "").replace("geforce", "")
    return "".join(t.split()).translate(_DROP)


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
    import difflib  # only for an unknown name's suggestions: plan's start does not pay for it

    close = difflib.get_close_matches(key, [_key(n) for n in names], n=3, cutoff=0.4)
    hint = f"; closest: {', '.join(n for n in names if _key(n) in close)}" if close else ""
    raise UnknownNameError(f"unknown GPU {text!r}{hint} (see `lora-budget gpus`, or give a size like 24GB)")


def smallest_fitting(nbytes: int) -> GPU | None:
    """The catalog card with the least memory that holds ``nbytes``."""
    fitting = [g for g in catalog() if g.memory_bytes >= nbytes]
    return min(fitting, key=lambda g: (g.memory_bytes, g.name)) if fitting else None
