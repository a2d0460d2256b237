"""``search``: its pruned front equals a brute-force front built from the public ``plan`` API."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner

from lora_budget import plan
from lora_budget.catalog.gpus import resolve_gpu
from lora_budget.catalog.models import resolve_model
from lora_budget.cli import main
from lora_budget.errors import LoraBudgetError
from lora_budget.search.space import Space, pareto, walk

TOKENS = 10**8


def _small_space() -> Space:
    return Space(
        model=resolve_model("8b"),
        gpus=((resolve_gpu("rtx4090"), 2), (resolve_gpu("a100-80gb"), 2)),
        methods=("full", "qlora"),
        ranks=(16,),
        optimizers=("adamw", "adamw8bit"),
        counts=(1, 2),
        strategies=("ddp", "fsdp"),
        offloads=("none",),
        batches=(1, 2, 4, 8),
        accums=(1, 2, 4),
        seq_len=1024,
    )


def _brute_front(space: Space, prices: dict[str, float]) -> set[tuple]:
    """Every grid point through plan(); the front by a quadratic dominance check (no sort trick)."""
    points = []
    for (gpu, most), n, method, opt, ckpt, b, a in itertools.product(
        space.gpus, space.counts, space.methods, space.optimizers, (False, True), space.batches, space.accums
    ):
        for strategy in ("ddp",) if n == 1 else space.strategies:
            if n > most:
                continue
            try:
                r = plan(
                    space.model,
                    gpu,
                    method,
                    batch_size=b,
                    seq_len=space.seq_len,
                    rank=16,
                    optimizer=opt,
                    grad_ckpt=ckpt,
                    gpus=n,
                    strategy=strategy,
                    grad_accum=a,
                    total_tokens=TOKENS,
                    price_usd_per_h=prices.get(gpu.name),
                )
            except LoraBudgetError:
                continue
            m = r.methods[0]
            if not m.fits:
                continue
            hours = m.time.wall_s / 3600
            money = m.time.cost_usd if prices else hours * n
            points.append(((gpu.name, n, strategy, method, opt, ckpt, b, a), round(money, 9), round(hours, 9)))
    front = set()
    for _key, c, h in points:
        if not any((c2 <= c and h2 <= h) and (c2 < c or h2 < h) for _, c2, h2 in points):
            front.add((c, h))
    return front


@pytest.mark.parametrize("prices", [{}, {"RTX 4090": 0.4, "A100 80GB": 1.6}])
def test_front_equals_brute_force(prices):
    space = _small_space()
    result = walk(space, TOKENS, prices)
    got = {
        (round(s.cost_usd if prices else s.gpu_hours, 9), round(s.hours, 9))
        for s in pareto(result.setups, bool(prices))
    }
    want = _brute_front(space, prices)
    assert want and got == want
    # the grid the walk stands for: 2 cards x (1 + 2 strategies at 2 GPUs) x 2 methods x 2 optimizers x 2 ckpt x 4 x 3
    assert result.candidates == 2 * 3 * 2 * 2 * 2 * 4 * 3


def _run(*args):
    return CliRunner().invoke(main, ["search", *args])


def test_cli_json_front_has_plan_commands(tmp_path):
    prices = tmp_path / "prices.csv"
    prices.write_text("gpu,usd_per_hour\nrtx4090,0.40\nh100,2.50\n", encoding="utf-8")
    r = _run(
        "-m",
        "8b",
        "--tokens",
        "50M",
        "--gpus-available",
        "2x rtx4090, 2x h100",
        "--methods",
        "qlora",
        "--price-file",
        str(prices),
        "--json",
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["front"] and all(row["command"].startswith("lora-budget plan -m") for row in out["front"])
    costs = [row["cost_usd"] for row in out["front"]]
    hours = [row["hours"] for row in out["front"]]
    assert costs == sorted(costs) and hours == sorted(hours, reverse=True)
    assert any("utilization" in n for n in out["notes"])
    # the first command plans a set-up that fits, at the cost the search printed
    row = out["front"][0]
    check = plan(
        "8b",
        row["gpu"],
        "qlora",
        batch_size=row["batch_size"],
        seq_len=row["seq_len"],
        rank=row["rank"],
        optimizer=row["optimizer"],
        grad_ckpt=row["grad_ckpt"],
        gpus=row["gpus"],
        strategy=row["strategy"],
        grad_accum=row["grad_accum"],
        total_tokens=50 * 10**6,
        price_usd_per_h=0.40 if row["gpu"] == "RTX 4090" else 2.50,
    ).methods[0]
    assert check.fits and round(check.time.cost_usd, 2) == row["cost_usd"]


def test_cli_without_prices_ranks_by_gpu_hours():
    r = _run("-m", "8b", "--tokens", "50M", "--gpus-available", "1x rtx4090", "--methods", "qlora", "--csv")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("hours,gpu_hours,cost_usd")
    r = _run("-m", "8b", "--tokens", "50M", "--gpus-available", "1x rtx4090", "--methods", "qlora")
    assert "GPU-hours (no prices given" in r.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--gpus-available", "3x nosuchcard"], "unknown GPU"),
        (["--gpus-available", "0x h100"], "at least 1"),
        (["--gpus-available", "24GB"], "is a size"),
        (["--price", "h100"], "card=USD"),
        (["--price", "h100=-1"], "positive"),
        (["--price", "h100=abc"], "not a number"),
        (["--price-file", "/nonexistent/prices.csv"], "--price-file"),
        (["--methods", "lorax"], "unknown method"),
        (["--max-usd", "100", "--gpus-available", "h100"], "needs a price"),
        (["--min-rank", "128", "--methods", "lora"], "--min-rank"),
        (["--json", "--csv"], "choose one"),
        (["--seq-len", "0"], "positive"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args, fragment):
    r = _run("-m", "8b", "--tokens", "1M", *args)
    assert r.exit_code == 2, r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and fragment in err[0], r.output
    assert "Traceback" not in r.output


def test_cli_bad_price_file_header(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("card,price\nh100,2\n", encoding="utf-8")
    r = _run("-m", "8b", "--tokens", "1M", "--price-file", str(f))
    assert r.exit_code == 2 and "gpu,usd_per_hour" in r.output


def test_two_workers_give_the_same_setups():
    space = _small_space()
    one = walk(space, TOKENS, {})
    two = walk(space, TOKENS, {}, workers=2)

    def key(s):
        return (
            s.gpu.name,
            s.spec.gpus,
            s.spec.strategy,
            s.spec.method,
            s.spec.optimizer,
            s.spec.grad_ckpt,
            s.spec.grad_accum,
        )

    assert sorted(one.setups, key=key) == sorted(two.setups, key=key)
    assert one.evaluated == two.evaluated and one.candidates == two.candidates
