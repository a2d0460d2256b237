"""``lora-budget plan``: the analytical answer, instantly."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from lora_budget.cli.errors import user_errors
from lora_budget.cli.options import config_notes, spec_options, to_click
from lora_budget.cli.optspec import PLAN_OPTIONS
from lora_budget.cli.plan_run import plan_output


def _plan_options(fn: Any) -> Any:
    for opt in reversed(PLAN_OPTIONS):
        fn = to_click(opt)(fn)
    return fn


@click.command("plan")
@spec_options
@_plan_options
@user_errors
def plan_cmd(**kw: Any) -> None:
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
    typed_epochs = click.get_current_context().get_parameter_source("epochs") == ParameterSource.COMMANDLINE
    text, newline = plan_output(kw, typed_epochs=typed_epochs, notes=config_notes())
    click.echo(text, nl=newline)
