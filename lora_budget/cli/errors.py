"""Turn library errors into one-line CLI errors (exit 2 for bad input, 1 for a failed run)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import sys
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
            raise click.UsageError(shorten(str(exc))) from None

    return wrapper


ECHO_LIMIT = 200
"""Longest run of non-blank characters an error line repeats from the input (a 5,000-character
--model is cut to its first and last characters around a count)."""

_BAD_INPUT_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP, errno.EROFS}
)
"""OSErrors that mean the path the user gave is wrong (exit 2); others (a full disk, an I/O
error) are failures of the run (exit 1)."""


LINE_LIMIT = 1000
"""Longest error line printed: a message that lists hundreds of names (a library's list of model
types) is cut to its start and its length."""


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """Cut every word of ``text`` longer than ``limit`` to its ends and its length, then the whole
    text to LINE_LIMIT characters."""

    def cut(match: re.Match[str]) -> str:
        word = match.group(0)
        keep = limit // 2 - 10
        return f"{word[:keep]}...({len(word):,} chars)...{word[-keep:]}"

    text = re.sub(rf"\S{{{limit + 1},}}", cut, text)
    if len(text) > LINE_LIMIT:
        text = f"{text[: LINE_LIMIT - 40]}... (cut; {len(text):,} chars in all)"
    return text


def _os_message(exc: OSError) -> str:
    name = exc.filename if exc.filename is not None else ""
    where = f" {shorten(str(name))}" if name != "" else ""
    return f"cannot use{where}: {exc.strerror or exc}"


def boundary(invoke: Callable[[], Any], *, debug: bool) -> Any:
    """Run a command so that whatever goes wrong ends as one line on stderr and an exit code.

    Bad input (LoraBudgetError, ValueError, a too-deep JSON/YAML file, a wrong path) exits 2;
    a failure of the run (a full disk) exits 1; anything unexpected prints one line asking for a
    report and exits 1, with the traceback only under ``--debug`` (or LORA_BUDGET_DEBUG=1).
    """
    quiet_third_party()
    try:
        return invoke()
    except click.ClickException as exc:
        exc.message = shorten(exc.message)
        raise
    except (click.exceptions.Exit, click.Abort):
        raise
    except BrokenPipeError:  # `lora-budget models | head`: the reader left; no error line, as cat does
        silence_stdout()
        raise click.exceptions.Exit(1) from None
    except LoraBudgetError as exc:
        if debug:
            raise
        raise click.UsageError(shorten(str(exc))) from None
    except RecursionError:
        if debug:
            raise
        raise click.UsageError("input is nested too deeply to read (a JSON/YAML file or value)") from None
    except OSError as exc:
        if debug:
            raise
        if exc.errno in _BAD_INPUT_ERRNOS:
            raise click.UsageError(_os_message(exc)) from None
        raise click.ClickException(_os_message(exc)) from None
    except ValueError as exc:  # e.g. int() of a 5,000-digit number, a bad value deep in a reader
        if debug:
            raise
        raise click.UsageError(shorten(f"bad input: {exc}")) from None
    except Exception as exc:
        if debug:
            raise
        what = shorten(f"{type(exc).__name__}: {exc}")
        raise click.ClickException(
            f"internal error ({what}); please report it at the project's issue tracker "
            "(rerun as `lora-budget --debug ...` for the traceback)"
        ) from None


def silence_stdout() -> None:
    """After a broken pipe: stdout to /dev/null, as the flush at exit would hit the pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a test runner's buffer)
        pass


class _DropBnbKernelsNote(logging.Filter):
    """bitsandbytes 0.50 (``backends/cpu/ops.py``) logs a warning at import on CPUs with AVX512-BF16
    when the optional ``kernels`` package (a faster CPU 4-bit matmul fetched from the Hugging Face
    Hub) is absent, then uses its own kernel. It changes no byte that lora-budget counts and asks
    for a package that would download code, so the CLI drops that one message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


def quiet_third_party() -> None:
    """Install the filter on bitsandbytes' CPU-ops logger only (not the root logger, no warnings
    filter): other messages from it, and everything else, still print. Called by the CLI."""
    target = logging.getLogger("bitsandbytes.backends.cpu.ops")
    if not any(isinstance(f, _DropBnbKernelsNote) for f in target.filters):
        target.addFilter(_DropBnbKernelsNote())
