"""Parse ``search``'s inputs: the GPUs on hand and the prices per GPU-hour (bad input: one-line errors)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from lora_budget.catalog.gpus import GPU, catalog, resolve_gpu
from lora_budget.errors import LoraBudgetError
from lora_budget.loads import read_text

DEFAULT_MOST = 8
"""With no --gpus-available, every catalog card with a throughput figure, up to this many of it."""


def parse_available(text: str | None) -> tuple[tuple[GPU, int], ...]:
    """``"8x h100, 2x rtx4090"`` -> ((H100 SXM, 8), (RTX 4090, 2)); a bare card means one."""
    if text is None:
        return tuple((g, DEFAULT_MOST) for g in catalog() if g.peak_bf16_tflops or g.peak_fp16_tflops)
    out: dict[str, tuple[GPU, int]] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        m = re.match(r"^(\d+)\s*[x×*]\s*(.+)$", item, re.IGNORECASE)
        count, name = (int(m.group(1)), m.group(2)) if m else (1, item)
        if count < 1:
            raise LoraBudgetError(f"--gpus-available: a count must be at least 1, got {item!r}")
        gpu = resolve_gpu(name)
        if gpu.from_size:
            raise LoraBudgetError(f"--gpus-available: {name!r} is a size; search needs catalog cards for their speed")
        out[gpu.name] = (gpu, count)
    if not out:
        raise LoraBudgetError('--gpus-available names no GPUs; e.g. "8x h100, 2x rtx4090"')
    return tuple(out.values())


def _price(card: str, value: str, where: str) -> tuple[str, float]:
    try:
        usd = float(value)
    except ValueError:
        raise LoraBudgetError(f"{where}: price {value!r} for {card!r} is not a number") from None
    if not 0 < usd < float("inf"):  # nan and inf too: an infinite price is no price
        raise LoraBudgetError(f"{where}: price for {card!r} must be a positive, finite USD per GPU-hour, got {value}")
    return resolve_gpu(card).name, usd


def parse_prices(path: str | None, pairs: tuple[str, ...]) -> dict[str, float]:
    """A CSV with header ``gpu,usd_per_hour`` and ``card=usd`` pairs (pairs win), keyed by catalog name."""
    prices: dict[str, float] = {}
    if path is not None:
        text = read_text(Path(path), f"--price-file {path}")  # a FIFO, device, folder or non-UTF-8 file: one line
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"gpu", "usd_per_hour"} <= set(rows[0]):
            raise LoraBudgetError(f"--price-file {path}: needs a header line 'gpu,usd_per_hour' and one row per card")
        for i, row in enumerate(rows, start=2):
            card, usd = _price((row["gpu"] or "").strip(), (row["usd_per_hour"] or "").strip(), f"{path} line {i}")
            prices[card] = usd
    for pair in pairs:
        if "=" not in pair:
            raise LoraBudgetError(f"--price {pair!r}: give card=USD_PER_GPU_HOUR, e.g. h100=2.50")
        card, value = pair.split("=", 1)
        name, usd = _price(card.strip(), value.strip(), "--price")
        prices[name] = usd
    return prices
