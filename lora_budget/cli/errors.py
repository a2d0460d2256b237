"""Turn library errors into one-line CLI errors (exit 2 for bad input)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from lora_budget.errors import LoraBudgetError


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body; a LoraBudgetError becomes a usage error with its message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LoraBudgetError as exc:
            raise click.UsageError(str(exc)) from None

    return wrapper
