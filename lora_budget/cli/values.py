"""Option values that click's types do not parse: a micro-batch (or ``auto``) and a token count.

No click import at module level: ``plan``'s fast path (cli/fast.py) calls these; click is imported
only to raise its error, which the click path then reports.
"""

from __future__ import annotations


def _bad(message: str, hint: str) -> Exception:
    import click

    return click.BadParameter(message, param_hint=hint)


def parse_batch(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise _bad(f"{text!r} is not a positive integer or auto", "--batch-size") from None
    if value <= 0:
        raise _bad(f"must be positive, got {value}", "--batch-size")
    return value


_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_count(text: str, hint: str) -> int:
    """A positive token count: ``100000000``, ``1e8``, ``100M``, ``1.5B`` (suffixes are decimal: k, M, B, T)."""
    t = text.strip().replace(",", "").replace("_", "").lower()
    suffix = t[-1:] if t[-1:] in _COUNT_SUFFIX and not t[-1:].isdigit() else ""
    try:
        value = float(t[: len(t) - len(suffix)]) * _COUNT_SUFFIX[suffix]
    except ValueError:
        raise _bad(f"{text!r} is not a token count (e.g. 100000000, 1e8, 100M, 2B)", hint) from None
    if not value >= 1 or value != value or value == float("inf"):
        raise _bad(f"must be at least 1 token, got {text!r}", hint)
    return round(value)
