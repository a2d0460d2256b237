"""``lora-budget plan``: the analytical answer, instantly."""

from __future__ import annotations

import json
from typing import Any

import click

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import parse_batch, spec_kwargs, spec_options
from lora_budget.cli.render import render_csv, render_markdown, render_table
from lora_budget.units import parse_size


@click.command("plan")
@spec_options
@click.option(
    "--gpu",
    "-g",
    default="24GB",
    show_default=True,
    help="Card name (rtx4090, a100-80gb, h100) or size (24GB = 24e9 bytes, 24GiB = 24 * 2^30).",
)
@click.option(
    "--overhead",
    default="0B",
    show_default=True,
    help="Extra bytes to reserve (CUDA context, fragmentation), e.g. 1GiB.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object with a `methods` list.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per method.")
@click.option("--markdown", "as_markdown", is_flag=True, help="A Markdown table.")
@user_errors
def plan_cmd(gpu: str, overhead: str, as_json: bool, as_csv: bool, as_markdown: bool, **kw: Any) -> None:
    """Per-method memory breakdown, fit verdict, largest batch / sequence, and what to change.

    \b
    Examples:
      lora-budget plan --model 7b --gpu 24GB
      lora-budget plan -m Qwen2.5-7B -g rtx4090 --method qlora --seq-len 4096 --grad-ckpt
      lora-budget plan -m 8b -g a100-80gb --method full --optimizer adamw8bit --batch-size auto
      lora-budget plan -m 70b -g h100 --json | jq '.methods[] | {method, fits, peak_bytes}'
    """
    from lora_budget.api import plan

    if sum((as_json, as_csv, as_markdown)) > 1:
        raise click.UsageError("choose one of --json, --csv, --markdown")
    result = plan(
        kw["model"],
        gpu,
        kw["method"],
        batch_size=parse_batch(kw["batch_size"]),
        overhead_bytes=parse_size(overhead) if overhead.strip() not in ("0", "0B", "0b") else 0,
        **spec_kwargs(kw),
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif as_csv:
        click.echo(render_csv(result), nl=False)
    elif as_markdown:
        click.echo(render_markdown(result))
    else:
        click.echo(render_table(result))
