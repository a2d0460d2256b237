"""Fit search: the largest micro-batch and the longest sequence that fit a memory budget.

Peak memory grows monotonically with batch size and with sequence length (every term is a
non-negative polynomial in b and s), so each search is an exponential probe followed by a
bisection over ``PeakModel.fit_bytes``: about 2 log2(n) evaluations.
"""

from __future__ import annotations

from collections.abc import Callable

from lora_budget.core.peak import PeakModel

MAX_BATCH = 1 << 16
"""Upper end of the batch search."""


def _largest(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with fits(n), given fits is monotone (True then False); lo - 1 if none."""
    if not fits(lo):
        return lo - 1
    good = lo
    step = 1
    while good + step <= hi and fits(good + step):
        good += step
        step *= 2
    bad = min(good + step, hi + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def max_batch_size(model: PeakModel, seq_len: int, capacity_bytes: int) -> int:
    """Largest micro-batch that fits at ``seq_len``; 0 if even one sequence does not."""
    return _largest(lambda b: model.fit_bytes(b, seq_len) <= capacity_bytes, 1, MAX_BATCH)


def max_seq_len(model: PeakModel, batch_size: int, capacity_bytes: int, limit: int) -> int:
    """Longest sequence (up to ``limit``) that fits at ``batch_size``; 0 if none does."""
    return _largest(lambda s: model.fit_bytes(batch_size, s) <= capacity_bytes, 1, limit)
