"""Write ``tests/golden/plan_api.json``: the exact JSON of ``lora_budget.plan()`` over varied specs.

    python tests/golden/make_api_golden.py

``tests/test_api_speed.py`` checks that the cached planner still returns these bytes. The file was
first written from commit 1799243 (before ``plan()`` cached anything); rerun this script only when
the memory or time model changes on purpose, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

MODELS = (
    "7b",
    "8b",
    "70b",
    "gpt2",
    "falcon-7b",
    "gemma2-9b",
    "mixtral",
    "qwen2.5-7b",
    "phi3-mini",
    "gemma3-4b",
    "olmo2-7b",
    "qwen3-30b-a3b",
    "1b",
)
GPUS = ("24GB", "rtx4090", "a100-80gb", "h100", "l4", "t4", "80GiB", "rtx3060", "h200")
METHODS = ("full", "lora", "qlora", "lora8bit", "all", "full,lora,qlora", "lora,qlora")
OUT = Path(__file__).with_name("plan_api.json")
SEARCH_OUT = Path(__file__).with_name("search_walk.json")
CASES = 400


def cases(n: int = CASES) -> list[dict]:
    """``n`` keyword sets for ``plan()``, from a fixed seed: varied models, GPUs, methods, steps,
    parallelism and optimizers, some of them invalid (their error message is the golden value)."""
    rng = random.Random(15)
    out = []
    for _ in range(n):
        kw: dict = {
            "model": rng.choice(MODELS),
            "gpu": rng.choice(GPUS),
            "methods": rng.choice(METHODS),
            "batch_size": rng.choice((1, 1, 2, 3, 4, 8, 16, "auto")),
            "seq_len": rng.choice((128, 512, 1024, 2048, 4096, 8192)),
        }
        if rng.random() < 0.4:
            kw["grad_ckpt"] = True
        if rng.random() < 0.4:
            kw["optimizer"] = rng.choice(("adamw8bit", "paged_adamw8bit", "paged_adamw", "sgd", "adafactor"))
        if rng.random() < 0.3:
            kw["rank"] = rng.choice((4, 8, 32, 64, 128))
        if rng.random() < 0.2:
            kw["targets"] = rng.choice(("attn", "mlp"))
        if rng.random() < 0.25:
            kw["grad_accum"] = rng.choice((2, 4, 8))
        if rng.random() < 0.25:
            kw["gpus"] = rng.choice((2, 4, 8, 16))
            kw["strategy"] = rng.choice(("ddp", "zero1", "zero2", "zero3", "fsdp"))
            if rng.random() < 0.3:
                kw["offload"] = rng.choice(("optimizer", "params"))
        if rng.random() < 0.15:
            kw["attn"] = rng.choice(("eager", "flash"))
        if rng.random() < 0.15:
            kw["framework"] = rng.choice(("hf-trainer", "torchtune"))
        if rng.random() < 0.1:
            kw["loss"] = rng.choice(("chunked-ce", "fused-ce"))
        if rng.random() < 0.1:
            kw["lora_dropout"] = 0.05
        if rng.random() < 0.1:
            kw["overhead_bytes"] = rng.choice((500_000_000, 2 * 1024**3))
        if rng.random() < 0.3:
            kw["total_tokens"] = rng.choice((10**6, 2 * 10**8, 10**9))
            if rng.random() < 0.5:
                kw["price_usd_per_h"] = rng.choice((0.5, 2.5))
        out.append(kw)
    return out


def answer(kw: dict) -> str:
    """The canonical JSON of ``plan(**kw)``, or the error line it raises."""
    from lora_budget.api import plan
    from lora_budget.errors import LoraBudgetError

    try:
        return json.dumps(plan(**kw).to_dict(), sort_keys=True)
    except LoraBudgetError as exc:
        return f"error: {exc}"


def peaks(text: str) -> str | list:
    """A readable summary beside the digest: the error, or each method's peak bytes and verdict."""
    if text.startswith("error:"):
        return text
    return [[m["method"], m["peak_bytes"], m["fits"]] for m in json.loads(text)["methods"]]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


SEARCHES = (
    {"model": "8b", "gpus": "2x rtx4090, 2x a100-80gb", "seq_len": 1024, "tokens": 10**8, "prices": {}},
    {"model": "70b", "gpus": "8x h100, 4x a100-80gb", "seq_len": 2048, "tokens": 10**9, "prices": {"h100": 2.5}},
    {"model": "gemma2-9b", "gpus": "4x l4, 2x h200", "seq_len": 4096, "tokens": 10**9, "prices": {}},
    {"model": "mixtral", "gpus": None, "seq_len": 2048, "tokens": 10**9, "prices": {}},
)
"""Whole ``search`` walks (full default grid over the named cards) whose every set-up is golden."""


def search_answer(case: dict) -> str:
    """Canonical JSON of the set-ups ``walk`` keeps for ``case`` (as a set), its candidate count and
    both fronts (in order)."""
    from lora_budget.catalog.gpus import resolve_gpu
    from lora_budget.catalog.models import resolve_model
    from lora_budget.search.inputs import parse_available
    from lora_budget.search.space import Space, pareto, walk

    space = Space(model=resolve_model(case["model"]), gpus=parse_available(case["gpus"]), seq_len=case["seq_len"])
    prices = {resolve_gpu(k).name: v for k, v in case["prices"].items()}
    result = walk(space, case["tokens"], prices)

    def rows(setups) -> list:
        return [
            [
                s.gpu.name,
                s.spec.gpus,
                s.spec.strategy,
                s.spec.offload,
                s.spec.method,
                s.spec.rank,
                s.spec.optimizer,
                s.spec.grad_ckpt,
                s.spec.batch_size,
                s.spec.grad_accum,
                s.hours,
                s.gpu_hours,
                s.cost_usd,
                s.peak_bytes,
            ]
            for s in setups
        ]

    return json.dumps(
        {
            "candidates": result.candidates,
            "setups": sorted(rows(result.setups), key=repr),
            "front_cost": rows(pareto(result.setups, True)),
            "front_gpu_hours": rows(pareto(result.setups, False)),
        }
    )


def _dump(rows: list[dict]) -> str:
    return "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n"


def main() -> None:
    rows = []
    for kw in cases():
        text = answer(kw)
        rows.append({"kwargs": kw, "sha256": digest(text), "peaks": peaks(text)})
    OUT.write_text(_dump(rows), encoding="utf-8")
    errors = sum(isinstance(r["peaks"], str) for r in rows)
    print(f"{OUT}: {len(rows)} specs ({errors} refused)", file=sys.stderr)
    found = []
    for case in SEARCHES:
        text = search_answer(case)
        found.append({"case": case, "sha256": digest(text), "setups": len(json.loads(text)["setups"])})
    SEARCH_OUT.write_text(_dump(found), encoding="utf-8")
    print(f"{SEARCH_OUT}: {len(found)} walks", file=sys.stderr)


if __name__ == "__main__":
    main()
