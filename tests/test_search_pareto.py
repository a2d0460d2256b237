"""The report's cost-vs-time figure draws exactly the front ``search`` returns, from its own result objects."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib", reason="needs matplotlib: pip install -e .[report]")

from lora_budget.catalog.gpus import resolve_gpu  # noqa: E402
from lora_budget.catalog.models import resolve_model  # noqa: E402
from lora_budget.cli import main  # noqa: E402
from lora_budget.report.pareto import front_points, pareto_data, pareto_figure  # noqa: E402
from lora_budget.search.space import Space, pareto, walk  # noqa: E402

TOKENS = 10**9


def _space() -> Space:
    return Space(
        model=resolve_model("8b"),
        gpus=((resolve_gpu("rtx4090"), 4), (resolve_gpu("a100-80gb"), 2), (resolve_gpu("l4"), 2)),
        methods=("full", "lora", "qlora"),
        ranks=(16,),
        seq_len=2048,
    )


@pytest.mark.parametrize("prices", [{}, {"RTX 4090": 0.8, "A100 80GB": 1.0, "L4": 0.4}], ids=["gpu-hours", "usd"])
def test_the_drawn_front_is_the_search_front(prices):
    result = walk(_space(), TOKENS, prices)
    by_cost = bool(prices)
    front = pareto(result.setups, by_cost)
    assert len(front) >= 2  # a real trade-off, not one point
    fig = pareto_figure(pareto_data(result, TOKENS, by_cost=by_cost), "Cost vs wall time")
    want = sorted((s.hours, s.cost_usd if by_cost else s.gpu_hours) for s in front)
    assert sorted(front_points(fig)) == want
    # every front point is undominated among all the fitting set-ups drawn (checked without the sort
    # pareto uses), and every other drawn set-up is dominated by one of them
    money = [(s.hours, s.cost_usd if by_cost else s.gpu_hours) for s in result.setups]
    for h, c in want:
        assert not any(h2 <= h and c2 <= c and (h2, c2) != (h, c) for h2, c2 in money)
    for h, c in money:
        assert any(h2 <= h and c2 <= c for h2, c2 in want)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("Pareto front" in t for t in labels)
    assert all(any(f"{s.gpu.name} x" in t for t in labels) for s in front)  # one entry per method and card
    axis = fig.axes[0].get_ylabel()
    assert axis == ("cost (USD)" if by_cost else "GPU-hours (no prices given)")


def test_report_tokens_adds_the_figure_and_its_csv(tmp_path):
    out = tmp_path / "r"
    search = ["--tokens", "1B", "--gpus-available", "4x rtx4090, 2x a100-80gb", "--price", "rtx4090=0.4",
              "--price", "a100-80gb=1.6"]  # fmt: skip
    args = ["report", "-m", "8b", "-g", "rtx4090", "--out", str(out), "--format", "png,svg", *search]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG") and (out / "pareto.svg").stat().st_size > 2000
    with open(out / "pareto.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    drawn = [r for r in rows if r["on_front"] == "True"]
    # the front in the CSV is the front `search --json` prints for the same inputs
    found = CliRunner().invoke(
        main,
        [
            "search",
            "-m",
            "8b",
            "--tokens",
            "1B",
            "--gpus-available",
            "4x rtx4090, 2x a100-80gb",
            "--price",
            "rtx4090=0.4",
            "--price",
            "a100-80gb=1.6",
            "--json",
        ],  # fmt: skip
        catch_exceptions=False,
    )
    front = json.loads(found.output)["front"]
    assert [(r["gpu"], int(r["gpus"]), r["method"], round(float(r["cost_usd"]), 2)) for r in drawn] == [
        (f["gpu"], f["gpus"], f["method"], f["cost_usd"]) for f in front
    ]
    md = (out / "report.md").read_text()
    assert "](pareto.png)" in md and "assumed default per method" in md


def test_report_tokens_refuses_bad_input_in_one_line(tmp_path):
    r = CliRunner().invoke(main, ["report", "-m", "8b", "--out", str(tmp_path / "x"), "--tokens", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "--tokens" in r.output
