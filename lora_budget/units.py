"""Byte units: parsing user sizes and printing byte counts.

Binary units (KiB, MiB, GiB, TiB) are powers of 1024; decimal units (KB, MB, GB, TB) are powers
of 1000. The two are never mixed: a number labelled GB was divided by 10**9.
"""

from __future__ import annotations

import math
import re

from lora_budget.errors import LoraBudgetError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
KB = 1000
MB = 1000**2
GB = 1000**3
TB = 1000**4

_UNITS = {
    "b": 1,
    "kb": KB,
    "mb": MB,
    "gb": GB,
    "tb": TB,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse ``"24GB"``, ``"80 GiB"`` or ``"512MiB"`` into bytes.

    ``GB`` is decimal (24GB = 24 * 10**9 bytes), ``GiB`` binary (24GiB = 24 * 2**30 bytes).
    Raises ValueError on anything else, including sizes without a unit.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise LoraBudgetError(
            f"cannot read {text!r} as a memory size; write it with a unit, e.g. 24GB (decimal) or 24GiB (binary)"
        )
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not value < MAX_SIZE:  # also catches inf from a 400-digit number
        raise LoraBudgetError(f"memory size {_echo(text)} is over 1 EiB; give a real size, e.g. 24GB")
    nbytes = int(round(value))
    if nbytes <= 0:
        raise LoraBudgetError(f"memory size {text!r} must be positive")
    return nbytes


MAX_SIZE = 2**60
"""1 EiB: no memory size a plan can use is this big (the largest GPUs hold a few hundred GiB); a
bigger one is a typo or a fuzzer, and refusing it keeps every later sum a finite int."""


def _echo(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


def finite_number(text: str, name: str, *, low: float = 0.0, high: float = 1e15, low_open: bool = True) -> float:
    """``text`` (or a float) as a finite number in ``(low, high]`` (``[low, high]`` with
    ``low_open=False``); a LoraBudgetError naming the option otherwise.

    ``inf``, ``nan`` and ``1e-300`` pass ``float()`` but make no sense as epochs, prices, link
    speeds or percentages, and turn into ``Infinity`` in JSON or an OverflowError later.
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LoraBudgetError(f"{name}: cannot read {_echo(str(text))} as a number") from None
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        side = "(" if low_open else "["
        raise LoraBudgetError(f"{name} must be a finite number in {side}{low:g}, {high:g}], got {_echo(str(text))}")
    return value


def looks_like_size(text: str) -> bool:
    return bool(_SIZE_RE.match(text))


def gib(nbytes: int) -> float:
    """Bytes as GiB (2**30)."""
    return nbytes / GiB


def fmt_gib(nbytes: int, digits: int = 2) -> str:
    return f"{nbytes / GiB:.{digits}f} GiB"


def fmt_bytes(nbytes: int) -> str:
    """Human binary size with the unit that keeps 1-3 integer digits."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
