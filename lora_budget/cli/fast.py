"""``lora-budget plan ...`` without importing click, for a start closer to a bare ``python -c pass``.

Importing click costs about 25 ms on the development machine (it pulls in inspect, gettext, datetime
and uuid), a quarter of the start plan had with it. A plain plan line (``--long value``,
``--long=value``, ``-x value``, flags and switches that cli/optspec.py declares) is parsed here from
the same option records click builds its options from, and answered by the same body
(cli/plan_run.py). Anything else goes to the click group as it
always has: ``--help``, ``--version``, ``--config``, ``--debug``, a clustered short option (``-b4``),
an unknown option, a value click would refuse (a bad choice, a non-integer), and any error the body
raises: click then runs the command again and reports the error in its own words, so every message
and exit code is click's. A Hugging Face repo id as --model goes to click too: resolving one may ask
the Hub, which an error would make it ask twice. The only output printed here is a plan's, and only
once it is complete.
"""

from __future__ import annotations

import gc
import sys

from lora_budget.cli.optspec import _UNSET, PLAN_OPTIONS, SPEC_OPTIONS, Opt

TYPE_CHECKING = False  # typing is not imported at run time (records.py: the plan's start)
if TYPE_CHECKING:
    from typing import Any


_CONVERT = {None: str, "int": int, "float": float}


def parse_plan(args: list[str]) -> tuple[dict[str, Any], set[str]] | None:
    """``plan``'s keyword arguments for ``args`` (after ``plan``) exactly as click would pass them, and the
    names given on the line; None where click must decide (see the module docstring)."""
    opts: dict[str, tuple[Opt, Any]] = {}
    kw: dict[str, Any] = {}
    for opt in (*SPEC_OPTIONS, *PLAN_OPTIONS):
        if opt.callback is None:  # a callback's flag (--offline) is not passed on
            kw[opt.dest] = (False if opt.is_flag else None) if opt.default is _UNSET else opt.default
        if opt.type != "path":  # --config: click reads the file's settings with its context
            opts.update((flag, (opt, value)) for flag, value in opt.flags.items())
    given: set[str] = set()
    eager: list[Opt] = []
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, attached = token.partition("=") if token.startswith("--") else (token, "", "")
        if name not in opts:
            return None  # an argument, -h/--help, --config, an unknown or clustered option: click's to answer
        opt, value = opts[name]
        if value is None:  # the option takes a value: attached (--x=v) or the next argument
            if not eq:
                i += 1
                if i == len(args) or args[i].startswith("-"):
                    return None  # missing, or an option where a value should be: click decides
                attached = args[i]
            if opt.choices is not None:
                if attached not in opt.choices:
                    return None
                value = attached
            else:
                try:
                    value = _CONVERT[opt.type](attached)
                except ValueError:
                    return None
        elif eq:
            return None  # a flag given a value
        if opt.callback is not None:
            eager.append(opt)
        else:
            kw[opt.dest] = value
        given.add(opt.dest)
        i += 1
    for opt in eager:
        opt.callback(None, None, True)
    return kw, given


def fast_plan(args: list[str]) -> int | None:
    """Answer ``lora-budget plan`` + ``args`` and return the exit code, or None to leave it to click."""
    parsed = parse_plan(args)
    if parsed is None:
        return None
    kw, given = parsed
    kw.pop("config_file", None)
    if "/" in kw["model"]:  # a Hub repo id has one (the Hub module, pathlib and urllib, only then)
        from lora_budget.catalog.hub import is_repo_id

        if is_repo_id(kw["model"]):
            return None  # may ask the Hub (a 3 s reachability probe): an error must not make it ask twice
    try:
        from lora_budget.cli.plan_run import plan_output

        text, newline = plan_output(kw, typed_epochs="epochs" in given, notes=[])
    except Exception:  # click runs it again and reports it exactly as it always has
        return None
    except KeyboardInterrupt:  # as click's main reports it
        sys.stderr.write("\nAborted!\n")
        return 1
    out = text + "\n" if newline else text
    if not out.isascii() or "\x1b" in out:  # click.echo re-encodes or strips styles here: let it print
        import click

        click.echo(text, nl=newline)
        return 0
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `lora-budget plan | head`, as the click path's boundary answers it
        from lora_budget.cli.errors import silence_stdout

        silence_stdout()
        return 1
    return 0


def run() -> int:
    """The console script: plan's fast path when it can answer, else the click group.

    The fast path runs with the cyclic garbage collector off (a plan is a tenth of a second and
    leaves a few hundred objects in cycles; the collections were about 5 % of the start's
    instructions), then puts it back as it was. Where this process is the console script (or
    ``python -m lora_budget``) and exits with the plan's code, ``gc.freeze`` first moves every
    object out of the collector's sight, so that the interpreter's last collection does not walk
    them (another 5 %); a caller of ``run`` in its own process keeps its collector as it had it.
    """
    args = sys.argv[1:]
    if args[:1] == ["plan"]:
        collecting = gc.isenabled()
        gc.disable()
        try:
            code = fast_plan(args[1:])
        finally:
            if collecting:
                gc.enable()
        if code is not None:
            if _exits_after():
                gc.freeze()
            return code
    from lora_budget.cli.group import main

    return main()


def _exits_after() -> bool:
    """Whether ``run`` is this process's main program: pip's console script and ``lora_budget/__main__.py``
    both import it into ``__main__`` and exit with what it returns."""
    from lora_budget import cli

    return getattr(sys.modules.get("__main__"), "run", None) is cli.run
