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


def plan_api_calls_per_second(calls: int = 300) -> tuple[float, float]:
    """(calls/s of the public ``plan()`` on distinct single-method specs with suggestions on, the same
    for one reused ``peak_model`` evaluation: the floor a cached planner approaches). Target >= 2,000."""
    from lora_budget.api import plan

    specs = [(m, b, s) for m in ("full", "lora", "qlora") for b in range(1, 11) for s in (512, 1024, 2048, 4096)]
    specs = (specs * (calls // len(specs) + 1))[:calls]
    plan("7b", "24GB", "lora")  # warm imports and catalog
    start = time.perf_counter()
    for i, (m, b, s) in enumerate(specs):
        plan("7b", "rtx4090", m, batch_size=b, seq_len=s, rank=8 + i % 57)  # distinct: the rank differs
    rate = calls / (time.perf_counter() - start)
    model = peak_model(TrainSpec(model=resolve_model("7b"), method="lora"))
    start = time.perf_counter()
    for b, s in ((b, s) for b in range(1, 11) for s in range(128, 4097, 128)):
        model.breakdown(b, s)
    floor = 320 / (time.perf_counter() - start)
    return rate, floor


def cold_start_ratio(runs: int = 15) -> tuple[float, float]:
    """(median seconds of `lora-budget plan --model 7b --gpu 24GB`, of `python -c pass`), same run."""
    exe = shutil.which("lora-budget")
    cmd = [exe] if exe else [sys.executable, "-m", "lora_budget"]
    plan_t, bare_t = [], []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([*cmd, "plan", "--model", "7b", "--gpu", "24GB"], check=True, capture_output=True)
        plan_t.append(time.perf_counter() - start)
    return statistics.median(plan_t), statistics.median(bare_t)


if __name__ == "__main__":
    rate, floor = plan_api_calls_per_second()
    print(
        f"plan() API: {rate:,.0f} calls/s, distinct single-method specs with suggestions on (target >= 2,000); "
        f"ratio to one reused breakdown evaluation ({floor:,.0f}/s) = {rate / floor:.4f}"
    )
    plan_s, bare_s = cold_start_ratio()
    print(
        f"cold start: plan {plan_s * 1000:.0f} ms, python -c pass {bare_s * 1000:.0f} ms, "
        f"ratio {plan_s / bare_s:.2f} (target <= 2.5)"
    )
    best, median = configs_per_second()
    print(f"fit search: {best:,.0f} configurations/s, best of 5 passes (median {median:,.0f}; target >= 100,000)")
    wall = plan_wall_seconds()
    print(f"lora-budget plan --model 7b --gpu 24GB: median {wall * 1000:.0f} ms over 15 runs (target < 300 ms)")
