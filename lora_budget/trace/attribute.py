"""Attribute the live bytes at the traced peak to the shared memory categories."""

from __future__ import annotations

from typing import Any

from lora_budget.breakdown import CATEGORIES, Breakdown


def attribute(tracker: Any, at: tuple[int, int, str] | None = None) -> tuple[Breakdown, int]:
    """(breakdown at the peak event, pageable optimizer bytes live at the peak).

    ``at``: (event, live bytes, phase) of another moment to attribute, e.g. the peak of the
    measured steps only; default the tracker's overall peak.
    """
    event, live, phase = at or (tracker.peak.event, tracker.peak.bytes, tracker.peak.phase)
    totals = dict.fromkeys(CATEGORIES, 0)
    pageable = 0
    for block in tracker.blocks:
        if block.born > event or (block.died is not None and block.died < event):
            continue
        category = block.category or "temporaries"
        totals[category] += block.size
        if block.pageable:
            pageable += block.size
    assert sum(totals.values()) == live, (sum(totals.values()), live)
    return Breakdown(**totals, phase=phase), pageable
