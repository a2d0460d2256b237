"""One search from a user's inputs, shared by ``lora-budget search`` and ``lora-budget report --tokens``."""

from __future__ import annotations

import os

from lora_budget.catalog.models import resolve_model
from lora_budget.errors import LoraBudgetError
from lora_budget.records import dataclass
from lora_budget.search.inputs import parse_available, parse_prices
from lora_budget.search.space import RANKS, SearchResult, Space, walk
from lora_budget.spec import METHODS


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    space: Space
    result: SearchResult
    prices: dict[str, float]
    priced: bool
    """Every card searched has a price: the front is by cost, else by GPU-hours."""


def run_search(
    model: str,
    total_tokens: int,
    *,
    methods: str = "full,lora,qlora",
    gpus_available: str | None = None,
    price_file: str | None = None,
    prices: tuple[str, ...] = (),
    min_rank: int | None = None,
    seq_len: int = 2048,
    need_prices: bool = False,
) -> Found:
    """Parse the inputs (one-line ``LoraBudgetError`` for each bad one) and walk the space on up to
    two forked workers; ``need_prices`` refuses a search in which some card has no price."""
    every = ("full", "lora", "qlora")  # as plan's "all"
    chosen = every if methods.strip() == "all" else tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise LoraBudgetError(
            f"--methods: unknown method {', '.join(bad) or '(none)'}; choose from {', '.join(METHODS)}"
        )
    ranks = tuple(r for r in RANKS if min_rank is None or r >= min_rank)
    if not ranks and any(m != "full" for m in chosen):
        raise LoraBudgetError(f"--min-rank {min_rank}: above the largest rank searched ({RANKS[-1]})")
    price_map = parse_prices(price_file, prices)
    space = Space(
        model=resolve_model(model),
        gpus=parse_available(gpus_available),
        methods=chosen,
        ranks=ranks or RANKS,
        seq_len=seq_len,
    )
    priced = all(g.name in price_map for g, _ in space.gpus)
    if need_prices and not priced:
        raise LoraBudgetError("--max-usd needs a price for every card searched (--price-file or --price card=usd)")
    result = walk(space, total_tokens, price_map, workers=min(2, os.cpu_count() or 1))
    return Found(space=space, result=result, prices=price_map, priced=priced)
