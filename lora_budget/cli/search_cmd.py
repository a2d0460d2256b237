"""``lora-budget search``: the cheapest and the fastest set-ups for a job."""

from __future__ import annotations

import csv
import io
import json

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import parse_count

COLUMNS = (
    "hours",
    "gpu_hours",
    "cost_usd",
    "gpu",
    "gpus",
    "strategy",
    "offload",
    "method",
    "rank",
    "optimizer",
    "grad_ckpt",
    "batch_size",
    "grad_accum",
    "seq_len",
    "peak_bytes",
    "utilization",
    "utilization_assumed",
    "command",
)


@click.command("search")
@click.option("--model", "-m", required=True, help="Catalog name, Hugging Face id or config.json path.")
@click.option("--tokens", required=True, help="Tokens to train on in total, e.g. 200M.")
@click.option("--max-usd", type=float, default=None, help="Drop set-ups costing more (needs prices).")
@click.option("--max-hours", type=float, default=None, help="Drop set-ups taking longer (wall hours).")
@click.option(
    "--gpus-available", default=None, help='Cards on hand, e.g. "8x h100, 2x rtx4090" (default: 8 of each card).'
)
@click.option("--methods", default="full,lora,qlora", show_default=True, help="Comma-separated methods.")
@click.option("--price-file", default=None, help="CSV with header gpu,usd_per_hour.")
@click.option("--price", "prices", multiple=True, help="card=USD per GPU-hour, repeatable; wins over --price-file.")
@click.option("--min-rank", type=int, default=None, help="Smallest LoRA rank to consider.")
@click.option("--seq-len", type=int, default=2048, show_default=True, help="Sequence length (fixed).")
@click.option("--json", "as_json", is_flag=True, help="The front as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="The front as CSV.")
@user_errors
def search_cmd(
    model: str,
    tokens: str,
    max_usd: float | None,
    max_hours: float | None,
    gpus_available: str | None,
    methods: str,
    price_file: str | None,
    prices: tuple[str, ...],
    min_rank: int | None,
    seq_len: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Walk GPU type x count x strategy x offload x method x rank x optimizer x checkpointing x
    micro-batch x accumulation; keep what fits; print the Pareto front of cost (or, with no prices,
    GPU-hours) against wall time, each with the `lora-budget plan` command that shows it in full.

    \b
    Examples:
      lora-budget search -m 8b --tokens 200M --gpus-available "8x h100, 2x rtx4090"
      lora-budget search -m 70b --tokens 1B --price h100=2.50 --price a100-80gb=1.60 --max-usd 2000
    """
    from lora_budget.search.run import run_search
    from lora_budget.search.space import command_line, pareto

    if as_json and as_csv:
        raise click.UsageError("choose one of --json, --csv")
    total = parse_count(tokens, "--tokens")
    if total <= 0:
        raise click.BadParameter(f"must be positive, got {tokens}", param_hint="--tokens")
    if seq_len < 1:
        raise click.BadParameter(f"must be positive, got {seq_len}", param_hint="--seq-len")
    for name, v in (("--max-usd", max_usd), ("--max-hours", max_hours)):
        if v is not None and not v > 0:
            raise click.BadParameter(f"must be positive, got {v}", param_hint=name)
    found = run_search(
        model,
        total,
        methods=methods,
        gpus_available=gpus_available,
        price_file=price_file,
        prices=prices,
        min_rank=min_rank,
        seq_len=seq_len,
        need_prices=max_usd is not None,
    )
    result, priced = found.result, found.priced
    kept = tuple(
        s
        for s in result.setups
        if (max_hours is None or s.hours <= max_hours)
        and (max_usd is None or (s.cost_usd is not None and s.cost_usd <= max_usd))
    )
    front = pareto(kept, by_cost=priced)
    rows = [
        {
            "hours": round(s.hours, 4),
            "gpu_hours": round(s.gpu_hours, 4),
            "cost_usd": None if s.cost_usd is None else round(s.cost_usd, 2),
            "gpu": s.gpu.name,
            "gpus": s.spec.gpus,
            "strategy": s.spec.strategy,
            "offload": s.spec.offload,
            "method": s.spec.method,
            "rank": None if s.spec.method == "full" else s.spec.rank,
            "optimizer": s.spec.optimizer,
            "grad_ckpt": s.spec.grad_ckpt,
            "batch_size": s.spec.batch_size,
            "grad_accum": s.spec.grad_accum,
            "seq_len": s.spec.seq_len,
            "peak_bytes": s.peak_bytes,
            "utilization": s.utilization,
            "utilization_assumed": s.utilization_assumed,
            "command": command_line(s, total),
        }
        for s in front
    ]
    ranking = "cost" if priced else "GPU-hours (no prices given: pass --price-file or --price card=usd for cost)"
    notes = [
        f"searched {result.candidates:,} candidate set-ups ({result.evaluated:,} evaluations); "
        f"{len(result.setups):,} fitting set-ups timed; front by {ranking} vs wall hours",
        result.utilization_note,
    ]
    if as_json:
        click.echo(json.dumps({"schema": 1, "front": rows, "notes": notes}, indent=2))
        return
    if as_csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        click.echo(buf.getvalue(), nl=False)
        return
    if not rows:
        click.echo("no set-up fits within the limits given")
    for r in rows:
        money = f"${r['cost_usd']:,.2f}" if r["cost_usd"] is not None else f"{r['gpu_hours']:,.1f} GPU-h"
        click.echo(f"{r['hours']:>10,.2f} h  {money:>14}  {r['gpus']}x {r['gpu']} {r['method']}")
        click.echo(f"    {r['command']}")
    for n in notes:
        click.echo(f"note: {n}")
