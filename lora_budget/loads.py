"""Reading JSON and YAML that a user gave: every way a file can be bad is one line naming it.

Every reader of a user's file (``--config`` files and the DeepSpeed / FSDP files they name, model
``config.json`` files and cached Hub configs, profiles, baselines, calibration files) goes through
``read_json`` / ``parse_json`` / ``read_yaml`` so that the three failures Python's parsers raise
past their own error classes become an ``InputFileError``:

- nesting: CPython's JSON decoder and PyYAML's composer recurse once per level and raise
  ``RecursionError`` near 1,000 levels (``'[' * 100000`` is 200 kB); anything nested less than
  that but deeper than ``MAX_DEPTH`` would make later code recurse instead, so it is refused too.
  No configuration, profile or baseline this project reads nests more than 6 levels.
- a huge integer: Python 3.11+ refuses ``int()`` of a string over 4,300 digits
  (``sys.get_int_max_str_digits()``) with a ``ValueError`` from inside the parser;
- ``NaN`` / ``Infinity`` (JSON's non-standard constants), refused where the caller says numbers
  must be finite (profiles, baselines).

YAML aliases are shared references, not copies: the check measures each distinct list or mapping
once and refuses a file that would expand to more than ``MAX_NODES`` of them (eight levels of
nine aliases to the level below expand to 9**8) or that contains itself (``a: &a [*a]``).
"""

from __future__ import annotations

import json
import os
import stat

from lora_budget.errors import LoraBudgetError

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

MAX_DEPTH = 100
"""Deepest nesting of lists and mappings accepted (the files read here nest at most 6 levels)."""
MAX_NODES = 1_000_000
"""Most lists and mappings a file may expand to, aliases expanded (a YAML alias bomb is refused)."""
MAX_FILE_BYTES = 256 * 2**20
"""Largest file read (256 MiB; the largest profile of a full sweep is under 1 MiB)."""
MAX_INT_DIGITS = 4300
"""Python's default ``int_max_str_digits``: longer integer strings cannot be converted."""


class InputFileError(LoraBudgetError):
    """A user's file could not be read; ``source`` names it, ``reason`` says why (no file name)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong(len(text.lstrip("-")))
    return int(text)


class _NumberTooLong(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _no_constant(name: str) -> Any:
    raise _Constant(name)


class _Constant(Exception):
    pass


def check_depth(data: Any, source: str) -> Any:
    """``data`` itself, or an InputFileError when it nests deeper than MAX_DEPTH, expands to more
    than MAX_NODES lists and mappings, or contains itself.

    Walked without recursion, each distinct list or mapping once (post-order, with its depth and
    its size with aliases expanded), so a YAML alias bomb is measured, not expanded.
    """
    if not isinstance(data, dict | list):
        return data
    done: dict[int, tuple[int, int]] = {}
    """id -> (depth, lists and mappings in it with aliases expanded)."""
    path: set[int] = set()
    """ids of the containers being walked: the current one's ancestors."""
    stack: list[Any] = [data]
    while stack:
        item = stack[-1]
        key = id(item)
        if key in done:
            stack.pop()
            continue
        kids = [c for c in (item.values() if isinstance(item, dict) else item) if isinstance(c, dict | list)]
        if key not in path:
            path.add(key)
            if any(id(c) in path for c in kids):
                raise InputFileError(source, "contains itself (a recursive YAML alias)")
            stack.extend(c for c in kids if id(c) not in done)
            continue
        stack.pop()
        path.discard(key)
        depth = 1 + max((done[id(c)][0] for c in kids), default=0)
        size = 1 + sum(done[id(c)][1] for c in kids)
        if depth > MAX_DEPTH:
            raise InputFileError(source, f"nested deeper than {MAX_DEPTH} levels; no file this tool reads is")
        if size > MAX_NODES:
            raise InputFileError(source, f"holds over {MAX_NODES:,} lists and mappings (a YAML alias bomb?)")
        done[key] = (depth, size)
    return data


def parse_json(text: str, source: str, *, finite: bool = False) -> Any:
    """The value of JSON ``text``; ``source`` names it in errors. ``finite``: refuse NaN and Infinity."""
    try:
        data = json.loads(text, parse_int=_int, **({"parse_constant": _no_constant} if finite else {}))
    except json.JSONDecodeError as exc:
        raise InputFileError(source, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InputFileError(source, f"nested deeper than {MAX_DEPTH} levels; no file this tool reads is") from None
    except _NumberTooLong as exc:
        why = f"holds an integer of {exc.digits:,} digits (at most {MAX_INT_DIGITS:,})"
        raise InputFileError(source, why) from None
    except _Constant as exc:
        raise InputFileError(source, f"holds {exc.args[0]}, which is not a finite number") from None
    return check_depth(data, source)


def read_text(path: str | Path, source: str) -> str:
    """The file's text, or an InputFileError naming ``source``. A FIFO or a device is refused before
    it is opened (reading one waits for a writer, or never ends: ``/dev/zero``), and so is a file
    over MAX_FILE_BYTES."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputFileError(source, f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(source, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(source, "is not a regular file (a FIFO, socket or device); give a file")
    if st.st_size > MAX_FILE_BYTES:
        raise InputFileError(source, f"is {st.st_size:,} bytes; the files read here are under {MAX_FILE_BYTES:,}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise InputFileError(source, f"not UTF-8 text (byte {exc.start})") from None
    except IsADirectoryError:
        raise InputFileError(source, "is a folder, not a file") from None
    except OSError as exc:
        raise InputFileError(source, f"cannot read it ({exc.strerror or exc})") from None


def read_json(path: str | Path, source: str | None = None, *, finite: bool = False) -> Any:
    """The JSON value in the file at ``path`` (see ``parse_json``); errors name ``source`` (default: the path)."""
    where = str(path) if source is None else source
    return parse_json(read_text(path, where), where, finite=finite)


def parse_yaml(text: str, source: str) -> Any:
    """The value of YAML ``text`` (``yaml.safe_load``); ``source`` names it in errors."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a core dependency
        raise InputFileError(source, "reading YAML needs PyYAML: pip install pyyaml") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(source, f"not valid YAML ({first})") from None
    except RecursionError:
        raise InputFileError(source, f"nested deeper than {MAX_DEPTH} levels; no file this tool reads is") from None
    except ValueError as exc:  # int() of a scalar over 4,300 digits, a timestamp like 2024-13-45
        why = str(exc).split(":")[0][:80]
        raise InputFileError(source, f"holds a value that cannot be read ({why})") from None
    return check_depth(data, source)


def read_yaml(path: str | Path, source: str | None = None) -> Any:
    """The YAML value in the file at ``path`` (see ``parse_yaml``)."""
    where = str(path) if source is None else source
    return parse_yaml(read_text(path, where), where)
