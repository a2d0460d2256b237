"""Attribute the live bytes at the traced peak to the shared memory categories."""

from __future__ import annotations

from typing import Any

from lora_budget.breakdown import CATEGORIES, Breakdown


def attribute(tracker: Any) -> tuple[Breakdown, int]:
    """(breakdown at the peak event, pageable optimizer bytes live at the peak)."""
    event = tracker.peak.event
    totals = dict.fromkeys(CATEGORIES, 0)
    pageable = 0
    for block in tracker.blocks:
        if block.born > event or (block.died is not None and block.died < event):
            continue
        category = block.category or "temporaries"
        totals[category] += block.size
        if block.pageable:
            pageable += block.size
    assert sum(totals.values()) == tracker.peak.bytes, (sum(totals.values()), tracker.peak.bytes)
    return Breakdown(**totals, phase=tracker.peak.phase), pageable
