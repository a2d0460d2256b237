"""`lora-budget search` speed: candidate set-ups per second for a 70B model over the whole catalog.

    python benchmarks/bench_search.py

Target (issue 15): >= 1,000,000 candidate set-ups in <= 10 s on the 2-core development machine.
The floor measured in the same run is one 70B memory model built from scratch (`peak_model`, every
planner cache emptied first; the fastest of 8), the unit of work the search cannot avoid per
card-independent set-up; the figures printed are the search's wall time from empty caches, its
candidates per second, its wall time as a ratio to the 10 s target and to (evaluations x that floor).
"""

from __future__ import annotations

import time

from lora_budget.catalog.models import resolve_model
from lora_budget.core.model import peak_model
from lora_budget.search.inputs import parse_available
from lora_budget.search.space import Space, walk
from lora_budget.spec import TrainSpec
from lora_budget.suggest import clear_caches

TARGET_CANDIDATES = 1_000_000
TARGET_S = 10.0


def main() -> None:
    ref = resolve_model("70b")
    builds = []
    for rank in (8, 16, 32, 64, 8, 16, 32, 64):
        clear_caches()  # each from scratch: no part of it cached
        start = time.perf_counter()
        peak_model(TrainSpec(model=ref, method="lora", rank=rank, gpus=8, strategy="fsdp"))
        builds.append(time.perf_counter() - start)
    floor = min(builds)
    space = Space(model=ref, gpus=parse_available(None))
    clear_caches()
    start = time.perf_counter()
    result = walk(space, 10**9, {}, workers=2)
    wall = time.perf_counter() - start
    print(
        f"70B search: {result.candidates:,} candidate set-ups, {result.evaluated:,} evaluations, "
        f"{len(result.setups):,} fitting set-ups timed, {wall:.2f} s ({result.candidates / wall:,.0f} candidates/s)"
    )
    print(
        f"floor: one 70B memory model {floor * 1e3:.2f} ms; search wall / (evaluations x floor) = "
        f"{wall / (result.evaluated * floor):.2f}"
    )
    print(f"search wall / target = {wall / TARGET_S:.2f}")
    ok = result.candidates >= TARGET_CANDIDATES and wall <= TARGET_S
    print(f"target >= {TARGET_CANDIDATES:,} candidates in <= {TARGET_S:.0f} s: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
