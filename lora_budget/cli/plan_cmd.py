"""``lora-budget plan``: the analytical answer, instantly."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from click.core import ParameterSource

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import config_notes, parse_batch, parse_count, spec_kwargs, spec_options
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
@click.option("--tokens", help="Tokens to train on in total (all epochs), e.g. 100M or 1e8: adds wall time and cost.")
@click.option("--dataset-tokens", help="Tokens in one pass over the dataset; with --epochs instead of --tokens.")
@click.option("--epochs", type=float, default=None, help="Passes over --dataset-tokens (default 1).")
@click.option("--price", type=float, default=None, help="USD per GPU-hour for the cost (the catalog has no prices).")
@click.option(
    "--inter-node-gbps",
    type=float,
    default=None,
    help="Network bandwidth per GPU between nodes, Gb/s, when --gpus exceeds 8 (default 400: an assumed "
    "InfiniBand NDR adapter per GPU).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object with a `methods` list.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per method.")
@click.option("--markdown", "as_markdown", is_flag=True, help="A Markdown table.")
@user_errors
def plan_cmd(
    gpu: str,
    overhead: str,
    tokens: str | None,
    dataset_tokens: str | None,
    epochs: float | None,
    price: float | None,
    inter_node_gbps: float | None,
    as_json: bool,
    as_csv: bool,
    as_markdown: bool,
    **kw: Any,
) -> None:
    """Per-method memory breakdown, fit verdict, largest batch / sequence, what to change, and speed.

    With --gpus N every figure is per GPU (each runs its own --batch-size micro-batch) and
    --strategy says what is sharded; a plan that does not fit on one GPU suggests the smallest
    GPU count and strategy that does.

    Speed (tokens/s, step time) is estimated for catalog cards in bf16/fp16, with --gpus N
    including the collectives' bytes per GPU and the time compute cannot hide; --tokens (or
    --dataset-tokens with --epochs) adds wall time, and --price USD/h the cost. --config reads
    an axolotl / LLaMA-Factory YAML, TRL or PEFT JSON, or a config.json; flags override it.

    \b
    Examples:
      lora-budget plan --model 7b --gpu 24GB
      lora-budget plan -m Qwen2.5-7B -g rtx4090 --method qlora --seq-len 4096 --grad-ckpt
      lora-budget plan -m 8b -g a100-80gb --method full --optimizer adamw8bit --batch-size auto
      lora-budget plan -m 70b -g h100 --json | jq '.methods[] | {method, fits, peak_bytes}'
      lora-budget plan -m 7b -g rtx4090 --method qlora --tokens 100M --price 0.40
      lora-budget plan --config axolotl.yml -g a100-80gb --dataset-tokens 30M --epochs 3
      lora-budget plan -m 70b -g a100-80gb --method full --grad-ckpt --gpus 8 --strategy fsdp
      lora-budget plan -m 70b -g h100-sxm --method lora --gpus 16 --strategy fsdp --inter-node-gbps 200
    """
    from lora_budget.api import plan

    if sum((as_json, as_csv, as_markdown)) > 1:
        raise click.UsageError("choose one of --json, --csv, --markdown")
    typed_epochs = click.get_current_context().get_parameter_source("epochs") == ParameterSource.COMMANDLINE
    if tokens is not None and (dataset_tokens is not None or (epochs is not None and typed_epochs)):
        raise click.UsageError("give --tokens, or --dataset-tokens with --epochs, not both")
    if epochs is not None and dataset_tokens is None:
        if typed_epochs:
            raise click.UsageError("--epochs needs --dataset-tokens (tokens in one pass over the data)")
        epochs = None  # from a --config file; used only with --dataset-tokens
    epochs, price, inter_node_gbps = _finite_numbers(epochs, price, inter_node_gbps)
    if epochs is not None and not epochs > 0:
        raise click.BadParameter(f"must be positive, got {epochs}", param_hint="--epochs")
    total_tokens = None
    if tokens is not None:
        total_tokens = parse_count(tokens, "--tokens")
    elif dataset_tokens is not None:
        total_tokens = max(1, round(parse_count(dataset_tokens, "--dataset-tokens") * (epochs or 1)))
    if price is not None and not price > 0:
        raise click.BadParameter(f"must be a positive USD per GPU-hour, got {price}", param_hint="--price")
    if inter_node_gbps is not None and not inter_node_gbps > 0:
        raise click.BadParameter(
            f"must be a positive Gb/s per GPU, got {inter_node_gbps}", param_hint="--inter-node-gbps"
        )
    result = plan(
        kw["model"],
        gpu,
        kw["method"],
        batch_size=parse_batch(kw["batch_size"]),
        overhead_bytes=parse_size(overhead) if overhead.strip() not in ("0", "0B", "0b") else 0,
        total_tokens=total_tokens,
        price_usd_per_h=price,
        **({"inter_node_gbps": inter_node_gbps} if inter_node_gbps is not None else {}),
        **spec_kwargs(kw),
    )
    notes = config_notes()
    if notes:
        result = dataclasses.replace(result, notes=(*notes, *result.notes))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif as_csv:
        click.echo(render_csv(result), nl=False)
    elif as_markdown:
        click.echo(render_markdown(result))
    else:
        click.echo(render_table(result))


def _finite_numbers(epochs: Any, price: Any, gbps: Any) -> tuple[Any, Any, Any]:
    """inf/nan/1e-300 pass click's float type; they are refused here, naming the option.
    Bounds: 1e6 epochs, $1e6 per GPU-hour, and 0.01-1e5 Gb/s (today's adapters run 100-800)."""
    from lora_budget.units import finite_number

    return (
        None if epochs is None else finite_number(epochs, "--epochs", high=1e6),
        None if price is None else finite_number(price, "--price", high=1e6, low_open=False),
        None if gbps is None else finite_number(gbps, "--inter-node-gbps", low=0.01, high=1e5, low_open=False),
    )
