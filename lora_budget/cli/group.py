"""The click group of ``lora-budget``: every command, ``--help``, ``--version`` and the error boundary."""

from __future__ import annotations

import importlib
import os

import click

from lora_budget import __version__
from lora_budget.cli import COMMANDS


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        """Every command runs inside one error boundary (cli/errors.py): one line, exit 2 or 1."""
        from lora_budget.cli.errors import boundary

        debug = bool(ctx.params.get("debug")) or os.environ.get("LORA_BUDGET_DEBUG", "") not in ("", "0")
        return boundary(lambda: super(_LazyGroup, self).invoke(ctx), debug=debug)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lora-budget")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error (for a bug report).")
def main(debug: bool) -> None:
    """Will this fine-tuning job fit on this GPU?

    \b
    Examples:
      lora-budget plan --model 7b --gpu 24GB
      lora-budget plan --model Llama-3.1-8B --gpu rtx4090 --method qlora --batch-size auto
      lora-budget plan --model ./my-model/config.json --gpu 80GiB --json
      lora-budget trace --model 7b --method qlora --batch-size 4
      lora-budget report --model 7b --gpu 24GB --format png,svg,pdf
      lora-budget check --baseline memory.json --model 7b --method lora
      lora-budget models
      lora-budget gpus
      lora-budget profile --model 8b --methods full,lora,qlora --seq-len 512,2048 --batch-size 1,4
      lora-budget profiles
      lora-budget calibrate
      lora-budget serve --open
    """
