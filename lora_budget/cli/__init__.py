"""The ``lora-budget`` command: a registry that only wires the commands together.

``run`` is the console script: ``lora-budget plan ...`` is answered without importing click where the
line is plain (cli/fast.py), everything else by the click group ``main`` (cli/group.py), which tests
and scripts import from here. This module imports neither.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any


COMMANDS: dict[str, str] = {
    "plan": "lora_budget.cli.plan_cmd:plan_cmd",
    "trace": "lora_budget.cli.trace_cmd:trace_cmd",
    "derive": "lora_budget.cli.derive_cmd:derive_cmd",
    "validate": "lora_budget.cli.validate_cmd:validate_cmd",
    "profile": "lora_budget.cli.profile_cmd:profile_cmd",
    "profiles": "lora_budget.cli.profile_cmd:profiles_cmd",
    "calibrate": "lora_budget.cli.profile_cmd:calibrate_cmd",
    "report": "lora_budget.cli.report_cmd:report_cmd",
    "check": "lora_budget.cli.check_cmd:check_cmd",
    "models": "lora_budget.cli.catalog_cmds:models_cmd",
    "gpus": "lora_budget.cli.catalog_cmds:gpus_cmd",
    "serve": "lora_budget.cli.serve_cmd:serve_cmd",
    "search": "lora_budget.cli.search_cmd:search_cmd",
}
"""Command name -> where it lives; a command's module is imported only when that command runs
(or when --help lists them all), so `plan` does not pay for the others' imports."""


def run() -> int:
    """Entry point of the ``lora-budget`` script and ``python -m lora_budget``."""
    from lora_budget.cli.fast import run as fast_run

    return fast_run()


def __getattr__(name: str) -> Any:
    """``main``, the click group, imported on first use (PEP 562) so that ``run`` need not import click."""
    if name == "main":
        from lora_budget.cli.group import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
