"""Caching in ``plan()`` and ``search`` changes no answer.

The golden files under ``tests/golden/`` were written by ``tests/golden/make_api_golden.py`` from
commit 1799243, before the planner cached anything: the SHA-256 of the exact JSON of ``plan()``
for 400 varied specs (models of 10 architectures, 9 GPUs, every method, batch/sequence,
checkpointing, optimizers, parallelism, frameworks, loss kernels, token counts and prices; 20 of
them refused, whose error line is the golden value) and of whole ``search`` walks. A deliberate
change to the memory or time model regenerates them with that script (say so in the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))

import make_api_golden as golden  # noqa: E402


def _rows(name: str) -> list[dict]:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def test_golden_cases_are_the_generator_cases():
    """The stored keywords are the generator's: the digests below cover the specs they claim to."""
    assert [r["kwargs"] for r in _rows("plan_api.json")] == golden.cases()


def test_plan_json_is_byte_identical_to_the_uncached_planner():
    rows = _rows("plan_api.json")
    assert len(rows) == 400
    bad = []
    for row in rows:
        text = golden.answer(row["kwargs"])
        if golden.digest(text) != row["sha256"]:
            bad.append((row["kwargs"], row["peaks"], golden.peaks(text)))
    assert not bad, (
        f"{len(bad)} of {len(rows)} differ; first (kwargs, golden peaks, now): {bad[0]}. If the memory or time "
        "model changed on purpose, rerun python tests/golden/make_api_golden.py and say so in the commit"
    )


def test_plan_answers_do_not_depend_on_call_order():
    """The same specs in reverse order (every cache warmed by other specs first) give the same bytes."""
    rows = _rows("plan_api.json")[::-1][:120]
    for row in rows:
        assert golden.digest(golden.answer(row["kwargs"])) == row["sha256"], row["kwargs"]


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(r, id=r["case"]["model"], marks=[pytest.mark.slow] if r["case"]["gpus"] is None else [])
        for r in _rows("search_walk.json")
    ],
)
def test_search_walk_is_identical_to_the_uncached_walk(row):
    text = golden.search_answer(row["case"])
    assert golden.digest(text) == row["sha256"], "regenerate with tests/golden/make_api_golden.py if the model changed"
    assert len(json.loads(text)["setups"]) == row["setups"]


def test_a_shuffled_sweep_answers_as_a_cold_planner_does():
    """The fits ``suggest`` remembers (a fit at (b, s) answers every smaller b and s, a miss every larger)
    change no answer: a shuffled b x s sweep equals the same specs planned one by one from empty caches."""
    import random

    from lora_budget.api import plan
    from lora_budget.suggest import clear_caches

    sweep = [
        (model, gpu, method, ckpt, b, s)
        for model, gpu, method, ckpt in (("7b", "rtx4090", "lora", False), ("8b", "a100-80gb", "full", True))
        for b in range(1, 9)
        for s in range(512, 8193, 512)
    ]
    random.Random(7).shuffle(sweep)
    swept = [plan(m, g, meth, batch_size=b, seq_len=s, grad_ckpt=c).to_dict() for m, g, meth, c, b, s in sweep]
    for (m, g, meth, c, b, s), got in list(zip(sweep, swept, strict=True))[::2]:
        clear_caches()
        assert plan(m, g, meth, batch_size=b, seq_len=s, grad_ckpt=c).to_dict() == got, (m, meth, b, s)
    assert any(d["methods"][0]["suggestions"] for d in swept) and any(d["methods"][0]["fits"] for d in swept)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": [16]}, "alpha must be a plain value"),
        ({"grad_ckpt": {"on": True}}, "grad_ckpt must be a plain value"),
        ({"targets": ["q_proj"]}, "LoRA targets must be all-linear, attn, mlp or a comma list"),
    ],
)
def test_a_value_the_caches_cannot_key_on_is_a_one_line_error(kwargs, message):
    """The caches key on the spec's values: a list or a dict where TrainSpec takes a plain value is refused
    by name, not an unhashable-type TypeError."""
    from lora_budget.api import plan
    from lora_budget.errors import LoraBudgetError

    with pytest.raises(LoraBudgetError, match=message):
        plan("7b", "rtx4090", "lora", **kwargs)


@pytest.mark.parametrize("overhead", [[1], 1.5, -5, "1GiB", True])
def test_a_bad_overhead_is_a_one_line_error(overhead):
    from lora_budget.api import plan
    from lora_budget.errors import LoraBudgetError

    with pytest.raises(LoraBudgetError, match="overhead must be a non-negative int of bytes"):
        plan("7b", "rtx4090", "lora", overhead_bytes=overhead)
