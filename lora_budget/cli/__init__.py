"""The ``lora-budget`` command: a registry that only wires the commands together."""

from __future__ import annotations

import click

from lora_budget import __version__
from lora_budget.cli.catalog_cmds import gpus_cmd, models_cmd
from lora_budget.cli.check_cmd import check_cmd
from lora_budget.cli.plan_cmd import plan_cmd
from lora_budget.cli.profile_cmd import calibrate_cmd, profile_cmd, profiles_cmd
from lora_budget.cli.report_cmd import report_cmd
from lora_budget.cli.trace_cmd import trace_cmd
from lora_budget.cli.validate_cmd import validate_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lora-budget")
def main() -> None:
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
    """


main.add_command(plan_cmd)
main.add_command(trace_cmd)
main.add_command(validate_cmd)
main.add_command(models_cmd)
main.add_command(gpus_cmd)
main.add_command(report_cmd)
main.add_command(check_cmd)
main.add_command(profile_cmd)
main.add_command(profiles_cmd)
main.add_command(calibrate_cmd)
