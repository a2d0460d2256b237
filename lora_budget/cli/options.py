"""Spec options shared by plan, trace, derive, check and report, as click options built from cli/optspec.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from lora_budget.cli.optspec import _UNSET, CONFIG_HELP, MODEL_HELP, SPEC_OPTIONS, Opt, spec_kwargs
from lora_budget.cli.values import parse_batch, parse_count
from lora_budget.errors import LoraBudgetError

__all__ = ["CONFIG_HELP", "MODEL_HELP", "parse_batch", "parse_count", "spec_options", "spec_kwargs", "to_click"]

CONFIG_META = "lora_budget.config"
"""``click`` context ``meta`` key holding the notes of the ``--config`` file a command read."""

_TYPES: dict[str | None, Any] = {None: None, "int": int, "float": float}


def to_click(opt: Opt) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``click.option`` decorator of one option record (cli/optspec.py)."""
    settings: dict[str, Any] = {"help": opt.help}
    if opt.default is not _UNSET:
        settings["default"] = opt.default
    if opt.show_default:
        settings["show_default"] = True
    if opt.choices is not None:
        settings["type"] = click.Choice(opt.choices)
    elif opt.type == "path":
        settings["type"] = click.Path(dir_okay=False)
    elif _TYPES[opt.type] is not None:
        settings["type"] = _TYPES[opt.type]
    if opt.is_flag:
        settings["is_flag"] = True
    if opt.callback is not None:
        settings.update(expose_value=False, is_eager=True, callback=opt.callback)
    return click.option(*opt.decls, **settings)


def spec_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the spec options (and ``--config FILE``) to a command; file values fill what the user did not type."""

    @functools.wraps(fn)
    def with_config(*args: Any, **kw: Any) -> Any:
        path = kw.pop("config_file", None)
        if path is None:
            return fn(*args, **kw)
        try:
            applied = apply_config(path, kw)
        except LoraBudgetError as exc:
            raise click.UsageError(str(exc)) from None
        try:
            return fn(*args, **applied)
        except click.UsageError as exc:
            exc.message = f"{exc.message} (settings read from {path})"
            raise

    for opt in reversed(SPEC_OPTIONS):
        with_config = to_click(opt)(with_config)
    return with_config


def apply_config(path: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with the config file's values for every parameter the user did not give on the command line.

    The file's notes go to ``click.get_current_context().meta[CONFIG_META]`` for the command to report.
    """
    from lora_budget.configs import load_config

    ctx = click.get_current_context()
    given = frozenset(p for p in kw if typed(p))
    loaded = load_config(path, typed=given)  # typed flags replace file values before they are validated
    if "model" in kw and "model" not in given:
        loaded.check_model()
    out = dict(kw)
    # A file's DeepSpeed / FSDP strategy shards over a world size only the launcher knows: without
    # --gpus N it is reported, not applied. Its offload belongs to its strategy, so a different
    # typed --strategy overrides both.
    held: tuple[str, ...] = ()
    if "strategy" in out and loaded.values.get("strategy", "ddp") != "ddp" and not typed("strategy"):
        gpus = out.get("gpus", 1) if typed("gpus") else loaded.values.get("gpus", out.get("gpus", 1))
        if gpus == 1:  # an accelerate config's num_processes is the world size
            held = tuple(p for p in ("strategy", "offload") if p in loaded.values)
    overridden = []
    for param, value in loaded.values.items():
        if param not in out or param in held:
            continue  # a setting this command has no option for (e.g. epochs outside plan), or held back
        if typed(param) or (param == "offload" and typed("strategy") and out["strategy"] != loaded.values["strategy"]):
            overridden.append(param)
            continue
        out[param] = config_model(loaded) if param == "model" else value
    overridden += [p for p in loaded.skipped if p not in overridden]
    if loaded.pattern_targets and "targets" in out and "targets" not in overridden and "model" in out:
        from lora_budget.configs.targets import fit_to_model

        try:  # a pattern adapts only the modules the model has
            out["targets"] = fit_to_model(out["targets"], out["model"])
        except LoraBudgetError as exc:
            raise LoraBudgetError(f"{path}: {loaded.pattern_targets}: {exc}") from None
    if loaded.default_targets and "targets" in out and "targets" not in overridden and "model" in out:
        from lora_budget.configs.targets import peft_default

        try:  # PEFT's default targets depend on the model type
            out["targets"] = peft_default(out["targets"], out["model"])
        except LoraBudgetError as exc:
            raise LoraBudgetError(f"{path}: {loaded.default_targets}: {exc}") from None
    ctx.meta[CONFIG_META] = loaded.describe(tuple(overridden), held)
    return out


def typed(param: str) -> bool:
    """Whether the user gave ``param`` on the command line (not its default): typed flags win over a file."""
    source = click.get_current_context().get_parameter_source(param)
    return source not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


def config_model(loaded: Any) -> str:
    """The model a config file names, checked against the catalog; an error names the file and key."""
    from lora_budget.catalog.models import resolve_model

    value = loaded.values["model"]
    try:
        resolve_model(value)
    except LoraBudgetError as exc:
        raise LoraBudgetError(f"{loaded.path}: {loaded.sources['model']}: {exc}") from None
    return value


def config_notes() -> list[str]:
    """Notes of the ``--config`` file the current command read (empty without one)."""
    ctx = click.get_current_context(silent=True)
    return list(ctx.meta.get(CONFIG_META, [])) if ctx else []


MAX_REAL_STEP = 2**24
"""Largest micro-batch or sequence length a real or traced step is run at (16,777,216): the step
makes b x s token ids and activations of that many rows; past this it overflows int64 shapes or
allocates for minutes (plan, which only counts, takes any size)."""


def check_real_step(batch_size: int, seq_len: int) -> None:
    """A one-line usage error when a step to be traced or measured is beyond any real one."""
    for value, hint in ((batch_size, "--batch-size"), (seq_len, "--seq-len")):
        if value > MAX_REAL_STEP:
            shown = f"{value:,}" if value < 10**12 else f"a {len(str(value))}-digit number"
            raise click.BadParameter(f"{shown} is beyond any real step (at most {MAX_REAL_STEP:,})", param_hint=hint)
