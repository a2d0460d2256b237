"""Fit-search throughput and `lora-budget plan` wall time.

    python benchmarks/bench_plan.py

Prints evaluated configurations per second of the fit search (target >= 100,000) and the
median wall time of `lora-budget plan --model 7b --gpu 24GB` over several runs (target < 0.3 s).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

from lora_budget.catalog.models import resolve_model
from lora_budget.core.peak import peak_model
from lora_budget.spec import TrainSpec


def configs_per_second(repeats: int = 5) -> tuple[float, float]:
    """(best, median) evaluations per second over ``repeats`` passes of the whole grid.

    The best pass is the least disturbed by other work on the machine; the median shows the spread.
    """
    ref = resolve_model("7b")
    models = [
        peak_model(TrainSpec(model=ref, method=m, grad_ckpt=c))
        for m in ("full", "lora", "qlora")
        for c in (False, True)
    ]
    grid = [(b, s) for b in range(1, 65) for s in range(128, 8193, 128)]
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = 0
        for model in models:
            for b, s in grid:
                model.fit_bytes(b, s)
                n += 1
        rates.append(n / (time.perf_counter() - start))
    return max(rates), statistics.median(rates)


def plan_wall_seconds(runs: int = 15) -> float:
    exe = shutil.which("lora-budget")
    cmd = [exe] if exe else [sys.executable, "-m", "lora_budget"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([*cmd, "plan", "--model", "7b", "--gpu", "24GB"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    best, median = configs_per_second()
    print(f"fit search: {best:,.0f} configurations/s, best of 5 passes (median {median:,.0f}; target >= 100,000)")
    wall = plan_wall_seconds()
    print(f"lora-budget plan --model 7b --gpu 24GB: median {wall * 1000:.0f} ms over 15 runs (target < 300 ms)")
